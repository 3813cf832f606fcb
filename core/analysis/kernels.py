"""Frame kernels: the validating public wrapper around ext/_frames.pyx.

Everything that can be wrong with an argument is checked here, once (in ``__init__``, ``set_mask`` and
``set_rois``), so the compiled pass never sees a bad buffer and ``process()`` only checks the frame's
shape and dtype. ``impl="reference"`` runs the same pipeline on the NumPy reference (core/analysis/kernels_ref.py).

There is deliberately no fallback: if ext._frames is not built, importing this module fails.
"""
from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.analysis import kernels_ref
from ext import _frames

MAX_ROIS = 32
INTENSITIES = ("lin", "log")
_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))
_IMPLS = {"compiled": _frames, "reference": kernels_ref}
_INDEX_MAX = np.iinfo(np.int32).max

# The low-level kernels (pure functions over buffers), compiled; kernels_ref holds their twins.
frame_pass = _frames.frame_pass
mask_mean = _frames.mask_mean


@dataclass(frozen=True, slots=True)
class FrameStats:
    mad: float             # mean |frame - prev| over the crop, grey levels (0.0 for the first frame)
    repeat: bool           # frame identical to prev over the crop (pulsed fluoro, last-image-hold)
    roi_means: np.ndarray  # float64 (n_rois,), mean opacity per ROI; NaN while no mask is set
    mean_opacity: float    # mean opacity over the crop; NaN while no mask is set
    clipped: int = 0       # pixels above 2**bits_stored - 1 (bad input, counted, mapped to the top)


def _int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def _rect(rect, name: str) -> tuple[int, int, int, int]:
    try:
        items = tuple(rect)
    except TypeError:
        raise ValueError(f"{name} must be (x, y, w, h), got {rect!r}") from None
    if len(items) != 4:
        raise ValueError(f"{name} must be (x, y, w, h), got {rect!r}")
    x, y, w, h = (_int(v, name) for v in items)
    if w < 1 or h < 1:
        raise ValueError(f"{name} {rect!r} must have a width and height of at least 1")
    return x, y, w, h


def _inside(rect, bounds, name: str, where: str) -> None:
    x, y, w, h = rect
    bx, by, bw, bh = bounds
    if x < bx or y < by or x + w > bx + bw or y + h > by + bh:
        raise ValueError(f"{name} {rect} is not inside the {where} {bounds}")


def _dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"unsupported dtype {dtype!r}: frames are uint8 or uint16") from None
    if dt not in _DTYPES:
        raise ValueError(f"unsupported dtype {dt}: frames are uint8 or uint16 (native byte order)")
    return dt


def _bits(dtype: np.dtype, bits_stored) -> int:
    if dtype == np.uint8:
        if bits_stored not in (None, 8):
            raise ValueError(f"bits_stored must be None or 8 for uint8 frames, got {bits_stored!r}")
        return 8
    if bits_stored is None:
        return 16
    bits = _int(bits_stored, "bits_stored")
    if not 12 <= bits <= 16:
        raise ValueError(f"bits_stored must be 12..16 for uint16 frames, got {bits}")
    return bits


def _positive_float(value, name: str, upper: float = math.inf) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not (math.isfinite(v) and 0.0 < v <= upper):
        raise ValueError(f"{name} must be finite and in (0, {upper}], got {value!r}")
    return v


def _check_impl(impl: str):
    try:
        return _IMPLS[impl]
    except (KeyError, TypeError):
        raise ValueError(f"impl must be one of {sorted(_IMPLS)}, got {impl!r}") from None


def make_tables(dtype, intensity: str, bits_stored: int, log_scale: float):
    """(lut float32, bins uint8, vmax) over every value of ``dtype`` for frame_pass.

    lut[v]: ln(max(v, 1)) for "lin", v * log_scale for "log"; bins[v]: the histogram bin
    min(v >> (bits_stored - 8), 255). Values above vmax = 2**bits_stored - 1 map like vmax.
    """
    dt = _dtype(dtype)
    vmax = (1 << bits_stored) - 1
    v = np.minimum(np.arange(1 << (8 * dt.itemsize), dtype=np.int64), vmax)
    if intensity == "lin":
        lut = np.log(np.maximum(v, 1)).astype(np.float32)
    else:
        lut = v.astype(np.float32) * np.float32(log_scale)
    bins = np.minimum(v >> (bits_stored - 8), 255).astype(np.uint8)
    return lut, bins, vmax


class FrameKernel:
    """Validates once, then runs the fused compiled pass per frame. impl="compiled" (default) or "reference".

    shape, dtype: of every frame given to process(). intensity: "lin" (linear detector counts,
    opacity ln(mask) - ln(frame)) or "log" (display video, opacity (mask - frame) * log_scale).
    crop (x, y, w, h): the collimated field; statistics and maps cover only it. rois: up to 32
    (x, y, w, h) in frame coordinates, inside the crop. peak_alpha: the running peak is taken over the
    smoothed opacity s = alpha * o + (1 - alpha) * s_prev (1.0 = plain per-pixel max).

    Public arrays, overwritten in place (copy what you keep): ``peak`` float32 (crop h, w), -inf before
    any frame; ``peak_index`` int32, -1 before any; ``hist`` int64 (256,) of the last frame;
    ``opacity`` float32 of the last frame (NaN while no mask) or None unless want_opacity.

    One instance per frame stream and thread (it keeps the previous frame); the compiled pass itself
    releases the GIL, so other threads run while a frame is processed.
    """

    def __init__(self, shape, dtype, intensity: str, crop=None, rois: Sequence = (),
                 log_scale: float = 1.0 / 255.0, bits_stored: int | None = None,
                 peak_alpha: float = 1.0, want_opacity: bool = False, impl: str = "compiled"):
        try:
            dims = tuple(shape)
        except TypeError:
            raise ValueError(f"shape must be (height, width), got {shape!r}") from None
        if len(dims) != 2:
            raise ValueError(f"shape must be (height, width), got {shape!r}")
        h, w = (_int(d, "shape") for d in dims)
        if h < 1 or w < 1:
            raise ValueError(f"shape must be at least 1x1, got {shape!r}")
        self.shape = (h, w)
        self.dtype = _dtype(dtype)
        if intensity not in INTENSITIES:
            raise ValueError(f"intensity must be 'lin' or 'log', got {intensity!r}")
        self.intensity = intensity
        self.bits_stored = _bits(self.dtype, bits_stored)
        self.log_scale = _positive_float(log_scale, "log_scale")
        self.peak_alpha = _positive_float(peak_alpha, "peak_alpha", 1.0)
        self.want_opacity = bool(want_opacity)
        self.impl = impl
        self._pass = _check_impl(impl).frame_pass

        if crop is None:
            self.crop = (0, 0, w, h)
        else:
            self.crop = _rect(crop, "crop")
            _inside(self.crop, (0, 0, w, h), "crop", "frame")
        cx, cy, cw, ch = self.crop
        self._ys, self._xs = slice(cy, cy + ch), slice(cx, cx + cw)
        self._npix = cw * ch

        self._lut, self._bins, self._vmax = make_tables(self.dtype, intensity, self.bits_stored,
                                                        self.log_scale)
        self._prev = np.zeros((ch, cw), self.dtype)
        self._has_prev = False
        self.peak = np.empty((ch, cw), np.float32)
        self.peak_index = np.empty((ch, cw), np.int32)
        self._smooth = np.zeros((ch, cw), np.float32) if self.peak_alpha < 1.0 else None
        self.hist = np.zeros(256, np.int64)
        self.opacity = np.full((ch, cw), np.nan, np.float32) if self.want_opacity else None
        self._mask_term = None
        self._last = None  # FrameStats of the last full pass, reused for exact repeats
        self.set_rois(rois)
        self.reset_peak()

    @property
    def has_mask(self) -> bool:
        return self._mask_term is not None

    @property
    def mask_log(self) -> np.ndarray | None:
        """A copy of the mask over the crop in log units (what the opacity is measured against), or None."""
        return None if self._mask_term is None else self._mask_term.copy()

    def set_mask(self, mask: np.ndarray) -> None:
        """Mask (contrast-free reference), float, frame shape or crop shape; resets the peak maps."""
        if not isinstance(mask, np.ndarray) or mask.dtype.kind != "f":
            raise ValueError(f"mask must be a float ndarray, got {getattr(mask, 'dtype', type(mask))}")
        ch, cw = self._prev.shape
        if mask.shape == self.shape:
            mask = mask[self._ys, self._xs]
        elif mask.shape != (ch, cw):
            raise ValueError(f"mask shape {mask.shape} is neither the frame shape {self.shape} "
                             f"nor the crop shape {(ch, cw)}")
        mask = mask.astype(np.float32)
        if not np.isfinite(mask).all():
            raise ValueError("mask contains NaN or infinite values")
        if self.intensity == "lin":
            # Clamped like the frame so ln stays finite on dark or zero pixels.
            term = np.log(np.maximum(mask, np.float32(1.0)))
        else:
            term = mask * np.float32(self.log_scale)
        self._mask_term = np.ascontiguousarray(term, dtype=np.float32)
        self._last = None
        self.reset_peak()

    def clear_mask(self) -> None:
        self._mask_term = None
        self._last = None
        if self.opacity is not None:
            self.opacity.fill(np.nan)
        self.reset_peak()

    def set_rois(self, rois) -> None:
        """Up to 32 rectangles (x, y, w, h) in frame coordinates, each inside the crop."""
        try:
            items = list(rois)
        except TypeError:
            raise ValueError(f"rois must be a sequence of (x, y, w, h), got {rois!r}") from None
        if len(items) > MAX_ROIS:
            raise ValueError(f"at most {MAX_ROIS} ROIs are supported, got {len(items)}")
        rects = []
        for i, roi in enumerate(items):
            rect = _rect(roi, f"roi {i}")
            _inside(rect, self.crop, f"roi {i}", "crop")
            rects.append(rect)
        cx, cy = self.crop[:2]
        arr = np.array([(x - cx, y - cy, x - cx + w, y - cy + h) for x, y, w, h in rects],
                       dtype=np.int32).reshape(-1, 4)
        self.rois = tuple(rects)
        self._rois = arr
        self._roi_areas = np.array([w * h for _, _, w, h in rects], dtype=np.float64)
        self._roi_sums = np.zeros(len(rects), np.float64)
        self._last = None

    def reset_peak(self) -> None:
        """Start a new peak / time-to-peak map (e.g. at the start of a run)."""
        self.peak.fill(-np.inf)
        self.peak_index.fill(-1)
        self._peak_frames = 0

    def process(self, frame: np.ndarray, index: int) -> FrameStats:
        """Run the fused pass on one frame; ``index`` (0 .. 2**31-1) is recorded in peak_index."""
        if not isinstance(frame, np.ndarray) or frame.dtype != self.dtype or frame.shape != self.shape:
            raise ValueError(self._frame_error(frame))
        isz = self.dtype.itemsize
        if frame.strides[0] % isz or frame.strides[1] % isz:
            raise ValueError(f"frame strides {frame.strides} are not multiples of the item size")
        if type(index) is not int:
            index = _int(index, "index")
        if not 0 <= index <= _INDEX_MAX:
            raise ValueError(f"index must be in 0..{_INDEX_MAX}, got {index}")

        last = self._last
        had_prev = self._has_prev
        mad_sum, repeat, total, clipped = self._pass(
            frame[self._ys, self._xs], self._prev, had_prev, self._mask_term, self._lut, self._bins,
            self._vmax, self._rois, self._roi_sums, self.hist, self.peak, self.peak_index,
            self._smooth, self.opacity, index, self.peak_alpha, self._peak_frames == 0,
            last is not None)
        self._has_prev = True
        if repeat and last is not None:
            # The kernel skipped the frame: every output still holds this very frame's results.
            return FrameStats(0.0, True, last.roi_means.copy(), last.mean_opacity, last.clipped)
        if self._mask_term is not None:
            roi_means = self._roi_sums / self._roi_areas
            mean_opacity = total / self._npix
            if not repeat:
                self._peak_frames += 1
        else:
            roi_means = np.full(len(self._roi_areas), np.nan)
            mean_opacity = math.nan
        stats = FrameStats(mad_sum / self._npix, repeat, roi_means, mean_opacity, clipped)
        self._last = stats
        return stats

    def _frame_error(self, frame) -> str:
        if not isinstance(frame, np.ndarray):
            return f"frame must be a numpy ndarray, got {type(frame).__name__}"
        if frame.ndim != 2:
            return f"frame must be 2-D {self.shape}, got ndim={frame.ndim} shape {frame.shape}"
        if frame.dtype != self.dtype:
            return f"frame dtype {frame.dtype} does not match the kernel's {self.dtype}"
        return f"frame shape {frame.shape} does not match the kernel's {self.shape}"


def build_mask(frames: np.ndarray, crop=None, impl: str = "compiled") -> np.ndarray:
    """Mean of N pre-contrast frames (N, H, W) uint8/uint16 -> float32 (H, W), or the crop's (h, w).

    FrameKernel.set_mask accepts either shape.
    """
    kernel = _check_impl(impl).mask_mean
    if not isinstance(frames, np.ndarray) or frames.ndim != 3:
        raise ValueError(f"frames must be a 3-D ndarray (N, H, W), got "
                         f"{getattr(frames, 'shape', type(frames).__name__)}")
    _dtype(frames.dtype)
    if frames.dtype not in _DTYPES:
        raise ValueError(f"unsupported dtype {frames.dtype}")
    n, h, w = frames.shape
    if n < 1 or h < 1 or w < 1:
        raise ValueError(f"frames must hold at least one 1x1 frame, got shape {frames.shape}")
    if any(s % frames.dtype.itemsize for s in frames.strides):
        raise ValueError(f"frames strides {frames.strides} are not multiples of the item size")
    if crop is None:
        x, y, cw, ch = 0, 0, w, h
    else:
        x, y, cw, ch = _rect(crop, "crop")
        _inside((x, y, cw, ch), (0, 0, w, h), "crop", "frame")
    out = np.empty((ch, cw), np.float32)
    kernel(frames[:, y:y + ch, x:x + cw], out)
    return out
