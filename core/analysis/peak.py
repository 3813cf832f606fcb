"""Per-run peak-opacity image: how much contrast each pixel saw at the height of the bolus.

A plain per-pixel maximum of noisy opacity frames is biased upward (the maximum of noise) and, worse, the
bias grows where the image is darker, i.e. inside the vessel: it inflated the patent reference and read
a partial-depth thrombus 2-4 points too deep on a 10 px vein. So each pixel's value is the mean over a
window of k distinct pulses (``window_s``, a fraction of a venous bolus), and which window is "the peak"
is decided per 4x4-pixel block from the light of its 3x3-block neighbourhood, never by the pixel's own
noise (which then weighs 1/144 in the choice): the value is an unbiased window mean.

Opacity follows docs/domain.md: ``ln(mask) - ln(frame)`` for linear data, ``mask - frame`` (display levels) for
log-encoded video. Both are proportional to iodine along the ray; the unit does not matter because
clearance calibrates every run on its own patent stations.

What real runs do that a naive pass gets wrong, handled here:
- pulses repeated on the video line and last-image-hold: only frames that differ from the previous one
  are distinct pulses (repeats would weight some pulses twice and fake a longer window);
- automatic brightness control: the exposure settles over the first pulses, which shifts every pixel's
  log value by the same amount; that shift is measured per frame on the pixels that never hold contrast,
  with a clipped mean (an 8-bit median is a whole level, up to half a level off) and removed;
- contrast in the first frames: the mask is the mean of the frames before the contrast arrives;
- burnt-in text, a ticking fluoro-time counter, the black collimator surround and saturated pixels:
  unchanged between (almost) every pair of pulses, they carry no opacity and are returned as NaN, so a
  vessel passing under a text box reads as "not measured", not as an occlusion.

The full-frame work is ext/_peak.pyx; its NumPy reference, equal bit for bit, is core/analysis/peak_ref.py.
"""
from __future__ import annotations

import math

import numpy as np

from core.analysis import peak_ref
from core.analysis.peak_ref import box3 as _box3
from core.analysis.peak_ref import to_log as _to_log
from core.sources.stacks import FrameStack
from ext import _peak

__all__ = ["peak_opacity", "peak_and_mask", "distinct_frames", "field_only", "DEFAULT_WINDOW_S", "FIELD_PULSES"]

DEFAULT_WINDOW_S = 0.25      # averaging window around the peak; a venous bolus lasts seconds
MASK_ARRIVAL_FRACTION = 0.1  # contrast "arrives" at 10% of its peak rise (the TDC arrival of docs/domain.md)
SIGNAL_QUANTILE = 99.5       # the vessel is a few % of the field: its opacity shows in this quantile
STATIC_PROBES = 64           # consecutive distinct-frame pairs compared to find overlay pixels: every pair of a
#                              run (up to this many). With 16, display video with under a level of noise (a clean
#                              acquisition, a display's noise filter) left 7-9% of the field's anatomy unchanged in
#                              14 of 16 pairs, read as overlay (independent phantom at ten times the dose)
STATIC_SHARE = 0.85          # a pixel equal to its previous frame this often is overlay, not anatomy
QUIET_SHARE = 0.05           # ... unless this share of the ordinary pixels is: quiet video (_overlay)
QUIET_REACH_PX = 4           # quiet video: overlay where most of the +-this neighbourhood changes
PEAK_BLOCK_PX = 4            # the peak time is chosen per block of b x b pixels (see below)
MAX_SAMPLE_PIXELS = 16384    # per-frame statistics on a regular subsample: same answer, far cheaper
FIELD_PULSES = 4             # distinct pulses the collimated field is found from (core.appliance.field's detector)


_IMPLS = {"compiled": _peak, "reference": peak_ref}


def _kernels(impl: str):
    if impl not in _IMPLS:
        raise ValueError(f"impl must be 'compiled' or 'reference', got {impl!r}")
    return _IMPLS[impl]


def _pixels(frames: np.ndarray) -> np.ndarray:
    """``frames`` as the kernels take them: (n, h, w) native uint8 / uint16 with strides of whole pixels (a
    view of a packed record array is copied)."""
    if not isinstance(frames, np.ndarray) or frames.ndim != 3 or min(frames.shape) < 1:
        raise ValueError(f"frames must be a non-empty (n, h, w) array, got {getattr(frames, 'shape', frames)!r}")
    if frames.dtype not in (np.dtype(np.uint8), np.dtype(np.uint16)):
        raise ValueError(f"pixel type {frames.dtype} is not native uint8 or uint16")
    if any(s % frames.itemsize for s in frames.strides):
        frames = np.ascontiguousarray(frames)
    return frames


def distinct_frames(frames: np.ndarray, impl: str = "compiled") -> np.ndarray:
    """Indices of frames that differ from the frame before them (the first frame always counts).

    On a video line a pulse repeats on consecutive identical frames and last-image-hold repeats the last
    pulse; both carry no new information.
    """
    return _kernels(impl).distinct_frames(_pixels(frames))


def _log_lut(dtype: np.dtype) -> np.ndarray:
    # ln of linear counts; an empty pixel (0) reads as half a count rather than -inf.
    n = 1 << (8 * np.dtype(dtype).itemsize)
    v = np.arange(n, dtype=np.float64)
    v[0] = 0.5
    return np.log(v).astype(np.float32)


def _row_medians(a: np.ndarray) -> np.ndarray:
    """``np.median(a, axis=1)`` of a 2-D float array, bit for bit, five times faster.

    np.median partitions each row at three places (the two middles, and the end for NaN), a slow path of
    np.partition; one partition at the upper middle and the maximum below it find the same two values, and
    np.median of that pair averages them as it would. Rows holding a NaN are NaN, as np.median's are. (Only a
    zero's sign could differ, where a row holds both -0.0 and +0.0; pass 1's rows never do: their values are
    differences, and x - x is +0.0.)
    """
    n = a.shape[1]
    h = n // 2
    p = np.partition(a, h, axis=1)
    mid = p[:, h:h + 1] if n % 2 else np.stack([p[:, :h].max(axis=1), p[:, h]], axis=1)
    out = np.median(mid, axis=1)
    out[np.isnan(a).any(axis=1)] = np.nan
    return out


def _row_percentiles(a: np.ndarray, q: float) -> np.ndarray:
    """``np.percentile(a, q, axis=1)``, bit for bit, twice as fast: np.percentile partitions each row at four
    places, slow; on sorted rows, where it finds the same values at the same places, that costs less than the
    sort (a zero's sign as in ``_row_medians``). ``a`` is overwritten."""
    a.sort(axis=1)
    return np.percentile(a, q, axis=1, overwrite_input=True)


def _level(d: np.ndarray) -> np.ndarray:
    """Per-row location of ``d``: the mean after clipping at median +- 4 robust sd.

    Not the median itself: on 8-bit video the differences are whole display levels, and a median of
    integers is an integer (up to half a level off, the same for every pixel of the frame).
    """
    med = _row_medians(d)[:, None]
    sd = 1.4826 * _row_medians(np.abs(d - med))[:, None]
    sd = np.maximum(sd, 0.5)   # at least half a quantisation step: never clip to a single level
    return np.clip(d, med - 4 * sd, med + 4 * sd).mean(axis=1)


def _overlay(same: np.ndarray, n_probes: int, first: np.ndarray, top: int, kernels) -> np.ndarray:
    """Pixels that carry no opacity: unchanged between (almost) every probed pair of pulses, in a
    neighbourhood of such pixels.

    Quantum noise changes a pixel between pulses; the black surround, saturation and burnt-in text do not,
    and a fluoro-time counter changes once a second: unchanged in most pairs. A heavily filtered display
    can leave a noisy pixel unchanged by chance a few times, never in most pairs in a whole neighbourhood.

    Quiet video (more than QUIET_SHARE of the pixels between black and ``top`` in the ``first`` frame are
    unchanged: an acquisition's dose, a display's temporal filter, a noise-free phantom) leaves the anatomy
    unchanged too, and its opacity, 0 off the vessel, is real: there only black and saturated pixels are
    overlay, and the others unchanged in every probed pair, among such, where most of their neighbourhood
    changes (text over the vessel; a fluoro-time counter is then measured). A noise-free display run lost 89%
    of its pixels and every station before this (96% with every pulse pair probed)."""
    thr = max(1, math.ceil(STATIC_SHARE * n_probes))
    if n_probes < 4 or min(same.shape) < 3:
        return same >= thr
    overlay = np.empty(same.shape, dtype=bool)
    # (top clamped above every uint16 value for the kernel's integer: the same test)
    n_ordinary, n_overlay = kernels.static_overlay(same, thr, first, min(top, 1 << 17), overlay.view(np.uint8))
    if n_ordinary == 0 or n_overlay / n_ordinary <= QUIET_SHARE:
        return overlay
    static = same >= thr
    ordinary = (first > 0) & (first < top)
    r = QUIET_REACH_PX
    changing = np.pad(~static, r, mode="edge").astype(np.float32)
    c = np.pad(changing.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    h, w = static.shape
    around = (c[2 * r + 1:2 * r + 1 + h, 2 * r + 1:2 * r + 1 + w] - c[:h, 2 * r + 1:2 * r + 1 + w]
              - c[2 * r + 1:2 * r + 1 + h, :w] + c[:h, :w]) / float((2 * r + 1) ** 2)
    always = same >= n_probes
    always &= _box3(always[None].astype(np.uint8))[0] >= 4
    return overlay & (~ordinary | (always & (around >= 0.5)))


def peak_opacity(stack: FrameStack, window_s: float = DEFAULT_WINDOW_S, impl: str = "compiled") -> np.ndarray:
    """(H, W) float32 peak opacity of one run; NaN where a pixel never changes (overlay, surround, saturation).

    See ``peak_and_mask``, which also returns the contrast-free mask image.
    """
    return peak_and_mask(stack, window_s, impl)[0]


def peak_and_mask(stack: FrameStack, window_s: float = DEFAULT_WINDOW_S,
                  impl: str = "compiled") -> tuple[np.ndarray, np.ndarray]:
    """(peak opacity, mask): the mask is the contrast-free image the opacity is measured against, in log
    units (NaN like the peak).

    The mask is the mean of the distinct frames before contrast arrives (at least the first frame). Raises
    ValueError when the stack has fewer than two distinct frames (a held image is not a run). ``impl``:
    "compiled" (ext/_peak.pyx) or "reference" (core/analysis/peak_ref.py), the same images bit for bit.
    """
    if not isinstance(stack, FrameStack):
        raise ValueError(f"peak_opacity needs a FrameStack, got {type(stack).__name__}")
    if not (isinstance(window_s, (int, float)) and np.isfinite(window_s) and window_s >= 0):
        raise ValueError(f"window_s must be a finite number >= 0, got {window_s!r}")
    kernels = _kernels(impl)
    frames = _pixels(stack.frames)
    idx = kernels.distinct_frames(frames)
    if idx.size < 2:
        raise ValueError(f"{stack.source}: all {frames.shape[0]} frames are identical (no X-ray pulses to analyse)")
    times = np.asarray(stack.frame_times_s, dtype=float)
    if times.shape[0] != frames.shape[0]:
        times = np.arange(frames.shape[0]) / stack.fps
    dt = np.diff(times[idx])
    pulse_rate = 1.0 / float(np.median(dt)) if np.all(dt > 0) else float(stack.fps)
    k = max(1, int(round(window_s * pulse_rate)))
    k = min(k, idx.size)

    lut = _log_lut(frames.dtype) if stack.intensity == "lin" else None
    h, w = frames.shape[1:]
    step = max(1, int(np.ceil(np.sqrt(h * w / MAX_SAMPLE_PIXELS))))

    # Pass 1, on the subsample: exposure shift per frame, and when contrast arrives (for the mask).
    ref = _to_log(np.ascontiguousarray(frames[idx[0], ::step, ::step]), lut)
    lit = frames[idx[0], ::step, ::step] > 0
    if not lit.any():
        lit = np.ones_like(lit)
    D = np.empty((idx.size, int(lit.sum())), dtype=np.float32)
    for j, i in enumerate(idx):
        D[j] = _to_log(np.ascontiguousarray(frames[i, ::step, ::step]), lut)[lit] - ref[lit]
    # The exposure shift of a frame is the median change of the pixels that hold no contrast. A first
    # median over all of them finds the contrast; pixels that ever hold some (and pixels that never change:
    # overlay) then leave the estimate, or a large vessel would drag the median and bias every opacity.
    first_gain = _row_medians(D)
    o = first_gain[:, None] - D
    span = min(3, idx.size)
    c = np.zeros((o.shape[0] + 1, o.shape[1]), np.float32)
    for j in range(o.shape[0]):
        # np.cumsum down the rows, a row at a time: the same sums, 9x faster than its column-wise walk
        np.add(c[j], o[j], out=c[j + 1])
    held = ((c[span:] - c[:-span]) / span).max(axis=0)
    spread = 1.4826 * float(np.median(np.abs(held - np.median(held))))
    keep = (held <= np.median(held) + 5.0 * spread) & (np.ptp(D, axis=0) > 0)
    gains = _level(D[:, keep]) if keep.sum() >= 64 else first_gain
    # Opacity vs the first frame, exposure removed: its upper quantile rises when the vessel fills.
    signal = _row_percentiles(gains[:, None] - D, SIGNAL_QUANTILE)
    rise = signal - signal.min()
    if rise.max() > 0:
        arrival = int(np.argmax(rise >= MASK_ARRIVAL_FRACTION * rise.max()))
    else:
        arrival = idx.size
    # One frame of margin: the frame just before the threshold already holds a little contrast.
    n_mask = max(1, arrival - 1)

    # Pass 2, full frames, each read once: the mask, the changing pixels, and each block's peak window.
    gains = gains.astype(np.float32)    # already: D is float32
    b = PEAK_BLOCK_PX if min(h, w) >= 4 * PEAK_BLOCK_PX else 1
    hb, wb = h // b, w // b
    # Pairs of consecutive distinct frames spread over the run: how often is a pixel unchanged?
    n_probes = min(STATIC_PROBES, idx.size - 1)
    probe = np.zeros(idx.size, np.uint8)
    probe[np.linspace(1, idx.size - 1, n_probes).astype(int)] = 1
    n_probes = int(probe.sum())
    # The peak time of each block: the window (k distinct pulses) with the least light, i.e. the most
    # iodine. Chosen on the block mean, so a pixel's own noise hardly influences which window it gets:
    # its value there is an unbiased mean, not the maximum of noise. Neighbouring blocks vote too: a pixel
    # is then 1/(3b)^2 of what picks its window, not 1/b^2.
    same = np.empty((h, w), dtype=np.uint8)
    mask = np.empty((h, w), dtype=np.float32)
    end = np.empty((hb, wb), dtype=np.intp)
    kernels.frame_pass(frames, idx, probe, n_mask, gains, lut, b, k, min(hb, wb) >= 3, same, mask, end)
    peak = np.empty((h, w), dtype=np.float32)
    kernels.gather(frames, idx, end, b, k, gains, lut, mask, peak)
    # A pixel that never changes carries no opacity: overlay text, black surround, saturation.
    overlay = _overlay(same, n_probes, frames[idx[0]], (1 << stack.bits_stored) - 1, kernels)
    peak[overlay] = np.nan
    mask[overlay] = np.nan
    return peak, mask


def field_only(stack: FrameStack, *images: np.ndarray) -> list[np.ndarray]:
    """``images`` (the run's peak and mask) NaN outside the collimated field and in the burnt-in text, as the
    live appliance measures them (core.appliance.field masks its runs' images with the field found on the first
    distinct pulses; core.sources.collimator). Behind a linear detector's blades a little scatter arrives with
    its quantum noise and no shadow of the anatomy, so the surround changes from pulse to pulse and is not
    overlay; its opacity is pure noise, and an automatic centreline ran along the field's edge there. Where no
    field is found the images are returned as they are (the whole frame measured, as live)."""
    from core.sources.collimator import detect_field

    frames = stack.frames
    flat = 4 if frames.dtype == np.uint8 else 16          # a blank screen shows no field
    lit = []
    for i in distinct_frames(frames):
        if int(frames[i, ::8, ::8].max()) - int(frames[i, ::8, ::8].min()) > flat:
            lit.append(i)
            if len(lit) == FIELD_PULSES:
                break
    try:
        field = detect_field(np.stack([frames[i] for i in lit])).mask if lit else None
    except ValueError:
        field = None
    if field is None or field.shape != frames.shape[1:]:
        return list(images)
    return [np.where(field, im, np.float32(np.nan)).astype(np.float32, copy=False) for im in images]

