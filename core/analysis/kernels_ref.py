"""NumPy reference for the Cython kernels in ext/_frames.pyx: same signatures, same results.

Each function here is the specification of its compiled twin. tests/test_kernels.py runs one test body
against both; FrameKernel(impl="reference") runs the whole pipeline on it. Written for clarity, not speed.
"""
from __future__ import annotations

import numpy as np


def frame_pass(frame, prev, has_prev, mask_term, lut, bins, vmax, rois, roi_sums, hist,
               peak, peak_index, smooth, opacity, index, alpha, peak_first, skip_repeat):
    """One frame over the crop. Returns ``(mad_sum, repeat, opacity_sum, clipped)``.

    frame      (h, w) uint8 / uint16, any strides: the cropped frame.
    prev       (h, w) same dtype, C-contiguous: read as the previous frame when ``has_prev``, then
               overwritten with ``frame`` (so the caller keeps no second copy).
    mask_term  (h, w) float32 or None: opacity = mask_term - lut[v].
               None: no opacity, roi_sums zeroed, peak maps and opacity untouched, opacity_sum 0.
    lut, bins  float32 / uint8 tables over every value of the dtype (256 or 65536 entries): the opacity
               term and the histogram bin of each pixel value. ``hist`` (256,) int64 is overwritten.
    vmax       highest valid pixel value (2**bits_stored - 1); pixels above it are counted in ``clipped``
               (the tables map them like vmax).
    rois       (n, 4) int32 rows x0, y0, x1, y1 (half-open, crop coordinates); ``roi_sums`` (n,) float64
               receives the sum of opacity in each.
    peak, peak_index, smooth (h, w) float32 / int32 / float32-or-None: the running peak of the smoothed
               opacity s = alpha * o + (1 - alpha) * s_prev (alpha and 1 - alpha as float32, the sum
               in float64) (s = o when ``peak_first`` or smooth is None)
               and the ``index`` of the frame where it was reached. Not updated on a repeated frame.
    opacity    (h, w) float32 or None: receives the opacity of this frame.
    skip_repeat when the frame equals prev, return at once with every output left as it was (they
               already hold this frame's results); the returned sums are then 0.
    """
    if has_prev and np.array_equal(frame, prev):
        if skip_repeat:
            return 0, True, 0.0, 0
        repeat, mad = True, 0
    else:
        repeat = False
        mad = int(np.abs(frame.astype(np.int32) - prev).sum(dtype=np.int64)) if has_prev else 0

    hist[:] = np.bincount(bins[frame].ravel(), minlength=256)
    clipped = int(np.count_nonzero(frame > vmax))

    total = 0.0
    roi_sums[:] = 0.0
    if mask_term is not None:
        o = mask_term - lut[frame]
        if opacity is not None:
            opacity[...] = o
        total = float(o.sum(dtype=np.float64))
        for r, (x0, y0, x1, y1) in enumerate(rois):
            roi_sums[r] = o[y0:y1, x0:x1].sum(dtype=np.float64)
        if not repeat:
            if smooth is None:
                s = o
            elif peak_first:
                s = o
                smooth[...] = s
            else:
                # In float64 like the compiled pass (exact products, one rounding to float32).
                a = np.float64(np.float32(alpha))
                b = np.float64(np.float32(1.0) - np.float32(alpha))
                s = (a * o + b * smooth).astype(np.float32)
                smooth[...] = s
            gt = s > peak
            peak[gt] = s[gt]
            peak_index[gt] = index
    prev[...] = frame
    return mad, repeat, total, clipped


def mask_mean(frames, out):
    """Mean of N frames into ``out`` (h, w) float32: ``frames.sum(0) / N`` with an exact integer sum.

    frames (N, h, w) uint8 / uint16, any strides.
    """
    n = frames.shape[0]
    out[...] = (frames.sum(axis=0, dtype=np.uint64) / n).astype(np.float32)
