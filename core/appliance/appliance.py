"""The appliance: wires the frame source, the injector bridge, the pipeline, the analyses and the event log,
and owns their threads.

Data flows one way. The frame thread alone drives the pipeline (frame_loop); the bridge's reader thread and the
API hand it work through an inbox it drains between frames, so the pipeline needs no locks. Slow analyses (the
timing fits of an ended run, clearance, field detection) run in order on one worker thread, and the event log's
writer thread keeps disk I/O off the frame path. The API reads snapshots published under one lock and calls the
write methods below; it never computes state itself. The parts it wires have their own modules here: the frame
loop, the books, the dispatcher, the injector's events and condition, the live clearance and vessel sizing, the
collimated field, storage housekeeping and the read side (status).
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from core.analysis.display_gain import trusted_gain
from core.analysis.kernels import MAX_ROIS
from core.analysis.pipeline import FramePipeline
from core.analysis.runs import RunEvent
from core.appliance.books import Clock, InjectionBook, RunBook, hand_injection, monotonic_at, procedure_totals
from core.appliance.clearance import LiveClearance
from core.appliance.device_events import DeviceEvents
from core.appliance.dispatch import Dispatcher
from core.appliance.field import FieldWatch
from core.appliance.frame_loop import FrameLoop
from core.appliance.injector import InjectorCondition
from core.appliance.sizing import LiveSizing
from core.appliance.status import FrameViews, StatusReader
from core.appliance.storage import StorageWatch
from core.appliance.worker import AnalysisWorker
from core.fleet.link import FleetLink
from core.ops.settings import Settings
from core.ops.watchdog import ProgressCheck, Watchdog
from core.sources.frames import FrameSource
from core.sources.open import open_video
from core.store.eventlog import EventLog
from core.store.procedures import Procedures
from core.store.recorder import ProcedureRecorder
from core.store.run_images import RunImages
from core.store.space import SpaceMonitor, available_bytes
from core.vocab import NS, RUN_LABELS, check_roi
from firmware_bridge.bridge import InjectorBridge

log = logging.getLogger("cathlab.appliance")

SPACE_CHECK_S = 5.0               # free space and the recorder's state are looked at this often


class Appliance:
    def __init__(self, settings: Settings, *, source: FrameSource | None = None,
                 free_bytes: Callable[[Path], int] = available_bytes, space_check_s: float = SPACE_CHECK_S,
                 clock: Clock = time.monotonic_ns, worker: AnalysisWorker | None = None) -> None:
        """``free_bytes`` reads the space left on the data directory's filesystem, ``clock`` the host monotonic
        ns every time stamp comes from, ``worker`` runs the analyses in order (all injectable for tests)."""
        self.settings = settings
        self.data_dir = Path(settings.data_dir)
        self.session = uuid.uuid4().hex[:8]      # run ids stay unique across restarts
        self.clock = clock
        # One origin for both simulators, a moment ahead so neither starts late.
        self.t0_ns = clock() + NS // 5
        self.log = EventLog(self.data_dir, max_age_days=settings.event_retention_days,
                            max_bytes=int(settings.event_retention_mb * 2**20))
        self.procs = Procedures(self.log)   # before log.start(): an open procedure is resumed
        self.fleet = FleetLink(settings, self.log, lambda: self._status.fleet_summary(self.started_ns))   # off unless fleet_broker is set
        # None: no video by configuration; the injector alone is watched (no runs, no X-ray from images).
        self.source = source if source is not None else open_video(settings, self.t0_ns, self._on_grabber)
        intensity = self.source.intensity if self.source is not None else "log"
        self.pipeline = FramePipeline(intensity, crop=settings.video_crop, defer_finish=True)
        self._ln_mask = intensity == "lin"      # the masks are ln of linear counts (catheter calibration's model)
        self.recorder = None
        if settings.record:
            self.recorder = ProcedureRecorder(self.data_dir / "recordings",
                                              int(settings.record_retention_mb * 2**20),
                                              keep_raw=settings.record_raw)
        self._storage = StorageWatch(SpaceMonitor(self.data_dir, settings.min_free_mb * 2**20, free_bytes),
                                     self.log, self.recorder, settings.min_free_mb)
        self._space_check_s = space_check_s
        self._housekeeper = threading.Thread(target=self._housekeeping, name="housekeeping", daemon=True)
        self._lock = threading.Lock()
        self._injector = InjectorCondition()     # state, live values and fault alarm, under self._lock
        self._device = DeviceEvents(self._lock, self._injector, self.log)   # the reader thread's
        # The injector simulator plays the phantom's timeline (its X-ray signal and the injector's injections).
        url = settings.serial or f"injsim://?scenario={settings.phantom_timeline}&t0_ns={self.t0_ns}"
        self.bridge = InjectorBridge(url, on_message=self._on_message, on_link=self._on_link,
                                     on_bytes=self.recorder.serial if self.recorder else None,
                                     baudrate=settings.baudrate, silent_s=settings.link_silent_s,
                                     reconnect_min_s=settings.reconnect_min_s,
                                     reconnect_max_s=settings.reconnect_max_s,
                                     on_violation=self._device.on_violation)
        # Run-end analyses and the tracker's updates in order; pictures for readers only when those are done.
        self._worker = worker if worker is not None else AnalysisWorker("analysis")
        self._field = FieldWatch(settings.video_crop, self._worker, self.log, self.recorder)
        # The open procedure's run images, blanked, on disk: clearance's baseline outlives a restart.
        self.run_images = RunImages(self.data_dir / "run_images", low_space=lambda: self._storage.space.alarm
                                    is not None)
        self.clearance = LiveClearance(self._worker, self.log, self.procs, settings.grade_thresholds,
                                       images=self.run_images, blank=self._field.blanked)
        self.sizing = LiveSizing(self._worker, self.log)
        # Injections and run records (under self._lock); the dispatcher is the reader thread's.
        self._injections = InjectionBook()
        self._runs = RunBook(clock, concentration_mg_ml=settings.contrast_concentration_mg_ml)
        self._dispatcher = Dispatcher(self._injections, lambda task: self._frames.post(lambda: task(self.pipeline)),
                                      lambda: self.bridge.device)
        self._views = FrameViews()               # the frame thread's, published under self._lock
        self._status = StatusReader(self._lock, clock, views=self._views, pipeline=self.pipeline,
                                    source=self.source, bridge=self.bridge, log=self.log, procs=self.procs,
                                    injector=self._injector, runs=self._runs, clearance=self.clearance,
                                    storage=self._storage)
        self._stop = threading.Event()
        self._frames = FrameLoop(self.source, self.pipeline, self._lock, self._views, self._stop, clock,
                                 field=self._field, recorder=self.recorder, on_run_event=self._on_run_event)
        # systemd's watchdog is petted only while frames and telemetry really progress (telemetry alone
        # without video: a box without video by design must not be restarted for it).
        self._progress = ProgressCheck(self.status, video=self.source is not None)
        self.watchdog = Watchdog(self._progress, status=self._progress.status_text)
        self.started_ns: int | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        self.log.start()
        self.started_ns = self.clock()
        self._resume_procedure()
        self.sizing.resume()        # the log's: sizing results outlive the process that measured them
        # The tracker from the kept images, the labels and centrelines in the log; sizing gets the images too.
        self.clearance.resume(on_restored=lambda run_id, peak, mask: self.sizing.add_run(run_id, peak, mask, None,
                                                                                self._ln_mask))
        self.log.record("appliance_start", {"session": self.session, "video": self._status.video_name(),
                                            "serial": self.settings.serial or "simulator"})
        self._storage.check()   # before the first frame: a recording must not start on a nearly full disk
        self._housekeeper.start()
        self.fleet.start()
        self.bridge.start()
        self._frames.start()
        self.watchdog.start()
        self.watchdog.ready()

    def stop(self, timeout: float = 1.5) -> None:
        """Stop threads and flush the log; bounded so SIGTERM finishes within 2 s."""
        deadline = time.monotonic() + timeout
        self.watchdog.stopping()
        self.watchdog.stop()
        self._stop.set()
        if self.source is not None:
            self.source.close()
        self._frames.join(max(0.1, deadline - time.monotonic()))
        self.bridge.stop()
        # Ended runs still being analysed are finished and logged; what queued after them may be dropped.
        try:
            self._worker.submit(lambda: None).result(timeout=max(0.1, deadline - 0.3 - time.monotonic()))
        except Exception:  # boundary: a timeout or a worker already shut down; the log still closes
            log.warning("stopping with analyses still running")
        self._worker.shutdown(wait=False, cancel_futures=True)
        if self.recorder is not None:
            self.recorder.close(timeout=max(0.1, deadline - time.monotonic()))
        self.log.record("appliance_stop", {"session": self.session, "frames": self.pipeline.frames})
        self.fleet.stop(timeout=max(0.1, min(0.5, deadline - time.monotonic())))
        self.log.close(timeout=max(0.2, deadline - time.monotonic()))

    # -- housekeeping thread: storage checks, off the frame path -------------------------------------------
    def _housekeeping(self) -> None:
        while not self._stop.wait(self._space_check_s):
            try:
                self._storage.check()
            except Exception:  # boundary: a probe bug must not end the checks for good
                log.exception("storage check failed")

    def _resume_procedure(self) -> None:
        """An open procedure survives a restart: rebuild its totals from what it recorded."""
        proc = self.procs.current()
        if proc is None:
            return
        self._runs.resume(proc.get("fields", {}), self.log.latest_runs(proc["id"], limit=10_000),
                          self.log.injections(proc["id"], limit=10_000))

    def _on_grabber(self, kind: str, data: dict) -> None:
        self.log.record(kind, data)

    def _on_run_event(self, event: RunEvent) -> None:
        run = event.run
        run_id = f"{self.session}-{run.index}"
        if event.kind == "run_start":
            self._ensure_procedure()
            self.log.record("xray_on", {"run_id": run_id}, t_mono_ns=event.t_ns)
            if self.recorder is not None:
                self.recorder.run_started(run_id, event.t_ns, self.source.fps, self.source.intensity)
            return
        self.log.record("xray_off", {"run_id": run_id}, t_mono_ns=event.t_ns)
        keep_recording = self.recorder.end_run(run_id, run.end_ns) if self.recorder is not None else None
        with self._lock:
            self._runs.ended(run_id)
            if self._views.run is not None and self._views.run["index"] == run.index:
                self._views.run = None
        try:
            self._worker.submit(self._finish_run, event, run_id, keep_recording)
        except RuntimeError:  # the worker already stopped (a slow shutdown): finish here, lose nothing
            self._finish_run(event, run_id, keep_recording)

    # -- analysis worker -------------------------------------------------------------------------------
    def _finish_run(self, event: RunEvent, run_id: str, keep_recording) -> None:
        run = event.run
        with self._lock:
            self._injections.complete(run)   # a SUMMARY that came since the run ended, before the analysis
        if event.finish is not None:
            try:
                event.finish()
            except Exception:  # boundary: an analysis bug must not lose the run; it is logged as detected
                log.exception("run %s: analysis failed", run_id)
        peak = self._field.masked(run.peak_opacity) if run.contrast and run.peak_opacity is not None else None
        if peak is not None:
            self.clearance.keep_image(run_id, peak)
        with self._lock:
            # Under the lock with label_run: a label given while the run was analysed is in this record.
            write = self._runs.recorded(run_id, run.summary(), self._open_procedure_id())
            self.log.record_run(write.record, key=write.key, procedure_id=write.procedure_id)
        if keep_recording is not None:
            keep_recording(bool(run.contrast), write.record)
        gain_pulses, run.gain_pulses = run.gain_pulses, None
        if peak is not None:
            mask = self._field.masked(run.mask_log) if run.mask_log is not None else None
            self.clearance.measure(run_id, peak, write.record["label"], mask)
            # Display video's LUT gain, for a catheter calibration on this run: after the record (0.2-0.5 s);
            # logged, so a run restored after a restart is calibrated with it too.
            gain = None
            if gain_pulses is not None:
                gain, reason = trusted_gain(gain_pulses, f"run {run_id}")
                self.log.record("display_gain", {"run_id": run_id, "display_gain": gain, "reason": reason or None})
            self.sizing.add_run(run_id, peak, mask, write.record["label"], self._ln_mask, gain)

    def _late_injection(self, injection: dict) -> None:
        """An injection SUMMARY (or a hand entry) that came after the run it overlapped was recorded: the run
        is recorded again with its figures. A run still queued for the worker when it came took it before
        its analysis; one being analysed then is recorded before this task runs (one worker, in order)."""
        with self._lock:
            for write in self._runs.take_injection(injection, self._open_procedure_id()):
                self.log.record_run(write.record, key=write.key, procedure_id=write.procedure_id)
                log.info("run %s completed by a late %s injection (%s ml)", write.run_id,
                         write.record["injection_source"], write.record["delivered_volume_ml"])

    def _open_procedure_id(self) -> str | None:
        procedure = self.procs.current()
        return None if procedure is None else procedure["id"]

    def _ensure_procedure(self) -> None:
        # Headless and unattended: every run belongs to a procedure, opened automatically if nobody did.
        if self.settings.auto_procedure and self.procs.current() is None:
            self.start_procedure("auto")

    # -- bridge callbacks (reader thread) --------------------------------------------------------------
    def _on_message(self, msg, host_ns: int) -> None:
        doubted = self._device.doubted(msg)
        dispatched = self._dispatcher.dispatch(msg, host_ns, doubted)   # the pipeline's part
        self._device.on_message(msg.TYPE, dispatched.data, host_ns, doubted)
        if dispatched.injection_started:
            self._injection_started(host_ns)
        if dispatched.injection is not None:
            self._injection_finished(dispatched.injection)

    def _injection_started(self, host_ns: int) -> None:
        if self.source is None:   # no X-ray runs to open one: the injection belongs to a procedure
            try:
                self._ensure_procedure()
            except ValueError:    # the operator opened one in the same instant: the injection is in it
                pass
        self.log.record("injection_start", {}, t_mono_ns=host_ns)

    def _injection_finished(self, injection: dict) -> None:
        self.log.record_injection(dict(injection["summary"], start_ns=injection["start_ns"],
                                       stop_ns=injection["stop_ns"]), key=injection["key"])
        with self._lock:
            counted = self._runs.count_injection(injection)   # a resent SUMMARY is not matched twice
            if counted:
                self._injections.remember(injection)
        if counted:
            # The run it overlapped may have ended and been recorded already: the worker looks, after the
            # analyses queued before it.
            self._worker.submit(self._late_injection, injection)

    def _on_link(self, old: str, new: str, reason: str) -> None:
        with self._lock:
            self._injector.on_link(new)
        self._dispatcher.link_changed(new, self.clock())
        self.log.record("serial_link", {"from": old, "to": new, "reason": reason})

    # -- writes (from the API) -------------------------------------------------------------------------
    # An API write is acknowledged only once durable: check_writable() before it (refuse while the log is
    # failing, nothing changed), confirm_written() after it (wait for the COMMIT). Never on the frame thread.
    def check_writable(self) -> None:
        self.log.check_writable()

    def confirm_written(self, timeout: float = 2.0) -> None:
        self.log.commit(timeout)

    def start_procedure(self, label: str | None = None) -> dict:
        proc = self.procs.start(label)
        with self._lock:
            self._runs.new_procedure()
        self.clearance.new_procedure()
        self.sizing.new_procedure()
        return proc

    def end_procedure(self) -> dict | None:
        ended = self.procs.end()
        self.clearance.procedure_ended()
        return ended

    def label_run(self, run_id: str, label: str) -> None:
        """Label a recorded run, or the current one (applied when it ends). The label is recorded in the
        run's own procedure, even when a later one is open now."""
        if label not in RUN_LABELS:
            raise ValueError(f"label must be one of {', '.join(RUN_LABELS)}")   # the refused text is not echoed
        committed = self.log.run(run_id)
        with self._lock:
            current = self._views.run
            is_current = current is not None and f"{self.session}-{current['index']}" == run_id
            pid, write = self._runs.label(run_id, label, committed=committed, current=is_current,
                                          open_procedure_id=self._open_procedure_id())
            self.log.record("run_label", {"run_id": run_id, "label": label}, procedure_id=pid)
            if write is not None:
                # The newest record of a run is the one that counts (EventLog.run), so a relabel is durable.
                # Written under the lock, so no other re-record of this run can slip in between.
                self.log.record_run(write.record, key=write.key, procedure_id=pid)
        self.clearance.relabel(run_id, label, pid)
        self.sizing.relabel(run_id, label, pid)

    def set_patient(self, weight_kg: float | None, creatinine_mg_dl: float | None) -> dict:
        if self.procs.current() is None:
            raise ValueError("no open procedure: start one first")
        with self._lock:
            self._runs.totals.set_patient(weight_kg, creatinine_mg_dl)   # validates
            totals = self._runs.totals.to_dict()
        self.procs.set_fields(weight_kg=weight_kg, creatinine_mg_dl=creatinine_mg_dl)
        return totals

    def add_hand_injection(self, volume_ml: float, concentration_mg_ml: float | None,
                           at_wall: str | None) -> dict:
        """Contrast given by hand, entered by staff: an ``injection`` event of the open procedure (the same
        record as the injector's, ``source: "hand"``) counted in its totals; answers the totals. Its time
        (``at``, else now) is matched to runs like an injector's start: the run going on then takes it now,
        at its end, or recorded again when it was recorded already, and times ``mtt_s`` from it."""
        if self.procs.current() is None:
            raise ValueError("no open procedure: start one first")
        now_ns, wall_ns = self.clock(), self.log.wall_clock_ns()
        # The wall clock only dates the entry: the run it matches is found on the monotonic clock.
        start_ns = monotonic_at(at_wall, now_ns, wall_ns)
        at_wall = at_wall or datetime.fromtimestamp(wall_ns / 1e9, timezone.utc).isoformat()
        entry = {"source": "hand", "delivered_volume_ml": float(volume_ml),
                 "concentration_mg_ml": None if concentration_mg_ml is None else float(concentration_mg_ml),
                 "at": at_wall, "start_ns": start_ns}
        injection = hand_injection(entry, start_ns, f"hand:{uuid.uuid4().hex}")
        with self._lock:
            self._runs.totals.add_injection(entry)       # validates before anything is recorded
            totals = self._runs.totals.to_dict()
            self.log.record_injection(entry, key=injection["key"])
            self._injections.remember(injection)         # a run ended and waiting for its analysis
        self._frames.post(lambda: self.pipeline.injection(start_ns, start_ns, entry))   # a run going on
        try:
            self._worker.submit(self._late_injection, injection)   # a run recorded already
        except RuntimeError:   # the worker stopped (shutting down): nothing left to record again
            pass
        return totals

    def set_rois(self, rois: list[tuple[int, int, int, int]] | None) -> None:
        # Checked here against the video geometry, so the caller hears of a bad ROI, not the frame thread.
        shape = getattr(self.source, "shape", None)
        if rois is not None and shape is not None:
            if len(rois) > MAX_ROIS:
                raise ValueError(f"at most {MAX_ROIS} ROIs, got {len(rois)}")
            rois = [check_roi(roi, shape) for roi in rois]
        self._frames.post(lambda: self.pipeline.set_rois(rois))
        self.log.record("rois_set", {"rois": rois})

    def set_centerline(self, points: list[tuple[float, float]] | None, diameter_px: float | None) -> None:
        # The tracker is looked up when the task runs: a new procedure queued before it replaces the tracker.
        drawn_on = self.clearance.set_centerline(points, diameter_px)
        self.sizing.set_centerline(points, drawn_on)

    # -- read side -------------------------------------------------------------------------------------
    def status(self) -> dict:
        return dict(self._status.status(self.started_ns), fleet=self.fleet.snapshot(), vessel=self.sizing.headline())

    def metrics(self) -> dict[str, float]:
        """Flat numeric counters for Prometheus."""
        return {**self._status.metrics(), **self.fleet.metrics()}

    def runs(self, limit: int = 50) -> list[dict]:
        """Oldest first; a relabelled run appears once, as its newest record."""
        return self.log.latest_runs(limit=limit)

    def run(self, run_id: str) -> dict | None:
        """The run's newest record with its vessel sizing (null when not measured)."""
        record = self.log.run(run_id)
        return None if record is None else dict(record, vessel=self.sizing.result(run_id))

    def measure_vessel(self, run_id: str) -> dict:
        """Size a run's vessel now; NotKept without its image, ValueError when it cannot be measured."""
        return self.sizing.request(run_id)

    def set_calibration(self, **calibration) -> dict:
        """The operator's calibration for vessel sizing (mm_per_px, or a catheter on a kept run)."""
        return self.sizing.set_calibration(**calibration)

    def run_image_png(self, run_id: str) -> bytes | None:
        return self.clearance.run_png(run_id)

    def clearance_png(self) -> bytes | None:
        """The latest clearance picture; None before the first result; TimeoutError when it takes > 10 s."""
        return self.clearance.png()

    def procedures(self, limit: int = 50) -> list[dict]:
        return self.procs.recent(limit)

    def procedure(self, pid: str) -> dict | None:
        proc = self.procs.get(pid)
        if proc is None:
            return None
        totals = procedure_totals(proc.get("fields", {}), self.log.latest_runs(pid, limit=10_000),
                                  self.log.injections(pid, limit=10_000), self._runs.concentration_mg_ml)
        return dict(proc, totals=totals.to_dict(), clearance=self.log.clearance_results(pid))

    def events(self, after: int = 0, limit: int = 100) -> list[dict]:
        return self.log.events(after=after, limit=limit)

    def subscribe(self, callback: Callable[[dict], None]) -> Callable[[], None]:
        return self.log.subscribe(callback)

