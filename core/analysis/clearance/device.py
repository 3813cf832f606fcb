"""A device in the lumen (catheter, sheath), from the runs' contrast-free masks: on one run and not the other,
or left in place in both.

A device is radiopaque and static through a run, so the peak-opacity image (frame against mask) does not show
it, yet it displaces the contrast it occupies and reads as thrombus. Its material is in the mask image.
- On one run: the difference of two registered runs' masks cancels the anatomy, and what a device adds is a
  ridge along the middle of the lumen (the difference over the lumen's middle less its level over the rest of
  the lumen: a smooth or misregistered anatomy difference mostly cancels).
- In both runs at the same place the difference cancels the device too, so each mask is also searched alone
  (``tube_stations``): the bone under the vein is not flat, but it has no tube along the lumen whose two walls
  each step down outwards within a pixel, at a place across the lumen that holds along the vessel; a bone's
  cortex or rim is one step, or a wide band drifting across the vein.
"""
from __future__ import annotations

import math

import numpy as np

from core.analysis.along_vessel import runs
from core.analysis.lumen import ACROSS_STEP_PX, running_mean
from core.analysis.vessel import Stations, sample_profiles

CORE = 0.3                     # the middle +-0.3 diameters of the lumen: where a device lies
MIN_SHARE_OF_CONTRAST = 0.05   # a device's attenuation across the lumen, as a share of the contrast's there
NOISE_SD = 4.0                 # ... and this many noise sd of the smoothed mask difference
MIN_LENGTH_DIAMETERS = 2.0     # a device runs along the vessel; shorter stretches are anatomy misregistered


def mask_profiles(mask: np.ndarray, stations: Stations, d_ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(across offsets, (M, K) profiles of the contrast-free mask (log units)) across the vessel."""
    d_max = float(np.nanmax(d_ref)) if np.isfinite(d_ref).any() else 1.0
    n = int(math.ceil((0.5 * d_max + 4.0) / ACROSS_STEP_PX))
    across = np.arange(-n, n + 1) * ACROSS_STEP_PX
    return across, sample_profiles(np.asarray(mask, dtype=np.float32), stations, across, np.array([-0.5, 0.5]))


def ridge(across: np.ndarray, diff: np.ndarray, axis: np.ndarray, d_ref: np.ndarray) -> np.ndarray:
    """Attenuation a device adds on the vein's axis per station: the mask difference integrated over the
    middle of the lumen (+-CORE of its diameter) less its mean over the rest of the lumen there: a tube along
    the axis shows, a misregistered anatomy edge or a smooth difference across the lumen mostly cancels."""
    x = np.abs(across[None, :] - np.nan_to_num(axis)[:, None])
    r = np.nan_to_num(d_ref, nan=0.0)[:, None] / 2
    core = x <= CORE * 2 * r
    ring = (x > CORE * 2 * r) & (x <= r + 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mid = np.where(core, diff, 0.0).sum(axis=1)
        outer = np.where(ring, diff, 0.0).sum(axis=1) / np.maximum(ring.sum(axis=1), 1)
        bad = np.any((core | ring) & ~np.isfinite(diff), axis=1) | (ring.sum(axis=1) == 0)
    return np.where(bad, np.nan, (mid - outer * core.sum(axis=1)) * ACROSS_STEP_PX)


def device_stations(diff: np.ndarray, contrast: float, half: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(stations where the run's mask holds a device the baseline's does not, the other way round).

    ``att_*``: ``ridge`` of the runs' mask difference, run minus baseline, at the same anatomical stations;
    ``contrast``: a patent station's contrast integral (the same log units); ``half``: stations in a reference
    radius. A stretch found is widened by a radius each side (the tip and the sampling window).
    """
    ok = np.isfinite(diff)
    none = np.zeros(diff.shape, dtype=bool)
    if ok.sum() < 5 or not (np.isfinite(contrast) and contrast > 0):
        return none, none.copy()
    sd = 1.4826 * float(np.median(np.abs(np.diff(diff[ok])))) / math.sqrt(2.0)
    smooth = running_mean(diff, half)
    limit = max(NOISE_SD * sd / math.sqrt(2 * half + 1), MIN_SHARE_OF_CONTRAST * contrast)
    with np.errstate(invalid="ignore"):
        return _stretches(ok & (smooth > limit), half), _stretches(ok & (smooth < -limit), half)


def nearest_filled(v: np.ndarray) -> np.ndarray:
    """``v`` with each NaN replaced by its nearest finite neighbour's value (unchanged if none is finite)."""
    ok = np.isfinite(v)
    if ok.all() or not ok.any():
        return v
    idx = np.flatnonzero(ok)
    pos = np.clip(np.searchsorted(idx, np.arange(len(v))), 0, len(idx) - 1)
    left, right = idx[np.maximum(pos - 1, 0)], idx[pos]
    i = np.arange(len(v))
    return v[np.where(np.abs(i - left) <= np.abs(right - i), left, right)]


def _stretches(hot: np.ndarray, half: int) -> np.ndarray:
    out = np.zeros(hot.shape, dtype=bool)
    for a, b in runs(hot):
        if b - a >= MIN_LENGTH_DIAMETERS * 2 * half:
            out[max(0, a - half):b + half] = True
    return out


TUBE_RADII_PX = (1.5, 2.0, 2.5, 3.0, 4.0, 5.0)   # a catheter's or sheath's outer radius (4-10 F at ~0.3 mm/px)
TUBE_EDGE_PX = 1.5                 # the windows either side of a wall
TUBE_OFFSET = 0.3                  # its axis within this share of the lumen's diameter of the vein's axis


def tube(across: np.ndarray, prof: np.ndarray, axis: np.ndarray, d_ref: np.ndarray
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per station, how much a tube along the lumen attenuates one mask more than the tissue on BOTH sides of
    it: ``min(core - left flank, core - right flank)`` of the attenuation (minus the log mask), the best over
    tube radii and places near the vein's axis. A device is radiopaque with sharp walls on both sides; an
    anatomy edge (a bone's cortex) is one step, lower on one side than the core and higher on the other, and
    smooth tissue is flat on the tube's scale: both score near zero."""
    att = -np.asarray(prof, dtype=float)
    m, k = att.shape
    ok_row = np.isfinite(att).all(axis=1)
    c = np.concatenate([np.zeros((m, 1)), np.cumsum(np.nan_to_num(att), axis=1)], axis=1)
    step = across[1] - across[0]
    ax = np.nan_to_num(axis)
    half_d = np.nan_to_num(d_ref, nan=0.0) / 2

    def box(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Mean of att over across in [lo, hi) per station (indices clipped to the profile)."""
        i0 = np.clip(np.round((lo - across[0]) / step).astype(int), 0, k)
        i1 = np.clip(np.round((hi - across[0]) / step).astype(int), 0, k)
        n = np.maximum(i1 - i0, 1)
        rows = np.arange(m)
        return (c[rows, i1] - c[rows, i0]) / n

    best = np.full(m, -np.inf)
    where = np.full(m, np.nan)
    size = np.full(m, np.nan)
    for ro in TUBE_RADII_PX:
        fit = ro <= 0.8 * half_d              # a tube wider than the lumen is not in it
        for off in np.arange(-TUBE_OFFSET, TUBE_OFFSET + 1e-9, 0.05):
            ctr = ax + off * 2 * half_d
            # Each wall a sharp step down outwards: a device's wall is a fraction of a pixel of blur wide.
            inner_l, outer_l = box(ctr - ro, ctr - ro + TUBE_EDGE_PX), box(ctr - ro - TUBE_EDGE_PX, ctr - ro)
            inner_r, outer_r = box(ctr + ro - TUBE_EDGE_PX, ctr + ro), box(ctr + ro, ctr + ro + TUBE_EDGE_PX)
            score = np.minimum(inner_l - outer_l, inner_r - outer_r)
            better = fit & (score > best)
            best = np.where(better, score, best)
            where = np.where(better, off * 2 * half_d, where)
            size = np.where(better, ro, size)
    ok = ok_row & np.isfinite(best)
    return np.where(ok, best, np.nan), np.where(ok, where, np.nan), np.where(ok, size, np.nan)


# A device wall's step, as a share of the contrast column's height (phantom anatomy < 0.09, its devices > 0.3).
TUBE_SHARE_OF_HEIGHT = 0.15
TUBE_STEADY = 0.1              # its place across the lumen steady to this share of the diameter along the stretch


def tube_stations(across: np.ndarray, prof: np.ndarray, axis: np.ndarray, d_ref: np.ndarray, height: float,
                  half: int, scored: tuple | None = None, share: float = TUBE_SHARE_OF_HEIGHT) -> np.ndarray:
    """Stations where one run's mask holds a device in the lumen, whether or not another run holds it too: a
    ``tube`` scoring above ``share`` of the contrast column's ``height`` (and NOISE_SD noise sd),
    at a place across the lumen steady along the vessel (a device follows the lumen; anatomy crossing the vein
    drifts across it), over at least MIN_LENGTH_DIAMETERS. ``scored``: ``tube``'s answer for these, when the
    caller has it."""
    score, where, _ = tube(across, prof, axis, d_ref) if scored is None else scored
    none = np.zeros(score.shape, dtype=bool)
    ok = np.isfinite(score)
    if ok.sum() < 5 or not (np.isfinite(height) and height > 0):
        return none
    sd = 1.4826 * float(np.median(np.abs(np.diff(score[ok])))) / math.sqrt(2.0)
    smooth = running_mean(score, half)
    mean_at = running_mean(where, half)
    spread = np.sqrt(np.maximum(running_mean(where ** 2, half) - mean_at ** 2, 0.0))
    limit = max(NOISE_SD * sd / math.sqrt(2 * half + 1), share * height)
    with np.errstate(invalid="ignore"):
        hot = ok & (smooth > limit) & (spread <= TUBE_STEADY * np.nan_to_num(d_ref, nan=0.0))
    return _stretches(hot, half)
