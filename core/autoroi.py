"""Automatic ROI: a box on the most-opacified vessel region of a run. Pure NumPy, no I/O.

Works on the coarse pulse samples (core.mask) once the run has ended: each pixel's opacity is averaged over
a short window of pulses (a single pulse's maximum is mostly the maximum of noise), the peak of that window
mean is the pixel's peak opacity, and the ROI is the box with the largest mean peak opacity that lies wholly
on image (no burnt-in text, no collimator surround).
"""
from __future__ import annotations

import numpy as np

PEAK_WINDOW_S = 0.25        # temporal averaging before the peak: a fraction of a venous bolus width
ROI_FRACTION = 1 / 16       # ROI side as a fraction of the shorter frame side
MIN_ROI_PX = 8


def roi_side(shape: tuple[int, int]) -> int:
    return max(MIN_ROI_PX, int(round(min(shape) * ROI_FRACTION)))


def peak_map(logs_of, pulses: int, mask: np.ndarray, offsets: np.ndarray, window: int) -> np.ndarray:
    """Per-pixel peak of the ``window``-pulse running mean of opacity ``mask - logs - offset``.

    ``logs_of(k)`` returns pulse k's coarse log sample; one running sum keeps memory at two images.
    """
    if pulses < 1:
        raise ValueError("peak map needs at least one pulse")
    window = max(1, min(int(window), pulses))
    acc = np.zeros(mask.shape, dtype=np.float64)
    hist: list[np.ndarray] = []
    best = np.full(mask.shape, -np.inf, dtype=np.float64)
    for k in range(pulses):
        o = mask - logs_of(k) - offsets[k]
        acc += o
        hist.append(o)
        if len(hist) > window:
            acc -= hist.pop(0)
        if len(hist) == window:
            np.maximum(best, acc / window, out=best)
    return best


def box_means(img: np.ndarray, valid: np.ndarray, side: int) -> np.ndarray:
    """Mean of ``img`` over every side x side box (top-left indexed); NaN where a box leaves ``valid``."""
    h, w = img.shape
    side = max(1, min(side, h, w))
    vals = np.where(valid, img, 0.0)
    s = np.zeros((h + 1, w + 1))
    s[1:, 1:] = vals.cumsum(0).cumsum(1)
    n = np.zeros((h + 1, w + 1))
    n[1:, 1:] = valid.cumsum(0).cumsum(1)

    def boxes(a):
        return a[side:, side:] - a[:-side, side:] - a[side:, :-side] + a[:-side, :-side]

    total, count = boxes(s), boxes(n)
    out = np.full(total.shape, np.nan)
    full = count == side * side
    out[full] = total[full] / count[full]
    return out


def choose_roi(peak: np.ndarray, valid: np.ndarray, stride: int,
               shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Full-resolution ROI (x, y, w, h) on the coarse peak map's most-opacified box, or None."""
    if peak.shape != valid.shape:
        raise ValueError(f"peak map {peak.shape} and valid map {valid.shape} differ")
    side = max(1, int(round(roi_side(shape) / stride)))
    means = box_means(peak, valid & np.isfinite(peak), side)
    if not np.isfinite(means).any():
        return None
    i, j = np.unravel_index(int(np.nanargmax(means)), means.shape)
    H, W = shape
    x, y, s = int(j * stride), int(i * stride), side * stride
    return x, y, min(s, W - x), min(s, H - y)
