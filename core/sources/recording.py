"""A recorded procedure read back (the files ``core.store.recorder.ProcedureRecorder`` writes): its contrast
runs (``load_runs``), its serial bytes (``read_serial``) and the recorded pulses as a frame source
(``RecordingSource``), with the repeats of each pulse rebuilt so the pipeline sees the video line it saw live.
"""
from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.sources.frames import Frame, FrameSource
from core.vocab import NS

SERIAL_MAGIC = b"CLSER\x001\n"
SERIAL_RECORD = struct.Struct("<qI")   # arrival t_ns, length; then the bytes
HOLD_S = 1.0                          # last-image-hold replayed after each run: longer than any end-of-run gap
MAX_HOLD_S = 10.0                     # repeats rebuilt between two pulses at most (a gap in the index is a drop)


@dataclass
class RecordedRun:
    meta: dict
    frames: np.ndarray         # (P, H, W), memory-mapped

    @property
    def pulses(self) -> Iterator[Frame]:
        for pixels, t_ns, index in zip(self.frames, self.meta["pulse_t_ns"], self.meta["pulse_index"]):
            yield Frame(pixels, int(t_ns), int(index))

    def video_line(self, hold_s: float = HOLD_S, until_ns: int | None = None) -> Iterator[Frame]:
        """The video as the pipeline saw it live: each pulse, then its repeats at the frame rate up to the next
        pulse's frame index, and last-image-hold for ``hold_s`` after the run (stopping before ``until_ns``).

        Only pulses are stored; the repeats carry no information but are what tells the run detector that
        X-ray stopped, so a replay without them would merge consecutive runs.
        """
        period = NS / float(self.meta["fps"])
        times, indices = self.meta["pulse_t_ns"], self.meta["pulse_index"]
        cap = int(MAX_HOLD_S * float(self.meta["fps"]))
        for k, pixels in enumerate(self.frames):
            t_k, i_k = int(times[k]), int(indices[k])
            yield Frame(pixels, t_k, i_k)
            if k + 1 < len(times):
                repeats = min(int(indices[k + 1]) - i_k - 1, cap)
            else:
                repeats = int(round(hold_s * float(self.meta["fps"])))
            for r in range(1, repeats + 1):
                t = t_k + int(round(r * period))
                if until_ns is not None and t >= until_ns:
                    break
                yield Frame(pixels, t, i_k + r)


@dataclass
class SerialRecording:
    records: list[tuple[int, bytes]] = field(default_factory=list)   # (arrival t_ns, bytes)
    truncated: int = 0                                               # files whose last record was cut short


def load_runs(directory: Path | str) -> list[RecordedRun]:
    """Every recorded run, oldest first. A run whose files disagree raises ValueError naming the file."""
    runs = []
    for npy in sorted(Path(directory).glob("run-*.npy")):
        sidecar = npy.with_suffix(".json")
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{sidecar}: unreadable sidecar ({exc})") from None
        frames = np.load(npy, mmap_mode="r")
        times, indices = meta.get("pulse_t_ns", []), meta.get("pulse_index", [])
        if frames.ndim != 3 or not len(frames) == len(times) == len(indices):
            raise ValueError(f"{npy}: {frames.shape} frames but {len(times)} pulse times, {len(indices)} indices")
        runs.append(RecordedRun(meta, frames))
    return runs


def read_serial(directory: Path | str) -> SerialRecording:
    """All serial chunks of a recording, in order."""
    rec = SerialRecording()
    for path in sorted(Path(directory).glob("serial-*.bin")):
        data = path.read_bytes()
        if not data.startswith(SERIAL_MAGIC):
            raise ValueError(f"{path}: not a cathlab-edge serial recording (bad magic)")
        pos = len(SERIAL_MAGIC)
        while pos < len(data):
            if pos + SERIAL_RECORD.size > len(data):
                rec.truncated += 1
                break
            t_ns, length = SERIAL_RECORD.unpack_from(data, pos)
            pos += SERIAL_RECORD.size
            if pos + length > len(data):
                rec.truncated += 1
                break
            rec.records.append((t_ns, data[pos:pos + length]))
            pos += length
    return rec


class RecordingSource(FrameSource):
    """The recorded pulses of a procedure, run after run, as a frame source.

    ``speed=None`` hands them out at once with their recorded times (replay for tests, same results);
    a number paces them at that multiple of real time, on the current monotonic clock.
    """

    name = "recording"

    def __init__(self, directory: Path | str, speed: float | None = None) -> None:
        super().__init__()
        if speed is not None and speed <= 0:
            raise ValueError(f"replay speed must be positive, got {speed}")
        self.runs = load_runs(directory)
        if not self.runs:
            raise ValueError(f"{directory}: no recorded runs")
        first = self.runs[0]
        self.intensity = first.meta["intensity"]
        self.fps = float(first.meta["fps"])
        self.shape = tuple(first.frames.shape[1:])
        self.dtype = first.frames.dtype
        self._speed = speed
        self._iter = video_line(self.runs)
        self._origin: tuple[int, int] | None = None

    def read(self) -> Frame | None:
        frame = next(self._iter, None)
        if frame is None or self._closed.is_set():
            return None
        if self._speed is None:
            return Frame(np.asarray(frame.pixels), frame.t_ns, frame.index)
        if self._origin is None:
            self._origin = (frame.t_ns, time.monotonic_ns())
        rec0, now0 = self._origin
        due = now0 + int((frame.t_ns - rec0) / self._speed)
        if not self._wait_until(due):
            return None
        return Frame(np.asarray(frame.pixels), due, frame.index)


def video_line(runs: list[RecordedRun]) -> Iterator[Frame]:
    """The video lines of the runs one after the other, each hold cut short where the next run starts."""
    for n, run in enumerate(runs):
        until = int(runs[n + 1].meta["pulse_t_ns"][0]) if n + 1 < len(runs) and runs[n + 1].meta["pulse_t_ns"] \
            else None
        yield from run.video_line(until_ns=until)
