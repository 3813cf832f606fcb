"""The shared reference lumen of a procedure's runs: the widest lumen any run shows at a station, without the
bias of a maximum.

The maximum of two noisy estimates of the same width reads wide by about half a noise sd (a clean vein shown
twice would read a burden); a lining that narrows one run's lumen is many noise sd below the other run's. So
the runs whose smoothed width is within noise of the widest are averaged, and a run clearly narrower (lined,
or narrowed by thrombus) is left out: the reference is still the widest lumen any run shows.
"""
from __future__ import annotations

import math

import numpy as np

from core.analysis.along_vessel import dilate

SAME_SD = 2.0        # runs within this many sd (of the two smoothed widths' difference) of the widest: the same lumen


def smoothed_sd(width: np.ndarray, half: int) -> float:
    """Noise sd of a run's width smoothed over +-``half`` stations (station-to-station scatter, robust)."""
    ok = np.isfinite(width)
    if ok.sum() < 3:
        return math.inf
    sd = 1.4826 * float(np.median(np.abs(np.diff(width[ok])))) / math.sqrt(2.0)
    return sd / math.sqrt(2 * half + 1)


def shared_width(refs: np.ndarray, sds: np.ndarray) -> np.ndarray:
    """Per station the mean of the runs' reference widths ``refs`` (runs x stations, NaN where a run says
    nothing) within SAME_SD of the widest, ``sds`` each run's smoothed-width noise; NaN where no run has one."""
    have = np.isfinite(refs)
    top_idx = np.argmax(np.where(have, refs, -np.inf), axis=0)
    cols = np.arange(refs.shape[1])
    top = refs[top_idx, cols]
    sd_top = sds[top_idx]
    tol = SAME_SD * np.sqrt(sds[:, None] ** 2 + sd_top[None, :] ** 2)
    with np.errstate(invalid="ignore"):
        same = have & (refs >= top[None, :] - np.where(np.isfinite(tol), tol, 0.0))
    n = same.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(same, refs, 0.0).sum(axis=0) / n
    return np.where(have.any(axis=0), mean, np.nan)


OVERFILL_SD = 4.0        # a station's burden this many noise sd below zero ...
OVERFILL_FLOOR = 0.10    # ... and at least this far: contrast beyond the reference lumen


def overfilled(station_burdens: list[np.ndarray], half: int) -> np.ndarray:
    """Stations where some run's window holds clearly more contrast than the reference lumen can (a negative
    burden far beyond noise): another vessel's contrast beside the lumen (a branch's or collateral's junction, a
    tributary), not the lumen; widened by ``half`` stations each side (the junction's skirt)."""
    out = np.zeros(station_burdens[0].shape, dtype=bool)
    for b in station_burdens:
        ok = np.isfinite(b)
        if ok.sum() < 5:
            continue
        sd = 1.4826 * float(np.median(np.abs(np.diff(b[ok])))) / math.sqrt(2.0)
        with np.errstate(invalid="ignore"):
            out |= ok & (b < -max(OVERFILL_SD * sd, OVERFILL_FLOOR))
    if not out.any() or half <= 0:
        return out
    return dilate(out, half)
