"""Catheter width against analytic truth over outer width, wall, blur, lumen filling, noise and 8-bit display
quantisation: a table of the % error of the fitted outer width (X: not measured).

    .venv/bin/python -m benchmarks.sweep_catheter [--seeds 2] [--quick] [--range] [--vein-only]

The "vein" tables: the same PSF also blurs a contrast-filled vein beside the catheter (its opacity image),
and the calibration goes the product's way (catheter_mm_per_px with the run's opacity: the blur measured on
the vein, refused when the width stays ambiguous; R: refused); thin walls, widths 5-14 px, any angle.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np

from core.analysis.calibration import catheter_mm_per_px
from core.analysis.catheter_profile import catheter_fit
from core.sources.phantom.psf import blur_axis

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
        path = blur_axis(blur_axis(path, blur_px * SUB, 0), blur_px * SUB, 1)
    path = path.reshape(size, SUB, size, SUB).mean(axis=(1, 3))
    img = 5.0 - path + 0.001 * np.arange(size)[None, :] + rng.normal(0, noise, (size, size))
    if display:
        img = np.round(img / DISPLAY_STEP) * DISPLAY_STEP
    along = np.array([math.cos(t), math.sin(t)])
    return img.astype(np.float32), np.array([c - 25 * along, c + 25 * along])


def vein_opacity(blur_px: float, seed: int, mask_points: np.ndarray, vein_px: float = 16.0, size: int = 80,
                 noise: float = 0.01, offset_px: float = 26.0):
    """(opacity, vein centreline): a contrast-filled vein ``offset_px`` beside the catheter (parallel to it),
    blurred by the same PSF as the mask, pixel-averaged, with noise."""
    rng = np.random.default_rng(seed + 7)
    a, b = mask_points
    along = (b - a) / np.hypot(*(b - a))
    normal = np.array([-along[1], along[0]])
    c = (a + b) / 2 + offset_px * normal
    f = (np.arange(size * SUB) + 0.5) / SUB - 0.5
    xs, ys = np.meshgrid(f, f)
    d = (xs - c[0]) * normal[0] + (ys - c[1]) * normal[1]
    path = 0.05 * 2 * np.sqrt(np.clip((vein_px / 2) ** 2 - d * d, 0, None))
    if blur_px > 0:
        path = blur_axis(blur_axis(path, blur_px * SUB, 0), blur_px * SUB, 1)
    path = path.reshape(size, SUB, size, SUB).mean(axis=(1, 3))
    opacity = path + rng.normal(0, noise, (size, size))
    return opacity.astype(np.float32), np.array([c - 35 * along, c + 35 * along])


def measure(outer, wall, blur, seed, with_range=False, vein=False, **kw) -> float | str:
    """% error of the fitted outer width; with_range: (error, truth inside the width's range); vein: through
    catheter_mm_per_px with the vein's opacity ("R" when refused)."""
    size = 110 if vein else 80
    mask, pts = tube_mask(outer, wall, blur, seed, size=size, **kw)
    if vein:
        opacity, line = vein_opacity(blur, seed, pts, size=size)
        try:
            width = 2.0 / catheter_mm_per_px(mask, pts, 6.0, opacity=opacity, centerline=line)
        except ValueError as exc:
            return "R" if str(exc).startswith(("catheter width ambiguous", "catheter profile does not fit a tube")) \
                else str(exc)
        return 100.0 * (width / outer - 1.0)
    try:
        fit = catheter_fit(mask, pts)
    except ValueError as exc:
        return str(exc)
    err = 100.0 * (fit.width_px / outer - 1.0)
    lo, hi = getattr(fit, "width_range_px", (math.nan, math.nan))
    return (err, lo <= outer <= hi) if with_range else err


def table(name: str, kw: dict, outers, walls, blurs, seeds: int, with_range: bool, stats: dict) -> None:
    """Print one table: the worst % error over ``seeds`` per (outer, wall, blur); X: not measured, R: refused
    as ambiguous (the cell then shows the worst of the others)."""
    print(f"\n== {name}: % error of the outer width, worst over {seeds} seeds (X: not measured, R: refused)")
    print("outer wall | " + " ".join(f"s={b:<4}" for b in blurs))
    for outer in outers:
        for wall in walls:
            if wall > outer / 2:
                continue
            cells = []
            for blur in blurs:
                errs = []
                for s in range(seeds):
                    t0 = time.perf_counter()
                    e = measure(outer, wall, blur, 1000 * s + int(10 * outer + wall * 7 + blur * 3), with_range,
                                **kw)
                    if isinstance(e, tuple):
                        e, ok = e
                        stats["inside"] += ok
                    stats["spent"] += time.perf_counter() - t0
                    stats["n"] += 1
                    errs.append(e)
                ambiguous = [e for e in errs if e == "R"]
                bad = [e for e in errs if isinstance(e, str) and e != "R"]
                num = [e for e in errs if not isinstance(e, str)]
                stats["refused"] += len(bad)
                stats["ambiguous"] += len(ambiguous)
                w = max(num, key=abs) if num else None
                if w is not None:
                    stats["worst"] = max(stats["worst"], abs(w))
                mark = "X" if bad else "R" if ambiguous else " "
                cells.append(mark + (f"{w:+5.1f}" if w is not None else "  -  "))
            print(f"{outer:5.1f} {wall:4.1f} | " + " ".join(cells))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--range", action="store_true", help="also whether the truth is in the width's range")
    ap.add_argument("--vein-only", action="store_true", help="only the tables with the blur measured on a vein")
    ap.add_argument("--vein-tables", type=int, default=3, help="how many of the vein tables (plain, dense, 8-bit)")
    a = ap.parse_args()
    outers = (4.0, 6.0, 8.0, 12.0) if not a.quick else (4.0, 6.0, 8.0)
    walls = (0.6, 1.0, 1.5, 2.0)
    blurs = (0.0, 0.5, 1.0, 1.5)
    modes = [("empty", dict()), ("filled", dict(fill=1.0)), ("dense", dict(fill=2.0)),
             ("8bit", dict(display=True)), ("noisy", dict(noise=0.03))]
    if a.quick:
        modes = modes[:2]
    stats = dict(worst=0.0, refused=0, ambiguous=0, n=0, spent=0.0, inside=0)
    if not a.vein_only:
        for name, kw in modes:
            table(name, kw, outers, walls, blurs, a.seeds, a.range, stats)
        if a.range:
            print(f"truth inside the fitted width range: {stats['inside']}/{stats['n'] - stats['refused']}")
        print(f"\nworst |error| of the widths given: {stats['worst']:.1f}%, refused {stats['refused']}/{stats['n']}, "
              f"mean time {1000 * stats['spent'] / max(stats['n'], 1):.0f} ms per calibration")
    stats = dict(worst=0.0, refused=0, ambiguous=0, n=0, spent=0.0, inside=0)
    thin = (0.5, 0.75, 1.0, 1.5)
    wide = (5.0, 6.0, 8.0, 10.0, 14.0) if not a.quick else (5.0, 8.0)
    for name, kw in [("vein", dict(vein=True)), ("vein, dense lumen", dict(vein=True, fill=2.0)),
                     ("vein, 8bit", dict(vein=True, display=True))][:1 if a.quick else a.vein_tables]:
        table(name, kw, wide, thin, blurs, a.seeds, False, stats)
    print(f"\nblur from the vein: worst |error| of the widths given: {stats['worst']:.1f}%, refused as ambiguous "
          f"{stats['ambiguous']}/{stats['n']}, not measured {stats['refused']}, "
          f"mean time {1000 * stats['spent'] / max(stats['n'], 1):.0f} ms per calibration")


if __name__ == "__main__":
    main()
