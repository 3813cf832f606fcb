"""Automatic ROI: a box on the opacified venous segment of a run, downstream of the injection. Pure NumPy, no I/O.

The densest box is usually the catheter tip or the sheath, whose curve only repeats the injection's profile
(a plateau as long as the injection). So among the well-opacified boxes (``choose_venous_roi``) those already
dense before the contrast (the catheter or sheath in the mask) and the earliest-filling ones (the injection
site) are left out, and the box filling at the median time of the rest wins: a place along the vein that
noise does not move from run to run.

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
WELL_OPACIFIED = 0.6        # candidate boxes peak at >= this fraction of the densest box
DEVICE_DENSITY = 0.5        # dense before contrast by this fraction of its peak opacity: a catheter / sheath
TOP_PERCENTILE = 99.5      # the densest boxes' level (a vein covers more than 0.5% of the boxes)
EARLY_FRACTION = 0.25       # filling in the first quarter of the candidates' fill-time spread: injection site


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


def box_fill_times(logs_of, pulses: int, mask: np.ndarray, offsets: np.ndarray, valid: np.ndarray, side: int,
                   window: int, best: np.ndarray, times: np.ndarray) -> np.ndarray:
    """When each box's ``window``-pulse mean first reaches half its peak (``best``, from ``box_peak_map``),
    interpolated between pulses at ``times`` (s); NaN where it never does or the box is off image."""
    h, w = mask.shape
    side = max(1, min(side, h, w))
    window = max(1, min(int(window), pulses))
    area = float(side * side)
    sat = np.zeros((h + 1, w + 1))
    half = 0.5 * best
    out = np.full(best.shape, np.nan)
    prev = None
    hist: list[np.ndarray] = []
    acc = np.zeros(best.shape)
    for k in range(pulses):
        np.cumsum(np.cumsum(np.where(valid, mask - logs_of(k) + offsets[k], 0.0), 0), 1, out=sat[1:, 1:])
        b = (sat[side:, side:] - sat[:-side, side:] - sat[side:, :-side] + sat[:-side, :-side]) / area
        acc += b
        hist.append(b)
        if len(hist) > window:
            acc -= hist.pop(0)
        if len(hist) < window:
            continue
        cur = acc / window
        t = float(times[k - (window - 1) // 2])
        hit = np.isnan(out) & (cur >= half) & np.isfinite(best) & (best > 0)
        if prev is not None and hit.any():
            t0 = float(times[k - 1 - (window - 1) // 2])
            rise = cur - prev
            frac = np.where(rise > 0, (half - prev) / np.where(rise > 0, rise, 1.0), 1.0)
            out[hit] = t0 + np.clip(frac[hit], 0.0, 1.0) * (t - t0)
        elif hit.any():
            out[hit] = t
        prev = cur
    return out


def static_density(mask: np.ndarray, valid: np.ndarray, side: int) -> np.ndarray:
    """Per box: how much denser than its surroundings (a 3x wider box) it is in the mask, before any contrast
    (ln units, or display levels); a catheter or sheath is, a vein is not."""
    h, w = mask.shape
    side = max(1, min(side, h, w))
    r = min(side, (min(h, w) - side) // 2)
    pad = np.pad(np.where(valid, mask, 0.0), r, mode="edge")
    vpad = np.pad(valid.astype(float), r, mode="edge")
    wide = box_means(pad, vpad > 0, side + 2 * r) if r > 0 else box_means(mask, valid, side)
    own = box_means(mask, valid, side)
    if wide.shape != own.shape:
        return np.zeros(own.shape)
    return np.nan_to_num(wide - own, nan=0.0)


def choose_venous_roi(peak: np.ndarray, fill: np.ndarray, density: np.ndarray, stride: int,
                      shape: tuple[int, int]) -> tuple[tuple[int, int, int, int], str] | None:
    """(ROI, reason) on the venous segment downstream of the injection (module docstring); None off image."""
    if peak is None or not np.isfinite(peak).any() or not np.nanmax(peak) > 0:
        roi = choose_roi(peak, stride, shape)
        return None if roi is None else (roi, "densest box (no opacification to place it by)")
    # The densest boxes' level, not the single densest (one noisy box would move every threshold).
    top = float(np.nanpercentile(peak, TOP_PERCENTILE))
    cand = np.isfinite(peak) & (peak >= WELL_OPACIFIED * top) & np.isfinite(fill)
    device = cand & (density > DEVICE_DENSITY * np.where(np.isfinite(peak), peak, 0.0))
    venous = cand & ~device
    if not venous.any():
        roi = choose_roi(peak, stride, shape)
        return roi, "densest box (no well-opacified box free of a device)"
    f = fill[venous]
    first, last = (float(v) for v in np.percentile(f, [5.0, 95.0]))
    late = venous & (fill >= first + EARLY_FRACTION * (last - first))
    if not late.any():
        late = venous
    target = float(np.median(fill[late]))
    score = np.where(late, np.abs(fill - target), np.inf)
    best = float(score.min())
    # Among boxes filling at the median time, the best opacified.
    near = late & (score <= best + 1e-9)
    i, j = np.unravel_index(int(np.nanargmax(np.where(near, peak, -np.inf))), peak.shape)
    H, W = shape
    x, y, s = int(j * stride), int(i * stride), coarse_side(shape, stride) * stride
    n_dev = int(np.count_nonzero(device))
    reason = (f"venous segment downstream of the injection: fills {target - first:.2f} s after the "
              f"earliest-filling region, {float(peak[i, j]) / top:.0%} of the densest boxes' opacity")
    if n_dev:
        reason += "; boxes dense before contrast (catheter / sheath) left out"
    return (x, y, min(s, W - x), min(s, H - y)), reason
