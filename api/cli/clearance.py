"""``cathlab-edge clearance``: clearance of a baseline against a later run."""
from __future__ import annotations

import argparse
import json
import math
import sys

from api import argtypes
from api.cli.common import JSON_FLAG, RECORDING_FLAGS


def add_parser(sub) -> None:
    parser = sub.add_parser("clearance", parents=[RECORDING_FLAGS, JSON_FLAG], help="thrombus burden and %% clearance, baseline against a later run")
    parser.add_argument("baseline", help="baseline venogram (.npy or DICOM)")
    parser.add_argument("post", nargs="+", metavar="RUN", help="later venogram(s) (.npy or DICOM), in order: each "
                        "is measured against the baseline, all sharing one reference lumen")
    parser.add_argument("--centerline", metavar="X,Y;X,Y;...", help="vessel centreline in baseline pixels "
                        "(default: found automatically)")
    parser.add_argument("--diameter", type=argtypes.DIAMETER_PX, metavar="PX",
                        help="operator's reference lumen diameter in pixels: a floor under the reference "
                        "measured along the vein (the widest lumen any run shows)")
    parser.add_argument("--grades", metavar="II,III",
                        help="lysis grade thresholds in %% clearance (default: the grade_thresholds setting, 50,95)")
    parser.add_argument("--segments", metavar="NAME:A-B,...", help="named parts of the centreline by arc fraction")
    parser.add_argument("--image", metavar="OUT.png", help="both peak-opacity images with the findings")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    grades = args.grades
    if grades is None:
        from api.cli.common import settings_from
        from core.ops.settings import SettingsError
        try:
            grades = settings_from(args).grade_thresholds
        except SettingsError as exc:
            return _fail(sys.stderr, str(exc).splitlines()[0])
    return clearance_main(args.baseline, args.post, args.fps, args.intensity, args.centerline, args.diameter,
                          args.segments, args.json, args.image, grades=grades)


def clearance_main(baseline: str, post: str, fps: float | None, intensity: str | None, centerline: str | None,
                   diameter: float | None, segments: str | None, as_json: bool, image: str | None,
                   out=sys.stdout, err=sys.stderr, grades=None) -> int:
    """``cathlab-edge clearance``: 0 on success, 2 with one line on ``err`` for bad input. ``post``: one later
    run or a list of them; ``grades``: "II,III" text or two numbers (None: 50, 95)."""
    # Loaded when the command runs, not each time the parser of every command is built.
    from core.analysis.clearance.figure import render_clearance_png
    from core.analysis.clearance.grading import DEFAULT_GRADES, check_thresholds, parse_segments
    from core.analysis.clearance.measure import MAX_CENTERLINE_POINTS, check_operator_centerline, measure_runs
    from core.analysis.peak import field_only, peak_and_mask
    from core.analysis.vessel import parse_centerline
    from core.sources.stacks import load_stack

    try:
        fps_v = _opt_float(fps, "--fps")
        diameter_v = _opt_float(diameter, "--diameter")
        if intensity is not None and intensity not in ("lin", "log"):
            raise ValueError(f"--intensity must be lin or log, got {intensity!r}")
        line = parse_centerline(centerline) if centerline is not None else None
        if line is not None and len(line) > MAX_CENTERLINE_POINTS:
            check_operator_centerline(line, (1 << 30, 1 << 30))   # too many points: said before the long load
        segs = parse_segments(segments)
        thresholds = check_thresholds(_parse_grades(grades) if grades is not None else DEFAULT_GRADES)
        posts = [post] if isinstance(post, str) else list(post)
        stacks = [load_stack(path, fps=fps_v, intensity=intensity) for path in [baseline, *posts]]
        for st in stacks[1:]:
            if stacks[0].frames.shape[1:] != st.frames.shape[1:]:
                raise ValueError(f"baseline frames are {stacks[0].frames.shape[2]}x{stacks[0].frames.shape[1]} but "
                                 f"post frames are {st.frames.shape[2]}x{st.frames.shape[1]}")
        # Outside the collimated field and in the burnt-in text nothing is measured, as live.
        pm = [field_only(st, *peak_and_mask(st)) for st in stacks]
        peaks = [p for p, _ in pm]
        if line is not None:
            line = check_operator_centerline(line, peaks[0].shape)
        result = measure_runs(peaks[0], peaks[1:], centerline=line, diameter_px=diameter_v, segments=segs,
                              grade_thresholds=thresholds, masks=_masks_if_supported([m for _, m in pm]))
    except ValueError as exc:
        return _fail(err, str(exc).splitlines()[0] if str(exc) else "invalid input")
    if image is not None:
        try:
            png = render_clearance_png(peaks[0], peaks[-1], result)
            with open(image, "wb") as fh:
                fh.write(png)
        except OSError as exc:
            return _fail(err, f"cannot write --image {image}: {exc.strerror or exc}")
    if as_json:
        out.write(json.dumps(result, allow_nan=False) + "\n")
    else:
        out.write(summary_text(result))
    return 0


def summary_text(result: dict) -> str:
    """The readable (non-JSON) report."""
    lines = []
    clear = result["clearance_pct"]
    lines.append(f"thrombus burden   baseline {_fmt1(result['burden_baseline_pct'])}   "
                 f"post {_fmt1(result['burden_post_pct'])}")
    if clear is None:
        lines.append("clearance         not measurable")
    elif result.get("progression"):
        lines.append(f"clearance         {clear:.1f}%   PROGRESSION (more thrombus than at baseline), not graded")
    else:
        lines.append(f"clearance         {clear:.1f}%   grade {result['grade'] or 'none (not gradable)'} "
                     f"(II from {result['grade_thresholds'][0]:g}%, III above {result['grade_thresholds'][1]:g}%)   "
                     f">=75% removal: {'yes' if result['removal_ge_75'] else 'no'}")
    dx, dy = result["shift_px"]
    lines.append(f"registration      post = baseline moved by ({dx:+.1f}, {dy:+.1f}) px, "
                 f"match {result['registration_score']:.2f}")
    lines.append(f"vessel            {len(result['stations'])} stations ({result['stations_measured']} measured), "
                 f"reference diameter {result['diameter_px']:.1f} px")
    for seg in result["segments"]:
        c = seg["clearance_pct"]
        lines.append(f"segment {seg['name']:<10} {seg['start']:.2f}-{seg['end']:.2f}  burden "
                     f"{_fmt1(seg['burden_baseline_pct'])} -> {_fmt1(seg['burden_post_pct'])}   clearance "
                     + ("n/a" if c is None else f"{c:.1f}% grade {seg['grade']}"))
    for d in result["defects"]:
        lines.append(f"defect            arc {d['start_frac']:.2f}-{d['end_frac']:.2f}, baseline burden "
                     f"mean {_fmt1(d['mean_burden_pct'])}, peak {_fmt1(d['peak_burden_pct'])}")
    for d in result.get("residual_defects", []):
        lines.append(f"residual defect   arc {d['start_frac']:.2f}-{d['end_frac']:.2f} at ({d['x']:.0f}, {d['y']:.0f}), "
                     f"post burden mean {_fmt1(d['mean_burden_pct'])}, peak {_fmt1(d['peak_burden_pct'])}")
    for k, r in enumerate(result.get("runs", [])[:-1], start=1):
        lines.append(f"run {k}             burden {_fmt1(r['burden_post_pct'])}   clearance "
                     + ("n/a" if r["clearance_pct"] is None else f"{r['clearance_pct']:.1f}% grade {r['grade']}"))
    for w in result.get("warnings", []):
        lines.append(f"NOT GRADABLE: {w}")
    for note in result["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines) + "\n"


def _parse_grades(grades):
    if isinstance(grades, str):
        try:
            return tuple(float(v) for v in grades.split(","))
        except ValueError:
            raise ValueError(f"--grades {grades!r} is not two numbers II,III (e.g. 50,95)") from None
    return grades


def _masks_if_supported(masks):
    """The mask images for registration on the anatomy, when the registration takes them."""
    import inspect

    from core.analysis.registration import register
    return masks if "fixed_mask" in inspect.signature(register).parameters else None


def _fmt1(v) -> str:
    return "n/a" if v is None else f"{v:.1f}%"


def _fail(err, message: str) -> int:
    err.write(f"cathlab-edge clearance: {message}\n")
    return 2


def _opt_float(value, name: str, positive: bool = True) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} {value!r} is not a number") from None
    if not math.isfinite(v) or (positive and v <= 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return v
