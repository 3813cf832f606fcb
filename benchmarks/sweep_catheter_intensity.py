"""Catheter calibration on ln masks (12/16-bit linear video): analytic catheters and a vein blurred in INTENSITY
(tests/test_catheter_intensity_blur.py's scene), the product's path (catheter_mm_per_px with the vein's opacity),
the exact model (``ln_mask``) against the linear one (the blur acting on ln). % error of the outer width, R: refused.

    PYTHONPATH=. .venv/bin/python benchmarks/sweep_catheter_intensity.py --seeds 0,1
"""
from __future__ import annotations

import argparse
import time

from core.analysis.calibration import catheter_mm_per_px
from tests.test_catheter_intensity_blur import scene

# (outer, wall, blur, mu): outer 5-14 px, walls 0.75-2 px, blur 0.5-1.5 px, wall attenuation 0.12-0.3 ln/px.
CASES = [(5, 0.75, 0.5, 0.12), (5, 1.0, 1.0, 0.3), (6, 1.2, 1.0, 0.12), (6, 1.2, 1.0, 0.3), (8, 1.0, 1.0, 0.12),
         (8, 2.0, 1.5, 0.3), (10, 1.5, 1.5, 0.12), (12, 1.0, 0.5, 0.2), (14, 2.0, 1.0, 0.3), (14, 0.75, 1.5, 0.12)]


def one(outer, wall, blur, mu, seed, ln_mask: bool) -> tuple[str, float]:
    mask, opacity, points, vein = scene(outer, wall, blur, mu, seed=seed, angle_deg=10.0 + 37.0 * seed)
    t = time.process_time()
    try:
        width = 2.0 / catheter_mm_per_px(mask, points, 6.0, opacity=opacity, centerline=vein, ln_mask=ln_mask)
        text = f"{100.0 * (width / outer - 1.0):+5.1f}"
    except ValueError:
        text = "    R"
    return text, time.process_time() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    print("| outer | wall | blur | mu | linear model (%) | ln model (%) | time linear / ln (s) |")
    print("|---|---|---|---|---|---|---|")
    for outer, wall, blur, mu in CASES:
        cols = {False: [], True: []}
        times = {False: 0.0, True: 0.0}
        for seed in seeds:
            for ln in (False, True):
                text, dt = one(outer, wall, blur, mu, seed, ln)
                cols[ln].append(text.strip())
                times[ln] += dt / len(seeds)
        print(f"| {outer} | {wall} | {blur} | {mu} | {' '.join(cols[False])} | {' '.join(cols[True])} | "
              f"{times[False]:.2f} / {times[True]:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
