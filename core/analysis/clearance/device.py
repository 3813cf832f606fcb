"""A device in the lumen (catheter, sheath) on one run and not the other, from the runs' contrast-free masks.

A device is radiopaque and static through a run, so the peak-opacity image (frame against mask) does not show
it, yet it displaces the contrast it occupies and reads as thrombus. Its material is in the mask image. The
anatomy under the vein (bone edges) is not flat enough to find a device in one mask alone; the difference of
two registered runs' masks cancels it, and what a device adds is a ridge along the middle of the lumen (the
difference over the lumen's middle less its level over the rest of the lumen: a smooth or misregistered
anatomy difference mostly cancels). A device in both runs at the same place cancels too (and displaces the
same contrast in both runs).
"""
from __future__ import annotations

import math

import numpy as np

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

    ``att_*``: ``ridge`` of the runs' mask difference, run minus baseline, at the same anatomical stations; ``contrast``: a patent
    station's contrast integral (the same log units); ``half``: stations in a reference radius. A stretch
    found is widened by a radius each side (the tip and the sampling window).
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


def _stretches(hot: np.ndarray, half: int) -> np.ndarray:
    out = np.zeros(hot.shape, dtype=bool)
    edges = np.diff(np.concatenate([[0], hot.astype(int), [0]]))
    for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
        if b - a >= MIN_LENGTH_DIAMETERS * 2 * half:
            out[max(0, a - half):b + half] = True
    return out
