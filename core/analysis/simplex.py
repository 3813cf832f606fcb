"""Nelder-Mead minimisation, small and dependency-free (no SciPy on the appliance)."""
from __future__ import annotations

import numpy as np


def simplex(f, x0: np.ndarray, scale: np.ndarray, iters: int = 300, tol: float = 1e-10):
    """Nelder-Mead minimum of ``f`` from ``x0`` (initial steps ``scale``): (value, point)."""
    n = len(x0)
    pts = [np.asarray(x0, dtype=float)] + [x0 + np.eye(n)[i] * scale[i] for i in range(n)]
    vals = [f(p) for p in pts]
    for _ in range(iters):
        order = np.argsort(vals)
        pts, vals = [pts[i] for i in order], [vals[i] for i in order]
        if np.isfinite(vals[-1]) and vals[-1] - vals[0] <= tol * (abs(vals[0]) + 1e-30):
            break
        centre = np.mean(pts[:-1], axis=0)
        xr = centre + (centre - pts[-1])
        fr = f(xr)
        if fr < vals[0]:
            xe = centre + 2.0 * (centre - pts[-1])
            fe = f(xe)
            pts[-1], vals[-1] = (xe, fe) if fe < fr else (xr, fr)
        elif fr < vals[-2]:
            pts[-1], vals[-1] = xr, fr
        else:
            xc = centre + 0.5 * (pts[-1] - centre)
            fc = f(xc)
            if fc < vals[-1]:
                pts[-1], vals[-1] = xc, fc
            else:
                pts = [pts[0]] + [pts[0] + 0.5 * (p - pts[0]) for p in pts[1:]]
                vals = [vals[0]] + [f(p) for p in pts[1:]]
    k = int(np.argmin(vals))
    return vals[k], pts[k]
