"""The frame thread: it alone drives the pipeline, so the pipeline needs no locks.

Other threads (the bridge's reader, the API) hand the pipeline work through ``post``: the inbox is drained
between frames (without video, every ``NO_VIDEO_PERIOD_S``). What readers see of the pipeline is published into
``FrameViews`` under the appliance's lock.
"""
from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable

from core.analysis.pipeline import FramePipeline
from core.analysis.runs import RunEvent
from core.appliance.books import Clock
from core.appliance.field import FieldWatch
from core.appliance.status import FrameViews
from core.sources.frames import FrameSource
from core.store.recorder import ProcedureRecorder
from core.vocab import NS

log = logging.getLogger("cathlab.appliance")

SNAPSHOT_PERIOD_NS = NS // 10     # the current run's view for the API, refreshed at most 10 times a second
NO_VIDEO_PERIOD_S = 0.05          # without video, the injector's side inputs are applied this often


class FrameLoop:
    def __init__(self, source: FrameSource | None, pipeline: FramePipeline, lock: threading.Lock,
                 views: FrameViews, stop: threading.Event, clock: Clock, *, field: FieldWatch,
                 recorder: ProcedureRecorder | None, on_run_event: Callable[[RunEvent], None]) -> None:
        """``source`` None: no video by configuration (the injector's side inputs are still applied)."""
        self._source, self._pipeline, self._lock, self._views = source, pipeline, lock, views
        self._stop, self._clock = stop, clock
        self._field, self._recorder, self._on_run_event = field, recorder, on_run_event
        self._inbox: collections.deque[Callable[[], None]] = collections.deque()
        loop = self._frames if source is not None else self._no_video
        self._thread = threading.Thread(target=loop, name="frames", daemon=True)

    def post(self, task: Callable[[], None]) -> None:
        """Run ``task`` on the frame thread, between frames (deque.append: safe from any thread)."""
        self._inbox.append(task)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _frames(self) -> None:
        while not self._stop.is_set():
            frame = self._source.read()
            if frame is None:
                break
            self._drain_inbox()
            try:
                events = self._pipeline.process(frame)
            except Exception as exc:  # boundary: a bad frame is counted and logged, the stream goes on
                with self._lock:
                    self._views.frame_errors += 1
                log.warning("frame rejected: %s", exc)
                continue
            new_pulse = not self._pipeline.last_stats.repeat
            if self._recorder is not None:
                self._recorder.frame(frame, new_pulse)
            for event in events:
                self._on_run_event(event)
            if new_pulse:
                self._field.add(frame.pixels)
            if events or frame.t_ns - self._views.run_ns >= SNAPSHOT_PERIOD_NS:
                self._publish_run_view(frame.t_ns)
        for event in self._pipeline.close(self._clock()):
            self._on_run_event(event)

    def _no_video(self) -> None:
        # Nothing drives the pipeline: its side inputs (the injector's XRAY, injections, ROIs) are applied
        # here, so the X-ray state stays the injector's word and the inbox stays bounded.
        while not self._stop.wait(NO_VIDEO_PERIOD_S):
            self._drain_inbox()
            device_on = self._pipeline.xray_state()["device_on"]
            view = {"on": bool(device_on), "source": None if device_on is None else "device",
                    "image_on": None, "device_on": device_on}
            with self._lock:
                self._views.xray = view   # no pipeline alarms: nothing to disagree with, no frames to miss

    def _drain_inbox(self) -> None:
        while self._inbox:
            task = self._inbox.popleft()
            try:
                task()
            except Exception:  # boundary: a bad request from the API or the device must not stop the frames
                log.exception("pipeline update failed")

    def _publish_run_view(self, now_ns: int) -> None:
        # The pipeline belongs to the frame thread; the API reads these copies.
        view = self._pipeline.current_run(now_ns)
        xray = self._pipeline.xray_state()
        alarms = self._pipeline.alarms(now_ns)
        with self._lock:
            self._views.run, self._views.run_ns = view, now_ns
            self._views.xray, self._views.pipeline_alarms = xray, alarms
