"""Frame sources: where frames come from, each behind the same small interface.

A source hands out ``Frame`` objects paced like the device that produced them; the pipeline never knows
whether it watches a grabber, a replayed file or the phantom.
"""
from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

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


class _PacedSource(FrameSource):
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


class PhantomSource(_PacedSource):
    """The built-in fluoroscopy simulator: the phantom playing the shared procedure timeline in real time.

    A grabber delivers a frame at no cost to its reader; rendering a 1024x1024 pulse with quantum noise
    takes tens of milliseconds. So frames are rendered ahead, on their own thread, up to ``RENDER_AHEAD``
    frames before they are due, and ``read()`` only waits for the frame's time.
    """

    name = "phantom"
    RENDER_AHEAD = 4

    def __init__(self, video, t0_ns: int | None = None) -> None:
        super().__init__(video.config.fps, t0_ns, speed=1.0)
        self.video = video
        self.intensity = video.config.intensity
        self.shape = video.shape
        self.dtype = video.dtype
        self.xray_on = False   # ground truth of the last frame, for tests and the demo
        self._ready: dict[int, tuple[np.ndarray, bool]] = {}
        self._wanted = 0                       # the index read() waits for: the renderer never falls behind it
        self._rendered = 0                     # the renderer's next index
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._renderer = threading.Thread(target=self._render_ahead, name="phantom", daemon=True)
        self._renderer.start()

    def _render_ahead(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._closed.is_set() and self._rendered - self._wanted >= self.RENDER_AHEAD:
                        self._cond.wait()
                    if self._closed.is_set():
                        return
                    index = self._rendered = max(self._rendered, self._wanted)
                frame = self.video.frame_at(index / self.fps)
                with self._cond:
                    self._ready[index] = frame
                    self._rendered = index + 1
                    self._cond.notify_all()
        except BaseException as exc:  # boundary: the reader re-raises it instead of waiting forever
            with self._cond:
                self._error = exc
                self._cond.notify_all()

    def read(self) -> Frame | None:
        index = self._next_index()
        if index is None:
            return None
        with self._cond:
            self._wanted = index
            for stale in [i for i in self._ready if i < index]:   # frames the reader was too late for
                del self._ready[stale]
            self._cond.notify_all()
            while index not in self._ready:
                if self._error is not None:
                    raise RuntimeError("phantom rendering failed") from self._error
                if self._closed.is_set():
                    return None
                self._cond.wait(0.1)
            pixels, self.xray_on = self._ready.pop(index)
            self._wanted = index + 1
            self._cond.notify_all()
        return Frame(pixels, self._frame_time_ns(index), index)

    def close(self) -> None:
        super().close()
        with self._cond:
            self._cond.notify_all()


class ArraySource(_PacedSource):
    """Replays a (T, H, W) stack, paced at ``speed`` x real time (None: as fast as possible)."""

    def __init__(self, frames: np.ndarray, fps: float, intensity: str, *, speed: float | None = 1.0,
                 loop: bool = False, name: str = "array") -> None:
        if frames.ndim != 3 or frames.shape[0] < 1:
            raise ValueError(f"expected a (T, H, W) frame stack, got shape {frames.shape}")
        if frames.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"expected uint8 or uint16 frames, got {frames.dtype}")
        if intensity not in ("lin", "log"):
            raise ValueError(f"intensity must be 'lin' or 'log', got {intensity!r}")
        if (problem := shape_problem(frames.shape[1:])) is not None:
            raise ValueError(problem)
        super().__init__(fps, None, speed)
        self.frames = frames
        self.intensity = intensity
        self.shape = frames.shape[1:]
        self.dtype = frames.dtype
        self.loop = loop
        self.name = name

    def read(self) -> Frame | None:
        index = self._next_index()
        if index is None:
            return None
        count = len(self.frames)
        if index >= count and not self.loop:
            return None
        return Frame(self.frames[index % count], self._frame_time_ns(index), index)


def replay(path: str | Path, fps: float | None = None, intensity: str | None = None, **kwargs) -> ArraySource:
    """A recorded run (``.npy`` or DICOM, see ``core.sources.stacks``) as a paced source."""
    from core.sources.stacks import load_stack

    stack = load_stack(path, fps, intensity)
    return ArraySource(stack.frames, stack.fps, stack.intensity, name=stack.source, **kwargs)
