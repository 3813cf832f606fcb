"""Time-density curves: arrival / peak / washout (docs/domain.md) and a gamma-variate fit. Pure, no I/O.

A TDC is the mean opacity of an ROI per X-ray pulse (repeated video frames collapsed), baseline 0. Noise on a
single pulse is a sizeable fraction of the peak, so the timing comes from a gamma variate
``K (t - t0)^a exp(-(t - t0) / b)`` fitted to the curve (sub-pulse estimates, as parametric DSA does) when
the fit explains the curve, and from the lightly smoothed samples otherwise.

Also here: ``RoiCurve`` (one ROI's curve with its timing, as reported). Collecting a run's
pulses into curves is ``core.analysis.runtimer.RunTimer``'s job; this module knows nothing of pulses or masks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

ARRIVAL_FRACTION = 0.1      # arrival: first time the TDC reaches 10% of its peak
WASHOUT_FRACTION = 0.5      # washout: first time after the peak it is back at 50%
MIN_FIT_R2 = 0.98           # below this the fit does not describe the curve (drift, odd shape): use the samples
MIN_NOISY_FIT_R2 = 0.8      # ... unless its residual is no more than the curve's own noise
FIT_NOISE_RATIO = 1.3
SIGNIFICANT_EXCESS = 4.0    # an earlier stretch above the arrival level counts when its excess is > 4 sd
MIN_PEAK_SNR = 5.0          # peak / noise sd below this: no contrast seen in the ROI
FIT_TAIL_FRACTION = 0.3     # fit up to where the curve falls to 30% after the peak (recirculation beyond)


@dataclass(frozen=True)
class GammaFit:
    t0: float
    a: float
    b: float
    K: float
    r2: float                   # 1 - SSE / SST over the fitted samples
    rmse: float                 # in opacity units
    n: int                      # samples fitted

    @property
    def peak_s(self) -> float:
        return self.t0 + self.a * self.b

    @property
    def mtt_s(self) -> float:
        return self.t0 + (self.a + 1.0) * self.b

    @property
    def peak_value(self) -> float:
        return float(gamma_variate(np.array([self.peak_s]), self.t0, self.a, self.b, self.K)[0])

    def __call__(self, t: np.ndarray) -> np.ndarray:
        return gamma_variate(t, self.t0, self.a, self.b, self.K)


@dataclass(frozen=True)
class TdcMetrics:
    arrival_s: float | None
    peak_s: float | None
    washout_s: float | None     # None: the curve did not fall back to 50% within the samples
    peak_value: float           # opacity at the peak
    mtt_s: float | None         # gamma-variate mean transit time t0 + (a + 1) b
    fit: GammaFit | None
    method: str                 # "gamma" | "samples" | "none" (no contrast seen)
    noise_sd: float
    # What parametric DSA reports besides the times: full width at half maximum and the steepest
    # wash-in / wash-out slopes (opacity per second; wash-out is negative). None when not in the run.
    width_s: float | None = None
    wash_in_slope: float | None = None
    wash_out_slope: float | None = None

    @property
    def contrast(self) -> bool:
        return self.method != "none"


def gamma_variate(t: np.ndarray, t0: float, a: float, b: float, K: float) -> np.ndarray:
    """``K (t - t0)^a exp(-(t - t0) / b)`` for t > t0, 0 before."""
    t = np.asarray(t, dtype=float)
    tau = t - t0
    out = np.zeros_like(tau)
    pos = tau > 0
    out[pos] = K * np.exp(a * np.log(tau[pos]) - tau[pos] / b)
    return out


def _check(t, y) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(t, dtype=float)
    y = np.asarray(y, dtype=float)
    if t.ndim != 1 or y.shape != t.shape:
        raise ValueError(f"times and values must be 1-D of equal length, got {t.shape} and {y.shape}")
    if len(t) < 3:
        raise ValueError(f"a time-density curve needs at least 3 samples, got {len(t)}")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(y))):
        raise ValueError("time-density curve has non-finite times or values")
    if np.any(np.diff(t) <= 0):
        raise ValueError("time-density curve times must increase strictly")
    return t, y


def smooth(y: np.ndarray) -> np.ndarray:
    """5-point binomial smoothing (symmetric, so it does not shift times); ends use shorter windows."""
    y = np.asarray(y, dtype=float)
    if len(y) < 5:
        return y.copy()
    k = np.array([1.0, 4.0, 6.0, 4.0, 1.0])
    num = np.convolve(y, k, mode="same")
    den = np.convolve(np.ones_like(y), k, mode="same")
    return num / den


def noise_sd(y: np.ndarray) -> float:
    """Sample-to-sample noise: the MAD of second differences, which ignores the smooth curve underneath."""
    y = np.asarray(y, dtype=float)
    if len(y) < 4:
        return 0.0
    d2 = y[2:] - 2 * y[1:-1] + y[:-2]
    return float(1.4826 * np.median(np.abs(d2 - np.median(d2))) / math.sqrt(6.0))


def _crossing_up(t: np.ndarray, y: np.ndarray, level: float, stop: int) -> float | None:
    """First time (linear interpolation) y reaches ``level`` at or before index ``stop``."""
    idx = np.nonzero(y[:stop + 1] >= level)[0]
    if idx.size == 0:
        return None
    i = int(idx[0])
    if i == 0:
        return float(t[0])
    y0, y1 = y[i - 1], y[i]
    return float(t[i - 1] + (level - y0) / (y1 - y0) * (t[i] - t[i - 1]))


def _crossing_down(t: np.ndarray, y: np.ndarray, level: float, start: int) -> float | None:
    idx = np.nonzero(y[start:] <= level)[0]
    if idx.size == 0:
        return None
    i = start + int(idx[0])
    if i == start:
        return float(t[i])
    y0, y1 = y[i - 1], y[i]
    return float(t[i - 1] + (y0 - level) / (y0 - y1) * (t[i] - t[i - 1]))


def _peak_interp(t: np.ndarray, y: np.ndarray, k: int) -> float:
    """Sub-sample peak time: the vertex of the parabola through the three samples around ``k``."""
    if k == 0 or k == len(y) - 1:
        return float(t[k])
    y0, y1, y2 = y[k - 1], y[k], y[k + 1]
    den = y0 - 2 * y1 + y2
    if den >= 0:
        return float(t[k])
    off = 0.5 * (y0 - y2) / den
    dt = t[k + 1] - t[k] if off > 0 else t[k] - t[k - 1]
    return float(t[k] + max(-1.0, min(1.0, off)) * dt)


def _fit_window(t: np.ndarray, ys: np.ndarray) -> tuple[int, int, int]:
    """(start, stop, peak) indices of the samples to fit: from as long before the 10% rise as the rise takes
    to the peak (a drifting baseline far from the bolus would pull the fit), to the 30% fall after it."""
    k = int(np.argmax(ys))
    after = np.nonzero(ys[k:] <= FIT_TAIL_FRACTION * ys[k])[0]
    stop = k + int(after[0]) if after.size else len(ys) - 1
    rise = _crossing_up(t, ys, ARRIVAL_FRACTION * ys[k], k)
    start = 0
    if rise is not None:
        lead = max(t[k] - rise, 3 * (t[1] - t[0]))
        start = int(np.searchsorted(t, rise - lead))
    return start, stop, k


def _linear_start(t: np.ndarray, y: np.ndarray, t0: float, peak: float) -> tuple[float, float, float] | None:
    """For a fixed t0: (a, b, K) from ln y = ln K + a ln tau - tau / b, weighted by y^2 (ln noise ~ 1/y)."""
    sel = (t > t0) & (y > 0.2 * peak)
    if np.count_nonzero(sel) < 3:
        return None
    tau, yy = t[sel] - t0, y[sel]
    A = np.column_stack([np.ones_like(tau), np.log(tau), -tau])
    w = yy
    try:
        coef, *_ = np.linalg.lstsq(A * w[:, None], np.log(yy) * w, rcond=None)
    except np.linalg.LinAlgError:
        return None
    lnK, a, inv_b = coef
    if not (a > 0.05 and inv_b > 1e-3 and np.isfinite(lnK)):
        return None
    return float(a), float(1.0 / inv_b), float(math.exp(min(lnK, 700.0)))


def fit_gamma(t, y) -> GammaFit | None:
    """Least-squares gamma variate over the rise and the fall to 30% of peak; None when it cannot fit.

    A grid over t0 seeds a log-linear fit, then Levenberg-Marquardt refines (t0, a, b, K) on the
    linear-domain residuals (NumPy only: four parameters, a few hundred samples at most).
    """
    t, y = _check(t, y)
    ys = smooth(y)
    start, stop, k = _fit_window(t, ys)
    peak = ys[k]
    if not peak > 0 or k < 2:
        return None
    tw, yw = t[start:stop + 1], y[start:stop + 1]
    if len(tw) < 5:
        return None
    rise = _crossing_up(t, ys, ARRIVAL_FRACTION * peak, k)
    rise = t[0] if rise is None else rise
    t_peak = t[k]
    best = None
    span = max(t_peak - t[0], 1e-3)
    for t0 in np.linspace(rise - span, rise - 1e-3, 40):
        start_params = _linear_start(tw, yw, t0, peak)
        if start_params is None:
            continue
        a, b, K = start_params
        sse = float(np.sum((gamma_variate(tw, t0, a, b, K) - yw) ** 2))
        if best is None or sse < best[0]:
            best = (sse, np.array([t0, a, b, K]))
    if best is None:
        return None
    p = _levenberg_marquardt(tw, yw, best[1])
    if p is None:
        return None
    t0, a, b, K = (float(v) for v in p)
    resid = gamma_variate(tw, t0, a, b, K) - yw
    sse = float(np.sum(resid ** 2))
    sst = float(np.sum((yw - yw.mean()) ** 2))
    r2 = 1.0 - sse / sst if sst > 0 else 0.0
    return GammaFit(t0, a, b, K, r2, math.sqrt(sse / len(tw)), len(tw))


def _levenberg_marquardt(t: np.ndarray, y: np.ndarray, p: np.ndarray, iters: int = 60) -> np.ndarray | None:
    def resid(q):
        return gamma_variate(t, q[0], q[1], q[2], q[3]) - y

    def valid(q):
        return q[1] > 0.05 and q[2] > 1e-3 and q[3] > 0 and np.all(np.isfinite(q)) and q[1] < 50

    lam = 1e-3
    r = resid(p)
    cost = float(r @ r)
    for _ in range(iters):
        J = np.empty((len(t), 4))
        for j in range(4):
            h = 1e-6 * max(abs(p[j]), 1e-3)
            q = p.copy()
            q[j] += h
            J[:, j] = (resid(q) - r) / h
        g = J.T @ r
        H = J.T @ J
        improved = False
        for _ in range(10):
            try:
                step = np.linalg.solve(H + lam * np.diag(np.diag(H) + 1e-12), -g)
            except np.linalg.LinAlgError:
                lam *= 10
                continue
            q = p + step
            if valid(q):
                rq = resid(q)
                cq = float(rq @ rq)
                if cq < cost:
                    p, r, cost, improved = q, rq, cq, True
                    lam = max(lam / 10, 1e-9)
                    break
            lam *= 10
        if not improved or np.max(np.abs(step)) < 1e-7:
            break
    return p if valid(p) else None


def tdc_metrics(t, y) -> TdcMetrics:
    """The timing of one TDC (docs/domain.md). ``t`` seconds (any origin), ``y`` baseline-0 mean opacity per pulse."""
    t, y = _check(t, y)
    sd = noise_sd(y)
    ys = smooth(y)
    k = int(np.argmax(ys))
    peak = float(ys[k])
    # The smoothed peak's noise is ~0.4 of a sample's; demand a clear rise over it.
    if not peak > 0 or peak < MIN_PEAK_SNR * sd:
        return TdcMetrics(None, None, None, max(peak, 0.0), None, None, "none", sd)
    fit = fit_gamma(t, y)
    if _fit_explains(fit, sd) and t[0] - 1.0 <= fit.peak_s <= t[-1]:
        m = _from_fit(t, fit, sd)
        arrival = _first_reach(t, y, ys, ARRIVAL_FRACTION * m.peak_value, m.arrival_s, sd)
        return m if arrival == m.arrival_s else replace(m, arrival_s=arrival)
    arrival = _rise_crossing(t, ys, ARRIVAL_FRACTION * peak, k)
    arrival = _first_reach(t, y, ys, ARRIVAL_FRACTION * peak, arrival, sd)
    washout = _crossing_down(t, ys, WASHOUT_FRACTION * peak, k)
    half_up = _rise_crossing(t, ys, 0.5 * peak, k)
    slope = np.gradient(ys, t)
    return TdcMetrics(arrival, _peak_interp(t, ys, k), washout, peak, None,
                      fit, "samples", sd,
                      width_s=None if washout is None or half_up is None else washout - half_up,
                      wash_in_slope=float(slope[:k + 1].max()),
                      wash_out_slope=float(slope[k:].min()) if washout is not None else None)


def _fit_explains(fit: GammaFit | None, sd: float) -> bool:
    """The fit describes the curve: it explains nearly all of it, or all but the noise (a faint bolus)."""
    if fit is None:
        return False
    return fit.r2 >= MIN_FIT_R2 or (fit.r2 >= MIN_NOISY_FIT_R2 and fit.rmse <= FIT_NOISE_RATIO * sd)


def _rise_crossing(t: np.ndarray, ys: np.ndarray, level: float, k: int) -> float:
    """Where the rise that leads to the peak at ``k`` crosses ``level`` (noise before it can cross
    earlier; for a clean curve this is the first crossing)."""
    below = np.nonzero(ys[:k + 1] < level)[0]
    if below.size == 0:
        return float(t[0])
    i = int(below[-1])
    y0, y1 = ys[i], ys[i + 1]
    return float(t[i] + (level - y0) / (y1 - y0) * (t[i + 1] - t[i]))


def _first_reach(t: np.ndarray, y: np.ndarray, ys: np.ndarray, level: float, before: float,
                 sd: float) -> float:
    """docs/domain.md's "first time the TDC reaches the level", robust to noise: the start of the first stretch
    above ``level`` (before ``before``) whose excess over it is significant (contrast already there at the
    start of the run counts; a noise wiggle does not). ``before`` when there is none."""
    above = ys >= level
    i, n = 0, len(ys)
    while i < n and t[i] < before:
        if not above[i]:
            i += 1
            continue
        j = i
        while j < n and above[j] and t[j] < before:
            j += 1
        excess = float(np.sum(y[i:j] - level))
        if excess > SIGNIFICANT_EXCESS * sd * math.sqrt(j - i):
            if i == 0:
                return float(t[0])
            return float(t[i - 1] + (level - ys[i - 1]) / (ys[i] - ys[i - 1]) * (t[i] - t[i - 1]))
        i = j
    return before


def _from_fit(t: np.ndarray, fit: GammaFit, sd: float) -> TdcMetrics:
    peak_s = fit.peak_s
    pv = fit.peak_value
    # tau^a exp(-tau/b) reaches fraction f of its maximum at tau = a b * x, x solving x^a exp(a (1 - x)) = f.
    arrival = fit.t0 + fit.a * fit.b * _solve_fraction(fit.a, ARRIVAL_FRACTION, rising=True)
    washout = fit.t0 + fit.a * fit.b * _solve_fraction(fit.a, WASHOUT_FRACTION, rising=False)
    arrival = max(arrival, float(t[0]))
    half_up = fit.t0 + fit.a * fit.b * _solve_fraction(fit.a, WASHOUT_FRACTION, rising=True)
    width = washout - half_up
    # Steepest slopes at the inflection points tau = b (a -+ sqrt(a)); y' = y (a / tau - 1 / b).
    slopes = []
    for tau in (fit.b * (fit.a - math.sqrt(fit.a)), fit.b * (fit.a + math.sqrt(fit.a))):
        tau = max(tau, 1e-9)
        slopes.append(float(fit(np.array([fit.t0 + tau]))[0]) * (fit.a / tau - 1.0 / fit.b))
    if washout > t[-1]:
        washout = width = None
    return TdcMetrics(arrival, peak_s, washout, pv, fit.mtt_s, fit, "gamma", sd, width_s=width,
                      wash_in_slope=slopes[0], wash_out_slope=slopes[1] if washout is not None else None)


def _solve_fraction(a: float, f: float, rising: bool) -> float:
    """x (in units of the peak delay a b) where the normalised gamma variate equals f, by bisection."""
    def g(x):
        return a * (math.log(x) + 1.0 - x) - math.log(f)   # log of x^a e^{a(1-x)} / f
    lo, hi = (1e-12, 1.0) if rising else (1.0, 1.0)
    if not rising:
        while g(hi) > 0:
            hi *= 2.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if (g(mid) < 0) == rising:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def downsample(t, y, max_points: int = 200) -> list[list[float]]:
    """[[t, y], ...] with at most ``max_points`` samples, evenly picked, the last sample always kept."""
    t = np.asarray(t, dtype=float)
    y = np.asarray(y, dtype=float)
    if max_points < 2:
        raise ValueError(f"max_points must be >= 2, got {max_points}")
    n = len(t)
    idx = np.arange(n) if n <= max_points else np.unique(np.linspace(0, n - 1, max_points).round().astype(int))
    return [[round(float(t[i]), 4), round(float(y[i]), 5)] for i in idx]


# ------------------------------------------------------------------------------------------ ROI curves

@dataclass
class RoiCurve:
    roi: tuple[int, int, int, int]      # x, y, w, h in frame pixels
    auto: bool
    t_s: np.ndarray
    values: np.ndarray
    metrics: TdcMetrics

    def to_dict(self, injection_offset_s: float | None = None, max_points: int = 200) -> dict:
        m = self.metrics
        d = {"roi": list(self.roi), "auto": self.auto, "arrival_s": _r(m.arrival_s), "peak_s": _r(m.peak_s),
             "washout_s": _r(m.washout_s), "mtt_s": _r(m.mtt_s), "peak_value": _r(m.peak_value, 5),
             "width_s": _r(m.width_s), "wash_in_slope": _r(m.wash_in_slope, 5),
             "wash_out_slope": _r(m.wash_out_slope, 5),
             "method": m.method, "fit_r2": None if m.fit is None else _r(m.fit.r2, 4),
             "fit": None if m.fit is None else {"t0_s": _r(m.fit.t0), "a": _r(m.fit.a), "b_s": _r(m.fit.b),
                                                 "K": float(m.fit.K), "r2": _r(m.fit.r2, 4)},
             "arrival_after_injection_s": None}
        if injection_offset_s is not None and m.arrival_s is not None:
            d["arrival_after_injection_s"] = _r(m.arrival_s - injection_offset_s)
        d["curve"] = downsample(self.t_s, self.values, max_points)
        return d


def _r(v: float | None, nd: int = 4) -> float | None:
    return None if v is None else round(float(v), nd)

