"""Catheter width against analytic truth over outer width, wall, blur, lumen filling, noise and 8-bit display
quantisation: a table of the % error of the fitted outer width (X: not measured).

    .venv/bin/python -m benchmarks.sweep_catheter [--seeds 2] [--quick] [--range]
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np

from tests.test_catheter_blur import _gauss  # the tests' blur, one copy

try:
    from core.analysis.calibration import catheter_fit
except ImportError:     # an older tree (the "before" column): the width alone
    from core.analysis.calibration import catheter_width_px
    from core.analysis.catheter_fit import TubeFit

    def catheter_fit(mask, points, with_range=False):
        return TubeFit(catheter_width_px(mask, points), math.nan, math.nan, math.nan)

SUB = int(__import__("os").environ.get("SUB", 8))
MU_WALL = 0.12          # ln attenuation per px of wall (the phantom's Device.mu_px)
DISPLAY_STEP = 1 / 70   # ln units per 8-bit display level (the phantom's display gain)


def tube_mask(outer_px: float, wall_px: float, blur_px: float, seed: int, angle_deg: float | None = None,
              fill: float = 0.0, noise: float = 0.01, display: bool = False, size: int = 80):
    """(mask in ln units, lower = more attenuating; two points along the tube). ``fill``: the lumen's
    attenuation per px relative to the wall's (0 empty, 1 looks solid, 2 contrast denser than the wall)."""
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, 180) if angle_deg is None else angle_deg
    R, r = outer_px / 2, outer_px / 2 - wall_px
    f = (np.arange(size * SUB) + 0.5) / SUB - 0.5
    xs, ys = np.meshgrid(f, f)
    c = (size - 1) / 2 + rng.uniform(-0.5, 0.5, 2)
    t = math.radians(angle)
    d = (xs - c[0]) * -math.sin(t) + (ys - c[1]) * math.cos(t)
    outer = 2 * np.sqrt(np.clip(R * R - d * d, 0, None))
    inner = 2 * np.sqrt(np.clip(r * r - d * d, 0, None))
    path = MU_WALL * (outer - inner + fill * inner)
    if blur_px > 0:
        path = _gauss(_gauss(path, blur_px * SUB, 0), blur_px * SUB, 1)
    path = path.reshape(size, SUB, size, SUB).mean(axis=(1, 3))
    img = 5.0 - path + 0.001 * np.arange(size)[None, :] + rng.normal(0, noise, (size, size))
    if display:
        img = np.round(img / DISPLAY_STEP) * DISPLAY_STEP
    along = np.array([math.cos(t), math.sin(t)])
    return img.astype(np.float32), np.array([c - 25 * along, c + 25 * along])


def measure(outer, wall, blur, seed, with_range=False, **kw) -> float | str:
    """% error of the fitted outer width; with_range: "R" appended when the truth is outside its range."""
    mask, pts = tube_mask(outer, wall, blur, seed, **kw)
    try:
        fit = catheter_fit(mask, pts, with_range)
    except ValueError as exc:
        return str(exc)
    err = 100.0 * (fit.width_px / outer - 1.0)
    lo, hi = getattr(fit, "width_range_px", (math.nan, math.nan))
    return (err, lo <= outer <= hi) if with_range else err


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--range", action="store_true", help="also whether the truth is in the width's range")
    a = ap.parse_args()
    outers = (4.0, 6.0, 8.0, 12.0) if not a.quick else (4.0, 6.0, 8.0)
    walls = (0.6, 1.0, 1.5, 2.0)
    blurs = (0.0, 0.5, 1.0, 1.5)
    modes = [("empty", dict()), ("filled", dict(fill=1.0)), ("dense", dict(fill=2.0)),
             ("8bit", dict(display=True)), ("noisy", dict(noise=0.03))]
    if a.quick:
        modes = modes[:2]
    worst, refused, n, spent, inside = 0.0, 0, 0, 0.0, 0
    for name, kw in modes:
        print(f"\n== {name}: % error of the outer width, worst over {a.seeds} seeds (X: not measured)")
        print("outer wall | " + " ".join(f"s={b:<4}" for b in blurs))
        for outer in outers:
            for wall in walls:
                if wall > outer / 2:
                    continue
                cells = []
                for blur in blurs:
                    errs = []
                    for s in range(a.seeds):
                        t0 = time.perf_counter()
                        e = measure(outer, wall, blur, 1000 * s + int(10 * outer + wall * 7 + blur * 3), a.range,
                                    **kw)
                        if isinstance(e, tuple):
                            e, ok = e
                            inside += ok
                        spent += time.perf_counter() - t0
                        n += 1
                        errs.append(e)
                    bad = [e for e in errs if isinstance(e, str)]
                    num = [e for e in errs if not isinstance(e, str)]
                    refused += len(bad)
                    w = max(num, key=abs) if num else None
                    if w is not None:
                        worst = max(worst, abs(w))
                    cells.append(("X" if bad else " ") + (f"{w:+5.1f}" if w is not None else "  -  "))
                print(f"{outer:5.1f} {wall:4.1f} | " + " ".join(cells))
    if a.range:
        print(f"truth inside the fitted width range: {inside}/{n - refused}")
    print(f"\nworst |error| of the widths given: {worst:.1f}%, refused {refused}/{n}, "
          f"mean time {1000 * spent / max(n, 1):.0f} ms per calibration")


if __name__ == "__main__":
    main()
