"""The phantom's scene: per-pixel maps for one patient position and thrombus burden, built from the exact
geometry (core/sources/phantom/geometry.py), with the anatomy behind the vein, the branches and devices
beside and in it (features.py), and the collimated field.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from core.sources.phantom.background import anatomy_mu
from core.sources.phantom.config import MAX_SHIFT_PX, PhantomConfig
from core.sources.phantom.features import (
    FeatureTruth,
    branch_axis,
    branch_truth,
    check_device_fits,
    chord,
    device_chords,
    device_span,
    device_truth,
    own_arc,
)
from core.sources.phantom.geometry import (
    build_cross_sections,
    catmull_rom,
    nearest_on_polyline,
    path_length,
    resample_polyline,
)
from core.sources.phantom.truth import (
    PLATEAU_FRACTION,
    PLATEAU_MIN_S,
    TDC_STEP_S,
    BolusTruth,
    SceneTruth,
    SegmentTruth,
    TimingTruth,
)
from core.vocab import check_roi


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
    if cfg.background == "anatomy":
        mu = mu + anatomy_mu(cfg.size, shift)
    return mu


def shift_allowance(size: tuple[int, int]) -> float:
    """Shift the analysed range must survive: 48 px at 512 px and up, proportionally less on small test images."""
    return min(MAX_SHIFT_PX, MAX_SHIFT_PX * min(size) / 512)


def collimator_circle(size: tuple[int, int]) -> tuple[float, float, float]:
    h, w = size
    return (w - 1) / 2.0, (h - 1) / 2.0, 0.48 * min(h, w)


def vessel_model(cfg: PhantomConfig, fraction: float):
    """The main vein without pixel maps: (unshifted centreline (N, 2), its arc lengths s, the scripted length,
    the lumen and thrombus tables). Cheap: what the truth of a case needs before anything is rendered."""
    h, w = cfg.size
    curve = catmull_rom(np.asarray(cfg.vessel_points, dtype=float) * [w, h])
    # Run both ends straight on past any allowed shift, so no vessel end ever shows inside the frame.
    ext = cfg.run_on_px
    head, tail = curve[0] - curve[1], curve[-1] - curve[-2]
    core_length = float(np.hypot(*np.diff(curve, axis=0).T).sum())
    curve = np.vstack([curve[0] + head / np.hypot(*head) * ext, curve,
                       curve[-1] + tail / np.hypot(*tail) * ext])
    anat, s_pts = resample_polyline(curve, 1.0)
    # s = 0 where the scripted vessel starts; the straight run-on before it has negative s.
    s_pts = s_pts - ext
    xs_tab = build_cross_sections(float(s_pts[0]), float(s_pts[-1]), core_length, cfg.diameter_px / 2.0,
                                  cfg.segments, fraction, cfg.wall_offset, cfg.diameter_profile)
    return anat, s_pts, core_length, xs_tab


def analysed_range(cfg: PhantomConfig, anat: np.ndarray, s_pts: np.ndarray) -> tuple[float, float]:
    """Longest stretch of centreline that stays in the field (and the frame) under any allowed shift around
    this run's table position."""
    h, w = cfg.size
    margin = cfg.max_diameter_px / 2.0 + 4.0 + shift_allowance(cfg.size)
    x, y = anat[:, 0] + cfg.table_shift_px[0], anat[:, 1] + cfg.table_shift_px[1]
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


def depth_ratio(s: np.ndarray, length: float, profile: tuple[tuple[float, float], ...]) -> np.ndarray:
    """Depth / width of the lumen per arc length: ``profile`` points, linear between them, 1 past its ends."""
    fr = np.asarray([p[0] for p in profile], dtype=float) * length
    ratio = np.asarray([p[1] for p in profile], dtype=float)
    return np.interp(s, fr, ratio, left=1.0, right=1.0)


def _pixel_mean(sub: np.ndarray, h: int, w: int, ss: int) -> np.ndarray:
    # A detector pixel integrates its area: average the sub-samples.
    return sub.reshape(h, ss, w, ss).mean(axis=(1, 3))


class Scene:
    """Per-pixel maps for one (shift, thrombus fraction): everything a pulse needs except noise."""

    def __init__(self, cfg: PhantomConfig, shift: tuple[float, float], fraction: float) -> None:
        h, w = cfg.size
        self.size = (h, w)
        ss = cfg.supersample
        anat, s_pts, self.length, xs_tab = vessel_model(cfg, fraction)
        # The table move adds to the patient shift: everything anchored to the patient moves with both.
        total = (shift[0] + cfg.table_shift_px[0], shift[1] + cfg.table_shift_px[1])
        pts = anat + np.asarray(total, dtype=float)

        xs = (np.arange(w * ss) + 0.5) / ss - 0.5
        ys = (np.arange(h * ss) + 0.5) / ss - 0.5
        s_sub, d_sub = nearest_on_polyline(pts, s_pts, xs, ys, cfg.max_diameter_px / 2.0 + 1.0)
        near = np.isfinite(d_sub)
        dc, zc, rt = xs_tab.at(s_sub[near])
        if cfg.diameter_profile or any(seg.kind == "layer" for seg in cfg.segments):
            R, ri = xs_tab.lumen_at(s_sub[near])
        else:
            R = ri = cfg.diameter_px / 2.0
        L_sub = np.zeros_like(d_sub)
        Lc_sub = np.zeros_like(d_sub)
        L_sub[near] = path_length(d_sub[near], ri, dc, zc, rt)
        Lc_sub[near] = path_length(d_sub[near], R)
        if cfg.depth_profile:
            # A flattened lumen: every chord along the beam shorter by its depth ratio (an ellipse's chord).
            depth = depth_ratio(s_sub[near], self.length, cfg.depth_profile)
            L_sub[near] *= depth
            Lc_sub[near] *= depth
        self.device_path = np.zeros((h, w))
        if cfg.device is not None:
            lo, hi = device_span(cfg.device, s_pts, self.length)
            check_device_fits(cfg.device, xs_tab.s, xs_tab.ri, lo, hi)
            wall, outer = device_chords(cfg.device, s_sub[near], d_sub[near], lo, hi)
            L_sub[near] = np.clip(L_sub[near] - outer, 0.0, None)
            dev_sub = np.zeros_like(d_sub)
            dev_sub[near] = wall
            self.device_path = _pixel_mean(dev_sub, h, w, ss)
        self.path = _pixel_mean(L_sub, h, w, ss)
        self.path_clean = _pixel_mean(Lc_sub, h, w, ss)
        cnt = near.reshape(h, ss, w, ss).sum(axis=(1, 3))
        s_sum = np.where(near, s_sub, 0.0).reshape(h, ss, w, ss).sum(axis=(1, 3))
        with np.errstate(invalid="ignore", divide="ignore"):
            self.s_map = np.where(cnt > 0, s_sum / np.maximum(cnt, 1), np.nan)
        features = self._branches(cfg, anat, s_pts, np.asarray(total, dtype=float), xs, ys, Lc_sub)

        if cfg.collimator:
            cx, cy, r = collimator_circle(cfg.size)
            yy, xx = np.mgrid[0:h, 0:w]
            self.active_mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
            self.collimator = (cx, cy, r)
        else:
            self.active_mask = np.ones((h, w), dtype=bool)
            self.collimator = None
        self.active_idx = np.flatnonzero(self.active_mask)
        mu_bg = background_mu(cfg, total)
        if cfg.device is not None:
            mu_bg = mu_bg + cfg.device.mu_px * self.device_path      # radiopaque: in the mask frames too
            features.append(device_truth(cfg.device, anat, s_pts, self.length, np.asarray(total)))
        self.base_quanta = (cfg.i0 * np.exp(-mu_bg)).ravel()[self.active_idx].astype(np.float32)
        # Vessel pixels inside the field, as positions in the active array: the only pixels that change.
        flat_path = self.path.ravel()[self.active_idx]
        self.vessel_pos = np.flatnonzero(flat_path > 0)
        self.vessel_s = self.s_map.ravel()[self.active_idx][self.vessel_pos]
        self.vessel_path = flat_path[self.vessel_pos]
        flat_branch = self.branch_path.ravel()[self.active_idx]
        self.branch_pos = np.flatnonzero(flat_branch > 0)
        self.branch_s = self.branch_s_map.ravel()[self.active_idx][self.branch_pos]
        self.branch_vals = flat_branch[self.branch_pos]

        self.truth = self._truth(cfg, total, fraction, anat, pts, s_pts, xs_tab, tuple(features))

    def _branches(self, cfg, anat, s_pts, total, xs, ys, Lc_sub) -> list[FeatureTruth]:
        """Contrast path of the parallel vein and collateral (px) and the main arc length they fill from."""
        h, w = self.size
        ss = cfg.supersample
        Lb = np.zeros_like(Lc_sub)
        sb = np.zeros_like(Lc_sub)
        out = []
        for feat in (cfg.parallel, cfg.collateral):
            if feat is None:
                continue
            axis, s_beside, r = branch_axis(feat, anat, s_pts, self.length)
            pts = axis + total
            a = own_arc(pts)
            a_sub, d_sub = nearest_on_polyline(pts, a, xs, ys, float(r.max()) + 1.0)
            near = np.isfinite(d_sub)
            L = np.zeros_like(Lb)
            L[near] = chord(np.interp(a_sub[near], a, r), d_sub[near])
            L[Lc_sub > 0] = 0.0          # inside the main lumen's shadow only the main lumen counts
            sb[L > 0] = np.interp(a_sub[L > 0], a, s_beside)
            Lb += L
            out.append(branch_truth(feat, axis, s_beside, r, total))
        self.branch_path = _pixel_mean(Lb, h, w, ss)
        with np.errstate(invalid="ignore", divide="ignore"):
            weighted = (Lb * sb).reshape(h, ss, w, ss).sum(axis=(1, 3))
            self.branch_s_map = np.where(self.branch_path > 0, weighted / (self.branch_path * ss * ss), np.nan)
        return out

    def _truth(self, cfg, total, fraction, anat, pts, s_pts, xs_tab, features) -> SceneTruth:
        st_s = np.arange(math.ceil(s_pts[0]), s_pts[-1], 1.0)
        st_xy = np.column_stack([np.interp(st_s, s_pts, pts[:, 0]), np.interp(st_s, s_pts, pts[:, 1])])
        st_b = np.interp(st_s, xs_tab.s, xs_tab.burden)
        st_R = np.interp(st_s, xs_tab.s, xs_tab.R)
        tangent = np.gradient(st_xy, axis=0)
        tangent /= np.hypot(tangent[:, :1], tangent[:, 1:])
        # +d is on the right of travel in image coordinates (see nearest_on_polyline): (-ty, tx)
        normal = np.column_stack([-tangent[:, 1], tangent[:, 0]])
        analysed = analysed_range(cfg, anat, s_pts)
        scene = SceneTruth(
            size=self.size, diameter_px=cfg.diameter_px, thrombus_fraction=fraction,
            shift_px=(float(total[0]), float(total[1])), centreline_xy=pts, centreline_s=s_pts,
            stations_s=st_s, stations_xy=st_xy, stations_normal=normal, stations_burden=st_b,
            analysed_s=analysed, burden=0.0,
            segments=(), collimator=self.collimator,
            table_shift_px=(float(cfg.table_shift_px[0]), float(cfg.table_shift_px[1])),
            stations_diameter=2 * st_R, stations_reference_area=np.pi * st_R ** 2,
            stations_thrombus_area=np.pi * st_R ** 2 * st_b, features=features,
            _xs=xs_tab, _path=self.path, _path_clean=self.path_clean, _s_map=self.s_map,
            _branch_path=self.branch_path, _device_path=self.device_path)
        scene.burden = scene.burden_between(*analysed)
        segs = []
        for i, seg in enumerate(cfg.segments):
            s0, s1 = seg.start * self.length, seg.end * self.length
            inside = (xs_tab.s >= s0) & (xs_tab.s <= s1)
            segs.append(SegmentTruth(seg.name or f"segment{i}", s0, s1, scene.burden_between(s0, s1),
                                     float(xs_tab.burden[inside].max(initial=0.0))))
        scene.segments = tuple(segs)
        return scene

    def opacity_image(self, bolus: BolusTruth, t_s: float, mu: float) -> np.ndarray:
        """Noise-free mu * c * L per pixel (ln units) at video time t_s; zero outside the field."""
        out = np.zeros(self.size[0] * self.size[1])
        idx = self.active_idx[self.vessel_pos]
        out[idx] = mu * bolus.concentration(self.vessel_s, t_s) * self.vessel_path
        if self.branch_pos.size:
            idx = self.active_idx[self.branch_pos]
            out[idx] += mu * bolus.concentration(self.branch_s, t_s) * self.branch_vals
        return out.reshape(self.size)


class TdcModel:
    """Noise-free mean ROI opacity of one run on the continuous model."""

    def __init__(self, scene: Scene, bolus: BolusTruth, run_start_s: float, run_end_s: float,
                 mu_iodine: float) -> None:
        self.scene, self.bolus = scene, bolus
        self.run_start_s, self.run_end_s, self.mu = run_start_s, run_end_s, mu_iodine

    def tdc(self, roi: tuple[int, int, int, int], times: np.ndarray) -> np.ndarray:
        x, y, w, h = check_roi(roi, self.scene.size)
        times = np.asarray(times, dtype=float)
        if times.ndim != 1 or not np.all(np.isfinite(times)):
            raise ValueError("times must be a 1-D array of finite seconds")
        active = self.scene.active_mask[y:y + h, x:x + w]
        weights, s_list = [], []
        for L, s in ((self.scene.path, self.scene.s_map), (self.scene.branch_path, self.scene.branch_s_map)):
            L, s = L[y:y + h, x:x + w], s[y:y + h, x:x + w]
            sel = (L > 0) & active
            weights.append(self.mu * L[sel] / L.size)
            s_list.append(s[sel])
        weight, s_sel = np.concatenate(weights), np.concatenate(s_list)
        out = np.zeros(len(times))
        if weight.size == 0:
            return out
        t_abs = times + self.run_start_s
        chunk = max(1, 4_000_000 // weight.size)
        for i in range(0, len(times), chunk):
            c = self.bolus.concentration(s_sel[None, :], t_abs[i:i + chunk, None])
            out[i:i + chunk] = c @ weight
        return out

    def timing(self, roi: tuple[int, int, int, int], step_s: float = TDC_STEP_S) -> TimingTruth:
        if not step_s > 0:
            raise ValueError(f"step_s must be positive, got {step_s}")
        duration = self.run_end_s - self.run_start_s
        times = np.arange(int(duration / step_s + 0.5) + 1) * step_s
        curve = self.tdc(roi, times)
        delay = None if self.bolus.inject_start_s is None else self.bolus.inject_start_s - self.run_start_s
        k = int(np.argmax(curve))
        peak = float(curve[k])
        if peak <= 0:
            return TimingTruth(None, None, None, 0.0, delay)
        arrival = int(np.argmax(curve >= 0.1 * peak))
        after = np.nonzero(curve[k:] <= 0.5 * peak)[0]
        washout = round(float(times[k + after[0]]), 9) if after.size else None
        peak_s, plateau = float(times[k]), (None, None)
        lo, hi = k, k
        while lo > 0 and curve[lo - 1] >= PLATEAU_FRACTION * peak:
            lo -= 1
        while hi < len(curve) - 1 and curve[hi + 1] >= PLATEAU_FRACTION * peak:
            hi += 1
        if times[hi] - times[lo] > PLATEAU_MIN_S:
            plateau = (round(float(times[lo]), 9), round(float(times[hi]), 9))
            peak_s = 0.5 * float(times[lo] + times[hi])
        centroid = self.centroid(roi, step_s)
        mtt = None if centroid is None or delay is None else round(centroid - delay, 9)
        return TimingTruth(round(float(times[arrival]), 9), round(peak_s, 9), washout, peak, delay,
                           centroid, mtt, *plateau)

    def centroid(self, roi: tuple[int, int, int, int], step_s: float = TDC_STEP_S) -> float | None:
        """First moment (s from the run start) of the ROI's bolus curve over the whole bolus, past the run's end
        if it lasts longer (the residual contrast is not part of the bolus)."""
        bolus = self.bolus
        if bolus.K <= 0:
            return None
        s_far = float(np.nanmax(np.abs(self.scene.s_map))) if np.isfinite(self.scene.s_map).any() else 0.0
        end = (bolus.t0_s - self.run_start_s + s_far / bolus.speed_px_s + bolus.injection_s
               + (bolus.a + 40.0) * bolus.b_s)
        times = np.arange(int(max(end, self.run_end_s - self.run_start_s) / step_s) + 1) * step_s
        clean = TdcModel(self.scene, replace(bolus, residual=0.0), self.run_start_s, self.run_end_s, self.mu)
        curve = clean.tdc(roi, times)
        area = float(curve.sum())
        return None if area <= 0 else round(float((curve * times).sum() / area), 9)

