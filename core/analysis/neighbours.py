"""Neighbouring contrast columns across a vein's profile: a paired vein, a tributary alongside.

From the column's top outwards the profile falls; where it rises again by clearly more than noise another column
begins (``valleys``): the lumen's edge search, its background band and its integral window stop at the valley
between the two (core/analysis/lumen.py). Where that valley stands high (the two columns overlap) the lumen cannot
be measured: the station is ``crowded``, never read as a narrower or fainter lumen. A valley near the lumen's axis
(within the radius the vessel shows along its length), the hump beyond it ending within the lumen's edge, is
contrast flowing around a central thrombus, not a neighbour. Where the two columns lie closer still, no valley
shows between them: one wide column beside stations where the neighbour's valley shows (``merged_columns``).
"""
from __future__ import annotations

import numpy as np

from ext import _vessel

RISE_SD = 6.0                # a rise this many noise sd (of the smoothed profile) beyond the valley: a neighbour ...
RISE_FRACTION = 0.08         # ... and at least this share of the column's height
CROWDED = 0.15               # a valley above this share of the height: the columns overlap, no lumen measured
INNER_VALLEY = 0.85          # a valley nearer the lumen's axis than this share of its radius is inside the lumen ...
HUMP_REACH = 1.15            # ... when the hump beyond it ends within this share of the radius (+1 px of blur)
MERGED_WIDTH = 1.4           # a column this much wider than the lumen, beside a neighbour: the two merged ...
MERGED_SHIFT = 0.15          # ... its middle moved this share of the lumen's width towards the other vessel


def _rise_outwards(ps: np.ndarray, top: np.ndarray, rise: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From ``top`` towards higher indices: (index where a neighbour's ascent begins, or the profile's length when
    none; the valley's level, NaN when none; index where that second column has fallen back to the valley's
    level, the profile's length when it does not within the profile). The profile falls along the column's
    flank; once it has fallen by ``rise``, the first sample ``rise`` above the lowest so far starts another
    column, whose ascent begins at the last sample within half of ``rise`` of that lowest level (a flat gap
    between the columns stays the column's own). Compiled (ext/_vessel.pyx; NumPy reference
    core/analysis/vessel_ref.rise_outwards)."""
    ps = np.ascontiguousarray(ps if ps.dtype in (np.float32, np.float64) else ps.astype(np.float64))
    m = ps.shape[0]
    top = np.ascontiguousarray(np.broadcast_to(top, (m,)), dtype=np.intp)
    rise = np.ascontiguousarray(np.broadcast_to(rise, (m,)), dtype=np.float64)
    start, end = np.empty(m, dtype=np.intp), np.empty(m, dtype=np.intp)
    floor = np.empty(m, dtype=ps.dtype)
    if m and ps.shape[1]:
        _vessel.rise_outwards(ps, top, rise, start, floor, end)
    else:
        start[:], end[:], floor[:] = ps.shape[1], ps.shape[1], np.nan
    return start, floor, end


def valleys(p: np.ndarray, across: np.ndarray, top: np.ndarray, height: np.ndarray, sd: float,
             lumen: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """((low, high) positions across where a neighbouring column begins on either side of the column whose top is
    at index ``top``, -inf / +inf when none; stations where the two columns overlap: the valley between them
    above CROWDED of the column's ``height``). A rise counts beyond RISE_SD noise sd of the smoothed profile and
    RISE_FRACTION of the height: background drifts and noise do not end a column. ``lumen``: (axis, radius) of
    the lumen expected at each station: a valley within INNER_VALLEY of its radius of the axis, the hump beyond
    it ending within the lumen's edge, is contrast flowing around a central thrombus (two humps of one lumen),
    not a neighbour."""
    ps = smooth_across(p)
    k = ps.shape[1]
    with np.errstate(invalid="ignore"):
        rise = np.maximum(RISE_SD * sd, RISE_FRACTION * np.nan_to_num(height, nan=0.0))
    hi_i, hi_v, hi_e = _rise_outwards(ps, top, rise)
    lo_i, lo_v, lo_e = _rise_outwards(ps[:, ::-1], k - 1 - top, rise)
    lo_i, lo_e = k - 1 - lo_i, k - 1 - lo_e
    hi = np.where(hi_i < k, across[np.clip(hi_i, 0, k - 1)], np.inf)
    lo = np.where(lo_i >= 0, across[np.clip(lo_i, 0, k - 1)], -np.inf)
    hi_end = np.where(hi_e < k, across[np.clip(hi_e, 0, k - 1)], np.inf)
    lo_end = np.where(lo_e >= 0, across[np.clip(lo_e, 0, k - 1)], -np.inf)
    if lumen is not None:
        # Inside the lumen: the valley near its axis, and the second hump ending within its edge (a neighbour runs
        # on beyond it, even when the axis is a few px off towards it).
        axis, radius = lumen
        reach = HUMP_REACH * radius + 1.0
        with np.errstate(invalid="ignore"):
            inner_hi = (hi - axis < INNER_VALLEY * radius) & (hi_end - axis <= reach)
            inner_lo = (axis - lo < INNER_VALLEY * radius) & (axis - lo_end <= reach)
        hi, hi_v = np.where(inner_hi, np.inf, hi), np.where(inner_hi, np.nan, hi_v)
        lo, lo_v = np.where(inner_lo, -np.inf, lo), np.where(inner_lo, np.nan, lo_v)
    with np.errstate(invalid="ignore"):
        crowded = np.nan_to_num(np.fmax(lo_v, hi_v), nan=-np.inf) > np.maximum(CROWDED * height, RISE_SD * sd)
    return (lo, hi), crowded


def window(across: np.ndarray, centre: np.ndarray, half: np.ndarray,
            limits: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """(M, K) the samples within ``half`` of ``centre`` and between the neighbouring columns' ``limits``."""
    a = across[None, :]
    return ((np.abs(a - centre[:, None]) <= half[:, None]) & (a >= limits[0][:, None])
            & (a <= limits[1][:, None]))


def smooth_across(p: np.ndarray) -> np.ndarray:
    """A 5-sample (2 px) moving mean across: the first top search sees the column, not one noisy sample."""
    pad = np.pad(np.nan_to_num(p), ((0, 0), (2, 2)), mode="edge")
    k = p.shape[1]
    out = pad[:, 0:k] + pad[:, 1:k + 1] + pad[:, 2:k + 2] + pad[:, 3:k + 3] + pad[:, 4:k + 4]   # 5 slices: cheap
    return np.where(np.isfinite(p), out / 5, np.nan)


def merged_columns(width: np.ndarray, centre: np.ndarray, crowded: np.ndarray, typical: np.ndarray,
                   track: np.ndarray, reach: int) -> np.ndarray:
    """Stations along the vessel whose column is two vessels' merged into one (no valley between them, so
    ``valleys`` sees none): a stretch of columns wider than MERGED_WIDTH of the ``typical`` lumen width there that
    comes within ``reach`` stations of one where a neighbour's column overlaps the lumen (``crowded``), and either
    lies between two such, or has its middle moved off the vessel's ``track`` (where the columns standing alone
    run) by MERGED_SHIFT of that width, towards the other vessel. A neighbour does not stop where its valley
    fades: it runs on, its column merged with the lumen's where the two lie closer. A wide column centred on the
    vessel beside one neighbour's stretch (a taper, a confluence's wider trunk), or with none near it, stays."""
    with np.errstate(invalid="ignore"):
        wide = np.isfinite(width) & (width > MERGED_WIDTH * typical)
        shifted = np.abs(centre - track) > MERGED_SHIFT * typical
    out = np.zeros(width.shape, dtype=bool)
    edges = np.diff(np.concatenate([[0], wide.astype(np.int8), [0]]))
    for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
        before, after = crowded[max(a - reach, 0):a].any(), crowded[b:b + reach].any()
        if (before and after) or ((before or after) and shifted[a:b].mean() > 0.5):
            out[a:b] = True
    return out
