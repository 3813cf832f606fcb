"""X-ray exposure (run) detection from the frame stream: a pure state machine, no I/O.

Pulsed fluoroscopy shows each pulse on one or more identical video frames; last-image-hold repeats the last
pulse. So a *new pulse* is a frame that differs from the one before it, and X-ray is on while new pulses keep
coming at a pulse rate between 3.75 and 30 p/s.

Also the run's record (``Run.summary()``) and how an injector SUMMARY that came late completes it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from core.analysis.tdc import TIMING_VERSION
from core.vocab import NS

MIN_PULSE_RATE = 3.75      # pulsed fluoroscopy's slowest rate
MIN_DSA_RATE = 0.5         # digital angiography (DSA) acquisitions go down to 0.5 frames/s
DSA_MAX_RATE = 7.5         # below this a run may be a DSA program, which can slow down during the run ...
DSA_SLOW_STEP_S = 1.0      # ... to 1 frame/s (or its own rate if slower): the off gap allows for that
SLOW_CONFIRM_PULSES = 3    # pulses that confirm X-ray on when they come slower than fluoroscopy
STEADY_TOLERANCE = 0.2     # confirming pulses' intervals agree within this fraction
RECENT_INTERVALS = 4       # the current rate: the median of the last few pulse intervals
# Run summary key <- injector SUMMARY key: the injector's own figures for a run's injection.
INJECTOR_FIGURES = (("delivered_volume_ml", "delivered_volume_ml"), ("peak_flow_ml_s", "peak_flow_ml_s"),
                    ("peak_pressure_kpa", "peak_pressure_kpa"), ("injection_duration_ms", "duration_ms"),
                    ("injector_xray_delay_ms", "xray_delay_ms"))


@dataclass
class Run:
    index: int
    start_ns: int                      # first pulse of the exposure
    pulse_ns: list[int] = field(default_factory=list)
    first_frame: int = 0
    last_frame: int = 0
    end_ns: int | None = None          # last pulse + one pulse interval (the exposure's end)
    # Filled in by the pipeline when the run ends (core.analysis.pipeline): what the run showed and what overlapped it.
    contrast: bool = False             # an injection overlapped it or opacity rose in it
    timing: dict | None = None         # mask and per-ROI curves with arrival / peak / washout (core.analysis.tdc)
    injection: dict | None = None      # the overlapping injection: start / stop ns and the injector summary
    xray: dict | None = None           # arbitration: source and the device's edges when it reported them
    peak_opacity: np.ndarray | None = field(default=None, repr=False)   # float32 over the crop, contrast runs
    repeats: int = 0                   # new frames identical to an earlier one of the run: a replayed loop
    mask_log: np.ndarray | None = field(default=None, repr=False)       # its contrast-free mask, log units
    device_off: bool = False           # the device's X-ray signal went off during the run and stayed off
    # Display video: the first pulses (every other row and column) for its LUT's gain (display_gain.trusted_gain).
    gain_pulses: np.ndarray | None = field(default=None, repr=False)

    @property
    def pulses(self) -> int:
        return len(self.pulse_ns)

    @property
    def frames(self) -> int:
        return self.last_frame - self.first_frame + 1

    @property
    def pulse_rate(self) -> float | None:
        """Pulses per second from the mean pulse interval (video frame times are exact; median breaks ties)."""
        if len(self.pulse_ns) < 2:
            return None
        return (len(self.pulse_ns) - 1) * NS / (self.pulse_ns[-1] - self.pulse_ns[0])

    @property
    def current_interval_ns(self) -> int | None:
        """The interval of the current rate: the median of the last few (a DSA program changes rate)."""
        if len(self.pulse_ns) < 2:
            return None
        recent = np.diff(self.pulse_ns[-(RECENT_INTERVALS + 1):])
        return int(np.median(recent))

    @property
    def replay(self) -> bool:
        """Frames repeating an earlier one exactly: a stored loop replayed on the monitor (quantum noise
        makes every real exposure differ)."""
        return self.repeats >= 2

    def duration_s(self, now_ns: int | None = None) -> float:
        end = self.end_ns if self.end_ns is not None else (now_ns if now_ns is not None else self.pulse_ns[-1])
        return (end - self.start_ns) / NS

    def summary(self) -> dict:
        """Everything the event log and /api/status record about a finished run (JSON-ready)."""
        rate = self.pulse_rate
        out = {"run": self.index, "start_ns": self.start_ns, "end_ns": self.end_ns,
               "duration_s": round(self.duration_s(), 3), "frames": self.frames, "pulses": self.pulses,
               "pulse_rate": None if rate is None else round(rate, 2), "contrast": self.contrast,
               "xray_source": "image", "replay": self.replay}
        if self.xray:
            out["xray_source"] = self.xray.get("source", "image")
            for key in ("device_start_ns", "device_end_ns"):
                if self.xray.get(key) is not None:
                    out[key] = self.xray[key]
            if self.xray.get("device_duration_s") is not None:
                out["duration_s"] = round(self.xray["device_duration_s"], 3)
        inj = self.injection or {}
        summary = inj.get("summary") or {}
        start = inj.get("start_ns")
        out.update({
            "injections": inj.get("count", 0),
            "injection_start_ns": start,
            "injection_stop_ns": inj.get("stop_ns"),
            "injection_delay_s": None if start is None else round((start - self.start_ns) / NS, 3),
            "injection_source": injection_source(start, summary),
        })
        out.update({key: summary.get(src) for key, src in INJECTOR_FIGURES})
        timing = self.timing or {}
        out["mask_frames"] = timing.get("mask_frames")
        out["mask"] = timing.get("mask")
        out["rois"] = timing.get("rois", [])
        out["timing_truncated"] = timing.get("truncated", False)
        out["timing_version"] = TIMING_VERSION
        return out


def injection_overlaps(injection: dict, start_ns: int, end_ns: int | None) -> bool:
    """The injection (start_ns, stop_ns; no stop yet: still going) overlaps the exposure: how runs and
    injections are matched, at the run's end and for a late SUMMARY alike."""
    if end_ns is None or injection["start_ns"] > end_ns:
        return False
    return injection["stop_ns"] is None or injection["stop_ns"] >= start_ns


def run_takes_injection(record: dict, injection: dict) -> bool:
    """A recorded run without the injector's figures that this injection overlaps and, if the run already
    knows its injection (the first that overlapped it), is that one."""
    if record.get("delivered_volume_ml") is not None or record.get("start_ns") is None:
        return False
    if not injection_overlaps(injection, record["start_ns"], record.get("end_ns")):
        return False
    return record.get("injection_start_ns") in (None, injection["start_ns"])


def merge_injection(record: dict, injection: dict) -> dict:
    """A run record with an injection's SUMMARY merged in, as Run.summary() would have put it had the
    SUMMARY come before the run ended. ``injection``: start_ns, stop_ns and the SUMMARY's dict."""
    summary = injection["summary"]
    out = dict(record, contrast=True)
    out.update({key: summary.get(src) for key, src in INJECTOR_FIGURES})
    if out.get("injection_start_ns") is None:
        start = injection["start_ns"]
        offset_s = (start - record["start_ns"]) / NS
        out.update(injection_start_ns=start, injection_delay_s=round(offset_s, 3),
                   injections=max(1, out.get("injections") or 0),
                   rois=[timed_from_injection(roi, offset_s) for roi in out.get("rois") or []])
    out["injection_source"] = injection_source(out["injection_start_ns"], summary)
    if out.get("injection_stop_ns") is None:
        out["injection_stop_ns"] = injection["stop_ns"]
    return out


def injection_source(start_ns: int | None, summary: dict) -> str | None:
    """Who gave the run's injection: ``"hand"`` (entered by staff), ``"injector"``, None without one."""
    if start_ns is None:
        return None
    return "hand" if summary.get("source") == "hand" else "injector"


def timed_from_injection(roi: dict, offset_s: float) -> dict:
    """An ROI's times from an injection start learnt after the run was timed (``offset_s`` on the run
    clock): what RoiCurve.to_dict gives with it, from the recorded centroid and arrival."""
    out = dict(roi)
    if roi.get("centroid_s") is not None:
        out["mtt_s"] = round(roi["centroid_s"] - offset_s, 4)
    if roi.get("arrival_s") is not None:
        out["arrival_after_injection_s"] = round(roi["arrival_s"] - offset_s, 4)
    return out


@dataclass(frozen=True)
class RunEvent:
    kind: str        # "run_start" | "run_end"
    run: Run
    t_ns: int
    # run_end of a pipeline that defers analysis: call once (on any thread) before reading the Run's
    # timing, contrast and peak_opacity. None when the Run is already complete.
    finish: Callable[[], None] | None = None


class RunDetector:
    """Feed one frame at a time: ``feed(t_ns, frame_index, new_pulse)`` returns the events it completes.

    X-ray turns on at the first of ``confirm_pulses`` new pulses that follow each other within the longest
    pulse interval (so a burnt-in clock that ticks once a second is not an exposure), and off once no new
    pulse came for ``off_gap_intervals`` pulse intervals. Below 7.5 frames/s slow fluoroscopy and a DSA program
    (which may slow down to 1 frame/s) look alike, so the gap allows for 1 s intervals there, unless the
    device's X-ray signal went off during the run (``device_off_ns``): then no exposure is coming, whatever the
    program, and the gap is that of the current rate again.
    """

    def __init__(self, confirm_pulses: int = 2, off_gap_intervals: float = 2.5,
                 min_pulse_rate: float = MIN_PULSE_RATE):
        if confirm_pulses < 1:
            raise ValueError("confirm_pulses must be >= 1")
        self._confirm = confirm_pulses
        self._off_gap = off_gap_intervals
        self._max_interval_ns = int(NS / min_pulse_rate * 1.2)
        self._slow_interval_ns = int(NS / MIN_PULSE_RATE * 1.2)
        self._pending: list[tuple[int, int]] = []   # (t_ns, frame) of unconfirmed new pulses
        self._runs = 0
        self.current: Run | None = None

    @property
    def confirm_pulses(self) -> int:
        return self._confirm

    @property
    def xray_on(self) -> bool:
        return self.current is not None

    def feed(self, t_ns: int, frame_index: int, new_pulse: bool,
             device_off_ns: int | None = None) -> list[RunEvent]:
        """``device_off_ns``: when the device's X-ray signal last went off, if it is off now (None: on, or no
        signal); an off edge during the current run ends it after the current rate's gap."""
        events: list[RunEvent] = []
        run = self.current
        if run is not None:
            if new_pulse:
                run.pulse_ns.append(t_ns)
                run.last_frame = frame_index
            else:
                run.device_off = device_off_ns is not None and device_off_ns >= run.start_ns
                if t_ns - run.pulse_ns[-1] > self._gap_ns(run):
                    events.append(self._end(run))
            return events
        if not new_pulse:
            if self._pending and t_ns - self._pending[-1][0] > self._max_interval_ns:
                self._pending.clear()
            return events
        if self._pending and t_ns - self._pending[-1][0] > self._max_interval_ns:
            self._pending.clear()
        self._pending.append((t_ns, frame_index))
        need = self._confirm
        if len(self._pending) >= 2:
            steps = np.diff([t for t, _ in self._pending])
            if len(steps) >= 2 and abs(steps[-1] - steps[-2]) > STEADY_TOLERANCE * max(steps[-2:]):
                # An exposure's pulses come at a steady rate: an earlier change at another interval was
                # something else (a held image updating), not the exposure's first pulse.
                del self._pending[:-2]
                steps = steps[-1:]
            if steps[-1] > self._slow_interval_ns:
                need = max(need, SLOW_CONFIRM_PULSES)    # slower than fluoroscopy: one more to be sure
        if len(self._pending) >= need:
            first_t, first_frame = self._pending[0]
            run = Run(index=self._runs, start_ns=first_t, first_frame=first_frame, last_frame=frame_index,
                      pulse_ns=[t for t, _ in self._pending])
            self._runs += 1
            self._pending.clear()
            self.current = run
            events.append(RunEvent("run_start", run, first_t))
        return events

    def close(self, t_ns: int) -> list[RunEvent]:
        """End an open run at the end of the stream."""
        return [self._end(self.current)] if self.current is not None else []

    def _interval_ns(self, run: Run) -> int:
        interval = run.current_interval_ns
        return interval if interval else self._max_interval_ns

    def _gap_ns(self, run: Run) -> int:
        """How long without a new pulse means X-ray off: ``off_gap_intervals`` intervals of the current rate;
        at DSA rates at least that many of 1 s, since the program may slow down, so a slow run ends later;
        not once the device said X-ray off during the run (no slower exposure is coming)."""
        interval = self._interval_ns(run)
        if interval * DSA_MAX_RATE > NS and not run.device_off:
            interval = max(interval, int(DSA_SLOW_STEP_S * NS))
        return min(int(interval * self._off_gap), int(self._max_interval_ns * self._off_gap))

    def gap_s(self, run: Run) -> float:
        return self._gap_ns(run) / NS

    def _end(self, run: Run) -> RunEvent:
        run.end_ns = run.pulse_ns[-1] + self._interval_ns(run)
        self.current = None
        return RunEvent("run_end", run, run.end_ns)
