"""The gamma variate ``K (t - t0)^a exp(-(t - t0) / b)`` and its least-squares fit to a time-density curve
(sub-sample timing, as parametric DSA does). Pure NumPy; core.analysis.tdc decides when the fit is used.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.analysis.curve import check_curve, crossing_up, smooth

RISE_FRACTION = 0.1         # the fit window is placed around the rise through 10% of the peak (the arrival)
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
    def centroid_s(self) -> float:
        """First moment of the fitted curve."""
        return self.t0 + (self.a + 1.0) * self.b

    @property
    def peak_value(self) -> float:
        return float(gamma_variate(np.array([self.peak_s]), self.t0, self.a, self.b, self.K)[0])

    def __call__(self, t: np.ndarray) -> np.ndarray:
        return gamma_variate(t, self.t0, self.a, self.b, self.K)


def gamma_variate(t: np.ndarray, t0: float, a: float, b: float, K: float) -> np.ndarray:
    """``K (t - t0)^a exp(-(t - t0) / b)`` for t > t0, 0 before."""
    t = np.asarray(t, dtype=float)
    tau = t - t0
    out = np.zeros_like(tau)
    pos = tau > 0
    out[pos] = K * np.exp(a * np.log(tau[pos]) - tau[pos] / b)
    return out


def _fit_window(t: np.ndarray, ys: np.ndarray) -> tuple[int, int, int]:
    """(start, stop, peak) indices of the samples to fit: from as long before the 10% rise as the rise takes
    to the peak (a drifting baseline far from the bolus would pull the fit), to the 30% fall after it."""
    k = int(np.argmax(ys))
    after = np.nonzero(ys[k:] <= FIT_TAIL_FRACTION * ys[k])[0]
    stop = k + int(after[0]) if after.size else len(ys) - 1
    rise = crossing_up(t, ys, RISE_FRACTION * ys[k], k)
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
    t, y = check_curve(t, y)
    ys = smooth(y)
    start, stop, k = _fit_window(t, ys)
    peak = ys[k]
    if not peak > 0 or k < 2:
        return None
    tw, yw = t[start:stop + 1], y[start:stop + 1]
    if len(tw) < 5:
        return None
    rise = crossing_up(t, ys, RISE_FRACTION * peak, k)
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


def solve_fraction(a: float, f: float, rising: bool) -> float:
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
