"""Nelder-Mead minimisation, small and dependency-free (no SciPy on the appliance)."""
from __future__ import annotations

import numpy as np


def simplex(f, x0: np.ndarray, scale: np.ndarray, iters: int = 300, tol: float = 1e-10):
    """Nelder-Mead minimum of ``f`` from ``x0`` (initial steps ``scale``): (value, point).

    The catheter and blur fits call this thousands of times per sizing with a cost of a few microseconds: the
    vertices are lists of floats (numpy's per-call overhead on 2-3 numbers was most of a search's time), the
    arithmetic the same as on arrays.
    """
    x = [float(v) for v in np.asarray(x0, dtype=float)]
    s = [float(v) for v in np.asarray(scale, dtype=float)]
    n = len(x)
    pts = [x] + [[x[j] + (s[i] if j == i else 0.0 * s[i]) for j in range(n)] for i in range(n)]
    vals = [f(np.array(p)) for p in pts]
    for _ in range(iters):
        # Ties (points out of bounds cost inf) and NaN are ordered by numpy's argsort, as ever (a search's path
        # depends on the order among equals); without them any sort gives the same order.
        plain = len(set(vals)) > n and all(v == v for v in vals)          # distinct, no NaN
        order = sorted(range(n + 1), key=vals.__getitem__) if plain else np.argsort(vals)
        pts, vals = [pts[i] for i in order], [vals[i] for i in order]
        if vals[-1] - vals[0] <= tol * (abs(vals[0]) + 1e-30) and vals[-1] < np.inf:
            break
        centre = list(pts[0])
        for p in pts[1:-1]:
            centre = [c + v for c, v in zip(centre, p)]
        centre = [c / n for c in centre]
        worst = pts[-1]
        xr = [c + (c - w) for c, w in zip(centre, worst)]
        fr = f(np.array(xr))
        if fr < vals[0]:
            xe = [c + 2.0 * (c - w) for c, w in zip(centre, worst)]
            fe = f(np.array(xe))
            pts[-1], vals[-1] = (xe, fe) if fe < fr else (xr, fr)
        elif fr < vals[-2]:
            pts[-1], vals[-1] = xr, fr
        else:
            xc = [c + 0.5 * (w - c) for c, w in zip(centre, worst)]
            fc = f(np.array(xc))
            if fc < vals[-1]:
                pts[-1], vals[-1] = xc, fc
            else:
                b = pts[0]
                pts = [b] + [[bj + 0.5 * (pj - bj) for bj, pj in zip(b, p)] for p in pts[1:]]
                vals = [vals[0]] + [f(np.array(p)) for p in pts[1:]]
    k = int(np.argmin(vals))
    return vals[k], np.array(pts[k])
