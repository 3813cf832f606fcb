"""The live phantom: ``PhantomVideo`` renders the shared procedure timeline on demand, and ``PhantomSource``
plays it in real time as a frame source, rendering ahead on its own thread like a grabber's buffer queue.
"""
from __future__ import annotations

import math
import threading
from dataclasses import replace

import numpy as np

from core.sources.frames import Frame, PacedSource
from core.sources.phantom.config import PhantomConfig, check_positive, is_number
from core.sources.phantom.render import Renderer, abc_exposure, bolus_truth
from core.sources.phantom.scene import Scene, TdcModel
from core.sources.phantom.truth import BolusTruth, SceneTruth, TimingTruth
from firmware_bridge.scenarios import PROCEDURE, PROCEDURE_PERIOD_S, ScriptedRun


class PhantomVideo:
    """The live appliance's video source: the scripted procedure, rendered pulse by pulse on demand. A run with a
    DSA program (``ScriptedRun.frame_rates``) exposes at its rates, each exposure held until the next.

    Pulses are seeded by (seed, cycle, run, pulse), so a frame depends only on its time, never on the
    order of calls. Repeated frames and last-image-hold return the cached pulse (read-only array).
    """

    def __init__(self, config: PhantomConfig, timeline: tuple[ScriptedRun, ...] = PROCEDURE,
                 period_s: float = PROCEDURE_PERIOD_S,
                 shifts: tuple[tuple[float, float], ...] | None = None) -> None:
        check_positive(period_s=period_s)
        runs = tuple(timeline)
        if not runs:
            raise ValueError("timeline has no runs")
        prev_off = 0.0
        for r in runs:
            if not (0 <= r.xray_on_s < r.xray_off_s <= period_s) or r.xray_on_s < prev_off:
                raise ValueError(f"timeline runs must be ordered, non-overlapping and within the period: {r}")
            if not 0.0 <= r.thrombus_fraction <= 1.0:
                raise ValueError(f"run thrombus_fraction must be in [0, 1]: {r}")
            prev_off = r.xray_off_s
        if shifts is None:
            shifts = (config.shift_px,) * len(runs)
        if len(shifts) != len(runs):
            raise ValueError(f"shifts needs one (dx, dy) per run ({len(runs)}), got {len(shifts)}")
        for sh in shifts:
            replace(config, shift_px=tuple(sh))   # validates the range
        # A run's DSA program: its exposure times from X-ray on (validated like an offline acquisition's).
        self._offsets = [None if not r.frame_rates else np.asarray(
            replace(config, frame_rates=tuple(r.frame_rates), xray_s=r.xray_off_s - r.xray_on_s).pulse_offsets_s())
            for r in runs]
        self.config = config
        self.timeline = runs
        self.period_s = float(period_s)
        self.shifts = tuple((float(a), float(b)) for a, b in shifts)
        self.shape = config.size
        self._renderer = Renderer(config)
        self.dtype = np.dtype(self._renderer.dtype)
        # Every scene is built up front, so the first pulse of a run costs no more than any other.
        self._scenes: dict[tuple, Scene] = {}
        for i in range(len(runs)):
            self._scene(i)
        self._cache_key: tuple | None = None
        self._cache: np.ndarray | None = None
        self._blank = self._renderer.blank()
        self._blank.flags.writeable = False

    def _scene(self, i: int) -> Scene:
        key = (self.shifts[i], self.timeline[i].thrombus_fraction)
        if key not in self._scenes:
            self._scenes[key] = Scene(self.config, key[0], key[1])
        return self._scenes[key]

    def _n_pulses(self, i: int) -> int:
        if self._offsets[i] is not None:
            return len(self._offsets[i])
        # pulses at xray_on + k / rate strictly before xray_off
        run = self.timeline[i]
        return max(1, math.ceil((run.xray_off_s - run.xray_on_s) * self.config.pulse_rate - 1e-9))

    def _pulse_index(self, i: int, since_on_s: float) -> int:
        """The pulse of run i on screen ``since_on_s`` after its X-ray on: the latest not after it."""
        if self._offsets[i] is not None:
            return max(0, int(np.searchsorted(self._offsets[i], since_on_s + 1e-9, side="right")) - 1)
        return min(int(math.floor(since_on_s * self.config.pulse_rate + 1e-9)), self._n_pulses(i) - 1)

    def _pulse_time(self, i: int, k: int) -> float:
        run = self.timeline[i]
        if self._offsets[i] is not None:
            return run.xray_on_s + float(self._offsets[i][k])
        return run.xray_on_s + k / self.config.pulse_rate

    def bolus(self, i: int) -> BolusTruth:
        """Bolus truth of run i, times in seconds from the cycle origin."""
        run = self.timeline[i]
        return bolus_truth(self.config, run.inject_start_s, run.volume_ml, run.xray_on_s)

    def scene_truth(self, i: int) -> SceneTruth:
        """Geometry and burden truth of run i (its shift and thrombus fraction)."""
        return self._scene(self._index(i)).truth

    def timing_truth(self, i: int, roi: tuple[int, int, int, int]) -> TimingTruth:
        """Truth TDC timing of run i for ``roi`` (x, y, w, h), seconds from the run's first pulse."""
        i = self._index(i)
        run = self.timeline[i]
        return TdcModel(self._scene(i), self.bolus(i), run.xray_on_s, run.xray_off_s,
                         self.config.mu_iodine).timing(roi)

    def _index(self, i: int) -> int:
        if not 0 <= i < len(self.timeline):
            raise ValueError(f"run index {i} outside 0..{len(self.timeline) - 1}")
        return i

    def _locate(self, t_s: float) -> tuple[int, int | None, float]:
        cycle, local = divmod(t_s, self.period_s)
        for i, run in enumerate(self.timeline):
            if run.xray_on_s <= local < run.xray_off_s:
                return int(cycle), i, local
        return int(cycle), None, local

    def _fluoro_seconds(self, cycle: int, local: float) -> int:
        per_cycle = sum(r.xray_off_s - r.xray_on_s for r in self.timeline)
        done = sum(min(max(local - r.xray_on_s, 0.0), r.xray_off_s - r.xray_on_s) for r in self.timeline)
        return int(cycle * per_cycle + done + 1e-9)

    def frame_at(self, t_s: float) -> tuple[np.ndarray, bool]:
        """(frame, xray_on) at ``t_s`` seconds from the timeline origin (repeating every period)."""
        if not (is_number(t_s) and math.isfinite(t_s) and t_s >= 0):
            raise ValueError(f"t_s must be a finite time >= 0, got {t_s!r}")
        cycle, i, local = self._locate(float(t_s))
        if i is not None:
            k = self._pulse_index(i, local - self.timeline[i].xray_on_s)
            frame, on = self._pulse(cycle, i, k), True
        else:
            # Last-image-hold of the most recent run, this cycle or the previous one; dark before any run.
            prev = [j for j, r in enumerate(self.timeline) if r.xray_off_s <= local]
            if prev:
                j, c = prev[-1], cycle
            elif cycle > 0:
                j, c = len(self.timeline) - 1, cycle - 1
            else:
                return self._blank, False
            frame, on = self._pulse(c, j, self._n_pulses(j) - 1), False
        ov = self._renderer.overlay
        if ov is not None and ov.counter_box is not None:
            frame = frame.copy()
            ov.draw_counter(frame, self._fluoro_seconds(cycle, local))
            frame.flags.writeable = False
        return frame, on

    def _pulse(self, cycle: int, i: int, k: int) -> np.ndarray:
        key = (cycle, i, k)
        if key != self._cache_key:
            rng = np.random.default_rng([self.config.seed, cycle, i, k])
            frame = self._renderer.pulse(self._scene(i), self.bolus(i), self._pulse_time(i, k),
                                         float(abc_exposure(self.config, k)), rng)
            frame.flags.writeable = False
            self._cache_key, self._cache = key, frame
        return self._cache


class PhantomSource(PacedSource):
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
