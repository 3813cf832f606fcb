"""The phantom's scene: per-pixel maps for one patient position and thrombus burden, built from the exact
geometry (core/sources/phantom/geometry.py), with the anatomy behind the vein and the collimated field.
"""
from __future__ import annotations

import math

import numpy as np

from core.sources.phantom.config import MAX_SHIFT_PX, PhantomConfig
from core.sources.phantom.geometry import (
    build_cross_sections,
    catmull_rom,
    nearest_on_polyline,
    path_length,
    resample_polyline,
)
from core.sources.phantom.truth import BolusTruth, SceneTruth, SegmentTruth


def background_mu(cfg: PhantomConfig, shift: tuple[float, float]) -> np.ndarray:
    """Smooth anatomy attenuation (ln units), anchored to the patient so it moves with the shift."""
    h, w = cfg.size
    u = ((np.arange(w) - shift[0]) / w)[None, :]
    v = ((np.arange(h) - shift[1]) / h)[:, None]

    def blob(cx, cy, sx, sy, amp, rot=0.0):
        cr, sr = math.cos(rot), math.sin(rot)
        du, dv = u - cx, v - cy
        a, b = du * cr + dv * sr, -du * sr + dv * cr
        return amp * np.exp(-0.5 * ((a / sx) ** 2 + (b / sy) ** 2))

    mu = 0.55 + 0.25 * v + 0.30 * (2 * u - 1) ** 2        # soft tissue: thicker laterally and caudally
    mu = mu + blob(0.22, 0.18, 0.20, 0.10, 0.45, 0.5)     # iliac wing
    mu = mu + blob(0.80, 0.78, 0.06, 0.30, 0.40, -0.15)   # femoral shaft
    mu = mu + blob(0.72, 0.42, 0.09, 0.08, 0.30)          # femoral head
    mu = mu + 0.04 * np.sin(2 * np.pi * (1.3 * u + 0.7 * v)) * np.cos(2 * np.pi * (0.9 * v - 0.4 * u))
    return mu


def shift_allowance(size: tuple[int, int]) -> float:
    """Shift the analysed range must survive: 48 px at 512 px and up, proportionally less on small test images."""
    return min(MAX_SHIFT_PX, MAX_SHIFT_PX * min(size) / 512)


def collimator_circle(size: tuple[int, int]) -> tuple[float, float, float]:
    h, w = size
    return (w - 1) / 2.0, (h - 1) / 2.0, 0.48 * min(h, w)


class Scene:
    """Per-pixel maps for one (shift, thrombus fraction): everything a pulse needs except noise."""

    def __init__(self, cfg: PhantomConfig, shift: tuple[float, float], fraction: float) -> None:
        h, w = cfg.size
        self.size = (h, w)
        R = cfg.diameter_px / 2.0
        ss = cfg.supersample
        curve = catmull_rom(np.asarray(cfg.vessel_points, dtype=float) * [w, h])
        # Run both ends straight on past any allowed shift, so no vessel end ever shows inside the frame.
        ext = MAX_SHIFT_PX + cfg.diameter_px
        head, tail = curve[0] - curve[1], curve[-1] - curve[-2]
        core_length = float(np.hypot(*np.diff(curve, axis=0).T).sum())
        curve = np.vstack([curve[0] + head / np.hypot(*head) * ext, curve,
                           curve[-1] + tail / np.hypot(*tail) * ext])
        anat, s_pts = resample_polyline(curve, 1.0)
        # s = 0 where the scripted vessel starts; the straight run-on before it has negative s.
        s_pts = s_pts - ext
        self.length = core_length            # the scripted vessel: segment fractions refer to [0, length]
        pts = anat + np.asarray(shift, dtype=float)

        xs = (np.arange(w * ss) + 0.5) / ss - 0.5
        ys = (np.arange(h * ss) + 0.5) / ss - 0.5
        s_sub, d_sub = nearest_on_polyline(pts, s_pts, xs, ys, R + 1.0)
        near = np.isfinite(d_sub)
        xs_tab = build_cross_sections(float(s_pts[0]), float(s_pts[-1]), self.length, R, cfg.segments,
                                      fraction, cfg.wall_offset)
        dc, zc, rt = xs_tab.at(s_sub[near])
        L_sub = np.zeros_like(d_sub)
        Lc_sub = np.zeros_like(d_sub)
        L_sub[near] = path_length(d_sub[near], R, dc, zc, rt)
        Lc_sub[near] = path_length(d_sub[near], R)
        # A detector pixel integrates its area: average the sub-samples.
        self.path = L_sub.reshape(h, ss, w, ss).mean(axis=(1, 3))
        self.path_clean = Lc_sub.reshape(h, ss, w, ss).mean(axis=(1, 3))
        cnt = near.reshape(h, ss, w, ss).sum(axis=(1, 3))
        s_sum = np.where(near, s_sub, 0.0).reshape(h, ss, w, ss).sum(axis=(1, 3))
        with np.errstate(invalid="ignore", divide="ignore"):
            self.s_map = np.where(cnt > 0, s_sum / np.maximum(cnt, 1), np.nan)

        if cfg.collimator:
            cx, cy, r = collimator_circle(cfg.size)
            yy, xx = np.mgrid[0:h, 0:w]
            self.active_mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
            self.collimator = (cx, cy, r)
        else:
            self.active_mask = np.ones((h, w), dtype=bool)
            self.collimator = None
        self.active_idx = np.flatnonzero(self.active_mask)
        self.base_quanta = (cfg.i0 * np.exp(-background_mu(cfg, shift))).ravel()[self.active_idx].astype(np.float32)
        # Vessel pixels inside the field, as positions in the active array: the only pixels that change.
        flat_path = self.path.ravel()[self.active_idx]
        self.vessel_pos = np.flatnonzero(flat_path > 0)
        self.vessel_s = self.s_map.ravel()[self.active_idx][self.vessel_pos]
        self.vessel_path = flat_path[self.vessel_pos]

        self.truth = self._truth(cfg, shift, fraction, anat, pts, s_pts, xs_tab, R)

    def _truth(self, cfg, shift, fraction, anat, pts, s_pts, xs_tab, R) -> SceneTruth:
        st_s = np.arange(math.ceil(s_pts[0]), s_pts[-1], 1.0)
        st_xy = np.column_stack([np.interp(st_s, s_pts, pts[:, 0]), np.interp(st_s, s_pts, pts[:, 1])])
        st_b = np.interp(st_s, xs_tab.s, xs_tab.burden)
        tangent = np.gradient(st_xy, axis=0)
        tangent /= np.hypot(tangent[:, :1], tangent[:, 1:])
        # +d is on the right of travel in image coordinates (see nearest_on_polyline): (-ty, tx)
        normal = np.column_stack([-tangent[:, 1], tangent[:, 0]])
        analysed = self._analysed_range(cfg, anat, s_pts, R)
        scene = SceneTruth(
            size=self.size, diameter_px=cfg.diameter_px, thrombus_fraction=fraction,
            shift_px=(float(shift[0]), float(shift[1])), centreline_xy=pts, centreline_s=s_pts,
            stations_s=st_s, stations_xy=st_xy, stations_normal=normal, stations_burden=st_b,
            analysed_s=analysed, burden=0.0,
            segments=(), collimator=self.collimator, _xs=xs_tab, _path=self.path,
            _path_clean=self.path_clean, _s_map=self.s_map)
        scene.burden = scene.burden_between(*analysed)
        segs = []
        for i, seg in enumerate(cfg.segments):
            s0, s1 = seg.start * self.length, seg.end * self.length
            inside = (xs_tab.s >= s0) & (xs_tab.s <= s1)
            segs.append(SegmentTruth(seg.name or f"segment{i}", s0, s1, scene.burden_between(s0, s1),
                                     float(xs_tab.burden[inside].max(initial=0.0))))
        scene.segments = tuple(segs)
        return scene

    def _analysed_range(self, cfg, anat, s_pts, R) -> tuple[float, float]:
        """Longest stretch of centreline that stays in the field (and the frame) under any allowed shift."""
        h, w = cfg.size
        margin = R + 4.0 + shift_allowance(cfg.size)
        x, y = anat[:, 0], anat[:, 1]
        ok = (x >= margin) & (x <= w - 1 - margin) & (y >= margin) & (y <= h - 1 - margin)
        if cfg.collimator:
            cx, cy, r = collimator_circle(cfg.size)
            ok &= np.hypot(x - cx, y - cy) <= r - margin
        if not ok.any():
            raise ValueError(f"a {h}x{w} field leaves no vessel visible under a {shift_allowance(cfg.size)} px shift")
        # longest run of True
        edges = np.diff(np.concatenate([[0], ok.astype(int), [0]]))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        k = int(np.argmax(ends - starts))
        return float(s_pts[starts[k]]), float(s_pts[ends[k] - 1])

    def opacity_image(self, bolus: BolusTruth, t_s: float, mu: float) -> np.ndarray:
        """Noise-free mu * c * L per pixel (ln units) at video time t_s; zero outside the field."""
        out = np.zeros(self.size[0] * self.size[1])
        idx = self.active_idx[self.vessel_pos]
        out[idx] = mu * bolus.concentration(self.vessel_s, t_s) * self.vessel_path
        return out.reshape(self.size)
