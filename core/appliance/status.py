"""The appliance's read side: the status snapshot, its counters and alarms, and the flat metrics.

It only reads: the frame thread publishes its views into ``FrameViews`` and the reader thread updates the
injector's condition and the run books, all under the appliance's lock, which the status takes too.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from core.analysis.pipeline import FramePipeline
from core.appliance.books import Clock, RunBook
from core.appliance.clearance import LiveClearance
from core.appliance.injector import InjectorCondition
from core.appliance.storage import StorageWatch
from core.sources.frames import FrameSource
from core.store.eventlog import EventLog
from core.store.procedures import Procedures
from core.vocab import NS, VIDEO_NONE
from firmware_bridge.bridge import InjectorBridge

FRAME_STALL_NS = 1 * NS           # no frame for this long: the video source is stalled


@dataclass
class FrameViews:
    """What the frame thread publishes for readers (under the appliance's lock)."""
    run: dict | None = None            # the current run, as the API shows it
    run_ns: int = 0                    # when ``run`` was taken
    xray: dict = field(default_factory=lambda: {"on": False, "pulse_rate": None})
    pipeline_alarms: list[dict] = field(default_factory=list)
    frame_errors: int = 0


class StatusReader:
    def __init__(self, lock: threading.Lock, clock: Clock, *, views: FrameViews, pipeline: FramePipeline,
                 source: FrameSource | None, bridge: InjectorBridge, log: EventLog, procs: Procedures,
                 injector: InjectorCondition, runs: RunBook, clearance: LiveClearance, storage: StorageWatch) -> None:
        self._lock = lock
        self._clock = clock
        self._views = views
        self._pipeline = pipeline
        self._source = source
        self._bridge = bridge
        self._log = log
        self._procs = procs
        self._injector = injector
        self._runs = runs
        self._clearance = clearance
        self._storage = storage

    def video_name(self) -> str:
        return VIDEO_NONE if self._source is None else self._source.name

    def status(self, started_ns: int | None) -> dict:
        now = self._clock()
        clearance = self._clearance.headline()
        with self._lock:
            injector = {
                "link": self._bridge.link_state,
                "state": self._injector.state,
                **self._injector.live(now),
                "device": self._bridge.device,
                "fault": self._injector.active_fault(),
            }
            run = self._views.run
            xray = dict(self._views.xray, pulse_rate=run["pulse_rate"] if run else None)
            procedure = self._procs.current()
            if procedure is not None:
                procedure = dict(procedure, totals=self._runs.totals.to_dict())
            return {
                "injector": injector,
                "video": {"enabled": self._source is not None, "source": self.video_name()},
                "xray": xray,
                "run": run,
                "last_runs": self._runs.last_runs(),
                "procedure": procedure,
                "clearance": clearance,
                "counters": self._counters(now),
                "alarms": self._alarms(now),
                "uptime_s": (now - started_ns) / NS if started_ns else 0.0,
            }

    def fleet_summary(self, started_ns: int | None) -> dict:
        """What the fleet's status message tells beyond the link itself (the publisher's thread, every 10 s)."""
        status = self.status(started_ns)
        return {"last_frame_age_s": status["counters"]["last_frame_age_s"], "video": status["video"],
                "links": {"injector": status["injector"]["link"], "eventlog_writable":
                          status["counters"]["eventlog"]["writable"]}, "alarms": len(status["alarms"])}

    def _counters(self, now_ns: int) -> dict:
        last_frame = self._pipeline.last_frame_ns
        return {
            "frames": self._pipeline.frames,
            "pulses": self._pipeline.pulses,
            "frames_dropped": self._source.dropped if self._source is not None else 0,
            "frames_rejected": self._pipeline.rejected,
            "frame_errors": self._views.frame_errors,
            "runs": self._runs.runs_total,
            "contrast_runs": self._runs.contrast_runs_total,
            "last_frame_age_s": None if last_frame is None else (now_ns - last_frame) / NS,
            "serial": self._bridge.counters(),
            "eventlog": self._log.stats(),
            "run_images": self._clearance.disk_stats(),
        }

    def _alarms(self, now_ns: int) -> list[dict]:
        alarms = list(self._log.alarms)
        if self._bridge.link_state != "up":
            alarms.append({"kind": "serial_link", "message": f"injector link {self._bridge.link_state}"})
        alarms += self._injector.alarms()
        if self._source is not None:   # without video by design there are no frames to miss
            grabber_alarm = getattr(self._source, "alarm", None)
            if grabber_alarm:
                alarms.append({"kind": "video", "message": grabber_alarm})
            last = self._pipeline.last_frame_ns
            if last is None or now_ns - last > FRAME_STALL_NS:
                alarms.append({"kind": "video", "message": "no frames from the video source"})
        alarms += self._views.pipeline_alarms
        alarms += self._runs.totals.alarms()
        alarms += self._storage.alarms()
        return alarms

    def metrics(self) -> dict[str, float]:
        """Flat numeric counters for Prometheus."""
        status_counters = self._counters(self._clock())
        serial = status_counters.pop("serial")
        eventlog = status_counters.pop("eventlog")
        run_images = status_counters.pop("run_images")
        flat: dict[str, float] = {k: v for k, v in status_counters.items() if isinstance(v, (int, float))}
        for name, value in serial.items():
            if isinstance(value, dict):
                for sub, count in value.items():
                    flat[f"serial_{name}_{sub}".lower()] = count
            elif isinstance(value, (int, float)):
                flat[f"serial_{name}"] = value
        flat.update({f"eventlog_{k}": v for k, v in eventlog.items() if isinstance(v, (int, float))})
        flat.update({f"run_images_{k}": v for k, v in run_images.items() if isinstance(v, (int, float))})
        return flat
