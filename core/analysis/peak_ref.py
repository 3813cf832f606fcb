"""NumPy reference for the peak-image kernels in ext/_peak.pyx: same signatures, same results bit for bit.

Each function here is the specification of its compiled twin (core/analysis/peak.py's ``impl="reference"``
runs on them; tests/test_peak_kernel.py compares the two on every kind of input). Frames are (n, h, w) uint8
or uint16, any strides; ``idx`` the distinct frames (intp); ``gains`` each distinct frame's exposure shift in
log units (float32); ``lut`` the float32 log table over every value of the dtype for linear data, None for
log-encoded video (whose log value is the pixel value itself); ``b`` the block side.
"""
from __future__ import annotations

import math

import numpy as np


def to_log(frame: np.ndarray, lut: np.ndarray | None) -> np.ndarray:
    """Frame in log units (brighter = larger), float32."""
    if lut is not None:
        return lut[frame]
    return frame.astype(np.float32)


def box3(a: np.ndarray) -> np.ndarray:
    """Sum over 3x3 neighbourhoods of the last two axes (edges replicated)."""
    p = np.pad(a, ((0, 0), (1, 1), (1, 1)), mode="edge")
    rows = p[:, :-2] + p[:, 1:-1] + p[:, 2:]
    return rows[:, :, :-2] + rows[:, :, 1:-1] + rows[:, :, 2:]


def block_sum(frame: np.ndarray, b: int, hb: int, wb: int) -> np.ndarray:
    """Sums over b x b blocks (the last partial row/column of blocks dropped), by strided adds: four
    times faster than a reshape-sum, whose inner reduction is only b long."""
    if b == 1:
        return frame.astype(np.float64)
    f = frame[:hb * b, :wb * b]
    cols = f[:, 0::b].astype(np.uint32)
    for o in range(1, b):
        cols += f[:, o::b]
    out = cols[0::b].copy()
    for o in range(1, b):
        out += cols[o::b]
    return out


def distinct_frames(frames: np.ndarray) -> np.ndarray:
    """Indices of frames that differ from the frame before them (the first frame always counts)."""
    keep = [0]
    for i in range(1, frames.shape[0]):
        # A noisy new pulse differs within its first rows: check those before the whole frame.
        if not np.array_equal(frames[i, :8], frames[i - 1, :8]) or not np.array_equal(frames[i], frames[i - 1]):
            keep.append(i)
    return np.asarray(keep, dtype=np.intp)


def frame_pass(frames, idx, probe, n_mask, gains, lut, b, k, box, same, mask, end) -> None:
    """Pass 2 over the distinct frames, each read once.

    probe   (nd,) uint8: count, in ``same`` (h, w) uint8 (overwritten), the pixels equal to the previous
            distinct frame's at each probed j (never j = 0).
    n_mask  the mask, ``mask`` (h, w) float32 (overwritten), is the mean log value, exposure removed, of the
            first n_mask distinct frames (1 <= n_mask <= nd).
    end     (hb, wb) intp, hb, wb = h // b, w // b (overwritten): the last distinct frame of each block's
            window of k frames (1 <= k <= nd) with the least light (the most iodine), judged on the 3x3
            blocks around it when ``box``; a block's light is in raw units (a monotone stand-in for opacity is
            all the choice of the peak window needs, and it spares a full-frame log per frame), exposure
            removed: sum * exp(-gain) for linear data, sum - gain * b * b for log.
    """
    hb, wb = end.shape
    blocks = np.empty((len(idx), hb, wb), dtype=np.float64)
    same[...] = 0
    mask[...] = 0
    prev = None
    for j, i in enumerate(idx):
        raw = frames[i]
        if probe[j]:
            same += raw == prev
        prev = raw
        if j < n_mask:
            lg = to_log(raw, lut)
            lg -= np.float32(gains[j])
            mask += lg
        light = block_sum(raw, b, hb, wb)
        blocks[j] = light * math.exp(-gains[j]) if lut is not None else light - gains[j] * b * b
    mask /= np.float32(n_mask)
    end[...] = darkest_window(blocks, k, box)


def darkest_window(blocks: np.ndarray, k: int, box: bool) -> np.ndarray:
    """(hb, wb) intp: the last frame of each block's window of k frames with the least ``blocks`` (nd, hb, wb),
    summed over its 3x3 blocks when ``box``; the first such window, or the first NaN one (np.argmin)."""
    hb, wb = blocks.shape[1:]
    c = np.concatenate([np.zeros((1, hb, wb), np.float64), np.cumsum(blocks, axis=0, dtype=np.float64)])
    wins = c[k:] - c[:-k]                                   # window j ends at distinct frame j + k - 1
    if box:
        wins = box3(wins)
    return np.argmin(wins, axis=0) + (k - 1)


def gather(frames, idx, end, b, k, gains, lut, mask, peak) -> None:
    """``peak`` (h, w) float32 = mask - the mean log value, exposure removed, of each pixel's k distinct frames
    ending at its block's ``end`` (pixels past the last whole block take the edge block's)."""
    h, w = frames.shape[1:]
    end = np.repeat(np.repeat(end, b, axis=0), b, axis=1)
    if end.shape != (h, w):
        end = np.pad(end, ((0, h - end.shape[0]), (0, w - end.shape[1])), mode="edge")
    gains32 = gains.astype(np.float32)
    # Each pixel's k frames ending at its block's peak, gathered from the stack by flat index.
    flat = frames.reshape(frames.shape[0], -1) if frames.flags.c_contiguous else None
    pix = np.arange(h * w, dtype=np.intp).reshape(h, w)
    total = np.zeros((h, w), dtype=np.float32)
    for back in range(k):
        j = end - back
        if flat is not None:
            raw = flat.reshape(-1).take(idx[j] * (h * w) + pix)
        else:
            raw = frames[idx[j], pix // w, pix % w]
        lg = to_log(raw, lut)
        lg -= gains32[j]
        total += lg
    peak[...] = mask - total / np.float32(k)


def static_overlay(same, thr, first, top, overlay) -> tuple[int, int]:
    """``overlay`` (h, w) bool = the pixels unchanged in at least ``thr`` probed pairs (``same`` (h, w) uint8)
    with at least 4 such in their 3x3 neighbourhood. Returns (the pixels of ``first`` (h, w) between black
    and ``top``, exclusive: the ordinary ones; the overlay pixels among them)."""
    static = same >= thr
    near = box3(static[None].astype(np.uint8))[0]
    overlay[...] = static & (near >= 4)
    ordinary = (first > 0) & (first < top)
    return int(np.count_nonzero(ordinary)), int(np.count_nonzero(overlay[ordinary]))
