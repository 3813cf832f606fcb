"""NumPy reference for the Cython kernels in ext/_vessel.pyx: same signatures, same results (to the bit).

Each function here is the specification of its compiled twin; tests/test_vessel_kernels.py runs both on the
same inputs. Written for clarity, not speed.
"""
from __future__ import annotations

import heapq

import numpy as np

_STEPS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def sample_profiles(img, xy, normal, tangent, across, along, out):
    """``out`` (M, K) float32: ``img`` (H, W) float32 bilinear at xy + a * normal + b * tangent (float64 (M, 2)
    each; a in ``across`` (K,), b in ``along`` (L,)), averaged over b. NaN for a sample outside the image or
    touching a NaN pixel."""
    h, w = img.shape
    a = across[None, :, None]
    b = along[None, None, :]
    x = xy[:, 0, None, None] + a * normal[:, 0, None, None] + b * tangent[:, 0, None, None]
    y = xy[:, 1, None, None] + a * normal[:, 1, None, None] + b * tangent[:, 1, None, None]
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    x0 = np.clip(np.floor(x), 0, max(w - 2, 0)).astype(np.intp)
    y0 = np.clip(np.floor(y), 0, max(h - 2, 0)).astype(np.intp)
    fx = (x - x0).astype(np.float32)
    fy = (y - y0).astype(np.float32)
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    v = (img[y0, x0] * (1 - fx) * (1 - fy) + img[y0, x1] * fx * (1 - fy)
         + img[y1, x0] * (1 - fx) * fy + img[y1, x1] * fx * fy)
    v = np.where(inside, v, np.nan)
    out[...] = v.mean(axis=2)


def geodesic(mask, cost, start, dist, prev):
    """Dijkstra inside ``mask`` (H, W) uint8 from the flat node ``start`` (8-neighbours, step length x mean cost
    of its two nodes; ``cost`` (H, W) float32 or float64, the distances summed in its precision) into ``dist``
    (H * W,) float64 (inf on entry) and ``prev`` (H * W,) int64 (-1 on entry)."""
    h, w = mask.shape
    m = mask.ravel()
    c = cost.ravel()
    zero = c.dtype.type(0.0)
    dist[start] = 0.0
    heap = [(zero, start)]
    while heap:
        d, u = heapq.heappop(heap)
        if d > dist[u]:
            continue
        uy, ux = divmod(u, w)
        for dy, dx in _STEPS:
            vy, vx = uy + dy, ux + dx
            if 0 <= vy < h and 0 <= vx < w:
                v = vy * w + vx
                if m[v]:
                    step = c.dtype.type((1.4142135623730951 if dy and dx else 1.0) * 0.5)
                    nd = d + step * (c[u] + c[v])
                    if nd < dist[v]:
                        dist[v] = nd
                        prev[v] = u
                        heapq.heappush(heap, (nd, v))


def rise_outwards(ps, top, rise, start, floor, end):
    """Per row of ``ps`` (M, K) float32 or float64, from ``top`` (M,) intp towards higher indices, with ``rise``
    (M,) float64: ``start`` (M,) intp, index where a neighbour's ascent begins, K when none; ``floor`` (M,)
    ps's dtype, the valley's level, NaN when none; ``end`` (M,) intp, index where that second column has
    fallen back to the valley's level, K when it does not within the row. The profile falls along the
    column's flank; once it has fallen by ``rise`` from its highest point since ``top``, the first sample
    ``rise`` above the lowest so far starts another column, whose ascent begins at the last sample within half
    of ``rise`` of that lowest level (a flat gap between the columns stays the column's own). NaN samples are
    skipped."""
    m, k = ps.shape
    idx = np.arange(k)[None, :]
    after = (idx >= top[:, None]) & np.isfinite(ps)
    high = np.maximum.accumulate(np.where(after, ps, -np.inf), axis=1)
    fallen = after & np.logical_or.accumulate(after & (high - ps > rise[:, None]), axis=1)
    low = np.minimum.accumulate(np.where(fallen, ps, np.inf), axis=1)
    up = fallen & (ps - low > rise[:, None])
    found = up.any(axis=1)
    first = np.where(found, np.argmax(up, axis=1), k)
    rows = np.arange(m)
    valley = low[rows, np.clip(first, 0, k - 1)]
    level = (valley + 0.5 * rise)[:, None]
    foot = fallen & (idx < first[:, None]) & (ps <= level)
    start[:] = np.where(found, np.where(foot.any(axis=1), k - 1 - np.argmax(foot[:, ::-1], axis=1), top), k)
    back = (idx > first[:, None]) & np.isfinite(ps) & (ps <= level)
    end[:] = np.where(found & back.any(axis=1), np.argmax(back, axis=1), k)
    floor[:] = np.where(found, valley, np.nan)
