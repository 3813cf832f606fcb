"""A device in the lumen (catheter, sheath) on one run and not the other, from the runs' contrast-free masks.

A device is radiopaque and static through a run, so the peak-opacity image (frame against mask) does not show
it, yet it displaces the contrast it occupies and reads as thrombus. Its material is in the mask image: the
attenuation integrated across the reference lumen on the vein's axis (background beside it, as for the
contrast: an exposure offset between the runs cancels) is the same in two registered runs' masks except where one run holds a device there. The anatomy
under the vein (bone edges) is not flat enough to find a device in one mask alone; the difference of the two
masks cancels it. A device in both runs at the same place cancels too (and displaces the same contrast in
both runs).
"""
from __future__ import annotations

import math

import numpy as np

from core.analysis.lumen import integral_at, running_mean
from core.analysis.vessel import Stations

MIN_SHARE_OF_CONTRAST = 0.05   # a device's attenuation across the lumen, as a share of the contrast's there
NOISE_SD = 4.0                 # ... and this many noise sd of the smoothed mask difference
MIN_LENGTH_DIAMETERS = 2.0     # a device runs along the vessel; shorter stretches are anatomy misregistered


def mask_attenuation(mask: np.ndarray, stations: Stations, axis: np.ndarray, d_ref: np.ndarray) -> np.ndarray:
    """Attenuation of the contrast-free mask (log units) integrated across the reference lumen per station."""
    return integral_at(-np.asarray(mask, dtype=np.float32), stations, axis, d_ref)


def device_stations(att_run: np.ndarray, att_base: np.ndarray, contrast: float, half: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(stations where the run's mask holds a device the baseline's does not, the other way round).

    ``att_*``: ``mask_attenuation`` of the two runs at the same anatomical stations; ``contrast``: a patent
    station's contrast integral (the same log units); ``half``: stations in a reference radius. A stretch
    found is widened by a radius each side (the tip and the sampling window).
    """
    diff = att_run - att_base
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
