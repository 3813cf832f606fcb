"""The per-frame path: frame kernel, run detection, run timing. No I/O, no threads of its own: returns what
happened. The appliance calls it from three threads (frames, the injector bridge, the API); the side inputs
(injections, XRAY) and the arbitration sit behind one small lock, the frame path only takes it briefly.

Per frame: the fused kernel (repeat test; once a run's mask is known also opacity and the peak map) and
O(ROIs) Python on new pulses only (a coarse sample and the ROI crops, see core.analysis.runtimer.RunTimer). Fits and the
automatic ROI run once, at the end of a run: inline, or (``defer_finish``, live) in ``RunEvent.finish`` for
another thread to call, because they take tens of milliseconds and the frame thread has 33.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import replace
from functools import partial

import numpy as np

from core.analysis.kernels import FrameKernel, build_mask
from core.analysis.runs import (DSA_MAX_RATE, MIN_DSA_RATE, MIN_PULSE_RATE, SLOW_CONFIRM_PULSES, Run, RunDetector,
                                RunEvent, injection_overlaps)
from core.analysis.runtimer import RunTimer
from core.analysis.xray import XrayArbiter
from core.sources.frames import Frame, frame_problem
from core.vocab import NS, check_roi

log = logging.getLogger("cathlab.pipeline")

PEAK_ALPHA = 0.4            # peak map over an exponential mean of ~4 pulses: noise-robust peak opacity
DEVICE_EDGE_WINDOW_NS = 2 * NS   # a device XRAY edge this close to the image edge belongs to the same run
INJECTION_MEMORY = 32       # injections remembered for matching to runs
SMALL_CHANGE = 0.25         # a change under this fraction of the run's typical pulse change is no pulse
FIELD_CHANGE = 0.2          # slower than fluoroscopy, a new frame must change this fraction of the field
FIELD_EXTENT = 0.25         # ... or its changes must span this fraction of the frame
COARSE_PX = 64              # the coarse sample (per side) for the field check and the replay fingerprints
RECENT_FINGERPRINTS = 512   # new frames remembered to recognise a replayed loop
GAIN_PULSES = 25            # display video: the run's first pulses (their middle half) kept for the LUT's gain


def _field_changed(coarse: np.ndarray, prev: np.ndarray) -> bool:
    """A change of the whole field: most lit pixels differ (quantum noise), or the changed pixels spread over
    much of the frame (a subtracted or heavily filtered image whose flat background holds still). A clock or
    counter box changes a few pixels in one corner."""
    changed = coarse != prev
    lit = (coarse > 0) | (prev > 0)
    if np.count_nonzero(changed & lit) >= FIELD_CHANGE * max(1, np.count_nonzero(lit)):
        return True
    rows, cols = np.nonzero(changed.any(axis=1))[0], np.nonzero(changed.any(axis=0))[0]
    if rows.size == 0:
        return False
    extent = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
    return extent >= FIELD_EXTENT * changed.size


class FramePipeline:
    """One instance per frame stream. ``process(frame)`` returns the run events the frame completed.

    On each ``run_end`` event the Run carries ``summary()``, ``contrast`` and ``peak_opacity``; with
    ``defer_finish`` only once the event's ``finish()`` has run (the side inputs it needs are taken at once).
    """

    def __init__(self, intensity: str, crop: tuple[int, int, int, int] | None = None,
                 rois: list | None = None, keep_frames: bool = True,
                 min_pulse_rate: float = MIN_DSA_RATE, contain_errors: bool = True,
                 defer_finish: bool = False) -> None:
        if intensity not in ("lin", "log"):
            raise ValueError(f"intensity must be 'lin' or 'log', got {intensity!r}")
        if not 0 < min_pulse_rate <= MIN_PULSE_RATE:
            raise ValueError(f"min_pulse_rate must be in (0, {MIN_PULSE_RATE}], got {min_pulse_rate}")
        self.intensity = intensity
        self.crop = crop
        self.kernel: FrameKernel | None = None
        self._geometry: tuple | None = None
        self.runs = RunDetector(min_pulse_rate=min_pulse_rate)
        self.arbiter = XrayArbiter()
        self._lock = threading.Lock()         # injections, device edges and the arbiter (several threads)
        self.frames = 0
        self.pulses = 0
        self.rejected = 0
        self.last_frame_ns: int | None = None
        self.last_stats = None
        self.timer: RunTimer | None = None
        self._gain_pulses: list[np.ndarray] | None = None        # the current run's, display video only
        self.keep_frames = keep_frames        # False (offline): no live mask, no peak-opacity image
        self.contain_errors = contain_errors  # live: a failing run analysis is logged, not raised
        self.defer_finish = defer_finish
        self._rois: list[tuple[int, int, int, int]] | None = None
        self._pending: deque = deque(maxlen=max(self.runs.confirm_pulses, SLOW_CONFIRM_PULSES))   # new pulses not yet confirmed as a run
        self._injections: deque = deque(maxlen=INJECTION_MEMORY)
        self._device_edges: deque = deque(maxlen=16)              # (on, t_ns)
        self._recent: deque = deque(maxlen=64)                    # (t_ns, index) of the last frames
        self._pulse_mads: deque = deque(maxlen=15)               # change of the current run's last pulses
        self.small_changes = 0                                   # frames that changed too little to be a pulse
        self._fluoro_interval_ns = int(NS / MIN_PULSE_RATE * 1.2)
        self._last_new_ns: int | None = None
        self._prev_coarse: np.ndarray | None = None
        self._fingerprints: dict[bytes, int] = {}                # coarse sample of recent new frames -> pulse
        # Offline only: ``crop_source(frame_indices, roi) -> (P, h, w)`` gives full-resolution crops for
        # the automatic ROI, which live runs measure on the coarse sample.
        self.crop_source = None
        self.set_rois(rois)

    # -- configuration and side inputs ---------------------------------------------------------------
    def set_rois(self, rois) -> None:
        """Configured ROIs (x, y, w, h) for the next run; None or [] = place one automatically."""
        if rois is None:
            self._rois = None
            return
        try:
            items = list(rois)
        except TypeError:
            raise ValueError(f"rois must be a list of (x, y, w, h), got {rois!r}") from None
        checked = []
        for roi in items:
            if self._geometry is not None:
                checked.append(check_roi(roi, self._geometry[0]))
            else:
                checked.append(check_roi(roi, (1 << 30, 1 << 30)))   # shape checked at the first frame
        self._rois = checked or None

    def xray_signal(self, on: bool, t_ns: int) -> None:
        """The device's XRAY message: it wins over the image heuristic."""
        with self._lock:
            self.arbiter.device(on, int(t_ns))
            self._device_edges.append((bool(on), int(t_ns)))

    def xray_signal_lost(self, t_ns: int) -> None:
        """The injector link dropped: its last XRAY state is no longer trusted."""
        with self._lock:
            self.arbiter.device_lost(int(t_ns))

    def injection(self, start_ns: int, stop_ns: int | None = None, summary: dict | None = None) -> None:
        """An injection from the injector: start (STATE injecting / first SAMPLE with flow), later its stop
        and SUMMARY; or one given by hand (a moment: ``stop_ns == start_ns``, its entry as the summary).
        Calls with the same ``start_ns`` update one injection."""
        if not isinstance(start_ns, int) or isinstance(start_ns, bool):
            raise ValueError(f"start_ns must be an integer monotonic time, got {start_ns!r}")
        if stop_ns is not None and (not isinstance(stop_ns, int) or stop_ns < start_ns):
            raise ValueError(f"stop_ns must be an integer time after start_ns, got {stop_ns!r}")
        if summary is not None and not isinstance(summary, dict):
            raise ValueError(f"summary must be a dict, got {type(summary).__name__}")
        with self._lock:
            for inj in self._injections:
                if inj["start_ns"] == start_ns:
                    if stop_ns is not None:
                        inj["stop_ns"] = stop_ns
                    if summary is not None:
                        inj["summary"] = dict(summary)
                    return
            self._injections.append({"start_ns": start_ns, "stop_ns": stop_ns,
                                     "summary": None if summary is None else dict(summary)})

    def alarms(self, now_ns: int | None = None) -> list[dict]:
        now = now_ns if now_ns is not None else (self.last_frame_ns or 0)
        with self._lock:
            return self.arbiter.alarms(now)

    def xray_state(self) -> dict:
        """The arbitrated X-ray state for the status page: the device's word when it gives one."""
        with self._lock:
            a = self.arbiter
            return {"on": a.on, "source": a.source, "image_on": a.image_on, "device_on": a.device_on}

    # -- per frame -----------------------------------------------------------------------------------
    def process(self, frame: Frame) -> list[RunEvent]:
        pixels = frame.pixels
        if (problem := frame_problem(pixels)) is not None:
            self.rejected += 1
            raise ValueError(f"frame {frame.index}: {problem}")
        if self.last_frame_ns is not None and frame.t_ns < self.last_frame_ns:
            self.rejected += 1
            raise ValueError(f"frame {frame.index}: time went backwards ({frame.t_ns} < {self.last_frame_ns})")
        closed: list[RunEvent] = []
        if self._geometry != (pixels.shape, pixels.dtype):
            # A new geometry (grabber mode change): an open run ends at its last pulse, and the kernel,
            # its mask and peak maps start afresh.
            closed = [self._on_event(e) for e in self.runs.close(self.last_frame_ns or frame.t_ns)]
            self._start_kernel(pixels)
        stats = self.kernel.process(pixels, frame.index)
        self.frames += 1
        self.last_frame_ns = frame.t_ns
        self.last_stats = stats
        self._recent.append((frame.t_ns, frame.index))
        new_pulse = self.frames == 1 or not stats.repeat
        if new_pulse and self.runs.current is not None and len(self._pulse_mads) >= 3:
            # A fresh pulse changes the whole field (quantum noise); a burnt-in counter ticking on
            # last-image-hold changes a few hundred pixels. Only the former is X-ray. Against the lower
            # quartile of the run's recent pulse changes: the exposure's first pulses settle (the phantom's
            # 18, 9.6, 4.3, 2.1 ... levels), and under a 1 px blur their median made the steady noise (0.6) look
            # like a counter's tick: the run split in two and lost its contrast.
            if stats.mad < SMALL_CHANGE * sorted(self._pulse_mads)[len(self._pulse_mads) // 4]:
                new_pulse = False
                self.small_changes += 1
        s = max(1, min(pixels.shape) // COARSE_PX)
        coarse = np.array(pixels[::s, ::s])
        prev, self._prev_coarse = self._prev_coarse, coarse
        if (new_pulse and prev is not None and prev.shape == coarse.shape and self._last_new_ns is not None
                and frame.t_ns - self._last_new_ns > self._fluoro_interval_ns):
            # Slower than fluoroscopy a burnt-in clock ticks as often as a DSA program exposes: only a
            # change of the whole field (quantum noise everywhere) is a new exposure.
            if not _field_changed(coarse, prev):
                new_pulse = False
                self.small_changes += 1
        if new_pulse:
            self._last_new_ns = frame.t_ns
            self._fingerprint(coarse)
        if new_pulse and self.runs.current is not None:
            self._pulse_mads.append(stats.mad)
        if new_pulse:
            self.pulses += 1
            if self.timer is not None:
                self._add_pulse(pixels, frame.t_ns, frame.index)
            else:
                self._pending.append((np.array(pixels), frame.t_ns, frame.index))
        device_off = None
        if not new_pulse and self.runs.current is not None:
            with self._lock:
                last = self._device_edges[-1] if self._device_edges and self.arbiter.device_on is not None else None
            device_off = last[1] if last is not None and not last[0] else None
        events = [self._on_event(e) for e in self.runs.feed(frame.t_ns, frame.index, new_pulse, device_off)]
        return closed + events

    def close(self, t_ns: int) -> list[RunEvent]:
        return [self._on_event(e) for e in self.runs.close(t_ns)]

    def _fingerprint(self, coarse: np.ndarray) -> None:
        """Count a new frame that repeats an earlier one exactly (a stored loop replayed on the monitor)."""
        key = coarse.tobytes()
        if key in self._fingerprints and self.runs.current is not None:
            self.runs.current.repeats += 1
        self._fingerprints[key] = self.pulses
        if len(self._fingerprints) > RECENT_FINGERPRINTS:
            del self._fingerprints[next(iter(self._fingerprints))]

    def _start_kernel(self, pixels: np.ndarray) -> None:
        h, w = pixels.shape
        crop = self.crop
        if crop is not None and (crop[0] + crop[2] > w or crop[1] + crop[3] > h):
            log.warning("crop %s does not fit %dx%d frames; using the whole frame", crop, w, h)
            crop = None
        self.kernel = FrameKernel(pixels.shape, pixels.dtype, self.intensity,
                                  crop=crop if crop is not None else (0, 0, w, h), log_scale=1.0,
                                  peak_alpha=PEAK_ALPHA)
        self._geometry = (pixels.shape, pixels.dtype)
        self._pending.clear()

    def _add_pulse(self, pixels: np.ndarray, t_ns: int, index: int) -> None:
        if self._gain_pulses is not None and len(self._gain_pulses) < GAIN_PULSES:
            self._gain_pulses.append(np.array(pixels[::2, ::2]))
        if self.timer.add(pixels, t_ns, index) and self.keep_frames:
            choice, frames = self.timer.mask_frames()
            # Only a clean pre-contrast mask makes a peak-opacity image; contrast rising from the first
            # pulse leaves none while the run lasts (the run's curves still get a late mask at its end).
            if frames and choice.reason == "pre-contrast":
                self.kernel.set_mask(build_mask(np.stack(frames)))

    def _on_event(self, event: RunEvent) -> RunEvent:
        run = event.run
        if event.kind == "run_start":
            with self._lock:
                self.arbiter.image(True, event.t_ns)
            self._pulse_mads.clear()
            shape, dtype = self._geometry
            rois = self._rois
            if rois is not None and any(x + w > shape[1] or y + h > shape[0] for x, y, w, h in rois):
                log.warning("configured ROIs %s do not fit %s frames; placing one automatically", rois, shape)
                rois = None
            self.timer = RunTimer(shape, dtype, self.intensity, rois, keep_frames=self.keep_frames)
            self._gain_pulses = [] if self.intensity == "log" and self.keep_frames else None
            self.kernel.clear_mask()
            for pixels, t_ns, index in self._pending:
                if t_ns >= run.start_ns:
                    self._add_pulse(pixels, t_ns, index)
            self._pending.clear()
            return event
        with self._lock:
            self.arbiter.image(False, event.t_ns)
        self._log_end(run)
        # The last pulse stays on screen until the exposure's end: those frames belong to the run.
        inside = [i for t, i in self._recent if run.start_ns <= t < run.end_ns]
        if inside:
            run.last_frame = max(run.last_frame, max(inside))
        finish = self._end_run(run)
        if self.defer_finish:
            return replace(event, finish=finish)
        finish()
        return event

    def _log_end(self, run: Run) -> None:
        rate = run.pulse_rate
        if run.replay:
            log.warning("run %d: %d frames repeat earlier ones exactly: a stored loop replayed on the monitor, "
                        "not an exposure", run.index, run.repeats)
        elif rate is not None and rate < DSA_MAX_RATE:
            log.info("run %d: %.2f frames/s, no repeated frames: a DSA (or slow fluoroscopy) run; X-ray off "
                     "declared after %.1f s without a new frame%s", run.index, rate, self.runs.gap_s(run),
                     " (the device's X-ray signal went off)" if run.device_off else "")

    def _end_run(self, run: Run):
        """What must be taken now, before the next run changes it; returns the slow rest as a callable."""
        timer, self.timer = self.timer, None
        gain_pulses, self._gain_pulses = self._gain_pulses, None
        run.injection = self._overlapping_injection(run)
        run.xray = self._device_xray(run)
        peak = mask = None
        if self.kernel is not None:
            if self.kernel.has_mask:
                peak, mask = self.kernel.peak.copy(), self.kernel.mask_log
            self.kernel.clear_mask()
        crops = None
        if timer is not None and self.crop_source is not None:
            crops = partial(self.crop_source, list(timer.index))
        return partial(self._analyse_run, run, timer, peak, crops, mask, gain_pulses)

    def _analyse_run(self, run: Run, timer: RunTimer | None, peak: np.ndarray | None, crops,
                     mask: np.ndarray | None = None, gain_pulses: list[np.ndarray] | None = None) -> None:
        """Timing fits, automatic ROI and the peak image of an ended run. Touches only what it is given."""
        injection = run.injection
        if timer is not None:
            try:
                run.timing = timer.finish(run.start_ns, run.pulse_rate,
                                          None if injection is None else injection["start_ns"], crops)
            except Exception:
                if not self.contain_errors:
                    raise
                # Live: a timing bug must not take down run logging. Log it, keep the run.
                log.exception("run %d: timing analysis failed", run.index)
                run.timing = None
        run.timing = run.timing or {}
        run.timing.pop("curves", None)
        run.contrast = injection is not None or bool(run.timing.get("contrast_rise"))
        if run.contrast and peak is not None:
            # A pixel that never changed (collimator surround, burnt-in text) has an exact 0 peak of its
            # smoothed noise-free opacity: it was not measured, which is not the same as no contrast.
            peak[~np.isfinite(peak) | (peak == 0)] = np.nan
            run.peak_opacity = peak
            # The same pixels unmeasured in the mask: the registration leaves burnt-in text and the surround out.
            run.mask_log = None if mask is None else np.where(np.isfinite(peak), mask, np.float32(np.nan))
            if gain_pulses and len(gain_pulses) >= 3:
                run.gain_pulses = np.stack(gain_pulses)   # estimated after the run is recorded (0.2-0.5 s)

    def _overlapping_injection(self, run: Run) -> dict | None:
        end = run.end_ns if run.end_ns is not None else run.pulse_ns[-1]
        with self._lock:
            injections = list(self._injections)
        overlapping = sorted((inj for inj in injections if injection_overlaps(inj, run.start_ns, end)),
                             key=lambda inj: inj["start_ns"])
        if not overlapping:
            return None
        # The first one times the run (injection delay); a second one in the same run is counted. A hand
        # injection entered later may have started earlier than the injector's.
        return dict(overlapping[0], count=len(overlapping))

    def _device_xray(self, run: Run) -> dict:
        out = {"source": "image"}
        with self._lock:
            edges = list(self._device_edges)
        on = [t for o, t in edges if o and abs(t - run.start_ns) <= DEVICE_EDGE_WINDOW_NS]
        off = [t for o, t in edges if not o and run.end_ns is not None
               and abs(t - run.end_ns) <= DEVICE_EDGE_WINDOW_NS]
        if on:
            out.update(source="device", device_start_ns=on[0])
        if off:
            out.update(source="device", device_end_ns=off[-1])
        if on and off and off[-1] > on[0]:
            out["device_duration_s"] = (off[-1] - on[0]) / NS
        return out

    # -- read side -----------------------------------------------------------------------------------
    def current_run(self, now_ns: int) -> dict | None:
        run = self.runs.current
        if run is None:
            return None
        out = {"index": run.index, "started_s_ago": (now_ns - run.start_ns) / NS,
               "duration_s": run.duration_s(now_ns), "frames": run.frames, "pulses": run.pulses,
               "pulse_rate": run.pulse_rate, "contrast": False, "injection_delay_s": None, "tdc": None}
        injection = self._overlapping_injection(run)
        if injection is not None:
            out["contrast"] = True
            out["injection_delay_s"] = (injection["start_ns"] - run.start_ns) / NS
        timer = self.timer
        if timer is not None:
            out["contrast"] = out["contrast"] or timer.mask_ready
            out["tdc"] = timer.live_curve()
        return out
