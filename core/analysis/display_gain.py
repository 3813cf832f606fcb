"""The display LUT's gain of 8-bit log video, from the run's own quantum noise.

Display video is v = offset + gain * ln(N) (N the detected quanta: core/sources/phantom/render.py, real chains
about so). Under quantum noise var(N) = N, so a level's noise variance is gain^2 / N = gain^2 * exp(-(v - offset)
/ gain): ln var(v) falls linearly with v at slope -1 / gain, whatever the offset. A detector's blur spreads each
quantum's light over its neighbours and lowers every level's variance by the same factor (the slope stays).

The noise is measured in time, between consecutive distinct frames (pulses repeated on the video line are
skipped): a spatial high-pass would see the anatomy's edges and, under a blur that correlates neighbours, keep
little of the noise. Each pair's difference is binned by the pair's mean level; what is not noise is left out:
a uniform shift (automatic brightness control) is removed, pixels whose difference is coherent over 9 x 9 px
(contrast arriving or leaving, motion) are dropped, never-changing pixels (overlay, surround, saturation) too,
and so are the bins where the levels' histogram is steep (its tails: there the noise selects which pixels land
in a bin). 8-bit rounding: the difference of two rounded values of one pixel has var(d) = 2 s^2 + 1/6 -
sum_k cos(2 pi k delta) exp(-4 pi^2 k^2 s^2) / (pi^2 k^2) (delta the pair's shift: the two roundings repeat when
the noise s is below about half a level), inverted per bin for s^2.

``estimate_display_gain`` says when it cannot be trusted (too few levels, a flat or rising curve, a poor or
bent straight line: noise reduction, a nonlinear LUT) and the caller keeps the linear model. Not told apart:
noise dominated by the electronics (var ~ 1 / N^2, a straight line at half the gain; mixed with quantum noise
it bends no more than a blurred quantum-limited run does). docs/catheter-calibration.md has the measurements.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from core.analysis.peak import distinct_frames

log = logging.getLogger("cathlab.pipeline")

__all__ = ["GainEstimate", "estimate_display_gain", "rounded_diff_var", "trusted_gain"]

LEVEL_LO, LEVEL_HI = 12, 245     # away from the clipped ends of 8 bits
BIN_LEVELS = 4                   # levels per bin of the pair's mean
MIN_BIN_COUNT = 1500             # differences per bin (ln var's sd ~ sqrt(2 / n): 0.04)
MAX_PAIRS = 24                   # pairs of consecutive distinct frames, spread over the run
MAX_PIXELS = 1 << 17             # per pair, a regular subsample
MAX_SHIFT = 1.0                  # levels: a pair whose frames shift more is skipped (exposure settling)
COHERENT_BOX = 9                 # px: a difference coherent over this box is contrast or motion, not noise
COHERENT_SD = 4.0                # ... beyond this many of the box means' robust sd
MAX_HIST_RATIO = 4.0             # a bin's neighbours' counts within this factor of each other
MIN_SPAN_LN = 0.6                # the levels fitted must span this much of ln var (the slope's lever)
MIN_BINS = 6
MAX_REL_SE = 0.08                # the gain's standard error (from the residuals) at most 8% (a catheter's width
                                 # moves about a tenth of the gain's error: docs/catheter-calibration.md)
LN_VAR_FLOOR = 0.03              # sd of a bin's ln var beyond its sampling: the blur mixes neighbouring levels
MAX_MISFIT = 3.0                 # residual rms at most this many times the bins' sd
MAX_BEND = 0.5                   # a quadratic's slope may differ from the line's by this fraction over the span
GAIN_RANGE = (8.0, 400.0)        # display levels per ln unit a LUT could have


@dataclass(frozen=True)
class GainEstimate:
    gain: float | None           # display levels per ln unit; None when not trustworthy
    raw_gain: float              # the fit's value (NaN when no fit), reported even when refused
    rel_se: float                # its standard error / gain
    span_levels: float           # the mean levels fitted span this many levels
    bins: int
    bend: float = math.nan       # the slope's change over the levels / slope (> 0: steeper where dark)
    reason: str = ""                 # "" when trusted, else why not (one line)

    @property
    def ok(self) -> bool:
        return self.gain is not None


HARMONICS = np.arange(1, 40, dtype=float)


def rounded_diff_var(s2, shift_cos: np.ndarray | None = None) -> np.ndarray:
    """Variance of round(x2) - round(x1) about its mean, x1 = mu + n1, x2 = mu + delta + n2 (n Gaussian of
    variance ``s2`` each; mu's fraction uniform over many pixels): 2 s2 + 1/6 - sum_k C_k exp(-4 pi^2 k^2 s2) /
    (pi^2 k^2), C_k = cos(2 pi k delta) averaged over the samples' pairs (``shift_cos``; all 1 when no shift):
    the two roundings of a pixel repeat when its noise is small."""
    s2 = np.asarray(s2, dtype=float)
    c = np.ones(HARMONICS.size) if shift_cos is None else np.asarray(shift_cos, dtype=float)
    k = HARMONICS[:, None]
    terms = c[:, None] * np.exp(-4.0 * math.pi ** 2 * k ** 2 * s2.ravel()) / (math.pi ** 2 * k ** 2)
    return (2.0 * s2 + 1.0 / 6.0 - np.sum(terms, axis=0).reshape(s2.shape))


def _noise_var(var_d: float, shift_cos: np.ndarray) -> float:
    """Inverse of rounded_diff_var (bisection); NaN where var_d is not above what no noise gives."""
    lo, hi = 0.0, max(var_d, 0.1)
    if not var_d > float(rounded_diff_var(np.array([0.0]), shift_cos)[0]):
        return math.nan
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if rounded_diff_var(np.array([mid]), shift_cos)[0] < var_d:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _box_mean(a: np.ndarray, k: int) -> np.ndarray:
    """Mean over k x k neighbourhoods (edges replicated), by cumulative sums."""
    r = k // 2
    p = np.pad(a, r, mode="edge")
    c = np.cumsum(np.cumsum(p, axis=0), axis=1)
    c = np.pad(c, ((1, 0), (1, 0)))
    s = c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]
    return s / (k * k)


def _pairs(frames: np.ndarray) -> list[tuple[int, int]]:
    idx = distinct_frames(frames)
    pairs = list(zip(idx[:-1], idx[1:]))
    if len(pairs) > MAX_PAIRS:
        pick = np.linspace(0, len(pairs) - 1, MAX_PAIRS).round().astype(int)
        pairs = [pairs[i] for i in pick]
    return pairs


def _differences(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mean levels, differences less their pair's shift, pair index) of the noise samples kept, and the
    pairs' shifts."""
    pairs = _pairs(frames)
    h, w = frames.shape[1:]
    step = max(1, int(math.ceil(math.sqrt(h * w / MAX_PIXELS))))
    sub = frames[:, ::step, ::step] if step > 1 else frames
    # Never-changing pixels (overlay, collimator surround, saturation) over all the pairs: no noise there.
    moving = np.zeros(sub.shape[1:], dtype=bool)
    for a, b in pairs:
        moving |= sub[a] != sub[b]
    means, diffs, which, shifts = [], [], [], []
    for a, b in pairs:
        v1, v2 = frames[a].astype(np.int16), frames[b].astype(np.int16)
        d = (v2 - v1).astype(np.float32)
        ok_full = (v1 >= LEVEL_LO) & (v1 <= LEVEL_HI) & (v2 >= LEVEL_LO) & (v2 <= LEVEL_HI)
        if ok_full.mean() < 0.2:
            continue
        # Contrast arriving or leaving, or motion, moves a neighbourhood together; noise does not: a local mean
        # beyond COHERENT_SD of the field's robust sd of them is left out. The shift is measured again without
        # them (a vein filling a tenth of the field moved it 0.36 levels).
        keep = ok_full
        for _ in range(2):
            shift = float(np.mean(np.clip(d[keep], -3, 3)))
            local = _box_mean(np.where(ok_full, d - shift, 0.0).astype(np.float32), COHERENT_BOX)
            lsd = 1.4826 * float(np.median(np.abs(local[ok_full]))) + 1e-3
            keep = ok_full & (np.abs(local) <= COHERENT_SD * lsd)
        shift = float(np.mean(np.clip(d[keep], -3, 3)))
        if abs(shift) > MAX_SHIFT:
            continue
        keep = keep[::step, ::step] & moving
        if not keep.any():
            continue
        m = 0.5 * (v1 + v2)[::step, ::step][keep]
        means.append(m.astype(np.float32))
        diffs.append(d[::step, ::step][keep] - np.float32(shift))
        which.append(np.full(m.size, len(shifts), dtype=np.int32))
        shifts.append(shift)
    if not means:
        return np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32), np.zeros(0)
    return np.concatenate(means), np.concatenate(diffs), np.concatenate(which), np.asarray(shifts)


def _clipped_var(d: np.ndarray) -> float:
    """Second moment (the pairs' shifts are taken out) after clipping outliers beyond 5 sd."""
    v = float(np.mean(d * d))
    lim = max(5.0 * math.sqrt(v), 2.5)
    return float(np.mean(np.clip(d, -lim, lim) ** 2))


def estimate_display_gain(frames: np.ndarray) -> GainEstimate:
    """The display gain (levels per ln unit of quanta) of an 8-bit log video (T, H, W) from its quantum noise."""
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.dtype != np.uint8:
        return GainEstimate(None, math.nan, math.nan, 0.0, 0, reason="not 8-bit display video")
    m, d, pair, shifts = _differences(frames)
    if shifts.size < 2:
        return GainEstimate(None, math.nan, math.nan, 0.0, 0, reason="fewer than two steady pairs of distinct frames")
    edges = np.arange(LEVEL_LO, LEVEL_HI + BIN_LEVELS, BIN_LEVELS)
    which = np.digitize(m, edges) - 1
    pair_cos = np.cos(2.0 * math.pi * HARMONICS[None, :] * shifts[:, None])     # (pairs, harmonics)
    hist = np.bincount(which[(which >= 0) & (which < len(edges) - 1)], minlength=len(edges) - 1).astype(float)
    centres, s2, counts = [], [], []
    for i in range(1, len(edges) - 2):
        # Where the levels' histogram is steep (its tails) the rounding's fractions are not uniform and the noise
        # selects which pixels land in the bin: left out.
        steep = not hist[i + 1] <= MAX_HIST_RATIO * hist[i - 1] <= MAX_HIST_RATIO ** 2 * hist[i + 1]
        if hist[i] < MIN_BIN_COUNT or steep:
            continue
        inside = which == i
        share = np.bincount(pair[inside], minlength=shifts.size) / hist[i]
        centres.append(float(np.mean(m[inside])))
        s2.append(_noise_var(_clipped_var(d[inside]), share @ pair_cos))
        counts.append(hist[i])
    x, n, s2 = np.asarray(centres), np.asarray(counts, dtype=float), np.asarray(s2)
    good = np.isfinite(s2) & (s2 > 1e-4)
    x, n, y = x[good], n[good], np.log(s2[good])
    if x.size < MIN_BINS:
        return GainEstimate(None, math.nan, math.nan, float(np.ptp(x)) if x.size else 0.0, int(x.size),
                            reason=f"noise measured at only {x.size} levels")
    # ln of a variance from n samples has sd ~ sqrt(2 / n), and a floor for what the model leaves.
    wts = 1.0 / (2.0 / n + LN_VAR_FLOOR ** 2)
    a = np.stack([np.ones_like(x), x - x.mean()], axis=1)
    cov = np.linalg.inv(a.T @ (a * wts[:, None]))
    coef = cov @ (a.T @ (wts * y))
    res = y - a @ coef
    misfit = math.sqrt(float(np.sum(wts * res ** 2)) / (x.size - 2))
    slope = float(coef[1])
    se = math.sqrt(cov[1, 1]) * max(misfit, 1.0)
    span = float(np.ptp(x))
    raw = -1.0 / slope if slope < 0 else math.nan
    rel = se / abs(slope) if slope != 0 else math.inf
    q = np.polyfit(x - x.mean(), y, 2, w=np.sqrt(wts))
    bend = 2.0 * q[0] * span / abs(slope) if slope != 0 else math.nan
    est = dict(raw_gain=raw, rel_se=rel, span_levels=span, bins=int(x.size), bend=bend)
    if slope >= 0:
        return GainEstimate(None, reason="noise does not fall with the level (not quantum-limited: noise reduction"
                            " or electronics noise)", **est)
    if abs(slope) * span < MIN_SPAN_LN:
        return GainEstimate(None, reason=f"the levels span {span:.0f} levels, too few for the noise's slope", **est)
    if not GAIN_RANGE[0] <= raw <= GAIN_RANGE[1]:
        return GainEstimate(None, reason=f"gain {raw:.0f} outside a display LUT's range", **est)
    if misfit > MAX_MISFIT:
        return GainEstimate(None, reason=f"the noise is not a straight line in ln var (misfit {misfit:.1f}x)", **est)
    # Electronics noise (var ~ 1 / N^2 where it dominates) bends it steeper where dark, but by no more than a
    # blurred quantum-limited run does (up to 23%); alone it is a straight line at half the gain: not told apart.
    if abs(bend) > MAX_BEND:
        return GainEstimate(None, reason=f"the noise's slope changes {100 * abs(bend):.0f}% over the levels"
                            + (" (steeper where dark: electronics noise)" if bend > 0 else ""), **est)
    if rel > MAX_REL_SE:
        return GainEstimate(None, reason=f"the gain is uncertain by {100 * rel:.0f}%", **est)
    return GainEstimate(raw, **est, reason="")


def trusted_gain(frames: np.ndarray, what: str) -> tuple[float | None, str]:
    """(the gain of ``frames`` when trusted else None, why not: "" when trusted), the reason also logged with
    ``what`` they are: for a live run, where an estimate that fails must not stop the run's other results."""
    try:
        est = estimate_display_gain(frames)
    except Exception:  # boundary: the linear model is the fallback
        log.exception("%s: the display gain's estimate failed", what)
        return None, "the estimate failed (see the log)"
    if est.gain is None:
        log.info("%s: display gain not estimated (%s)", what, est.reason)
    return est.gain, est.reason
