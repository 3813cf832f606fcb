"""Replay a folder of recorded runs (``.npy`` stacks, DICOM multi-frame files) one after another as one stream.

Files play in name order, each at its own frame rate (DICOM Frame Time / Frame Time Vector, or ``fps``),
``speed`` times real time (None: as fast as possible), from the first file again when ``loop`` is set.
Only one file is in memory at a time. Files that ``core.sources.stacks.load_stack`` cannot use, or whose intensity
encoding differs from the first usable file's, are skipped with the reason (``rejected``, and the log).
The folder and its files are named by content hash in messages, logs and ``name``, never by file name (exported
studies are often named after the patient); ``rejected`` stays keyed by file name, for the caller only.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from core.identity import content_label
from core.sources.frames import QUEUE_FRAMES, Frame, FrameSource
from core.sources.stacks import FrameStack, load_stack
from core.vocab import NS

log = logging.getLogger("cathlab.replay")


class DirectorySource(FrameSource):
    def __init__(self, directory: str | Path, fps: float | None = None, intensity: str | None = None, *,
                 speed: float | None = 1.0, loop: bool = False) -> None:
        super().__init__()
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise ValueError("the video folder is not a directory (its name is not repeated: it may carry "
                             "patient identity)")
        if speed is not None and not speed > 0:
            raise ValueError(f"replay speed must be positive, got {speed}")
        self._fps_override, self._intensity_override = fps, intensity
        self._speed, self.loop = speed, loop
        self.files = sorted(p for p in self.directory.iterdir() if p.is_file() and not p.name.startswith("."))
        self.rejected: dict[str, str] = {}
        self.name = content_label(self.directory)
        # The first usable file fixes intensity and geometry for status; it is also the first to play.
        self._pos = 0
        self._stack = self._next_stack()
        if self._stack is None:
            reasons = "; ".join(self.rejected.values()) or "the folder is empty"
            raise ValueError(f"{self.name}: no usable recording ({reasons})")
        self.intensity = self._stack.intensity
        self.fps = self._stack.fps
        self.shape = self._stack.frames.shape[1:]
        self.dtype = self._stack.frames.dtype
        self._frame = 0
        self._index = 0
        self._t0_ns: int | None = None
        self._offset_s = 0.0      # replay seconds before the current file

    def _next_stack(self) -> FrameStack | None:
        """Load the next usable file in order (wrapping when looping); None at the end."""
        tried = 0
        while tried < len(self.files):
            if self._pos >= len(self.files):
                if not self.loop:
                    return None
                self._pos = 0
            path = self.files[self._pos]
            self._pos += 1
            tried += 1
            if path.name in self.rejected:
                continue
            try:
                stack = load_stack(path, self._fps_override, self._intensity_override)
            except ValueError as exc:
                self._reject(path, str(exc))
                continue
            first = getattr(self, "intensity", None)
            if first is not None and stack.intensity != first:
                self._reject(path, f"{stack.source}: intensity {stack.intensity} differs from the stream's {first}")
                continue
            return stack
        return None

    def _reject(self, path: Path, reason: str) -> None:
        self.rejected[path.name] = reason
        log.warning("replay: skipping a file: %s", reason)   # the reason names it by content hash

    def read(self) -> Frame | None:
        while not self._closed.is_set() and self._stack is not None:
            if self._frame >= len(self._stack.frames):
                self._offset_s += self._duration_s(self._stack)
                self._stack = self._next_stack()
                self._frame = 0
                continue
            stack, k, index = self._stack, self._frame, self._index
            self._frame += 1
            self._index += 1
            if self._speed is None:
                return Frame(np.ascontiguousarray(stack.frames[k]), time.monotonic_ns(), index)
            if self._t0_ns is None:
                self._t0_ns = time.monotonic_ns()
            due = self._t0_ns + int((self._offset_s + float(stack.frame_times_s[k])) / self._speed * NS)
            if time.monotonic_ns() - due > QUEUE_FRAMES * NS / (stack.fps * self._speed):
                self.dropped += 1          # further behind than a grabber's queue holds: skip it
                continue
            if not self._wait_until(due):
                return None
            return Frame(np.ascontiguousarray(stack.frames[k]), due, index)
        return None

    @staticmethod
    def _duration_s(stack: FrameStack) -> float:
        # The last frame is shown for one frame period before the next file starts.
        return float(stack.frame_times_s[-1]) + 1.0 / stack.fps
