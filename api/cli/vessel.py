"""``cathlab-edge vessel``: lumen diameters along the vein of one run, its reference, the lesion and its size."""
from __future__ import annotations

import argparse
import json
import sys

from api import argtypes
from api.cli.common import JSON_FLAG, RECORDING_FLAGS


def add_parser(sub) -> None:
    parser = sub.add_parser("vessel", parents=[RECORDING_FLAGS, JSON_FLAG],
                            help="vessel sizing: diameters, reference, %% stenosis and lesion length of one run")
    parser.add_argument("frames", metavar="FRAMES", help="venogram run (.npy or DICOM)")
    parser.add_argument("--centerline", metavar="X,Y;X,Y;...", help="vessel centreline in pixels "
                        "(default: found automatically)")
    cal = parser.add_mutually_exclusive_group()
    cal.add_argument("--mm-per-px", type=argtypes.MM_PER_PX, metavar="X",
                     help="operator's calibration at the vessel (default: a catheter, then the DICOM tags)")
    cal.add_argument("--catheter", metavar="X,Y;X,Y", help="two points along a catheter of known size in the image")
    parser.add_argument("--catheter-french", type=argtypes.CATHETER_FRENCH, metavar="F",
                        help="that catheter's size in French (outer diameter F/3 mm)")
    parser.add_argument("--image", metavar="OUT.png", help="the vessel with its edges, the lesion and the "
                        "diameter profile against its reference")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return vessel_main(args.frames, args.fps, args.intensity, args.centerline, args.mm_per_px, args.catheter,
                       args.catheter_french, args.json, args.image)


def vessel_main(frames: str, fps: float | None, intensity: str | None, centerline: str | None,
                mm_per_px: float | None, catheter: str | None, catheter_french: float | None, as_json: bool,
                image: str | None, out=None, err=None) -> int:
    """0 on success, 2 with one line on ``err`` (default: stderr) for bad input."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    # Loaded when the command runs, not each time the parser of every command is built.
    from core.analysis.calibration import catheter_mm_per_px, dicom_mm_per_px, parse_catheter
    from core.analysis.clearance.measure import MAX_CENTERLINE_POINTS, check_operator_centerline
    from core.analysis.display_gain import estimate_display_gain
    from core.analysis.peak import field_only, peak_and_mask
    from core.analysis.sizing import measure_sizing
    from core.analysis.sizing_blur import ln_per_unit
    from core.analysis.sizing_figure import render_sizing_png
    from core.analysis.vessel import parse_centerline
    from core.sources.stacks import load_stack

    try:
        if (catheter is None) != (catheter_french is None):
            raise ValueError("--catheter and --catheter-french go together (two points along the catheter and "
                             "its size)")
        if mm_per_px is not None and catheter is not None:
            raise ValueError("give --mm-per-px or --catheter, not both")
        line = parse_centerline(centerline) if centerline is not None else None
        if line is not None and len(line) > MAX_CENTERLINE_POINTS:
            check_operator_centerline(line, (1 << 30, 1 << 30))   # too many points: said before the long load
        cath = parse_catheter(catheter) if catheter is not None else None
        stack = load_stack(frames, fps=fps, intensity=intensity)
        # Outside the collimated field and in the burnt-in text nothing is measured, as live.
        peak, mask = field_only(stack, *peak_and_mask(stack))
        if line is not None:
            line = check_operator_centerline(line, peak.shape)
        source, mm = None, None
        # Display video: the LUT's gain from the run's noise puts the levels in ln units of the light, where the
        # detector's blur acts (None when the noise does not give it: the blur on the levels as before).
        gain = estimate_display_gain(stack.frames).gain if stack.intensity == "log" else None
        if mm_per_px is not None:
            source, mm = "operator", float(mm_per_px)
        elif cath is not None:
            source, mm = "catheter", catheter_mm_per_px(mask, cath, catheter_french, opacity=peak, centerline=line,
                                                        ln_mask=stack.intensity == "lin", display_gain=gain)
        else:
            mm = dicom_mm_per_px(frames)
            source = "dicom" if mm is not None else None
        sizing = measure_sizing(peak, line, mm_per_px=mm, calibration=source, mask=mask,
                                ln_per_unit=ln_per_unit(stack.intensity == "lin", gain))
    except ValueError as exc:
        return _fail(err, str(exc).splitlines()[0] if str(exc) else "invalid input")
    result = sizing.to_json()
    if image is not None:
        try:
            with open(image, "wb") as fh:
                fh.write(render_sizing_png(peak, sizing))
        except OSError as exc:
            return _fail(err, f"cannot write --image {image}: {exc.strerror or exc}")
    out.write(json.dumps(result, allow_nan=False) + "\n" if as_json else summary_text(result))
    return 0


def summary_text(r: dict) -> str:
    """The readable (non-JSON) report."""
    def both(px, mm, unit="px"):
        return f"{px:.1f} {unit}" + (f" ({mm:.1f} mm)" if mm is not None else "")

    cal = r["calibration"]
    lines = [f"calibration       {cal} ({r['mm_per_px']:.4f} mm/px)" if cal else
             "calibration       none: pixels only",
             f"reference         {both(r['reference_diameter_px'], r['reference_diameter_mm'])} at the lesion",
             f"MLD               {both(r['mld_px'], r['mld_mm'])} at ({r['lesion']['x']:.0f}, {r['lesion']['y']:.0f}),"
             f" arc {r['lesion']['frac']:.2f}",
             f"stenosis          {r['diameter_stenosis_pct']:.1f}% diameter, {r['area_stenosis_pct']:.1f}% area"
             + ("   >= 50%: a residual stenosis" if r["residual_stenosis_ge_50"] else ""),
             f"lesion length     {both(r['lesion_length_px'], r['lesion_length_mm'])} below 80% of the reference"]
    lines += [f"warning: {w}" for w in r["warnings"]]
    return "\n".join(lines) + "\n"


def _fail(err, message: str) -> int:
    err.write(f"cathlab-edge vessel: {message}\n")
    return 2
