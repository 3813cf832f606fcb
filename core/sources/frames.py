"""Frame sources: where frames come from, each behind the same small interface.

A source hands out ``Frame`` objects paced like the device that produced them; the pipeline never knows
whether it watches a grabber, a replayed file or the phantom. Here: the frame and the interface, the one rule
for what a frame may be, and the pacing shared by replays and the phantom; the sources themselves live beside
what they read (replay.py, folder.py, v4l2.py, phantom/video.py).
"""
from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from core.vocab import NS

# Frames a paced source holds for a consumer that stalls briefly (run-end analysis), like a V4L2 driver's
# buffer queue; late frames keep their capture times, so the pipeline catches up without losing any.
QUEUE_FRAMES = 8
# Fluoroscopy is at least hundreds of pixels on a side; a frame this small is a wrong input (a 1x1 noise
# stack would otherwise be timed as an X-ray run), not a picture we can measure.
MIN_FRAME_SIDE = 16


def frame_problem(pixels) -> str | None:
    """Why ``pixels`` cannot be a fluoroscopy frame, or None when it can: 2-D, uint8/uint16, each side at
    least ``MIN_FRAME_SIDE``. One rule for files, replays and live sources."""
    if not isinstance(pixels, np.ndarray) or pixels.ndim != 2:
        return f"expected a 2-D image, got {getattr(pixels, 'shape', type(pixels).__name__)}"
    if pixels.dtype not in (np.uint8, np.uint16):
        return f"pixel type {pixels.dtype} is not uint8 or uint16"
    return shape_problem(pixels.shape)


def shape_problem(shape) -> str | None:
    """Why frames of ``shape`` (rows, columns) are not fluoroscopy, or None."""
    rows, cols = shape
    if min(rows, cols) < MIN_FRAME_SIDE:
        return (f"{cols}x{rows} pixel frames are not fluoroscopy (need at least {MIN_FRAME_SIDE} pixels "
                f"on a side)")
    return None


@dataclass(slots=True)
class Frame:
    pixels: np.ndarray   # (H, W) uint8 or uint16
    t_ns: int            # monotonic capture time
    index: int           # frame counter of the source (gaps mean dropped frames)


class FrameSource(ABC):
    """Base: ``read()`` blocks until the next frame is due and returns it, or None at the end of the stream."""

    fps: float
    intensity: str       # "lin" | "log"
    shape: tuple[int, int]
    dtype: np.dtype
    name: str = "source"

    def __init__(self) -> None:
        self.dropped = 0
        self._closed = threading.Event()

    @abstractmethod
    def read(self) -> Frame | None: ...

    def close(self) -> None:
        self._closed.set()

    def _wait_until(self, due_ns: int) -> bool:
        """Sleep until ``due_ns``; False when the source was closed meanwhile."""
        delay = (due_ns - time.monotonic_ns()) / NS
        if delay > 0:
            return not self._closed.wait(delay)
        return not self._closed.is_set()


class PacedSource(FrameSource):
    """Frames on a fixed video line from an origin; a consumer that falls behind loses frames, like a grabber."""

    def __init__(self, fps: float, t0_ns: int | None, speed: float | None) -> None:
        super().__init__()
        if fps <= 0:
            raise ValueError(f"frame rate must be positive, got {fps}")
        if speed is not None and speed <= 0:
            raise ValueError(f"replay speed must be positive, got {speed}")
        self.fps = float(fps)
        self._speed = speed                      # None: as fast as possible
        self._t0_ns = t0_ns                      # None: the first read starts the stream
        self._next = 0
        self._reading = False

    def _next_index(self) -> int | None:
        """Index of the frame to deliver now (waiting for it when paced), or None once closed."""
        index = self._next
        if self._t0_ns is None:
            self._t0_ns = time.monotonic_ns()
        if self._speed is not None:
            period_ns = NS / (self.fps * self._speed)
            due = self._t0_ns + int(index * period_ns)
            late = time.monotonic_ns() - due
            if late > QUEUE_FRAMES * period_ns:  # fell further behind than a grabber's queue holds
                skipped = int(late // period_ns)
                # A live stream joined late starts at its current frame: only frames missed while
                # reading are lost.
                if self._reading:
                    self.dropped += skipped
                index += skipped
                due = self._t0_ns + int(index * period_ns)
            if not self._wait_until(due):
                return None
        elif self._closed.is_set():
            return None
        self._reading = True
        self._next = index + 1
        return index

    def _frame_time_ns(self, index: int) -> int:
        if self._speed is None:
            return time.monotonic_ns()
        return self._t0_ns + int(index * NS / (self.fps * self._speed))
