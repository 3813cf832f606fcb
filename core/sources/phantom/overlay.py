"""Burnt-in text of a display video: glyph-like boxes in the corners, fitted to the black surround of the
collimated field, and optionally a fluoro-time counter (MM:SS) that changes once a second.
"""
from __future__ import annotations

import numpy as np

from core.sources.phantom.config import PhantomConfig
from core.sources.phantom.scene import collimator_circle

_DIGITS = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001001001001",
    "8": "111101111101111", "9": "111101111001111", ":": "000010000010000",
}


def _box_outside_circle(box, circle) -> bool:
    x, y, w, h = box
    cx, cy, r = circle
    # nearest point of the (pixel-centre) box to the circle centre
    nx = min(max(cx, x), x + w - 1)
    ny = min(max(cy, y), y + h - 1)
    return (nx - cx) ** 2 + (ny - cy) ** 2 > r * r


class Overlay:
    """Burnt-in text: glyph-like blocks in the corners, and optionally a fluoro-time counter (MM:SS)."""
    LEVEL = 230

    def __init__(self, cfg: PhantomConfig) -> None:
        h, w = cfg.size
        g = max(1, min(h, w) // 256)              # glyph pixel size
        self.g = g
        rng = np.random.default_rng(12345)        # fixed: the same overlay on every run
        cx, cy, r = collimator_circle(cfg.size)
        boxes, patches = [], []
        self.counter_box = None
        # Corner boxes: (lines, characters); the bottom-left one is the fluoro-time counter when enabled.
        for corner, (lines, chars) in enumerate([(2, 9), (2, 7), (1, 5 if cfg.counter else 8), (1, 6)]):
            is_counter = cfg.counter and corner == 2
            box = self._fit(corner, lines, chars, g, h, w, (cx, cy, r) if cfg.collimator else None, is_counter)
            if box is None:
                continue
            (x, y, bw, bh), lines, chars = box
            if is_counter:
                self.counter_box = (x, y, bw, bh)
                continue
            patch = np.zeros((bh, bw), dtype=np.uint8)
            for li in range(lines):
                for ci in range(chars):
                    glyph = rng.random((5, 3)) < 0.55
                    blk = np.kron(glyph, np.ones((g, g), dtype=bool))
                    yy, xx = 2 * g + li * 7 * g, g + ci * 4 * g
                    patch[yy:yy + 5 * g, xx:xx + 3 * g][blk] = self.LEVEL
            boxes.append((x, y, bw, bh))
            patches.append(patch)
        self.boxes = tuple(boxes)
        self.patches = patches

    @staticmethod
    def _fit(corner, lines, chars, g, h, w, circle, fixed):
        """Shrink a corner box until it clears the collimated field (real overlays sit on the black surround)."""
        while True:
            bh, bw = lines * 7 * g + 2 * g, chars * 4 * g + 2 * g
            y0 = 2 * g if corner < 2 else h - 2 * g - bh
            x0 = 2 * g if corner % 2 == 0 else w - 2 * g - bw
            box = (x0, y0, bw, bh)
            if circle is None or _box_outside_circle(box, circle):
                return box, lines, chars
            if not fixed and chars > 3:
                chars -= 1
            elif not fixed and lines > 1:
                lines, chars = lines - 1, chars
            else:
                # The counter stays even where it cannot clear the field; plain glyph boxes are dropped.
                return (box, lines, chars) if fixed else None

    @property
    def all_boxes(self) -> tuple[tuple[int, int, int, int], ...]:
        """Every (x, y, w, h) box, the counter's included."""
        return self.boxes + ((self.counter_box,) if self.counter_box else ())

    def draw(self, frame: np.ndarray, seconds: int | None = None) -> None:
        for (x, y, w, h), patch in zip(self.boxes, self.patches):
            frame[y:y + h, x:x + w] = patch
        if self.counter_box is not None and seconds is not None:
            self.draw_counter(frame, seconds)

    def draw_counter(self, frame: np.ndarray, seconds: int) -> None:
        x, y, w, h = self.counter_box
        g = self.g
        frame[y:y + h, x:x + w] = 0
        text = f"{(seconds // 60) % 100:02d}:{seconds % 60:02d}"
        for ci, ch in enumerate(text):
            glyph = np.array([c == "1" for c in _DIGITS[ch]]).reshape(5, 3)
            blk = np.kron(glyph, np.ones((g, g), dtype=bool))
            yy, xx = y + 2 * g, x + g + ci * 4 * g
            frame[yy:yy + 5 * g, xx:xx + 3 * g][blk] = self.LEVEL
