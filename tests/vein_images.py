"""Analytic peak-opacity images of a vein whose lumen is known exactly, for the clearance tests.

A circular lumen of radius R(s) (tapering, stepped) along a curved centreline projects to the opacity
``k * chord`` with chord ``2 sqrt(R^2 - d^2)`` (pixel-area averaged, 3x3 supersampled). Thrombus at arc
fractions [a, b] with a cross-section ``burden`` (the filled-area loss, so the truth is exact):
- "side": a cap beside the lumen (a notch in projection);
- "front": a cap in front of it (only shorter chords, no notch);
- "wall": a layer lining the whole wall (the lumen a concentric circle of radius R sqrt(1 - burden)).
A parallel clean vein, a contrast density ``k`` per run and a shift of the whole scene are options.
"""
from __future__ import annotations

import numpy as np


def cap_offset(burden: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Offset c of the chord cutting off the cap {u > c} whose area is ``burden`` * pi R^2 (bisection)."""
    lo, hi = -R.copy(), R.copy()
    for _ in range(50):
        c = 0.5 * (lo + hi)
        area = R * R * np.arccos(np.clip(c / np.maximum(R, 1e-9), -1, 1)) - c * np.sqrt(np.clip(R * R - c * c, 0, None))
        big = area > burden * np.pi * R * R
        lo, hi = np.where(big, c, lo), np.where(big, hi, c)
    return 0.5 * (lo + hi)


def default_points(size):
    h, w = size
    ys = np.linspace(0.97 * h, 0.03 * h, 24)
    return np.column_stack([0.5 * w + 0.1 * w * np.sin(2 * np.pi * (ys / h) * 1.1), ys])


def nearest_on_polyline(pts, xs, ys, band):
    """Arc length S and signed distance D of every (sub)pixel to the polyline (inf far from it)."""
    seg_len = np.hypot(*np.diff(pts, axis=0).T)
    s_pts = np.concatenate([[0.0], np.cumsum(seg_len)])
    best = np.full((len(ys), len(xs)), np.inf)
    S = np.zeros(best.shape)
    D = np.full(best.shape, np.inf)
    for i in range(len(pts) - 1):
        a, b = pts[i], pts[i + 1]
        c0, c1 = np.searchsorted(xs, [min(a[0], b[0]) - band, max(a[0], b[0]) + band])
        r0, r1 = np.searchsorted(ys, [min(a[1], b[1]) - band, max(a[1], b[1]) + band])
        if c0 >= c1 or r0 >= r1:
            continue
        u = (b - a) / seg_len[i]
        px = xs[None, c0:c1] - a[0]
        py = ys[r0:r1, None] - a[1]
        t = np.clip(px * u[0] + py * u[1], 0, seg_len[i])
        ex, ey = px - t * u[0], py - t * u[1]
        d2 = ex * ex + ey * ey
        win = best[r0:r1, c0:c1]
        upd = d2 < win
        win[upd] = d2[upd]
        S[r0:r1, c0:c1][upd] = (s_pts[i] + t)[upd]
        D[r0:r1, c0:c1][upd] = (np.where(u[0] * py - u[1] * px >= 0, 1.0, -1.0) * np.sqrt(d2))[upd]
    return S, D, s_pts[-1]


def vein(size=(320, 320), width=(16.0, 16.0), step=None, k=0.05, thrombi=(), shift=(0.0, 0.0), noise=0.0,
         seed=0, points=None, parallel=None, background=0.0):
    """(peak-opacity image float32, truth dict).

    ``width``: diameter at the start and the end of the centreline (linear taper); ``step``: (frac, d0, d1)
    a step from d0 to d1 at arc fraction frac instead. ``thrombi``: (a, b, burden, kind). ``parallel``: the
    offset (px, along the normal) of a clean parallel vein of the same width. Truth: the centreline, the
    burden per arc fraction, and ``burden_between(a, b)`` the exact volume fraction.
    """
    h, w = size
    pts0 = default_points(size) if points is None else np.asarray(points, dtype=float)
    pts = pts0 + np.asarray(shift, dtype=float)
    ss = 3
    xs = (np.arange(w * ss) + 0.5) / ss - 0.5
    ys = (np.arange(h * ss) + 0.5) / ss - 0.5
    dmax = max(max(width), *(step[1:] if step else (0,)))
    S, D, length = nearest_on_polyline(pts, xs, ys, dmax / 2 + 2 + (abs(parallel) + dmax if parallel else 0))

    def radius(sv):
        f = sv / length
        if step is not None:
            return np.where(f < step[0], step[1], step[2]) / 2.0
        return (width[0] + (width[1] - width[0]) * f) / 2.0

    def burden_kind(sv):
        f = sv / length
        b = np.zeros_like(f)
        kind = np.full(f.shape, -1)
        for i, (a, e, bur, kd) in enumerate(thrombi):
            inside = (f >= a) & (f <= e)
            b = np.where(inside, bur, b)
            kind = np.where(inside, ["side", "front", "wall"].index(kd), kind)
        return b, kind

    R = radius(S)
    b, kind = burden_kind(S)
    d = D
    hh = np.sqrt(np.clip(R * R - d * d, 0, None))
    L = 2 * hh
    c = cap_offset(b, R)
    L = np.where(kind == 0, np.where(d > c, 0.0, L), L)                          # side: a notch
    L = np.where(kind == 1, np.clip(c + hh, 0, 2 * hh), L)                       # front: shorter chords
    r_in = R * np.sqrt(np.clip(1 - b, 0, 1))
    L = np.where(kind == 2, 2 * np.sqrt(np.clip(r_in ** 2 - d * d, 0, None)), L)  # wall layer
    L = np.where(np.isfinite(d), L, 0.0)
    if parallel:
        dp = np.where(np.isfinite(D), D - parallel, np.inf)
        L = L + 2 * np.sqrt(np.clip(R * R - dp * dp, 0, None))
    img = (k * L).reshape(h, ss, w, ss).mean(axis=(1, 3))
    if background:
        yv, xv = np.mgrid[0:h, 0:w]
        img = img + background * (0.3 * xv / w - 0.2 * yv / h)
    if noise:
        img = img + np.random.default_rng(seed).normal(0, noise, img.shape)
    s_grid = np.linspace(0, length, 4001)
    R_grid = radius(s_grid)
    b_grid, _ = burden_kind(s_grid)

    def burden_between(a=0.0, e=1.0):
        sel = (s_grid >= a * length) & (s_grid <= e * length)
        area = R_grid[sel] ** 2
        return float((b_grid[sel] * area).sum() / area.sum())

    return img.astype(np.float32), {"centerline": pts, "length": length, "burden_between": burden_between,
                                    "burden": burden_between(), "diameter": 2 * R_grid}


def stack(opacity: np.ndarray, intensity: str = "lin", i0: float = 3000.0, seed: int = 0, frames: int = 14):
    """A (T, H, W) run whose peak opacity is ``opacity``: 16-bit linear counts or 8-bit log display video.
    Contrast arrives at frame 4; Poisson quantum noise."""
    rng = np.random.default_rng(seed)
    bolus = np.interp(np.arange(frames), [0, 3, 6, 9, 12, frames], [0, 0, 1, 1, 0.3, 0.1])
    counts = i0 * np.exp(-0.7 - bolus[:, None, None] * opacity[None])
    q = rng.poisson(counts).astype(float)
    if intensity == "lin":
        return np.clip(q, 0, 4095).astype(np.uint16)
    return np.clip(np.rint(30.0 * np.log(np.maximum(q, 1.0)) - 20.0), 0, 255).astype(np.uint8)
