"""Catheter calibration beside and over a bone edge: % error of the outer width (R: refused, with the reason's
first words), the product's path (catheter_mm_per_px with the run's opacity: the blur measured on the vein).

Analytic: the scenes of tests/test_catheter_vessel_blur.py (display: the blur on the attenuation) and
tests/test_catheter_intensity_blur.py (lin: the blur on the intensity, a ln mask) with a bone's edge parallel
to the catheter (tests.test_catheter_vessel_blur.bone_edge: the bone where the signed distance from the
catheter's axis exceeds the offset; negative offsets put the bone under the catheter). Phantom:
make_sizing_case's catheters (over the pubic ramus and the bony ring), frames blurred in counts.

    .venv/bin/python -m benchmarks.sweep_catheter_bone [--offsets -12,-9,...] [--blurs 0,0.5,1] [--phantom 0,4,8,10,13]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from core.analysis.calibration import catheter_mm_per_px

BONE_MU = 0.3           # the phantom's pubic ramus (ln units): 2.5x the catheter's wall per px


def analytic(outer: float, wall: float, blur: float, offset: float, seed: int, lin: bool,
             bone_mu: float = BONE_MU) -> tuple[str, float]:
    """(% error or "R ..." , CPU s) of one calibration."""
    angle = 10.0 + 37.0 * seed
    bone = None if offset is None else (offset, bone_mu)
    if lin:
        from tests.test_catheter_intensity_blur import scene
        # (its blur in intensity needs a kernel: 0.02 px is none)
        mask, opacity, points, vein = scene(outer, wall, max(blur, 0.02), 0.12, seed=seed, angle_deg=angle, bone=bone)
    else:
        from tests.test_catheter_vessel_blur import scene
        mask, opacity, points, vein = scene(outer, wall, blur, seed=seed, angle_deg=angle, bone=bone)
    return calibrate(mask, points, outer, opacity, vein, lin)


def calibrate(mask, points, outer, opacity, line, lin) -> tuple[str, float]:
    t = time.process_time()
    try:
        width = 2.0 / catheter_mm_per_px(mask, points, 6.0, opacity=opacity, centerline=line, ln_mask=lin)
        text = f"{100.0 * (width / outer - 1.0):+.1f}"
    except ValueError as exc:
        text = "Ra" if "ambiguous" in str(exc) else "Rt" if "fit a tube" in str(exc) else "R?"
    return text, time.process_time() - t


def phantom(seed: int, blur: float) -> tuple[str, float]:
    from benchmarks.sweep_vessel import blurred_stack
    from core.analysis.peak import peak_and_mask
    from core.sources.phantom.render import render_run
    from core.sources.phantom.sizing_cases import make_sizing_case
    intensity = "lin" if seed % 2 == 0 else "log"
    case = make_sizing_case(seed, 50.0, intensity, catheter=True)
    peak, mask = peak_and_mask(blurred_stack(render_run(case.config), intensity, blur))
    return calibrate(mask, case.truth.catheter_xy, case.truth.catheter_px, peak, case.truth.centreline_xy,
                     intensity == "lin")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--offsets", default="none,-12,-9,-6,-3,0,3,5,7,9,11,13,15")
    ap.add_argument("--blurs", default="0,0.5,1")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--tubes", default="6:1.2", help="outer:wall, comma separated")
    ap.add_argument("--kinds", default="display,lin")
    ap.add_argument("--phantom", default="", help="make_sizing_case seeds (catheter=True), e.g. 0,4,8,10,13")
    ap.add_argument("--phantom-blurs", default="0,1")
    a = ap.parse_args(argv)
    times = []
    offsets = [None if o == "none" else float(o) for o in a.offsets.split(",")] if a.offsets else []
    blurs = [float(b) for b in a.blurs.split(",")]
    seeds = [int(s) for s in a.seeds.split(",")]
    worst, refused, n = 0.0, 0, 0
    for kind in a.kinds.split(",") if offsets else []:
        for tube in a.tubes.split(","):
            outer, wall = (float(v) for v in tube.split(":"))
            print(f"\n{kind}, {outer:g} px tube, {wall:g} px wall, bone {BONE_MU} ln beyond the offset; "
                  f"% error per seed (R: refused)")
            print("| offset | " + " | ".join(f"blur {b:g}" for b in blurs) + " |")
            print("|---|" + "---|" * len(blurs))
            for off in offsets:
                cells = []
                for blur in blurs:
                    got = [analytic(outer, wall, blur, off, s, kind == "lin") for s in seeds]
                    times += [t for _, t in got]
                    for text, _ in got:
                        n += 1
                        if text.startswith("R"):
                            refused += 1
                        else:
                            worst = max(worst, abs(float(text)))
                    cells.append(" ".join(text for text, _ in got))
                print(f"| {'none' if off is None else f'{off:g}'} | " + " | ".join(cells) + " |", flush=True)
    if n:
        print(f"\nanalytic: worst |error| {worst:.1f}%, refused {refused}/{n}")
    if a.phantom:
        print("\nphantom make_sizing_case(seed, 50, catheter=True), % error (R: refused)")
        print("| seed | " + " | ".join(f"blur {b}" for b in a.phantom_blurs.split(",")) + " |")
        print("|---|" + "---|" * len(a.phantom_blurs.split(",")))
        for seed in (int(s) for s in a.phantom.split(",")):
            got = [phantom(seed, float(b)) for b in a.phantom_blurs.split(",")]
            times += [t for _, t in got]
            print(f"| {seed} | " + " | ".join(t for t, _ in got) + " |", flush=True)
    if times:
        print(f"\nCPU time per calibration: {min(times):.1f}-{max(times):.1f} s, mean {np.mean(times):.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
