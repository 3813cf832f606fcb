"""Exact geometry of the phantom vein: centreline, lumen, thrombus, and what they project to.

Kept apart from the scene and renderer (scene.py, render.py) so the ground truth and the image come from one
geometry: the burden truth is the analytic thrombus area per station, and the projected path
length L of every pixel is the analytic chord of the same cross-section along the beam.

Cross-section model at arc length s: the lumen is the disc |(d, z)| <= R(s), with d the in-plane
perpendicular offset from the centreline and z the depth along the beam; R(s) is constant or follows a
diameter profile (taper, steps at confluences). A wall-adherent ("layer") thrombus is the concentric
annulus ri(s) <= |(d, z)| <= R(s), ri = R sqrt(1 - b_layer). A focal thrombus is the part of the remaining
disc |(d, z)| <= ri inside an eccentric disc of radius rt(s) centred at (dc, zc) = k R (cos a, sin a),
i.e. stuck to the wall at angle a (0 = side wall, a notch in projection; 90 deg = anterior wall,
so it only shortens the path along the ray and never shows as a hole). rt(s) is solved so that
the occupied area fraction equals the scripted burden at s exactly (where a layer and a focal
segment overlap, the larger of the two burdens).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STATION_STEP_PX = 0.25  # fine station grid for the thrombus tables; interpolated per pixel


@dataclass(frozen=True)
class ThrombusSegment:
    """One thrombosed stretch of the vein, anchored to the anatomy (moves with the patient)."""
    start: float                 # fraction of the centreline length, 0 = inflow end (bottom)
    end: float
    burden: float                # occupied cross-section fraction on the plateau at thrombus_fraction 1
    angle_deg: float = 0.0       # wall position: 0/180 side walls, 90/270 anterior/posterior wall
    taper_px: float = 12.0       # smooth ramp length at each end
    name: str = ""
    kind: str = "focal"          # "focal": eccentric wall disc | "layer": concentric wall-adherent annulus

    def __post_init__(self) -> None:
        if not 0.0 <= self.start < self.end <= 1.0:
            raise ValueError(f"segment needs 0 <= start < end <= 1, got {self.start}, {self.end}")
        if not 0.0 <= self.burden <= 1.0:
            raise ValueError(f"segment burden must be in [0, 1], got {self.burden}")
        if self.taper_px < 0:
            raise ValueError(f"segment taper_px must be >= 0, got {self.taper_px}")
        if self.kind not in ("focal", "layer"):
            raise ValueError(f"segment kind must be 'focal' or 'layer', got {self.kind!r}")


def catmull_rom(points: np.ndarray, per_span: int = 64) -> np.ndarray:
    """Dense centripetal-free (uniform) Catmull-Rom curve through ``points`` (N, 2), ends clamped."""
    p = np.asarray(points, dtype=float)
    if p.ndim != 2 or p.shape[1] != 2 or len(p) < 2:
        raise ValueError("vessel_points must be at least two (x, y) pairs")
    ext = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    u = np.linspace(0.0, 1.0, per_span, endpoint=False)[:, None]
    out = []
    for i in range(1, len(ext) - 2):
        p0, p1, p2, p3 = ext[i - 1], ext[i], ext[i + 1], ext[i + 2]
        out.append(0.5 * ((2 * p1) + (-p0 + p2) * u + (2 * p0 - 5 * p1 + 4 * p2 - p3) * u**2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * u**3))
    out.append(p[-1:])
    return np.vstack(out)


def resample_polyline(curve: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Resample a dense curve at (almost) uniform arc-length ``step``; returns (points, s)."""
    seg = np.hypot(*np.diff(curve, axis=0).T)
    s_dense = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(int(np.ceil(s_dense[-1] / step)), 1)
    s_new = np.linspace(0.0, s_dense[-1], n + 1)
    pts = np.column_stack([np.interp(s_new, s_dense, curve[:, 0]), np.interp(s_new, s_dense, curve[:, 1])])
    # s is measured along the resampled polyline itself: that polyline IS the centreline.
    s = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(pts, axis=0).T))])
    return pts, s


def lens_area(R: float | np.ndarray, c: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Area of the intersection of the disc (0, R) with discs of radius r centred at distance c."""
    c = np.asarray(c, dtype=float)
    r = np.asarray(r, dtype=float)
    R = np.asarray(R, dtype=float)
    c, r, R = np.broadcast_arrays(c, r, R)
    out = np.zeros(c.shape)
    inside = c <= np.abs(R - r)
    out[inside] = np.pi * np.minimum(R[inside], r[inside]) ** 2
    part = (~inside) & (c < R + r) & (r > 0)
    cc, rr, R = c[part], r[part], R[part]
    a1 = np.clip((cc**2 + R**2 - rr**2) / (2 * cc * R), -1, 1)
    a2 = np.clip((cc**2 + rr**2 - R**2) / (2 * cc * rr), -1, 1)
    k = (-cc + R + rr) * (cc + R - rr) * (cc - R + rr) * (cc + R + rr)
    out[part] = R**2 * np.arccos(a1) + rr**2 * np.arccos(a2) - 0.5 * np.sqrt(np.maximum(k, 0.0))
    out[r <= 0] = 0.0
    return out


def solve_thrombus_radius(R: float | np.ndarray, c: float | np.ndarray, burden: np.ndarray) -> np.ndarray:
    """Radius rt of the wall disc at centre distance c giving occupied fraction ``burden`` (bisection).

    The intersection area grows monotonically with rt from 0 to the full lumen at rt = R + c.
    """
    target = np.asarray(burden, dtype=float) * np.pi * np.asarray(R, dtype=float) ** 2
    lo = np.zeros_like(target)
    hi = np.broadcast_to(np.asarray(R + c, dtype=float), target.shape).copy()
    for _ in range(60):  # 2^-60 of R: far below anything the image can see
        mid = 0.5 * (lo + hi)
        small = lens_area(R, c, mid) < target
        lo = np.where(small, mid, lo)
        hi = np.where(small, hi, mid)
    rt = 0.5 * (lo + hi)
    rt[target <= 0] = 0.0
    return rt


def smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def burden_profile(s: np.ndarray, length: float, segments: tuple[ThrombusSegment, ...],
                   fraction: float, kind: str = "focal") -> tuple[np.ndarray, np.ndarray]:
    """Scripted burden b(s) and wall angle (rad) per station; overlapping segments keep the larger."""
    b = np.zeros_like(s, dtype=float)
    ang = np.zeros_like(s, dtype=float)
    for seg in segments:
        if seg.kind != kind:
            continue
        s0, s1 = seg.start * length, seg.end * length
        # Tapers never eat the plateau: at most a third of the segment each.
        t = max(min(seg.taper_px, (s1 - s0) / 3), 1e-9)
        w = smoothstep((s - s0) / t) * smoothstep((s1 - s) / t)
        w[(s < s0) | (s > s1)] = 0.0
        bs = np.clip(fraction * seg.burden * w, 0.0, 1.0)
        take = bs > b
        b[take] = bs[take]
        ang[take] = np.deg2rad(seg.angle_deg)
    return b, ang


@dataclass
class CrossSections:
    """Lumen and thrombus tables on the fine station grid (all arrays indexed like ``s``)."""
    radius: float        # nominal lumen radius (the config's diameter_px / 2)
    s: np.ndarray
    burden: np.ndarray   # occupied area / lumen area (exact by construction)
    dc: np.ndarray       # thrombus disc centre, in-plane offset (px, signed like d)
    zc: np.ndarray       # thrombus disc centre, depth along the beam (px)
    rt: np.ndarray       # thrombus disc radius (px), 0 where there is no thrombus
    R: np.ndarray        # lumen radius (px) per station
    ri: np.ndarray       # inner radius of the wall layer (px); = R where there is none

    def at(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(dc, zc, rt) at arbitrary arc lengths, linear between fine stations."""
        return (np.interp(s, self.s, self.dc), np.interp(s, self.s, self.zc),
                np.interp(s, self.s, self.rt))

    def lumen_at(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(R, ri) at arbitrary arc lengths, linear between fine stations."""
        return np.interp(s, self.s, self.R), np.interp(s, self.s, self.ri)


def radius_profile(s: np.ndarray, length: float, radius: float,
                   profile: tuple[tuple[float, float], ...]) -> np.ndarray:
    """Lumen radius per station: ``profile`` (arc fraction, diameter px) points, linear between them and
    constant past the first and last; empty: the constant ``radius``."""
    if not profile:
        return np.full(np.shape(s), radius, dtype=float)
    fr = np.asarray([p[0] for p in profile], dtype=float) * length
    dia = np.asarray([p[1] for p in profile], dtype=float)
    return 0.5 * np.interp(s, fr, dia)


def build_cross_sections(s_lo: float, s_hi: float, length: float, radius: float,
                         segments: tuple[ThrombusSegment, ...], fraction: float,
                         wall_offset: float, profile: tuple[tuple[float, float], ...] = ()) -> CrossSections:
    """Tables over [s_lo, s_hi]; segment and profile fractions refer to the scripted vessel [0, length]."""
    s = np.arange(s_lo, s_hi + STATION_STEP_PX, STATION_STEP_PX)
    R = radius_profile(s, length, radius, profile)
    b_focal, ang = burden_profile(s, length, segments, fraction)
    b_layer, _ = burden_profile(s, length, segments, fraction, kind="layer")
    b_layer = np.minimum(b_layer, 1.0 - 1e-9)   # a layer leaves a (possibly tiny) channel
    ri = R * np.sqrt(1.0 - b_layer)
    # The focal disc fills the given fraction of the whole lumen, taking the layer's share as already occupied.
    inner = np.clip((b_focal - b_layer) / (1.0 - b_layer), 0.0, 1.0)
    c = wall_offset * R
    rt = solve_thrombus_radius(ri, c, inner)
    b = b_layer + (1.0 - b_layer) * inner
    return CrossSections(radius, s, b, c * np.cos(ang), c * np.sin(ang), rt, R, ri)


def path_length(d: np.ndarray, R: float, dc: np.ndarray | float = 0.0, zc: np.ndarray | float = 0.0,
                rt: np.ndarray | float = 0.0) -> np.ndarray:
    """Contrast-filled chord along the beam at in-plane offset d: lumen chord minus thrombus overlap.

    Both regions are convex, so each ray meets them in one z interval each and the filled length is
    the lumen interval minus their intersection: exact, no numerical integration needed.
    """
    d = np.asarray(d, dtype=float)
    h1 = np.sqrt(np.clip(R * R - d * d, 0.0, None))
    dt = d - dc
    h2 = np.sqrt(np.clip(np.asarray(rt) ** 2 - dt * dt, 0.0, None))
    overlap = np.minimum(h1, zc + h2) - np.maximum(-h1, zc - h2)
    overlap = np.where(h2 > 0, np.clip(overlap, 0.0, None), 0.0)
    return 2 * h1 - overlap


def nearest_on_polyline(pts: np.ndarray, s_pts: np.ndarray, xs: np.ndarray, ys: np.ndarray,
                        band: float) -> tuple[np.ndarray, np.ndarray]:
    """Arc length s and signed perpendicular distance d of grid points to the polyline.

    ``xs`` (W',) and ``ys`` (H',) are the grid's coordinate vectors. Only points within ``band`` of
    the line are resolved (elsewhere s = nan, d = inf): each segment updates just its bounding box,
    so the cost follows the vessel length, not the image area.
    """
    H, W = len(ys), len(xs)
    best = np.full((H, W), np.inf)
    s_out = np.full((H, W), np.nan)
    d_out = np.full((H, W), np.inf)
    step_x = xs[1] - xs[0] if W > 1 else 1.0
    step_y = ys[1] - ys[0] if H > 1 else 1.0
    for i in range(len(pts) - 1):
        ax, ay = pts[i]
        bx, by = pts[i + 1]
        c0 = int(np.searchsorted(xs, min(ax, bx) - band - step_x))
        c1 = int(np.searchsorted(xs, max(ax, bx) + band + step_x))
        r0 = int(np.searchsorted(ys, min(ay, by) - band - step_y))
        r1 = int(np.searchsorted(ys, max(ay, by) + band + step_y))
        if c0 >= c1 or r0 >= r1:
            continue
        vx, vy = bx - ax, by - ay
        seg_len = np.hypot(vx, vy)
        if seg_len == 0:
            continue
        ux, uy = vx / seg_len, vy / seg_len
        X = xs[c0:c1][None, :] - ax
        Y = ys[r0:r1][:, None] - ay
        t = np.clip(X * ux + Y * uy, 0.0, seg_len)
        ex, ey = X - t * ux, Y - t * uy
        d2 = ex * ex + ey * ey
        win = best[r0:r1, c0:c1]
        upd = d2 < win
        if not upd.any():
            continue
        win[upd] = d2[upd]
        # Sign from the side of the segment: + on the right of the direction of travel (image coords).
        side = np.where(ux * Y - uy * X >= 0, 1.0, -1.0)
        s_out[r0:r1, c0:c1][upd] = (s_pts[i] + t)[upd]
        d_out[r0:r1, c0:c1][upd] = (side * np.sqrt(d2))[upd]
    far = best > band * band
    s_out[far] = np.nan
    d_out[far] = np.inf
    return s_out, d_out
