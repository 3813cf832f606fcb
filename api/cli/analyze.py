"""``cathlab-edge analyze``: timing of a recorded run."""
from __future__ import annotations

import argparse
import json
import math
import sys
from typing import TextIO

from api import argtypes
from api.cli.common import JSON_FLAG, RECORDING_FLAGS
from core.analysis.offline import analyze_stack
from core.analysis.offline_figure import render_curves_png
from core.sources.stacks import load_stack
from core.vocab import parse_roi, roi_syntax

EXIT_BAD_INPUT = 2


def add_parser(sub) -> None:
    parser = sub.add_parser("analyze", parents=[RECORDING_FLAGS, JSON_FLAG], help="time a recorded contrast run (.npy or DICOM multi-frame)")
    parser.add_argument("frames", help="a (T, H, W) .npy stack or a DICOM XA/XRF/secondary-capture file")
    parser.add_argument("--roi", action="append", metavar="X,Y,W,H", help="region of interest (repeatable; "
                        "default: one placed automatically on the most-opacified vessel)")
    parser.add_argument("--injection-start", type=argtypes.INJECTION_START, metavar="S",
                        help="injection start in seconds from the first frame")
    parser.add_argument("--plot", metavar="OUT.png", help="draw the time-density curves")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return analyze_main(args.frames, args.fps, args.intensity, args.roi or [], args.injection_start,
                        args.json, args.plot)


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
                png = render_curves_png(result)
                with open(plot, "wb") as fh:
                    fh.write(png)
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
