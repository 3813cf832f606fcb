"""The per-frame path: frame kernel, then run detection. No threads, no I/O: returns what happened."""
from __future__ import annotations

import numpy as np

from core.kernels import FrameKernel
from core.runs import NS, RunDetector, RunEvent
from core.sources import Frame


class FramePipeline:
    """One instance per frame stream. ``process(frame)`` returns the run events the frame completed."""

    def __init__(self, intensity: str, crop: tuple[int, int, int, int] | None = None) -> None:
        self.intensity = intensity
        self.crop = crop
        self.kernel: FrameKernel | None = None
        self._geometry: tuple | None = None
        self.runs = RunDetector()
        self.frames = 0
        self.pulses = 0
        self.rejected = 0
        self.last_frame_ns: int | None = None
        self.last_stats = None

    def process(self, frame: Frame) -> list[RunEvent]:
        pixels = frame.pixels
        if pixels.ndim != 2 or pixels.dtype not in (np.uint8, np.uint16) or 0 in pixels.shape:
            self.rejected += 1
            raise ValueError(f"frame {frame.index}: expected a 2-D uint8/uint16 image, "
                             f"got {pixels.dtype} {pixels.shape}")
        if self._geometry != (pixels.shape, pixels.dtype):
            self._start_kernel(pixels)
        stats = self.kernel.process(pixels, frame.index)
        self.frames += 1
        self.last_frame_ns = frame.t_ns
        self.last_stats = stats
        new_pulse = self.frames == 1 or not stats.repeat
        if new_pulse:
            self.pulses += 1
        return self.runs.feed(frame.t_ns, frame.index, new_pulse)

    def close(self, t_ns: int) -> list[RunEvent]:
        return self.runs.close(t_ns)

    def _start_kernel(self, pixels: np.ndarray) -> None:
        # A new geometry (grabber mode change) starts afresh: the old mask and peak maps mean nothing now.
        crop = self.crop if self.crop is not None else (0, 0, pixels.shape[1], pixels.shape[0])
        self.kernel = FrameKernel(pixels.shape, pixels.dtype, self.intensity, crop=crop)
        self._geometry = (pixels.shape, pixels.dtype)

    def current_run(self, now_ns: int) -> dict | None:
        run = self.runs.current
        if run is None:
            return None
        return {"index": run.index, "started_s_ago": (now_ns - run.start_ns) / NS,
                "duration_s": run.duration_s(now_ns), "frames": run.frames, "pulses": run.pulses,
                "pulse_rate": run.pulse_rate}
