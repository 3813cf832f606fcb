"""Automatic ROI: a box on the most-opacified vessel region of a run. Pure NumPy, no I/O.

Works on the coarse pulse samples (core.analysis.mask) once the run has ended. Each candidate box's mean opacity is
followed pulse by pulse, averaged over a short window of pulses, and the box whose window mean peaks
highest wins, provided it lies wholly on image (no burnt-in text, no collimator surround).

The order matters: averaging over the box *before* taking the maximum over time keeps noise out of the
choice. A per-pixel maximum first would carry each pixel's noise peak into the box mean, and noise is
largest where the patient is thickest, so a faint vessel would lose to dense bone.
"""
from __future__ import annotations

import numpy as np

PEAK_WINDOW_S = 0.25        # temporal averaging before the peak: a fraction of a venous bolus width
ROI_FRACTION = 1 / 16       # ROI side as a fraction of the shorter frame side
MIN_ROI_PX = 8


def roi_side(shape: tuple[int, int]) -> int:
    return max(MIN_ROI_PX, int(round(min(shape) * ROI_FRACTION)))


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


def box_peak_map(logs_of, pulses: int, mask: np.ndarray, offsets: np.ndarray, valid: np.ndarray,
                 side: int, window: int) -> np.ndarray:
    """Peak over time of the ``window``-pulse running mean of each box's mean opacity.

    Opacity of pulse k is ``mask - logs_of(k) + offsets[k]`` (offsets: the exposure shift to add back);
    boxes are side x side on the coarse grid, NaN where they leave ``valid``. One running sum keeps memory
    at a few images; the boxes of a pulse cost one summed-area table.
    """
    if pulses < 1:
        raise ValueError("a box peak map needs at least one pulse")
    h, w = mask.shape
    side = max(1, min(side, h, w))
    window = max(1, min(int(window), pulses))
    full = box_means(np.ones((h, w)), valid, side) == 1.0          # boxes wholly on image
    area = float(side * side)
    sat = np.zeros((h + 1, w + 1))

    def boxes(o: np.ndarray) -> np.ndarray:
        np.cumsum(np.cumsum(np.where(valid, o, 0.0), 0), 1, out=sat[1:, 1:])
        return (sat[side:, side:] - sat[:-side, side:] - sat[side:, :-side] + sat[:-side, :-side]) / area

    hist: list[np.ndarray] = []
    acc = np.zeros(full.shape)
    best = np.full(full.shape, -np.inf)
    for k in range(pulses):
        b = boxes(mask - logs_of(k) + offsets[k])
        acc += b
        hist.append(b)
        if len(hist) > window:
            acc -= hist.pop(0)
        if len(hist) == window:
            np.maximum(best, acc / window, out=best)
    best[~full] = np.nan
    return best


def choose_roi(box_peak: np.ndarray, stride: int, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Full-resolution ROI (x, y, w, h) of the best box in a ``box_peak_map``, or None when no box is on image."""
    if box_peak is None or not np.isfinite(box_peak).any():
        return None
    i, j = np.unravel_index(int(np.nanargmax(box_peak)), box_peak.shape)
    H, W = shape
    x, y, s = int(j * stride), int(i * stride), coarse_side(shape, stride) * stride
    return x, y, min(s, W - x), min(s, H - y)


def coarse_side(shape: tuple[int, int], stride: int) -> int:
    """The automatic ROI's side on the coarse grid."""
    return max(1, int(round(roi_side(shape) / stride)))
