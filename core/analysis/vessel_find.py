"""The vessel found automatically on a peak-opacity image: its centreline and reference diameter, when the
operator gives none (stations and profiles: core/analysis/vessel.py).

Automatic finding (no learned model, no tuned geometry): the opacity above the noise floor is thresholded
at a fraction of its bright end, the longest geodesic path through it (double sweep on a coarse grid) is
the vessel, the path is re-centred on the opacity centroid of its cross-sections, and the diameter is the
cylinder-projection fit (chord 2 sqrt(R^2 - d^2)) of the most opacified stations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.analysis.vessel import (
    Stations,
    fit_diameter,
    make_stations,
    profile_window,
    resample_polyline,
    sample_profiles,
    smooth_1d,
    subtract_background,
)
from ext import _vessel

VESSEL_THRESHOLD = 0.3       # fraction of the bright-end opacity that counts as vessel (coarse mask)
GRID_TARGET = 160            # coarse grid side for the path search
MIN_SNR = 8.0                # bright end of the coarse opacity vs its noise, for "there is a vessel"
DIAMETER_STATIONS = 120      # stations sampled for the diameter fit
GAP_BRIDGE_PX = 96           # an occlusion up to this long still joins the vessel pieces either side
GAP_COST = 5.0               # per-step price of crossing a gap (vs 1 inside the vessel) in the sweeps
MIN_VESSEL_PX = 30           # a path shorter than this is not a vessel


@dataclass
class Vessel:
    centerline: np.ndarray    # (N, 2) x, y, 1 px apart, from the bottom (inflow) end
    diameter_px: float


def _block_mean(img: np.ndarray, f: int) -> np.ndarray:
    h, w = img.shape
    h2, w2 = h // f, w // f
    return img[:h2 * f, :w2 * f].reshape(h2, f, w2, f).mean(axis=(1, 3))


def _foreground(image: np.ndarray) -> np.ndarray:
    """Opacity above the background level (median of the measured field), 0 where not measured."""
    img = np.asarray(image, dtype=np.float32)
    valid = np.isfinite(img)
    if not valid.any():
        raise ValueError("the peak-opacity image has no measured pixels")
    vals = img[valid]
    if vals.size > 65536:
        vals = vals[:: vals.size // 65536]
    return np.where(valid, np.clip(img - np.float32(np.median(vals)), 0.0, None), 0.0)


_STEPS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def _dijkstra(mask: np.ndarray, cost: np.ndarray, start: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Geodesic distance inside ``mask`` from ``start`` (8-neighbours, step length x mean cost), and the
    predecessor of each node (flat index, -1 for none). Compiled (ext/_vessel.pyx geodesic; reference
    core/analysis/vessel_ref.py): a heap in Python took a third of the automatic centreline's time."""
    h, w = mask.shape
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    c = np.ascontiguousarray(cost, dtype=np.float32 if cost.dtype == np.float32 else np.float64)
    if c.shape != m.shape:
        raise ValueError(f"cost {c.shape} and mask {m.shape} differ in shape")
    if not (0 <= start[0] < h and 0 <= start[1] < w):
        raise ValueError(f"start {start} is outside the {w}x{h} grid")
    dist = np.full(h * w, np.inf)
    prev = np.full(h * w, -1, dtype=np.int64)
    _vessel.geodesic(m, c, int(start[0]) * w + int(start[1]), dist, prev)
    return dist.reshape(h, w), prev


def _coarse_mask(fg: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, int]:
    """(coarse opacity, its vessel mask, its bright end, the grid factor) of ``fg``; ValueError if no vessel."""
    f = max(1, int(round(min(fg.shape) / GRID_TARGET)))
    g = _block_mean(fg, f) if f > 1 else fg
    pos = g[g > 0]
    if pos.size == 0:
        raise ValueError("no opacified vessel found in the peak-opacity image")
    top = float(np.percentile(g, 99.5))
    if top <= 0:
        raise ValueError("no opacified vessel found in the peak-opacity image")
    # A vessel stands out of the noise; the bright end of pure noise does not (robust sd on the coarse grid).
    sample = g.ravel()[:: max(1, g.size // 65536)]
    med = float(np.median(sample))
    sd = 1.4826 * float(np.median(np.abs(sample - med)))
    if top - med < MIN_SNR * max(sd, 1e-12):
        raise ValueError(f"no opacified vessel found (bright end {top - med:.3g} is within {MIN_SNR:g} noise sd)")
    mask = _drop_specks(g > VESSEL_THRESHOLD * top, max(4, int(2 * MIN_VESSEL_PX / f)))
    if not mask.any():
        raise ValueError("no opacified vessel found in the peak-opacity image")
    return g, mask, top, f


def opacified_pieces(peak: np.ndarray) -> tuple[np.ndarray, int]:
    """(labels, f): the 8-connected pieces of the coarse vessel mask the path search runs through (0: none),
    on the grid ``f`` full pixels to a cell. Two vessels side by side are two pieces, as an occlusion splits one."""
    _, mask, _, f = _coarse_mask(_foreground(peak))
    return _label(mask), f


def _label(mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    labels = np.zeros(mask.shape, dtype=np.int32)
    n = 0
    for y0, x0 in zip(*np.nonzero(mask)):
        if labels[y0, x0]:
            continue
        n += 1
        labels[y0, x0] = n
        todo = [(y0, x0)]
        while todo:
            y, x = todo.pop()
            for dy, dx in _STEPS:
                v, u = y + dy, x + dx
                if 0 <= v < h and 0 <= u < w and mask[v, u] and not labels[v, u]:
                    labels[v, u] = n
                    todo.append((v, u))
    return labels


def _coarse_path(fg: np.ndarray) -> tuple[np.ndarray, int]:
    """Longest geodesic path through the bright part of ``fg`` on a coarse grid; (x, y) in full pixels."""
    g, mask, top, f = _coarse_mask(fg)
    # An occluded stretch (no contrast gets through) splits the vessel: the search may cross gaps up to
    # GAP_BRIDGE_PX, at a price per step, so the pieces join into one vessel instead of losing the one
    # stretch that matters most.
    region = _dilate(mask, int(math.ceil(GAP_BRIDGE_PX / 2 / f)))
    start = np.unravel_index(int(np.argmax(np.where(mask, g, -np.inf))), g.shape)
    steps = np.where(mask, 1.0, GAP_COST)
    # Double sweep: the farthest vessel point from anywhere in the vessel is an end; the farthest from it,
    # the other.
    d0, _ = _dijkstra(region, steps, start)
    a = np.unravel_index(int(np.argmax(np.where(mask & np.isfinite(d0), d0, -1))), g.shape)
    d1, _ = _dijkstra(region, steps, a)
    b = np.unravel_index(int(np.argmax(np.where(mask & np.isfinite(d1), d1, -1))), g.shape)
    # The path itself prefers the bright core of the vessel: cost falls with opacity.
    cost = 1.0 / (np.clip(g / top, 0.0, 1.0) + 0.1) ** 2
    _, prev = _dijkstra(region, cost, a)
    node = b[0] * g.shape[1] + b[1]
    path = []
    while node >= 0:
        path.append(divmod(int(node), g.shape[1]))
        node = prev[node]
    yx = np.asarray(path[::-1], dtype=float)
    xy = np.column_stack([yx[:, 1], yx[:, 0]]) * f + (f - 1) / 2.0
    return xy, f


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation by a (2r+1)^2 square, by cumulative sums."""
    if r <= 0:
        return mask.copy()
    out = mask.astype(np.int32)
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (r + 1, r)
        c = np.cumsum(np.pad(out, pad), axis=axis)
        n = out.shape[axis]
        out = np.take(c, np.arange(2 * r + 1, 2 * r + 1 + n), axis=axis) - np.take(c, np.arange(n), axis=axis)
    return out > 0


def _drop_specks(mask: np.ndarray, min_nodes: int) -> np.ndarray:
    """``mask`` without its 8-connected pieces smaller than ``min_nodes`` (noise, not vessel)."""
    h, w = mask.shape
    seen = np.zeros_like(mask)
    keep = np.zeros_like(mask)
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        piece = [(y0, x0)]
        seen[y0, x0] = True
        k = 0
        while k < len(piece):
            y, x = piece[k]
            k += 1
            for dy, dx in _STEPS:
                v, u = y + dy, x + dx
                if 0 <= v < h and 0 <= u < w and mask[v, u] and not seen[v, u]:
                    seen[v, u] = True
                    piece.append((v, u))
        if len(piece) >= min_nodes:
            ys, xs = zip(*piece)
            keep[list(ys), list(xs)] = True
    return keep


def _centroid_offsets(fg: np.ndarray, st: Stations, half: float) -> np.ndarray:
    across = np.arange(-half, half + 0.25, 0.5)
    prof = sample_profiles(fg, st, across, np.array([0.0]))
    prof = np.nan_to_num(prof)
    wsum = prof.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        off = (prof * across).sum(axis=1) / wsum
    return np.where(wsum > 0, off, 0.0)


def find_vessel(peak: np.ndarray, diameter_px: float | None = None) -> Vessel:
    """Centreline (from the bottom end) and reference diameter of the most opacified vessel.

    ``diameter_px`` if known is used as is; otherwise it is measured. Raises ValueError if there is no
    vessel-like structure (a contrast-free run, an empty image).
    """
    img = np.asarray(peak)
    if img.ndim != 2 or min(img.shape) < 16:
        raise ValueError(f"need a 2-D peak-opacity image of at least 16x16, got shape {img.shape}")
    fg = _foreground(img)
    xy, f = _coarse_path(fg)
    if len(xy) < 3:
        raise ValueError("no vessel found: the opacified region is a blob, not a vessel")
    # First guess of the width: the coarse mask area along the path.
    dense, s = resample_polyline(xy, 1.0)
    if s[-1] < MIN_VESSEL_PX:
        raise ValueError(f"no vessel found: the longest opacified path is only {s[-1]:.0f} px")
    d_est = float(diameter_px) if diameter_px else 2.0 * f
    line = smooth_1d(dense, max(2, int(2 * f)))
    for it in range(3):
        st = make_stations(line, 1.0)
        half = profile_window(d_est)[1]
        off = _centroid_offsets(fg, st, half)
        # Follow the vessel, not its defects: a side-wall thrombus pulls the centroid by up to a radius,
        # so the correction is smoothed over a few diameters.
        off = smooth_1d(np.clip(off, -half / 2, half / 2), max(2, int(round(1.5 * d_est))))
        line = st.xy + off[:, None] * st.normal
        if not diameter_px and it != 1:
            d_est = _measure_diameter(fg, make_stations(line, 2.0), d_est)
    # Ends: the vessel leaves the field there; a diameter in, the cross-sections are whole.
    dense, s = resample_polyline(line, 1.0)
    trim = int(math.ceil(d_est))
    if len(dense) > 2 * trim + MIN_VESSEL_PX:
        dense = dense[trim:-trim]
    if dense[0, 1] < dense[-1, 1]:        # from the bottom (caudal, inflow) end
        dense = dense[::-1]
    return Vessel(dense, float(d_est))


def diameter_along(peak: np.ndarray, centerline: np.ndarray) -> float:
    """Reference diameter along a given centreline: the cylinder fit of its most opacified stations."""
    fg = _foreground(peak)
    st = make_stations(np.asarray(centerline, dtype=float), 2.0)
    # Start from a guess any venous lumen of the image fits in; the fit window is twice the guess.
    return _measure_diameter(fg, st, max(8.0, min(fg.shape) / 16))


def _measure_diameter(fg: np.ndarray, st: Stations, d_guess: float) -> float:
    """Median cylinder-fit diameter of the most opacified half of the stations (patent lumen)."""
    # A window generous for a vessel up to twice the guess, but never narrower than 8 px.
    half = max(profile_window(2.0 * d_guess)[1], 8.0)
    across = np.arange(-half, half + 0.25, 0.5)
    if len(st.s) > DIAMETER_STATIONS:     # a median needs no more; keeps big images cheap
        pick = np.linspace(0, len(st.s) - 1, DIAMETER_STATIONS).astype(int)
        st = Stations(st.xy[pick], st.normal[pick], st.tangent[pick], st.s[pick], st.length)
    prof = sample_profiles(fg, st, across, np.array([-0.5, 0.0, 0.5]))
    ok = np.all(np.isfinite(prof), axis=1)
    if ok.sum() < 3:
        return d_guess
    prof = subtract_background(prof[ok], across, 0.75 * half)
    integral = np.clip(prof, 0.0, None).sum(axis=1)
    top = integral >= np.median(integral)
    radii = fit_diameter(prof[top], across, 0.75 * half)
    radii = radii[np.isfinite(radii)]
    if radii.size == 0:
        return d_guess
    return float(2.0 * np.median(radii))
