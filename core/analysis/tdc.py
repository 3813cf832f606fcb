"""Timing quantities of a time-density curve (docs/domain.md): arrival / peak / washout, centroid, plateau,
width and slopes, from the fitted gamma variate when it explains the curve, else from the samples. Pure, no I/O.

A TDC is the mean opacity of an ROI per X-ray pulse (repeated video frames collapsed), baseline 0. Noise on a
single pulse is a sizeable fraction of the peak, so the timing comes from a gamma variate
``K (t - t0)^a exp(-(t - t0) / b)`` fitted to the curve (core.analysis.gamma; sub-pulse estimates, as
parametric DSA does) when the fit explains the curve, and from the lightly smoothed samples otherwise
(core.analysis.curve: smoothing, noise, crossings).

Also here: ``RoiCurve`` (one ROI's curve with its timing, as reported). Collecting a run's
pulses into curves is ``core.analysis.runtimer.RunTimer``'s job; this module knows nothing of pulses or masks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from core.analysis.curve import (check_curve, crossing_down, downsample, noise_sd, peak_interp, rise_crossing,
                                 sample_centroid, smooth)
from core.analysis.gamma import GammaFit, fit_gamma, solve_fraction

ARRIVAL_FRACTION = 0.1      # arrival: first time the TDC reaches 10% of its peak
WASHOUT_FRACTION = 0.5      # washout: first time after the peak it is back at 50%
MIN_FIT_R2 = 0.98           # below this the fit does not describe the curve (drift, odd shape): use the samples
MIN_NOISY_FIT_R2 = 0.8      # ... unless its residual is no more than the curve's own noise
FIT_NOISE_RATIO = 1.3
SIGNIFICANT_EXCESS = 4.0    # an earlier stretch above the arrival level counts when its excess is > 4 sd
MIN_PEAK_SNR = 5.0          # peak / noise sd below this: no contrast seen in the ROI
PLATEAU_FRACTION = 0.95     # a plateau: the curve within 5% of its maximum ...
PLATEAU_MIN_S = 1.0         # ... for longer than this; peak_s is then its middle
LOW_RATE_INTERVAL_S = 0.15  # samples further apart (under ~7 frames/s, DSA): timing comes from the fit alone
TIMING_VERSION = 2          # 2: mtt_s = centroid - injection start; centroid_s, plateau_*_s added


@dataclass(frozen=True)
class TdcMetrics:
    arrival_s: float | None
    peak_s: float | None
    washout_s: float | None     # None: the curve did not fall back to 50% within the samples
    peak_value: float           # opacity at the peak
    centroid_s: float | None    # first moment of the curve: the fit's t0 + (a + 1) b, else of the samples
    fit: GammaFit | None
    method: str                 # "gamma" | "samples" | "none" (no contrast seen)
    noise_sd: float
    # What parametric DSA reports besides the times: full width at half maximum and the steepest
    # wash-in / wash-out slopes (opacity per second; wash-out is negative). None when not in the run.
    width_s: float | None = None
    wash_in_slope: float | None = None
    wash_out_slope: float | None = None
    plateau_start_s: float | None = None    # the curve within 5% of its maximum for > 1 s (peak_s its middle)
    plateau_end_s: float | None = None

    @property
    def contrast(self) -> bool:
        return self.method != "none"


def tdc_metrics(t, y) -> TdcMetrics:
    """The timing of one TDC (docs/domain.md). ``t`` seconds (any origin), ``y`` baseline-0 mean opacity per pulse."""
    t, y = check_curve(t, y)
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
        if float(np.median(np.diff(t))) > LOW_RATE_INTERVAL_S and arrival > t[0]:
            # Sparse samples: a crossing interpolated between them is coarser than the fit's, which
            # stands unless contrast was there from the first sample.
            arrival = m.arrival_s
        return m if arrival == m.arrival_s else replace(m, arrival_s=arrival)
    arrival = rise_crossing(t, ys, ARRIVAL_FRACTION * peak, k)
    arrival = _first_reach(t, y, ys, ARRIVAL_FRACTION * peak, arrival, sd)
    washout = crossing_down(t, ys, WASHOUT_FRACTION * peak, k)
    half_up = rise_crossing(t, ys, 0.5 * peak, k)
    slope = np.gradient(ys, t)
    plateau = _sample_plateau(t, ys, k)
    peak_s = peak_interp(t, ys, k) if plateau is None else 0.5 * (plateau[0] + plateau[1])
    return TdcMetrics(arrival, peak_s, washout, peak, sample_centroid(t, ys),
                      fit, "samples", sd,
                      width_s=None if washout is None or half_up is None else washout - half_up,
                      wash_in_slope=float(slope[:k + 1].max()),
                      wash_out_slope=float(slope[k:].min()) if washout is not None else None,
                      plateau_start_s=None if plateau is None else plateau[0],
                      plateau_end_s=None if plateau is None else plateau[1])


def _sample_plateau(t: np.ndarray, ys: np.ndarray, k: int) -> tuple[float, float] | None:
    """(start, end) where the smoothed curve first and last reaches 95% of its maximum, when > 1 s apart.
    First and last, not the contiguous stretch: noise dipping below the level inside a plateau must not cut it."""
    level = PLATEAU_FRACTION * ys[k]
    above = np.nonzero(ys >= level)[0]
    i, j = int(above[0]), int(above[-1])
    start = float(t[0]) if i == 0 else float(t[i - 1] + (level - ys[i - 1]) / (ys[i] - ys[i - 1]) * (t[i] - t[i - 1]))
    end = float(t[-1]) if j == len(t) - 1 else float(t[j] + (ys[j] - level) / (ys[j] - ys[j + 1]) * (t[j + 1] - t[j]))
    return (start, end) if end - start > PLATEAU_MIN_S else None


def _fit_explains(fit: GammaFit | None, sd: float) -> bool:
    """The fit describes the curve: it explains nearly all of it, or all but the noise (a faint bolus)."""
    if fit is None:
        return False
    return fit.r2 >= MIN_FIT_R2 or (fit.r2 >= MIN_NOISY_FIT_R2 and fit.rmse <= FIT_NOISE_RATIO * sd)


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
    arrival = fit.t0 + fit.a * fit.b * solve_fraction(fit.a, ARRIVAL_FRACTION, rising=True)
    washout = fit.t0 + fit.a * fit.b * solve_fraction(fit.a, WASHOUT_FRACTION, rising=False)
    arrival = max(arrival, float(t[0]))
    half_up = fit.t0 + fit.a * fit.b * solve_fraction(fit.a, WASHOUT_FRACTION, rising=True)
    width = washout - half_up
    # Steepest slopes at the inflection points tau = b (a -+ sqrt(a)); y' = y (a / tau - 1 / b).
    slopes = []
    for tau in (fit.b * (fit.a - math.sqrt(fit.a)), fit.b * (fit.a + math.sqrt(fit.a))):
        tau = max(tau, 1e-9)
        slopes.append(float(fit(np.array([fit.t0 + tau]))[0]) * (fit.a / tau - 1.0 / fit.b))
    if washout > t[-1]:
        washout = width = None
    plateau = None
    lo = solve_fraction(fit.a, PLATEAU_FRACTION, rising=True)
    hi = solve_fraction(fit.a, PLATEAU_FRACTION, rising=False)
    if fit.a * fit.b * (hi - lo) > PLATEAU_MIN_S:
        plateau = (fit.t0 + fit.a * fit.b * lo, fit.t0 + fit.a * fit.b * hi)
        peak_s = 0.5 * (plateau[0] + plateau[1])
    return TdcMetrics(arrival, peak_s, washout, pv, fit.centroid_s, fit, "gamma", sd, width_s=width,
                      wash_in_slope=slopes[0], wash_out_slope=slopes[1] if washout is not None else None,
                      plateau_start_s=None if plateau is None else plateau[0],
                      plateau_end_s=None if plateau is None else plateau[1])


# ------------------------------------------------------------------------------------------ ROI curves

@dataclass
class RoiCurve:
    roi: tuple[int, int, int, int]      # x, y, w, h in frame pixels
    auto: bool
    t_s: np.ndarray
    values: np.ndarray
    metrics: TdcMetrics
    reason: str | None = None           # why the automatic ROI is where it is (None: configured)

    def to_dict(self, injection_offset_s: float | None = None, max_points: int = 200) -> dict:
        """JSON-ready; ``injection_offset_s`` (injection start on the run clock) gives the times from it.
        ``mtt_s`` is the centroid minus the injection start: None without a known start."""
        m = self.metrics
        mtt = None if injection_offset_s is None or m.centroid_s is None else m.centroid_s - injection_offset_s
        d = {"roi": list(self.roi), "auto": self.auto, "arrival_s": _r(m.arrival_s), "peak_s": _r(m.peak_s),
             "washout_s": _r(m.washout_s), "mtt_s": _r(mtt), "centroid_s": _r(m.centroid_s),
             "plateau_start_s": _r(m.plateau_start_s), "plateau_end_s": _r(m.plateau_end_s),
             "peak_value": _r(m.peak_value, 5),
             "width_s": _r(m.width_s), "wash_in_slope": _r(m.wash_in_slope, 5),
             "wash_out_slope": _r(m.wash_out_slope, 5),
             "method": m.method, "fit_r2": None if m.fit is None else _r(m.fit.r2, 4),
             "fit": None if m.fit is None else {"t0_s": _r(m.fit.t0), "a": _r(m.fit.a), "b_s": _r(m.fit.b),
                                                 "K": float(m.fit.K), "r2": _r(m.fit.r2, 4)},
             "arrival_after_injection_s": None, "reason": self.reason}
        if injection_offset_s is not None and m.arrival_s is not None:
            d["arrival_after_injection_s"] = _r(m.arrival_s - injection_offset_s)
        d["curve"] = downsample(self.t_s, self.values, max_points)
        return d


def _r(v: float | None, nd: int = 4) -> float | None:
    return None if v is None else round(float(v), nd)

