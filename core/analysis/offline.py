"""Offline timing of a recorded contrast run: the data behind ``cathlab-edge analyze``.

The recording goes through the very pipeline the appliance runs live (core.analysis.pipeline), fed with the file's
frame times, so offline and live numbers agree; offline only adds full-resolution crops for the automatic
ROI (live measures it on the coarse sample). Times are seconds from the file's first frame.
"""
from __future__ import annotations

import math

import numpy as np

from core.analysis.runs import MIN_DSA_RATE
from core.analysis.tdc import TIMING_VERSION
from core.sources.frames import Frame
from core.sources.stacks import FrameStack
from core.vocab import NS, check_roi

# Injection start in seconds from a recording's first frame: it may precede the X-ray (a negative delay), and
# no recorded run lasts a day.
INJECTION_START_RANGE_S = (-3600.0, 86_400.0)


def analyze_stack(stack: FrameStack, rois=None, injection_start_s: float | None = None) -> dict:
    """The ``--json`` object for one recording: the longest contrast run (else the longest run) timed."""
    from core.analysis.pipeline import FramePipeline

    T, H, W = stack.frames.shape
    checked = None if not rois else [check_roi(r, (H, W)) for r in rois]
    low, high = INJECTION_START_RANGE_S
    if injection_start_s is not None and not (isinstance(injection_start_s, (int, float))
                                              and math.isfinite(injection_start_s)
                                              and low <= injection_start_s <= high):
        raise ValueError(f"injection start must be a number of seconds in [{low:g}, {high:g}], "
                         f"got {injection_start_s!r}")
    times = np.asarray(stack.frame_times_s, dtype=float)
    if times.shape != (T,) or not np.all(np.isfinite(times)) or np.any(np.diff(times) <= 0):
        raise ValueError(f"{stack.source}: frame times must increase, one per frame")
    t_ns = np.round(times * NS).astype(np.int64)

    # DSA acquisitions go down to 0.5 frames/s, as live; a file slower still counts down to half its rate.
    # Times are the file's own (Frame Time Vector, or --fps), so a variable-rate run is timed as acquired.
    pipeline = FramePipeline(stack.intensity, rois=checked, keep_frames=False,
                             min_pulse_rate=min(MIN_DSA_RATE, 0.5 * stack.fps), contain_errors=False)
    frames = stack.frames
    # Crop first, then pick the pulses: indexing whole frames first would copy every frame.
    pipeline.crop_source = lambda index, roi: frames[:, roi[1]:roi[1] + roi[3],
                                                     roi[0]:roi[0] + roi[2]][np.asarray(index)]
    if injection_start_s is not None:
        pipeline.injection(int(round(injection_start_s * NS)))
    runs = []
    for i in range(T):
        for event in pipeline.process(Frame(frames[i], int(t_ns[i]), i)):
            if event.kind == "run_end":
                runs.append(event.run)
    for event in pipeline.close(int(t_ns[-1])):
        runs.append(event.run)
    if not runs:
        raise ValueError(f"{stack.source}: no X-ray run found (the frames never change at a pulse rate "
                         f">= {min(MIN_DSA_RATE, 0.5 * stack.fps):g} frames/s)")
    run = max(runs, key=lambda r: (r.contrast, r.pulses))
    return _report(stack, run, runs, injection_start_s)


def _report(stack: FrameStack, run, runs, injection_start_s: float | None) -> dict:
    start_s = run.start_ns / NS
    summary = run.summary()

    def shift(v):
        return None if v is None else round(v + start_s, 4)

    rois = []
    for r in summary["rois"]:
        arrival = shift(r["arrival_s"])
        rois.append({
            "roi": r["roi"], "auto": r["auto"], "arrival_s": arrival, "peak_s": shift(r["peak_s"]),
            "washout_s": shift(r["washout_s"]), "mtt_s": r["mtt_s"], "centroid_s": shift(r["centroid_s"]),
            "plateau_start_s": shift(r["plateau_start_s"]), "plateau_end_s": shift(r["plateau_end_s"]),
            "reason": r["reason"],
            "arrival_after_injection_s": (None if injection_start_s is None or arrival is None
                                          else round(arrival - injection_start_s, 4)),
            "width_s": r["width_s"], "wash_in_slope": r["wash_in_slope"], "wash_out_slope": r["wash_out_slope"],
            "peak_opacity": r["peak_value"], "method": r["method"], "fit_r2": r["fit_r2"],
            "fit": None if r["fit"] is None else dict(r["fit"], t0_s=shift(r["fit"]["t0_s"])),
            "curve": [[round(t + start_s, 4), v] for t, v in r["curve"]],
        })
    return {
        "frames": int(stack.frames.shape[0]), "fps": stack.fps, "intensity": stack.intensity,
        "source": stack.source, "pulse_rate": summary["pulse_rate"], "mask_frames": summary["mask_frames"],
        "run": {"start_s": round(start_s, 4), "end_s": round(run.end_ns / NS, 4),
                "duration_s": summary["duration_s"], "first_frame": run.first_frame,
                "last_frame": run.last_frame, "pulses": run.pulses, "contrast": run.contrast,
                "mask": summary["mask"]},
        "runs": len(runs), "timing_version": TIMING_VERSION,
        "injection_start_s": injection_start_s,
        "rois": rois,
    }
