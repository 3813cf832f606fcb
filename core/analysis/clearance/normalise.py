"""Contrast density normalised between runs that show the same lumen.

Each run reads its density from the shape of its own round columns (clearance/density.py): the width enters
squared, so one run's line carries ~1% of error, and a 1% error in a run's density is ~1 point of its burden
(~5 points of clearance against a 15% baseline). Where two runs show round columns of the same width over the
same stations (the same lumen, patent in both), the ratio of their integrals there is the ratio of their
densities without the widths' noise: the two runs' shape estimates are pooled into one line for the baseline
and each such run's line is that line times its ratio.

A run whose columns are evenly narrower (thrombus lining the whole vein: what residue after thrombectomy looks
like) does not show the same lumen: its widths differ from the baseline's by more than their standard error,
and it keeps its own line (pooling it would call the lining contrast and grade the residue away).
"""
from __future__ import annotations

import math

import numpy as np

from core.analysis.clearance import density as dens

MIN_COMMON = 16          # stations round and patent in both runs
SAME_WIDTH_SE = 3.0      # the widths' median relative difference within this many standard errors ...
SAME_WIDTH_FLOOR = 0.008  # ... or this fraction (a lining of 1% of the width is 2% of the area)
OUTLIER_SD = 3.0


def same_lumen_ratio(s: np.ndarray, i_run: np.ndarray, i_base: np.ndarray, w_run: np.ndarray,
                     w_base: np.ndarray, common: np.ndarray) -> tuple[float, float] | None:
    """(the density of a run over the baseline's: the robust mean ratio of their integrals on the ``common``
    stations, its relative variance), or None when the runs do not show the same lumen there or share too few
    stations."""
    use = (common & np.isfinite(i_run) & np.isfinite(i_base) & (i_base > 0) & np.isfinite(w_run)
           & np.isfinite(w_base) & (w_run > 0) & (w_base > 0))
    n = int(use.sum())
    if n < MIN_COMMON:
        return None
    rel = (w_run[use] - w_base[use]) / (0.5 * (w_run[use] + w_base[use]))
    m = float(np.median(rel))
    se = 1.25 * 1.4826 * float(np.median(np.abs(rel - m))) / math.sqrt(n)
    if abs(m) > max(SAME_WIDTH_SE * se, SAME_WIDTH_FLOOR):
        return None
    y = i_run[use] / i_base[use]
    # One ratio for the vessel (a slope from a few dozen stations is mostly noise), robustly: a thrombus in
    # front of one run's lumen moves its stations' ratio a long way.
    q = float(np.median(y))
    for _ in range(3):
        r = y - q
        sd = 1.4826 * float(np.median(np.abs(r))) + 1e-12
        keep = np.abs(r) < OUTLIER_SD * sd
        if keep.sum() < MIN_COMMON:
            return None
        q = float(np.mean(y[keep]))
    if not q > 0:
        return None
    return q, float(np.var(y[keep]) / keep.sum()) / (q * q)


def level_variance(s: np.ndarray, density: np.ndarray, full: np.ndarray, line) -> float:
    """Relative variance of a run's own density line (its level), from the scatter of its round columns."""
    if line is None:
        return math.inf
    use = full & np.isfinite(density)
    if use.sum() < MIN_COMMON:
        return math.inf
    r = density[use] / (line[0] + line[1] * s[use]) - 1.0
    sd = 1.4826 * float(np.median(np.abs(r - np.median(r))))
    return (1.25 * sd) ** 2 / int(use.sum())


def pool(s: np.ndarray, runs: list, halves: list[int]) -> None:
    """Each later run's density line (``.line``) pooled with the baseline's where the two show the same lumen
    and filling: round columns (``.full``) of the same width, neither run's density low there (a thrombus in
    front of one run's lumen leaves its width and lowers its density)."""
    base = runs[0]
    filled = [r.full & ~dens.low_density(s, r.lumen.density, r.line, h) for r, h in zip(runs, halves)]
    ratios = [None if r.line is None else
              same_lumen_ratio(s, r.integral, base.integral, r.lumen.width, base.lumen.width, f & filled[0])
              for r, f in zip(runs[1:], filled[1:])]
    variances = [level_variance(s, r.lumen.density, r.full, r.line) for r in runs]
    for r, line in zip(runs, pooled_lines(s, [r.line for r in runs], ratios, variances)):
        r.line = line


def pooled_lines(s: np.ndarray, lines: list, ratios: list, variances: list) -> list:
    """Lines ``(level at s = 0, slope)`` per run, the baseline first. A same-lumen run's density over the
    baseline's is the integrals' ratio and the ratio of the two own lines weighed by their variances (either
    can be the noisier: few common stations, few round columns); the baseline's line the variance-weighted
    mean of its own and each such run's line over that ratio; each such run's line that times its ratio. Runs
    without a ratio (None) keep their own line. ``variances``: each own line's relative variance."""
    if lines[0] is None:
        return list(lines)
    own0 = lines[0][0] + lines[0][1] * s
    v0 = variances[0]
    levels, weights, combined = [own0], [1.0 / v0 if v0 > 0 else 0.0], []
    for line, q, v in zip(lines[1:], ratios, variances[1:]):
        if q is None or line is None or not (v > 0 and v0 > 0 and math.isfinite(v + v0)):
            combined.append(None)
            continue
        own = line[0] + line[1] * s
        q_int, v_int = q
        v_own = v + v0
        w_int = 1.0 / max(v_int, 1e-12)
        ratio = (own / own0 / v_own + q_int * w_int) / (1.0 / v_own + w_int)
        combined.append(ratio)
        levels.append(own / ratio)
        weights.append(1.0 / v)
    if len(levels) == 1 or not sum(weights) > 0:
        return list(lines)
    pooled = np.average(np.vstack(levels), axis=0, weights=weights)
    out = [_fit(s, pooled)]
    for line, ratio in zip(lines[1:], combined):
        out.append(line if ratio is None else _fit(s, pooled * ratio))
    return out


def _fit(s: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    if np.ptp(s) == 0:
        return float(np.mean(v)), 0.0
    c1, c0 = np.polyfit(s, v, 1)
    return float(c0), float(c1)
