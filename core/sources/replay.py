"""Replaying one recorded run: a (T, H, W) frame stack, or a ``.npy`` / DICOM file loaded by
``core.sources.stacks.load_stack``, as a paced frame source.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from core.sources.frames import Frame, PacedSource, shape_problem
from core.sources.stacks import load_stack


class ArraySource(PacedSource):
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
    stack = load_stack(path, fps, intensity)
    return ArraySource(stack.frames, stack.fps, stack.intensity, name=stack.source, **kwargs)
