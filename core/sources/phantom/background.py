"""Contrast-free anatomy with structure a registration can hold on to: bone edges and soft-tissue texture.

Every term is an analytic function of the patient's coordinates (frame position minus the scene shift, in
units of a 512 px field), defined on the whole plane, so a run with the table moved by any amount shows the
same anatomy moved, including what was outside the frame before. Bones are projected solids: a tube for the
femoral shaft and neck (dense cortex, lighter marrow), a sphere for the femoral head, flat plates with a
thick rim for the iliac wing and the pubic rami around the obturator foramen. Edges are sharp (a 0.6 px
logistic), as cortical bone is on a radiograph.
"""
from __future__ import annotations

import numpy as np

EDGE_PX = 0.6
_rng = np.random.default_rng(20240515)          # fixed: the same patient in every run
_TEX_K = _rng.uniform(2 * np.pi / 160, 2 * np.pi / 24, 14)     # soft-tissue texture wavenumbers (1/px)
_TEX_DIR = _rng.uniform(0, np.pi, 14)
_TEX_PHASE = _rng.uniform(0, 2 * np.pi, 14)
_TEX_AMP = _rng.uniform(0.004, 0.012, 14)


def _inside(sd: np.ndarray) -> np.ndarray:
    """Soft indicator of a signed distance (negative inside)."""
    return 1.0 / (1.0 + np.exp(np.clip(sd / EDGE_PX, -50, 50)))


def _seg_dist(X, Y, a, b) -> np.ndarray:
    ax, ay = a
    vx, vy = b[0] - ax, b[1] - ay
    t = np.clip(((X - ax) * vx + (Y - ay) * vy) / (vx * vx + vy * vy), 0.0, 1.0)
    return np.hypot(X - ax - t * vx, Y - ay - t * vy)


def _chord(r: float, rho: np.ndarray) -> np.ndarray:
    return 2.0 * np.sqrt(np.clip(r * r - rho * rho, 0.0, None))


def _ellipse_sd(X, Y, cx, cy, a, b, rot) -> np.ndarray:
    """Approximate signed distance to an ellipse (exact on the axes; plenty for an edge)."""
    c, s = np.cos(rot), np.sin(rot)
    u, v = (X - cx) * c + (Y - cy) * s, -(X - cx) * s + (Y - cy) * c
    k = np.hypot(u / a, v / b)
    return (k - 1.0) * min(a, b)


def anatomy_mu(size: tuple[int, int], shift: tuple[float, float]) -> np.ndarray:
    """Bone and soft-tissue attenuation (ln units) added to the smooth background, in frame pixels."""
    h, w = size
    scale = min(h, w) / 512.0
    X, Y = np.broadcast_arrays(((np.arange(w) - shift[0]) / scale)[None, :],
                               ((np.arange(h) - shift[1]) / scale)[:, None])
    mu = np.zeros((h, w))
    # Femoral shaft and neck: tubes, cortex 11 px thick; the chord of each shell gives the bright edges.
    for a, b, ro, ri in (((395.0, 640.0), (372.0, 330.0), 34.0, 23.0), ((372.0, 330.0), (338.0, 262.0), 24.0, 15.0)):
        rho = _seg_dist(X, Y, a, b)
        mu += 0.011 * (_chord(ro, rho) - _chord(ri, rho)) + 0.004 * _chord(ri, rho)
    # Femoral head: a sphere.
    mu += 0.007 * _chord(44.0, np.hypot(X - 330.0, Y - 250.0))
    # Iliac wing: a plate with a thick rim (crest), and the pubic rami around the obturator foramen.
    sd = _ellipse_sd(X, Y, 150.0, 80.0, 170.0, 95.0, 0.45)
    mu += 0.22 * _inside(sd) + 0.18 * (_inside(sd) - _inside(sd + 9.0))
    outer = _ellipse_sd(X, Y, 200.0, 380.0, 70.0, 52.0, -0.3)
    hole = _ellipse_sd(X, Y, 200.0, 380.0, 48.0, 32.0, -0.3)
    mu += 0.30 * (_inside(outer) - _inside(hole))
    # Soft tissue: a fat / muscle boundary (a few px wide) and a fixed texture.
    mu += 0.07 * (1.0 / (1.0 + np.exp(-np.clip((X - 0.0008 * (Y - 250.0) ** 2 - 430.0) / 4.0, -50, 50))))
    for k, th, ph, amp in zip(_TEX_K, _TEX_DIR, _TEX_PHASE, _TEX_AMP):
        mu += amp * np.sin(k * (X * np.cos(th) + Y * np.sin(th)) + ph)
    return mu
