"""core.analysis.simplex: the Nelder-Mead search the catheter and blur fits run thousands of times per sizing.

Its vertices are lists of floats for speed; the searches' results (every width and blur the fits measure) must
be the same bits as the textbook array form below, step for step, ties and out-of-bounds points included.
"""
from __future__ import annotations

import numpy as np
import pytest

from core.analysis.simplex import simplex


def _reference(f, x0, scale, iters=300, tol=1e-10):
    """Nelder-Mead on arrays, as the module was first written (the specification)."""
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


def _same(a, b) -> bool:
    return (a[0] == b[0] or (a[0] != a[0] and b[0] != b[0])) and np.array_equal(a[1], b[1], equal_nan=True)


@pytest.mark.parametrize("kind", ["smooth", "bounded", "ties", "nan"])
def test_same_bits_as_the_array_form(kind):
    rng = np.random.default_rng(["smooth", "bounded", "ties", "nan"].index(kind))
    for _ in range(300):
        n = int(rng.integers(1, 4))
        a = rng.normal(size=(n, n))
        a = a @ a.T + 0.1 * np.eye(n)
        c, lo = rng.normal(size=n), rng.normal(size=n) - 1.0

        def f(v):
            d = v - c
            val = float(d @ a @ d)
            if kind == "bounded" and np.any(v < lo):
                return np.inf                      # as the fits' costs outside their bounds
            if kind == "ties":
                return round(val, 1)          # coarse: many equal vertices
            if kind == "nan" and d[0] > 2.5:
                return np.nan
            return val
        x0, scale = rng.normal(size=n), rng.uniform(0.01, 1.0, size=n)
        iters, tol = int(rng.integers(5, 300)), 10.0 ** -int(rng.integers(4, 13))
        got = simplex(f, x0.copy(), scale.copy(), iters, tol)
        assert _same(got, _reference(f, x0.copy(), scale.copy(), iters, tol))


def test_finds_a_minimum():
    def f(v):
        return float((v[0] - 1.25) ** 2 + 3.0 * (v[1] + 0.5) ** 2 + 0.5 * (v[0] - 1.25) * (v[1] + 0.5))
    val, x = simplex(f, np.array([0.0, 0.0]), np.array([0.1, 0.1]))
    assert val < 1e-9
    np.testing.assert_allclose(x, [1.25, -0.5], atol=1e-4)
