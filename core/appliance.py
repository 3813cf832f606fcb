"""The appliance: wires the frame source, the injector bridge, the pipeline and the event log; owns the threads.

Data flows one way. The frame thread and the bridge's reader thread write into the appliance's state under one
lock; the API only reads ``status()``. Events go to the event log, whose writer thread keeps disk I/O off the
frame path.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from core.eventlog import EventLog
from core.pipeline import FramePipeline
from core.runs import NS, RunEvent
from core.settings import Settings
from core.sources import FrameSource, PhantomSource, replay
from firmware_bridge.bridge import InjectorBridge

log = logging.getLogger("cathlab.appliance")

# The injector's live values go stale when no SAMPLE came for this long (samples stream at 10-100 Hz).
SAMPLE_STALE_NS = 1 * NS


def open_video(settings: Settings, t0_ns: int) -> FrameSource:
    """The frame source named by ``settings.video``; None means the built-in phantom on the shared timeline."""
    if settings.video is None:
        from core.phantom import PhantomConfig, PhantomVideo

        config = PhantomConfig(size=(settings.phantom_size, settings.phantom_size),
                               intensity=settings.phantom_intensity, fps=settings.video_fps or 30.0)
        return PhantomSource(PhantomVideo(config), t0_ns=t0_ns)
    return replay(Path(settings.video), settings.video_fps, loop=True)


class Appliance:
    def __init__(self, settings: Settings, *, source: FrameSource | None = None) -> None:
        self.settings = settings
        # One origin for both simulators, a moment ahead so neither starts late.
        self.t0_ns = time.monotonic_ns() + NS // 5
        self.log = EventLog(settings.data_dir)
        self.source = source if source is not None else open_video(settings, self.t0_ns)
        self.pipeline = FramePipeline(self.source.intensity)
        url = settings.serial or f"injsim://?scenario=procedure&t0_ns={self.t0_ns}"
        self.bridge = InjectorBridge(url, on_message=self._on_message, on_link=self._on_link,
                                     baudrate=settings.baudrate, silent_s=settings.link_silent_s,
                                     reconnect_min_s=settings.reconnect_min_s,
                                     reconnect_max_s=settings.reconnect_max_s)
        self._lock = threading.Lock()
        self._injector_state: str | None = None
        self._sample: dict | None = None
        self._sample_ns = 0
        self._device_xray: bool | None = None
        self._frame_errors = 0
        self._last_runs: list[dict] = []
        self._stop = threading.Event()
        self._frame_thread = threading.Thread(target=self._frame_loop, name="frames", daemon=True)
        self.started_ns: int | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        self.log.start()
        self.started_ns = time.monotonic_ns()
        self.log.record("appliance_start", {"serial": self._serial_label(), "video": self.source.name})
        self.bridge.start()
        self._frame_thread.start()

    def stop(self, timeout: float = 1.5) -> None:
        """Stop threads and flush the log; bounded so SIGTERM finishes within 2 s."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        self.source.close()
        self._frame_thread.join(max(0.1, deadline - time.monotonic()))
        self.bridge.stop()
        self.log.record("appliance_stop", {"frames": self.pipeline.frames})
        self.log.close(timeout=max(0.2, deadline - time.monotonic()))

    # -- frame thread ----------------------------------------------------------------------------------
    def _frame_loop(self) -> None:
        while not self._stop.is_set():
            frame = self.source.read()
            if frame is None:
                break
            try:
                events = self.pipeline.process(frame)
            except Exception as exc:  # boundary: a bad frame is counted and logged, the stream goes on
                with self._lock:
                    self._frame_errors += 1
                log.warning("frame rejected: %s", exc)
                continue
            for event in events:
                self._on_run_event(event)
        for event in self.pipeline.close(time.monotonic_ns()):
            self._on_run_event(event)

    def _on_run_event(self, event: RunEvent) -> None:
        run = event.run
        if event.kind == "run_start":
            self.log.record("xray_on", {"run": run.index, "source": "image"}, t_mono_ns=event.t_ns)
            return
        summary = {"run": run.index, "start_ns": run.start_ns, "end_ns": run.end_ns,
                   "duration_s": round(run.duration_s(), 3), "frames": run.frames, "pulses": run.pulses,
                   "pulse_rate": None if run.pulse_rate is None else round(run.pulse_rate, 2)}
        self.log.record("xray_off", {"run": run.index, "source": "image"}, t_mono_ns=event.t_ns)
        self.log.record("run_end", summary, t_mono_ns=event.t_ns,
                        key=f"run:{self.started_ns}:{run.index}")
        with self._lock:
            self._last_runs = ([summary] + self._last_runs)[:10]

    # -- bridge callbacks (reader thread) --------------------------------------------------------------
    def _on_message(self, msg, host_ns: int) -> None:
        data = msg.to_dict()
        kind = data["type"]
        if kind == "SAMPLE":
            with self._lock:
                self._sample, self._sample_ns = data, host_ns
            return  # telemetry is summarised per injection, not logged per sample
        if kind == "STATE":
            with self._lock:
                old, self._injector_state = self._injector_state, data["state"]
            if old != data["state"]:
                self.log.record("injector_state", {"from": old, "to": data["state"]}, t_mono_ns=host_ns)
        elif kind == "HEARTBEAT":
            with self._lock:
                self._injector_state = data["state"]
        elif kind == "XRAY":
            with self._lock:
                self._device_xray = data["on"]
            self.log.record("xray_signal", {"on": data["on"]}, t_mono_ns=host_ns)
        elif kind == "SUMMARY":
            key = f"summary:{self._serial_label()}:{data['seq']}:{data['duration_ms']}:{data['delivered_volume_ml']}"
            self.log.record("injection_summary", data, t_mono_ns=host_ns, key=key)
        elif kind == "FAULT":
            self.log.record("injector_fault", data, t_mono_ns=host_ns)
        elif kind == "HELLO":
            self.log.record("injector_hello", data, t_mono_ns=host_ns)

    def _on_link(self, old: str, new: str, reason: str) -> None:
        self.log.record("serial_link", {"from": old, "to": new, "reason": reason})

    def _serial_label(self) -> str:
        device = self.bridge.device if hasattr(self, "bridge") else None
        return device["serial_no"] if device else "unknown"

    # -- read side -------------------------------------------------------------------------------------
    def status(self) -> dict:
        now = time.monotonic_ns()
        with self._lock:
            sample = self._sample if self._sample and now - self._sample_ns < SAMPLE_STALE_NS else None
            injector = {
                "link": self.bridge.link_state,
                "state": self._injector_state,
                "flow_ml_s": sample["flow_ml_s"] if sample else 0.0,
                "volume_ml": sample["volume_ml"] if sample else None,
                "pressure_kpa": sample["pressure_kpa"] if sample else 0.0,
                "device": self.bridge.device,
            }
            run = self.pipeline.current_run(now)
            image_on = run is not None
            xray = {"on": self._device_xray if self._device_xray is not None else image_on,
                    "image_on": image_on, "device_on": self._device_xray,
                    "pulse_rate": run["pulse_rate"] if run else None}
            last_frame = self.pipeline.last_frame_ns
            counters = {
                "frames": self.pipeline.frames,
                "pulses": self.pipeline.pulses,
                "frames_dropped": self.source.dropped,
                "frames_rejected": self.pipeline.rejected,
                "frame_errors": self._frame_errors,
                "last_frame_age_s": None if last_frame is None else (now - last_frame) / NS,
                "serial": self.bridge.counters(),
                "eventlog": self.log.stats(),
            }
            return {
                "injector": injector,
                "xray": xray,
                "run": run,
                "last_runs": list(self._last_runs),
                "procedure": self.log.current_procedure(),
                "counters": counters,
                "alarms": self.alarms(now),
                "uptime_s": (now - self.started_ns) / NS if self.started_ns else 0.0,
            }

    def alarms(self, now_ns: int) -> list[dict]:
        alarms = list(self.log.alarms)
        if self.bridge.link_state != "up":
            alarms.append({"kind": "serial_link", "message": f"injector link {self.bridge.link_state}"})
        last = self.pipeline.last_frame_ns
        if last is None or now_ns - last > NS:
            alarms.append({"kind": "video", "message": "no frames from the video source"})
        return alarms
