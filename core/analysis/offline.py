"""Offline timing of a recorded contrast run: the body of ``cathlab-edge analyze``.

The recording goes through the very pipeline the appliance runs live (core.analysis.pipeline), fed with the file's
frame times, so offline and live numbers agree; offline only adds full-resolution crops for the automatic
ROI (live measures it on the coarse sample). Times are seconds from the file's first frame.
"""
from __future__ import annotations

import json
import math
import sys
from typing import TextIO

import numpy as np

from core.analysis.runs import MIN_PULSE_RATE
from core.analysis.tdc import gamma_variate
from core.sources.frames import Frame
from core.sources.stacks import FrameStack, load_stack
from core.vocab import NS, check_roi, parse_roi, roi_syntax

EXIT_BAD_INPUT = 2
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

    # A recorded acquisition may be slower than live fluoroscopy (DSA-style runs at 1-3 frames/s): offline,
    # any rate down to half the file's frame rate counts as X-ray on.
    pipeline = FramePipeline(stack.intensity, rois=checked, keep_frames=False,
                             min_pulse_rate=min(MIN_PULSE_RATE, 0.5 * stack.fps), contain_errors=False)
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
                         f">= 3.75 p/s)")
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
            "washout_s": shift(r["washout_s"]), "mtt_s": shift(r["mtt_s"]),
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
        "runs": len(runs),
        "injection_start_s": injection_start_s,
        "rois": rois,
    }


def analyze_main(frames: str, fps: float | None, intensity: str | None, rois: list[str],
                 injection_start: float | None, as_json: bool, plot: str | None,
                 out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """CLI body. 0 on success; 2 with one line on ``err`` for any bad input (never a traceback)."""
    try:
        if fps is not None and not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"--fps must be a positive frame rate, got {fps}")
        if intensity not in (None, "lin", "log"):
            raise ValueError(f"--intensity must be lin or log, got {intensity!r}")
        for text in rois or []:
            roi_syntax(text)          # a typo is reported before a long load
        stack = load_stack(frames, fps, intensity)
        parsed = [parse_roi(r, stack.frames.shape[1:]) for r in (rois or [])]
        result = analyze_stack(stack, parsed or None, injection_start)
        if plot:
            try:
                _plot(result, plot)
            except OSError as exc:
                raise ValueError(f"cannot write --plot {plot}: {exc.strerror or exc}") from None
    except (ValueError, OSError, MemoryError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"cathlab-edge analyze: {message}", file=err)
        return EXIT_BAD_INPUT
    if as_json:
        compact = dict(result)
        compact["rois"] = [{k: v for k, v in r.items() if k != "curve"} for r in result["rois"]]
        print(json.dumps(compact), file=out)
    else:
        print(format_table(result), file=out)
    return 0


def format_table(result: dict) -> str:
    run = result["run"]
    lines = [
        f"{result['source']}: {result['frames']} frames at {result['fps']:g} fps ({result['intensity']})",
        f"X-ray run {run['start_s']:.3f}-{run['end_s']:.3f} s ({run['duration_s']:.2f} s, {run['pulses']} pulses"
        f" at {_fmt(result['pulse_rate'], '.2f')} p/s), contrast {'yes' if run['contrast'] else 'no'}, "
        f"mask frames {result['mask_frames']}",
        "",
        f"{'ROI (x,y,w,h)':<22}{'auto':<6}{'arrival s':>10}{'peak s':>9}{'washout s':>11}{'MTT s':>8}"
        f"{'after inj s':>13}{'fit R2':>8}",
    ]
    for r in result["rois"]:
        lines.append(f"{','.join(map(str, r['roi'])):<22}{'yes' if r['auto'] else 'no':<6}"
                     f"{_fmt(r['arrival_s']):>10}{_fmt(r['peak_s']):>9}{_fmt(r['washout_s']):>11}"
                     f"{_fmt(r['mtt_s']):>8}{_fmt(r['arrival_after_injection_s']):>13}{_fmt(r['fit_r2']):>8}")
    if not result["rois"]:
        lines.append("(no ROI could be placed: no image in the field)")
    return "\n".join(lines)


def _fmt(v, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def _plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    try:
        for i, r in enumerate(result["rois"]):
            curve = np.asarray(r["curve"], dtype=float).reshape(-1, 2)
            label = f"ROI {','.join(map(str, r['roi']))}{' (auto)' if r['auto'] else ''}"
            line, = ax.plot(curve[:, 0], curve[:, 1], ".", ms=3, label=label)
            fit = r.get("fit")
            for key, style in (("arrival_s", ":"), ("peak_s", "--"), ("washout_s", "-.")):
                if r[key] is not None:
                    ax.axvline(r[key], color=line.get_color(), ls=style, lw=0.8)
            if fit is not None:
                tt = np.linspace(curve[0, 0], curve[-1, 0], 400)
                ax.plot(tt, gamma_variate(tt, fit["t0_s"], fit["a"], fit["b_s"], fit["K"]), "-",
                        color=line.get_color(), lw=1)
        if result.get("injection_start_s") is not None:
            ax.axvline(result["injection_start_s"], color="k", lw=0.8, label="injection start")
        ax.set_xlabel("time from first frame (s)")
        ax.set_ylabel("mean opacity" + (" (ln units)" if result["intensity"] == "lin" else " (display levels)"))
        ax.set_title(f"{result['source']}: time-density curves (arrival : / peak -- / washout -.)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
