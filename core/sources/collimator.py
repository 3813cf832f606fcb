"""Find the collimated image field and the burnt-in text in display video, from a few frames. Pure NumPy.

What a C-arm's video output looks like: the X-ray field (round image intensifier or a rectangular flat-panel
field, possibly narrowed by collimator blades) surrounded by black, with patient-free text (fluoro time, dose,
frame counters) burnt into the corners, sometimes over the image. Nothing outside the field and nothing under
the text may enter a measurement, so the result is a crop rectangle (the field's bounding box, for the frame
kernel) and a boolean mask (True = measure this pixel).

How:
- bright = mean level above a quarter of the way from the black surround (1st percentile) to the field (90th);
- glyph strokes are thin, the field is large: an opening (erode, dilate) by a box of ~2% of the frame removes
  the text and keeps the field, which is then the largest connected bright region, its dark holes (contrast,
  dense bone) filled;
- its boundary, less the frame border, is fitted with a circle (algebraic least squares); a region that fills
  its bounding box is a rectangle; anything else (shutters, wedges) is kept as the region itself;
- text is what is bright outside the field, plus blocks inside it that never change while the X-ray noise
  around them does (only when the frames differ; last-image-hold frames cannot tell text from anatomy).
A configured crop overrides the field; detected text inside it is still excluded.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Sequence

import numpy as np

MAX_FRAMES = 8            # enough distinct pulses to see noise; more only costs memory at 1024x1024
OPEN_FRACTION = 0.02      # opening box half-size, as a fraction of the smaller frame side
MARGIN_FRACTION = 0.01    # the field edge (penumbra of the collimator) is excluded this deep
RECT_FILL = 0.97          # a region filling this much of its bounding box is rectangular
CIRCLE_RMS_PX = 2.0       # a circle fits when boundary residuals are within this (plus 1% of r)
MIN_FIELD_FRACTION = 0.05 # a field smaller than this fraction of the frame is not believed


@dataclass(frozen=True)
class FieldGeometry:
    shape: str                                   # "circle" | "rect" | "region" | "configured"
    crop: tuple[int, int, int, int]              # (x, y, w, h): bounding box of the measured pixels
    mask: np.ndarray                             # bool (H, W): True where measurements may look
    circle: tuple[float, float, float] | None    # (cx, cy, r) of a round field
    text_boxes: tuple[tuple[int, int, int, int], ...]   # (x, y, w, h) of burnt-in text, anywhere

    @property
    def crop_mask(self) -> np.ndarray:
        """The mask cut to ``crop`` (what a kernel working on the crop wants)."""
        x, y, w, h = self.crop
        return self.mask[y:y + h, x:x + w]


def detect_field(frames: Sequence[np.ndarray] | np.ndarray,
                 crop: tuple[int, int, int, int] | None = None) -> FieldGeometry:
    """Field and text from a few frames (T, H, W) uint8/uint16; ``crop`` (x, y, w, h) overrides the field.

    Raises ValueError for unusable input, including frames with no visible field (X-ray never on).
    """
    stack = _validate(frames)
    h, w = stack.shape[1:]
    distinct = _distinct(stack)
    mean = distinct.mean(axis=0, dtype=np.float32)
    lo, hi = np.percentile(mean, [1, 90])
    if hi - lo <= (4 if stack.dtype == np.uint8 else 16):
        raise ValueError("no collimated field visible: the frames are uniform (is X-ray on?)")
    bright = mean > lo + 0.25 * (hi - lo)
    k = max(1, int(round(OPEN_FRACTION * min(h, w))))
    opened = _dilate(_erode(bright, k), k)
    field = _largest_component_filled(opened)
    if field.sum() < MIN_FIELD_FRACTION * h * w:
        raise ValueError(f"no collimated field found: the largest bright region covers only "
                         f"{field.mean():.1%} of the frame")
    text = _text_mask(bright, field, distinct, mean, lo, hi)
    text_boxes = _boxes(text)
    margin = max(2, int(round(MARGIN_FRACTION * min(h, w))))
    if crop is not None:
        x, y, cw, ch = _check_crop(crop, (h, w))
        inside = np.zeros((h, w), dtype=bool)
        inside[y:y + ch, x:x + cw] = True
        return _result("configured", inside & ~text, None, text_boxes)
    x0, y0, x1, y1 = _bbox(field)
    fill = field[y0:y1, x0:x1].mean()
    if fill >= RECT_FILL:
        inside = np.zeros((h, w), dtype=bool)
        inside[y0 + margin:y1 - margin, x0 + margin:x1 - margin] = True
        return _result("rect", inside & ~text, None, text_boxes)
    circle = _fit_circle(field)
    if circle is not None:
        cx, cy, r = circle
        yy, xx = np.ogrid[:h, :w]
        inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= (r - margin) ** 2
        return _result("circle", inside & ~text, circle, text_boxes)
    return _result("region", _erode(field, margin) & ~text, None, text_boxes)


class FieldDetector:
    """Collects distinct frames from a live stream and detects the field once it has enough of them."""

    def __init__(self, frames_needed: int = 4, crop: tuple[int, int, int, int] | None = None) -> None:
        if not 1 <= frames_needed <= MAX_FRAMES:
            raise ValueError(f"frames_needed must be 1..{MAX_FRAMES}, got {frames_needed}")
        self.frames_needed = frames_needed
        self.crop = crop
        self._frames: list[np.ndarray] = []
        self.geometry: FieldGeometry | None = None

    def feed(self, pixels: np.ndarray) -> FieldGeometry | None:
        """The geometry once found (then always the same), else None. Repeated frames are not counted."""
        if self.geometry is None and self.add(pixels):
            self.detect()
        return self.geometry

    def add(self, pixels: np.ndarray) -> bool:
        """Cheap (frame thread): keep a distinct, non-blank frame; True once ``detect()`` is worth calling.

        The live appliance calls ``detect()`` (about a second at 1024x1024) on a worker thread and does not
        ``add`` meanwhile.
        """
        if self.geometry is not None:
            return False
        if self._frames and (self._frames[-1].shape != pixels.shape or self._frames[-1].dtype != pixels.dtype):
            self._frames.clear()                  # the grabber changed mode: start over
        if self._frames and np.array_equal(self._frames[-1], pixels):
            return False
        sample = pixels[::8, ::8]
        if int(sample.max()) - int(sample.min()) <= (4 if pixels.dtype == np.uint8 else 16):
            return False                          # a blank screen (X-ray never on yet) shows no field
        self._frames.append(pixels.copy())
        return len(self._frames) >= self.frames_needed

    def detect(self) -> FieldGeometry | None:
        try:
            self.geometry = detect_field(np.stack(self._frames), crop=self.crop)
        except ValueError:
            self._frames.pop(0)                   # not yet (black screen, text only): keep sliding
            return None
        self._frames.clear()
        return self.geometry


# -- steps -----------------------------------------------------------------------------------------------
def _validate(frames) -> np.ndarray:
    stack = np.asarray(frames) if not isinstance(frames, np.ndarray) else frames
    if stack.ndim == 2:
        stack = stack[None]
    if stack.ndim != 3 or stack.shape[0] < 1 or min(stack.shape[1:]) < 16:
        raise ValueError(f"expected (T, H, W) frames of at least 16x16, got shape {stack.shape}")
    if stack.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected uint8 or uint16 frames, got {stack.dtype}")
    return stack[:MAX_FRAMES]


def _distinct(stack: np.ndarray) -> np.ndarray:
    """Drop frames identical to the one before (pulsed fluoro shows each pulse on several frames)."""
    keep = [0] + [i for i in range(1, len(stack)) if not np.array_equal(stack[i], stack[i - 1])]
    return stack[keep]


def _check_crop(crop, shape) -> tuple[int, int, int, int]:
    h, w = shape
    if len(crop) != 4 or not all(isinstance(v, (int, np.integer)) for v in crop):
        raise ValueError(f"crop must be four integers (x, y, w, h), got {crop!r}")
    x, y, cw, ch = (int(v) for v in crop)
    if x < 0 or y < 0 or cw <= 0 or ch <= 0 or x + cw > w or y + ch > h:
        raise ValueError(f"crop {crop} does not fit inside the {w}x{h} frame")
    return x, y, cw, ch


def _box_count(mask: np.ndarray, k: int) -> np.ndarray:
    """Number of True pixels in the (2k+1)^2 box around each pixel (outside the frame counts as False)."""
    p = np.pad(mask.astype(np.int32), ((k + 1, k), (k + 1, k)))
    ii = p.cumsum(0).cumsum(1)
    n = 2 * k + 1
    return ii[n:, n:] - ii[:-n, n:] - ii[n:, :-n] + ii[:-n, :-n]


def _erode(mask: np.ndarray, k: int) -> np.ndarray:
    return _box_count(mask, k) == (2 * k + 1) ** 2


def _dilate(mask: np.ndarray, k: int) -> np.ndarray:
    return _box_count(mask, k) > 0


def _cells(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """A coarse any-of grid (at most ~256 cells a side) so component search stays cheap in Python."""
    h, w = mask.shape
    c = max(1, -(-max(h, w) // 256))
    ph, pw = -(-h // c) * c, -(-w // c) * c
    padded = np.zeros((ph, pw), dtype=bool)
    padded[:h, :w] = mask
    return padded.reshape(ph // c, c, pw // c, c).any(axis=(1, 3)), c


def _components(grid: np.ndarray) -> list[list[tuple[int, int]]]:
    """4-connected components of a small boolean grid."""
    seen = np.zeros_like(grid)
    comps = []
    gh, gw = grid.shape
    for start in zip(*np.nonzero(grid)):
        if seen[start]:
            continue
        seen[start] = True
        queue, comp = collections.deque([start]), []
        while queue:
            y, x = queue.popleft()
            comp.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < gh and 0 <= nx < gw and grid[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        comps.append(comp)
    return comps


def _largest_component_filled(mask: np.ndarray) -> np.ndarray:
    """The largest bright region at full resolution, its dark holes (and notches) filled."""
    grid, c = _cells(mask)
    comps = _components(grid)
    if not comps:
        return np.zeros_like(mask)
    keep = np.zeros_like(grid)
    keep[tuple(np.array(max(comps, key=len)).T)] = True
    h, w = mask.shape
    return _fill_spans(mask & np.kron(keep, np.ones((c, c), dtype=bool))[:h, :w])


def _fill_spans(region: np.ndarray) -> np.ndarray:
    """Fill every row and every column between its first and last region pixel.

    Collimated fields are convex, so this fills what contrast or bone darkened inside them and nothing outside.
    """
    def rows(r: np.ndarray) -> np.ndarray:
        any_ = r.any(axis=1)
        first = np.argmax(r, axis=1)
        last = r.shape[1] - 1 - np.argmax(r[:, ::-1], axis=1)
        idx = np.arange(r.shape[1])
        return any_[:, None] & (idx[None, :] >= first[:, None]) & (idx[None, :] <= last[:, None])

    return rows(region) | rows(region.T).T


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys = np.nonzero(mask.any(axis=1))[0]
    xs = np.nonzero(mask.any(axis=0))[0]
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


def _fit_circle(field: np.ndarray) -> tuple[float, float, float] | None:
    """Least-squares circle through the field's boundary (frame-border pixels left out), or None if it is not one."""
    h, w = field.shape
    edge = field & ~_erode(field, 1)
    edge[[0, -1], :] = False
    edge[:, [0, -1]] = False
    ys, xs = np.nonzero(edge)
    if len(xs) < 20:
        return None
    if len(xs) > 4000:
        pick = np.linspace(0, len(xs) - 1, 4000).astype(int)
        ys, xs = ys[pick], xs[pick]
    x, y = xs.astype(float), ys.astype(float)
    # x^2 + y^2 + D x + E y + F = 0 (Kasa): linear in D, E, F.
    a = np.column_stack([x, y, np.ones_like(x)])
    (d, e, f), *_ = np.linalg.lstsq(a, -(x * x + y * y), rcond=None)
    cx, cy = -d / 2, -e / 2
    r2 = cx * cx + cy * cy - f
    if r2 <= 0:
        return None
    r = float(np.sqrt(r2))
    rms = float(np.sqrt(np.mean((np.hypot(x - cx, y - cy) - r) ** 2)))
    if rms > CIRCLE_RMS_PX + 0.01 * r:
        return None
    # Boundary pixels sit half a pixel inside the true edge.
    return float(cx), float(cy), r + 0.5


def _text_mask(bright, field, distinct, mean, lo, hi) -> np.ndarray:
    h, w = bright.shape
    g = max(1, min(h, w) // 256)
    # Outside the field: anything bright is overlay.
    text = bright & ~_dilate(field, 2)
    if len(distinct) >= 3:
        # Inside: blocks that never change while the image around them is noisy, and have strong contrast.
        span = distinct.max(axis=0).astype(np.int32) - distinct.min(axis=0)
        still = (span == 0) & field
        noisy = np.median(span[field]) > 0
        if noisy:
            k = 2 * g
            candidate = (_box_count(still, k) > 0.6 * (2 * k + 1) ** 2) & field
            if candidate.any():
                local_range = _dilate_max(mean, k) + _dilate_max(-mean, k)
                text |= candidate & (local_range > 0.3 * (hi - lo))
    return _dilate(text, g) if text.any() else text


def _dilate_max(values: np.ndarray, k: int) -> np.ndarray:
    """Max filter over a (2k+1)^2 box (separable, by shifted maxima)."""
    out = values.copy()
    for axis in (0, 1):
        src = out.copy()
        for s in range(1, k + 1):
            np.maximum(out, np.roll(src, s, axis=axis), out=out)
            np.maximum(out, np.roll(src, -s, axis=axis), out=out)
    return out


def _boxes(text: np.ndarray) -> tuple[tuple[int, int, int, int], ...]:
    if not text.any():
        return ()
    grid, c = _cells(text)
    h, w = text.shape
    boxes = []
    for comp in _components(grid):
        ys, xs = np.array(comp).T
        x0, y0 = xs.min() * c, ys.min() * c
        x1, y1 = min(w, (xs.max() + 1) * c), min(h, (ys.max() + 1) * c)
        sub = text[y0:y1, x0:x1]
        bx0, by0, bx1, by1 = _bbox(sub)
        boxes.append((int(x0 + bx0), int(y0 + by0), int(bx1 - bx0), int(by1 - by0)))
    return tuple(sorted(boxes))


def _result(shape, mask, circle, text_boxes) -> FieldGeometry:
    if not mask.any():
        raise ValueError("the measured field is empty after excluding the surround and text")
    x0, y0, x1, y1 = _bbox(mask)
    return FieldGeometry(shape, (x0, y0, x1 - x0, y1 - y0), mask, circle, text_boxes)
