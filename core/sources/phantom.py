"""Synthetic fluoroscopy with exact ground truth: a projected vein, travelling contrast boluses, shrinking thrombus.

Physics (DOMAIN.md): linear detector I = I0 * e * exp(-(mu_bg(x, y) + mu_iodine * c(s, t) * L(x, y))), with e
the exposure (automatic brightness control), c the iodine concentration at the pixel's centreline station s
and L the contrast-filled path length through the lumen (core/sources/phantom_truth.py). Linear frames are 12-bit
counts proportional to I; display frames are v = offset + gain * ln(I) in 8 bits (bright = more photons), so
ln(mask) - ln(frame) (lin) or (mask - frame) / gain (log) is exactly mu_iodine * c * L, the model opacity.

Two users: ``render_run`` makes one acquisition with every frame and its truth (accuracy tests), and
``PhantomVideo`` renders the shared procedure timeline on demand for the live appliance.

Conventions: sizes are (rows, cols); points and shifts are (x, y) = (col, row), pixel centres at integers;
ROIs and boxes are ``(x, y, w, h)`` like everywhere else in the project (core.analysis.tdc.check_roi), i.e.
``frame[y:y + h, x:x + w]``; arc length s runs along the centreline from
the scripted inflow end (s = 0, bottom, femoral) upward, fixed to the anatomy, with straight run-ons past
both ends (negative s below) so no vessel end is ever in the frame; the bolus leaves s = 0 at t0;
timing truth is in seconds from the run's first frame (its first pulse), everything else in video seconds
from frame 0 (render_run) or from the timeline origin (PhantomVideo).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, replace

import numpy as np

from core.sources.phantom_truth import (
    CrossSections,
    ThrombusSegment,
    build_cross_sections,
    catmull_rom,
    nearest_on_polyline,
    path_length,
    resample_polyline,
)
from firmware_bridge.scenarios import PROCEDURE, PROCEDURE_PERIOD_S, ScriptedRun

__all__ = [
    "BolusTruth", "PhantomConfig", "PhantomRun", "PhantomVideo", "RunTruth", "SceneTruth", "SegmentTruth",
    "ThrombusSegment", "TimingTruth", "render_run",
]

LIN_MAX = 4095          # 12-bit detector
LIN_FULL_SCALE = 3600   # DN for i0 quanta at full exposure: headroom for noise and ABC overshoot
LOG_TOP = 235           # display level of i0 quanta (unattenuated, full exposure)
MAX_SHIFT_PX = 48.0     # table / patient shift the registration must cope with
TDC_STEP_S = 1e-3       # truth time-density curves are evaluated on this grid

# An iliofemoral vein: enters at the bottom (femoral), bends medially-up into the iliac. Normalised (x, y).
DEFAULT_VESSEL = ((0.40, 1.10), (0.42, 0.85), (0.47, 0.62), (0.56, 0.42), (0.61, 0.22), (0.60, -0.10))
# A side-wall (eccentric) thrombus in the femoral part and an anterior-wall (partial-depth) one higher up.
DEFAULT_SEGMENTS = (
    ThrombusSegment(0.28, 0.42, 0.60, angle_deg=20.0, taper_px=14.0, name="femoral"),
    ThrombusSegment(0.55, 0.72, 0.45, angle_deg=90.0, taper_px=14.0, name="iliac"),
)


@dataclass(frozen=True)
class PhantomConfig:
    """All geometry and acquisition parameters. Sizes are (rows, cols); shifts are (dx, dy) = (cols, rows)."""
    size: tuple[int, int] = (512, 512)
    intensity: str = "lin"               # "lin": uint16 12-bit linear | "log": uint8 display video
    fps: float = 30.0                    # video line rate
    pulse_rate: float = 15.0             # X-ray pulses per second (each pulse repeats fps / pulse_rate times)
    diameter_px: float = 16.0            # reference lumen diameter
    thrombus_fraction: float = 1.0       # thrombus left relative to the scripted segments' burden
    shift_px: tuple[float, float] = (0.0, 0.0)   # whole-scene (patient/table) translation, |.| <= 48 px
    drift_px_s: tuple[float, float] = (0.0, 0.0) # patient/table motion during the run (render_run; slow:
                                                 # one scene build per pulse, ~0.1 s at 512 px)
    i0: float = 3000.0                   # quanta per pixel per pulse behind zero attenuation
    seed: int = 0
    collimator: bool = True              # circular field, black outside
    text: bool = True                    # burnt-in text boxes in the corners (display video only)
    counter: bool = False                # a fluoro-time counter box that changes once a second
    lih_before_s: float = 0.5            # last-image-hold of an earlier (contrast-free) pulse before the run
    xray_s: float = 6.0                  # exposure length
    lih_after_s: float = 0.5             # last-image-hold of the final pulse after the run
    inject_at_s: float | None = 1.0      # injection start from X-ray on (negative: before it); None: no contrast
    volume_ml: float = 10.0              # bolus amplitude scales with volume / reference_volume_ml
    reference_volume_ml: float = 10.0
    vessel_points: tuple[tuple[float, float], ...] = DEFAULT_VESSEL
    segments: tuple[ThrombusSegment, ...] = DEFAULT_SEGMENTS
    wall_offset: float = 0.85            # thrombus disc centre distance from the lumen axis, in radii
    bolus_a: float = 2.5                 # gamma variate shape
    bolus_b_s: float = 0.35              # gamma variate scale (s); peak ab after arrival
    bolus_peak: float = 1.0              # peak concentration at the reference volume
    bolus_speed_px_s: float | None = None    # None: 0.6 image heights per second
    transit_delay_s: float = 0.3         # injection start -> bolus at the inflow end (s = 0)
    mu_iodine: float = 0.04              # ln-opacity per px of path at concentration 1
    residual_contrast: float = 0.0       # iodine already in the lumen at X-ray on (concentration units)
    residual_washout_s: float = 2.0      # its exponential washout time constant
    abc_start: float = 0.7               # exposure of the first pulse relative to steady state (1: no settling)
    abc_tau_pulses: float = 1.5          # settling time constant in pulses
    noise: str = "poisson"               # "poisson" | "gaussian" (sqrt(I) sd, faster) | "none"
    electronic_sd: float = 0.0           # additive Gaussian read noise, in quanta
    display_gain: float = 70.0           # display levels per unit ln(I)
    supersample: int = 2                 # sub-samples per pixel side for the projected path length

    def __post_init__(self) -> None:
        try:
            h, w = self.size
            ok = all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 32 for v in (h, w))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"size must be (rows, cols) integers >= 32, got {self.size!r}")
        object.__setattr__(self, "size", (int(h), int(w)))
        if not isinstance(self.seed, numbers.Integral) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.intensity not in ("lin", "log"):
            raise ValueError(f"intensity must be 'lin' or 'log', got {self.intensity!r}")
        if self.noise not in ("poisson", "gaussian", "none"):
            raise ValueError(f"noise must be 'poisson', 'gaussian' or 'none', got {self.noise!r}")
        _positive(fps=self.fps, pulse_rate=self.pulse_rate, diameter_px=self.diameter_px, i0=self.i0,
                  xray_s=self.xray_s, bolus_a=self.bolus_a, bolus_b_s=self.bolus_b_s,
                  reference_volume_ml=self.reference_volume_ml, display_gain=self.display_gain,
                  residual_washout_s=self.residual_washout_s, abc_tau_pulses=self.abc_tau_pulses)
        _finite(lih_before_s=self.lih_before_s, lih_after_s=self.lih_after_s, volume_ml=self.volume_ml,
                bolus_peak=self.bolus_peak, transit_delay_s=self.transit_delay_s, mu_iodine=self.mu_iodine,
                residual_contrast=self.residual_contrast, electronic_sd=self.electronic_sd)
        if self.pulse_rate > self.fps:
            raise ValueError(f"pulse_rate {self.pulse_rate} exceeds the video line rate {self.fps}")
        if self.diameter_px > min(h, w) / 4:
            raise ValueError(f"diameter_px {self.diameter_px} is too large for a {h}x{w} image")
        if not 0.0 <= self.thrombus_fraction <= 1.0:
            raise ValueError(f"thrombus_fraction must be in [0, 1], got {self.thrombus_fraction}")
        if (len(self.shift_px) != 2 or not all(_is_number(v) for v in self.shift_px)
                or any(not math.isfinite(v) or abs(v) > MAX_SHIFT_PX for v in self.shift_px)):
            raise ValueError(f"shift_px must be (dx, dy) within +-{MAX_SHIFT_PX} px, got {self.shift_px}")
        if len(self.drift_px_s) != 2:
            raise ValueError(f"drift_px_s must be (vx, vy), got {self.drift_px_s}")
        _finite(drift_x=self.drift_px_s[0], drift_y=self.drift_px_s[1])
        end = [self.shift_px[i] + self.drift_px_s[i] * self.xray_s for i in (0, 1)]
        if any(abs(v) > MAX_SHIFT_PX for v in end):
            raise ValueError(f"shift_px + drift_px_s * xray_s = {end} leaves the +-{MAX_SHIFT_PX} px range")
        if min(self.lih_before_s, self.lih_after_s, self.volume_ml, self.bolus_peak, self.transit_delay_s,
               self.mu_iodine, self.residual_contrast, self.electronic_sd) < 0:
            raise ValueError("LIH times, volume, bolus peak, transit delay, mu_iodine, residual contrast "
                             "and electronic noise must not be negative")
        if self.inject_at_s is not None and not (_is_number(self.inject_at_s) and math.isfinite(self.inject_at_s)):
            raise ValueError(f"inject_at_s must be finite or None, got {self.inject_at_s}")
        if self.bolus_speed_px_s is not None:
            _positive(bolus_speed_px_s=self.bolus_speed_px_s)
        if not 0.0 < self.abc_start <= 1.1:
            raise ValueError(f"abc_start must be in (0, 1.1], got {self.abc_start}")
        if not 0.0 <= self.wall_offset < 1.0:
            raise ValueError(f"wall_offset must be in [0, 1), got {self.wall_offset}")
        if not isinstance(self.supersample, int) or not 1 <= self.supersample <= 4:
            raise ValueError(f"supersample must be an integer 1..4, got {self.supersample}")
        if len(self.vessel_points) < 2:
            raise ValueError("vessel_points needs at least two points")
        if not all(isinstance(seg, ThrombusSegment) for seg in self.segments):
            raise ValueError("segments must be ThrombusSegment instances")

    @property
    def speed_px_s(self) -> float:
        return self.bolus_speed_px_s if self.bolus_speed_px_s is not None else 0.6 * self.size[0]


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _positive(**values: float) -> None:
    for name, v in values.items():
        if not (_is_number(v) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive finite number, got {v!r}")


def _finite(**values: float) -> None:
    for name, v in values.items():
        if not (_is_number(v) and math.isfinite(v)):
            raise ValueError(f"{name} must be a finite number, got {v!r}")


# --------------------------------------------------------------------------------------------- truth types

@dataclass(frozen=True)
class SegmentTruth:
    name: str
    s_start: float          # anatomical arc length (px from the scripted vessel's start), tapers included
    s_end: float
    burden: float           # thrombus volume / lumen volume over [s_start, s_end]
    peak_burden: float      # largest station burden in the segment


@dataclass
class SceneTruth:
    """Geometry and burden truth of one scene (one shift, one thrombus fraction)."""
    size: tuple[int, int]
    diameter_px: float
    thrombus_fraction: float
    shift_px: tuple[float, float]
    centreline_xy: np.ndarray        # (N, 2) frame coordinates (x, y), 1 px apart, from the inflow end
    centreline_s: np.ndarray         # (N,) arc length of each point (anatomical: independent of shift)
    stations_s: np.ndarray           # (M,) stations every 1 px of arc length (negative on the run-on below s = 0)
    stations_xy: np.ndarray          # (M, 2) their frame coordinates
    stations_normal: np.ndarray      # (M, 2) unit in-plane normal (direction of +d in the cross-section)
    stations_burden: np.ndarray      # (M,) occupied cross-section area / lumen area
    analysed_s: tuple[float, float]  # arc-length range in the field under any shift up to shift_allowance()
    burden: float                    # thrombus volume / lumen volume over analysed_s
    segments: tuple[SegmentTruth, ...]
    collimator: tuple[float, float, float] | None   # (cx, cy, radius) in frame coordinates
    _xs: CrossSections = field(repr=False)
    _path: np.ndarray = field(repr=False)           # (H, W) contrast-filled path length per pixel
    _path_clean: np.ndarray = field(repr=False)     # (H, W) the same without thrombus
    _s_map: np.ndarray = field(repr=False)          # (H, W) arc length per pixel (nan off the vessel)

    def cross_section(self, s: float) -> tuple[float, float, float, float]:
        """Thrombus geometry at arc length s: (lumen radius, disc centre d, disc centre z, disc radius)."""
        dc, zc, rt = self._xs.at(np.asarray([s], dtype=float))
        return self._xs.radius, float(dc[0]), float(zc[0]), float(rt[0])

    def roi_at(self, s: float, half: int = 8) -> tuple[int, int, int, int]:
        """An (x, y, w, h) box of side 2 * half centred on the centreline at arc length s, clipped to the frame."""
        lo, hi = self.stations_s[0], self.stations_s[-1]
        if not (_is_number(s) and lo <= s <= hi) or not (isinstance(half, numbers.Integral) and half > 0):
            raise ValueError(f"need {lo:.1f} <= s <= {hi:.1f} and an integer half > 0, got {s!r}, {half!r}")
        x = float(np.interp(s, self.stations_s, self.stations_xy[:, 0]))
        y = float(np.interp(s, self.stations_s, self.stations_xy[:, 1]))
        rows, cols = self.size
        x0, y0 = min(max(int(round(x)) - half, 0), cols - 1), min(max(int(round(y)) - half, 0), rows - 1)
        return x0, y0, min(2 * half, cols - x0), min(2 * half, rows - y0)

    def path_length_map(self, clean: bool = False) -> np.ndarray:
        """Contrast-filled path length (px) per pixel; ``clean`` without thrombus (the reference lumen)."""
        return (self._path_clean if clean else self._path).copy()

    def arc_length_map(self) -> np.ndarray:
        """Centreline arc length (px) of every vessel pixel, nan elsewhere."""
        return self._s_map.copy()

    def burden_between(self, s0: float, s1: float) -> float:
        """Thrombus volume / lumen volume between two arc lengths (the reference lumen is a constant tube)."""
        if not s0 < s1:
            raise ValueError(f"need s0 < s1, got {s0}, {s1}")
        grid = np.linspace(s0, s1, max(int((s1 - s0) / 0.05), 2) + 1)
        vals = np.interp(grid, self._xs.s, self._xs.burden)
        return float(np.trapezoid(vals, grid) / (s1 - s0))


@dataclass(frozen=True)
class BolusTruth:
    """c(s, t) = K tau^a exp(-tau / b), tau = t - t0 - s / v, plus a uniform washing-out residual.

    Times are video seconds: from frame 0 (render_run) or from the timeline cycle origin (PhantomVideo).
    """
    inject_start_s: float | None
    t0_s: float                 # bolus front at the inflow end (s = 0): injection start + transit delay
    a: float
    b_s: float
    K: float
    speed_px_s: float
    peak_concentration: float
    transit_delay_s: float
    residual: float = 0.0
    residual_from_s: float = 0.0
    residual_washout_s: float = 1.0

    def concentration(self, s: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Iodine concentration at arc lengths s and times t (broadcast together)."""
        s = np.asarray(s, dtype=float)
        t = np.asarray(t, dtype=float)
        tau = t - self.t0_s - s / self.speed_px_s
        c = np.zeros(np.broadcast(s, t).shape)
        if self.K > 0:
            pos = tau > 0
            tp = np.broadcast_to(tau, c.shape)[pos]
            c[pos] = self.K * np.exp(self.a * np.log(tp) - tp / self.b_s)
        if self.residual > 0:
            c = c + self.residual * np.exp(-np.clip(t - self.residual_from_s, 0, None) / self.residual_washout_s)
        return c


@dataclass(frozen=True)
class TimingTruth:
    """DOMAIN.md timing of a noise-free ROI time-density curve, seconds from the run's first frame."""
    arrival_s: float | None      # first time the TDC reaches 10% of its peak
    peak_s: float | None         # time of the TDC maximum
    washout_s: float | None      # first time after the peak the TDC is back at 50% of peak (None: not in run)
    peak_opacity: float          # ln units
    injection_delay_s: float | None   # injection start - run start; subtract it for times from injection


class _TdcModel:
    """Noise-free mean ROI opacity of one run on the continuous model."""

    def __init__(self, scene: _Scene, bolus: BolusTruth, run_start_s: float, run_end_s: float,
                 mu_iodine: float) -> None:
        self.scene, self.bolus = scene, bolus
        self.run_start_s, self.run_end_s, self.mu = run_start_s, run_end_s, mu_iodine

    def tdc(self, roi: tuple[int, int, int, int], times: np.ndarray) -> np.ndarray:
        x, y, w, h = _check_roi(roi, self.scene.size)
        times = np.asarray(times, dtype=float)
        if times.ndim != 1 or not np.all(np.isfinite(times)):
            raise ValueError("times must be a 1-D array of finite seconds")
        L = self.scene.path[y:y + h, x:x + w]
        s = self.scene.s_map[y:y + h, x:x + w]
        active = self.scene.active_mask[y:y + h, x:x + w]
        sel = (L > 0) & active
        weight = self.mu * L[sel] / L.size
        s_sel = s[sel]
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
        return TimingTruth(round(float(times[arrival]), 9), round(float(times[k]), 9), washout, peak, delay)


@dataclass
class RunTruth:
    """Everything the phantom knows about one rendered run. Frame times are video seconds from frame 0."""
    intensity: str
    fps: float
    pulse_rate: float
    frame_times_s: np.ndarray        # (T,)
    frame_pulse: np.ndarray          # (T,) pulse shown by each frame; -1 = the held image before the run
    is_new_pulse: np.ndarray         # (T,) first frame showing a pulse
    xray_on: np.ndarray              # (T,) frame inside the exposure
    xray_on_frame: int               # first frame of the run
    xray_off_frame: int              # first frame after the exposure (last-image-hold from here)
    run_start_s: float               # video time of the first pulse = the run's first frame
    run_end_s: float                 # video time the exposure stops
    pulse_times_s: np.ndarray        # (P,) video times of the pulses
    pulse_shift_px: np.ndarray       # (P, 2) scene shift (dx, dy) of each pulse: shift_px + drift
    exposure: np.ndarray             # (P,) ABC exposure factor per pulse
    inject_start_s: float | None     # video time
    bolus: BolusTruth
    scene: SceneTruth
    text_boxes: tuple[tuple[int, int, int, int], ...]   # (x, y, w, h), counter box included
    counter_box: tuple[int, int, int, int] | None       # (x, y, w, h)
    counter_values: np.ndarray | None                   # (T,) whole fluoro seconds shown
    mu_iodine: float
    i0: float
    display_offset: float | None     # log: v = offset + gain * ln(quanta)
    display_gain: float | None
    dn_per_quantum: float | None     # lin: DN = quanta * dn_per_quantum
    _model: _TdcModel = field(repr=False)

    # The scene fields most callers want, at top level.
    @property
    def burden(self) -> float:
        return self.scene.burden

    @property
    def segments(self) -> tuple[SegmentTruth, ...]:
        return self.scene.segments

    @property
    def shift_px(self) -> tuple[float, float]:
        return self.scene.shift_px

    @property
    def diameter_px(self) -> float:
        return self.scene.diameter_px

    @property
    def centreline_xy(self) -> np.ndarray:
        return self.scene.centreline_xy

    @property
    def collimator(self) -> tuple[float, float, float] | None:
        return self.scene.collimator

    @property
    def injection_delay_s(self) -> float | None:
        return None if self.inject_start_s is None else self.inject_start_s - self.run_start_s

    def truth_tdc(self, roi: tuple[int, int, int, int], times: np.ndarray) -> np.ndarray:
        """Noise-free mean opacity (ln units) of ROI (x, y, w, h) at ``times`` s from the run start.

        With ``drift_px_s`` the ROI stays on the anatomy where the first pulse saw it (motion-compensated).
        """
        return self._model.tdc(roi, times)

    def truth_timing(self, roi: tuple[int, int, int, int], step_s: float = TDC_STEP_S) -> TimingTruth:
        """arrival / peak / washout of the (x, y, w, h) ROI's truth TDC over the run, on a ``step_s`` grid."""
        return self._model.timing(roi, step_s)

    def opacity(self, t_s: float) -> np.ndarray:
        """Noise-free opacity image (ln units, = ln(mask) - ln(frame)) at ``t_s`` s from the run start."""
        return self._model.scene.opacity_image(self.bolus, self.run_start_s + t_s, self.mu_iodine)


@dataclass
class PhantomRun:
    frames: np.ndarray   # (T, H, W) uint16 (lin) or uint8 (log)
    fps: float           # the video line rate of ``frames``
    truth: RunTruth


def _check_roi(roi, size) -> tuple[int, int, int, int]:
    try:
        x, y, w, h = (int(v) for v in roi)
    except (TypeError, ValueError):
        raise ValueError(f"roi must be (x, y, w, h) integers, got {roi!r}") from None
    rows, cols = size
    if tuple(roi) != (x, y, w, h) or not (w > 0 and h > 0 and 0 <= x <= cols - w and 0 <= y <= rows - h):
        raise ValueError(f"roi {roi!r} is not a non-empty (x, y, w, h) box inside a {size} frame")
    return x, y, w, h


# --------------------------------------------------------------------------------------------- the scene

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


class _Scene:
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


# --------------------------------------------------------------------------------------------- rendering

class _Renderer:
    """Turns a scene + iodine + exposure into one detector or display frame."""

    def __init__(self, cfg: PhantomConfig) -> None:
        self.cfg = cfg
        self.dtype = np.uint16 if cfg.intensity == "lin" else np.uint8
        self.dn_per_quantum = LIN_FULL_SCALE / cfg.i0
        self.gain = cfg.display_gain
        self.offset = LOG_TOP - cfg.display_gain * math.log(cfg.i0)
        self.overlay = _Overlay(cfg) if (cfg.text and cfg.intensity == "log") else None

    def pulse(self, scene: _Scene, bolus: BolusTruth, t_s: float, exposure: float,
              rng: np.random.Generator | None) -> np.ndarray:
        cfg = self.cfg
        quanta = scene.base_quanta * np.float32(exposure)
        conc = bolus.concentration(scene.vessel_s, t_s)
        if np.any(conc > 0):
            att = np.exp(-(cfg.mu_iodine * conc * scene.vessel_path)).astype(np.float32)
            quanta[scene.vessel_pos] *= att
        if cfg.noise == "poisson" and rng is not None:
            quanta = rng.poisson(quanta).astype(np.float32)
        elif cfg.noise == "gaussian" and rng is not None:
            quanta += np.sqrt(quanta) * rng.standard_normal(quanta.shape, dtype=np.float32)
        if cfg.electronic_sd > 0 and cfg.noise != "none" and rng is not None:
            quanta += np.float32(cfg.electronic_sd) * rng.standard_normal(quanta.shape, dtype=np.float32)
        if cfg.intensity == "lin":
            vals = np.clip(np.rint(quanta * np.float32(self.dn_per_quantum)), 0, LIN_MAX)
        else:
            # One quantum floor: the log of an empty pixel is the darkest level, not -inf.
            vals = np.clip(np.rint(self.offset + self.gain * np.log(np.maximum(quanta, 1.0))), 0, 255)
        frame = np.zeros(scene.size[0] * scene.size[1], dtype=self.dtype)
        frame[scene.active_idx] = vals.astype(self.dtype)
        frame = frame.reshape(scene.size)
        if self.overlay is not None:
            self.overlay.draw(frame)
        return frame

    def blank(self) -> np.ndarray:
        frame = np.zeros(self.cfg.size, dtype=self.dtype)
        if self.overlay is not None:
            self.overlay.draw(frame)
        return frame


_DIGITS = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001001001001",
    "8": "111101111101111", "9": "111101111001111", ":": "000010000010000",
}


def _box_outside_circle(box, circle) -> bool:
    x, y, w, h = box
    cx, cy, r = circle
    # nearest point of the (pixel-centre) box to the circle centre
    nx = min(max(cx, x), x + w - 1)
    ny = min(max(cy, y), y + h - 1)
    return (nx - cx) ** 2 + (ny - cy) ** 2 > r * r


class _Overlay:
    """Burnt-in text: glyph-like blocks in the corners, and optionally a fluoro-time counter (MM:SS)."""
    LEVEL = 230

    def __init__(self, cfg: PhantomConfig) -> None:
        h, w = cfg.size
        g = max(1, min(h, w) // 256)              # glyph pixel size
        self.g = g
        rng = np.random.default_rng(12345)        # fixed: the same overlay on every run
        cx, cy, r = collimator_circle(cfg.size)
        boxes, patches = [], []
        self.counter_box = None
        # Corner boxes: (lines, characters); the bottom-left one is the fluoro-time counter when enabled.
        for corner, (lines, chars) in enumerate([(2, 9), (2, 7), (1, 5 if cfg.counter else 8), (1, 6)]):
            is_counter = cfg.counter and corner == 2
            box = self._fit(corner, lines, chars, g, h, w, (cx, cy, r) if cfg.collimator else None, is_counter)
            if box is None:
                continue
            (x, y, bw, bh), lines, chars = box
            if is_counter:
                self.counter_box = (x, y, bw, bh)
                continue
            patch = np.zeros((bh, bw), dtype=np.uint8)
            for li in range(lines):
                for ci in range(chars):
                    glyph = rng.random((5, 3)) < 0.55
                    blk = np.kron(glyph, np.ones((g, g), dtype=bool))
                    yy, xx = 2 * g + li * 7 * g, g + ci * 4 * g
                    patch[yy:yy + 5 * g, xx:xx + 3 * g][blk] = self.LEVEL
            boxes.append((x, y, bw, bh))
            patches.append(patch)
        self.boxes = tuple(boxes)
        self.patches = patches

    @staticmethod
    def _fit(corner, lines, chars, g, h, w, circle, fixed):
        """Shrink a corner box until it clears the collimated field (real overlays sit on the black surround)."""
        while True:
            bh, bw = lines * 7 * g + 2 * g, chars * 4 * g + 2 * g
            y0 = 2 * g if corner < 2 else h - 2 * g - bh
            x0 = 2 * g if corner % 2 == 0 else w - 2 * g - bw
            box = (x0, y0, bw, bh)
            if circle is None or _box_outside_circle(box, circle):
                return box, lines, chars
            if not fixed and chars > 3:
                chars -= 1
            elif not fixed and lines > 1:
                lines, chars = lines - 1, chars
            else:
                # The counter stays even where it cannot clear the field; plain glyph boxes are dropped.
                return (box, lines, chars) if fixed else None

    @property
    def all_boxes(self) -> tuple[tuple[int, int, int, int], ...]:
        """Every (x, y, w, h) box, the counter's included."""
        return self.boxes + ((self.counter_box,) if self.counter_box else ())

    def draw(self, frame: np.ndarray, seconds: int | None = None) -> None:
        for (x, y, w, h), patch in zip(self.boxes, self.patches):
            frame[y:y + h, x:x + w] = patch
        if self.counter_box is not None and seconds is not None:
            self.draw_counter(frame, seconds)

    def draw_counter(self, frame: np.ndarray, seconds: int) -> None:
        x, y, w, h = self.counter_box
        g = self.g
        frame[y:y + h, x:x + w] = 0
        text = f"{(seconds // 60) % 100:02d}:{seconds % 60:02d}"
        for ci, ch in enumerate(text):
            glyph = np.array([c == "1" for c in _DIGITS[ch]]).reshape(5, 3)
            blk = np.kron(glyph, np.ones((g, g), dtype=bool))
            yy, xx = y + 2 * g, x + g + ci * 4 * g
            frame[yy:yy + 5 * g, xx:xx + 3 * g][blk] = self.LEVEL


def _abc(cfg: PhantomConfig, k: np.ndarray | int) -> np.ndarray:
    """Exposure of pulse k of a run: automatic brightness control settling toward 1."""
    return 1.0 - (1.0 - cfg.abc_start) * np.exp(-np.asarray(k, dtype=float) / cfg.abc_tau_pulses)


def _bolus(cfg: PhantomConfig, inject_start_s: float | None, volume_ml: float, residual_from_s: float) -> BolusTruth:
    peak = cfg.bolus_peak * volume_ml / cfg.reference_volume_ml if inject_start_s is not None else 0.0
    a, b = cfg.bolus_a, cfg.bolus_b_s
    K = peak / ((a * b) ** a * math.exp(-a)) if peak > 0 else 0.0   # gamma variate maximum is at tau = a b
    t0 = (inject_start_s if inject_start_s is not None else 0.0) + cfg.transit_delay_s
    return BolusTruth(inject_start_s, t0, a, b, K, cfg.speed_px_s, peak, cfg.transit_delay_s,
                      cfg.residual_contrast, residual_from_s, cfg.residual_washout_s)


def _pulse_of_frames(n_frames: int, fps: float, pulse_rate: float) -> np.ndarray:
    """Pulse shown by each of ``n_frames`` frames starting at a pulse: the latest pulse not after the frame."""
    j = np.arange(n_frames)
    # The small epsilon keeps exact ratios (15 p/s on 30 fps) from flooring one pulse short.
    return np.floor(j * pulse_rate / fps + 1e-9).astype(int)


def render_run(config: PhantomConfig) -> PhantomRun:
    """One acquisition: LIH before, the exposure (pulses repeated on the video line), LIH after, and its truth."""
    cfg = config
    rng = np.random.default_rng(cfg.seed)
    scene = _Scene(cfg, cfg.shift_px, cfg.thrombus_fraction)   # the first pulse's: truth maps and ROIs use it
    renderer = _Renderer(cfg)

    n_before = int(round(cfg.lih_before_s * cfg.fps))
    n_xray = max(1, int(round(cfg.xray_s * cfg.fps)))
    n_after = int(round(cfg.lih_after_s * cfg.fps))
    T = n_before + n_xray + n_after
    t_on = n_before / cfg.fps                 # the first pulse lands on a video frame
    t_off = (n_before + n_xray) / cfg.fps
    frame_pulse = np.full(T, -1, dtype=int)
    frame_pulse[n_before:n_before + n_xray] = _pulse_of_frames(n_xray, cfg.fps, cfg.pulse_rate)
    n_pulses = int(frame_pulse[n_before + n_xray - 1]) + 1
    frame_pulse[n_before + n_xray:] = n_pulses - 1
    pulse_times = t_on + np.arange(n_pulses) / cfg.pulse_rate
    exposure = _abc(cfg, np.arange(n_pulses))
    pulse_shift = np.asarray(cfg.shift_px, dtype=float) + np.outer(pulse_times - t_on, cfg.drift_px_s)
    scenes = {(float(pulse_shift[0, 0]), float(pulse_shift[0, 1])): scene}
    inject = None if cfg.inject_at_s is None else t_on + cfg.inject_at_s
    bolus = _bolus(cfg, inject, cfg.volume_ml, t_on)

    frames = np.empty((T,) + cfg.size, dtype=renderer.dtype)
    if n_before:
        # An earlier fluoroscopy pulse held on screen: contrast-free, steady exposure, its own noise.
        held = renderer.pulse(scene, replace(bolus, K=0.0, residual=0.0), 0.0, 1.0, rng)
        frames[:n_before] = held
    is_new = np.zeros(T, dtype=bool)
    j = n_before
    for k in range(n_pulses):
        n_rep = int(np.count_nonzero(frame_pulse[n_before:n_before + n_xray] == k))
        key = (float(pulse_shift[k, 0]), float(pulse_shift[k, 1]))
        if key not in scenes:
            scenes = {key: _Scene(cfg, key, cfg.thrombus_fraction)}   # moving patient: one scene per pulse
        frames[j:j + n_rep] = renderer.pulse(scenes[key], bolus, pulse_times[k], float(exposure[k]), rng)
        is_new[j] = True
        j += n_rep
    if n_after:
        frames[j:] = frames[j - 1]

    counter_box, counter_values = None, None
    if renderer.overlay is not None and renderer.overlay.counter_box is not None:
        counter_box = renderer.overlay.counter_box
        elapsed = np.clip(np.arange(T) / cfg.fps - t_on, 0.0, t_off - t_on)
        counter_values = np.floor(elapsed + 1e-9).astype(int)
        for i in range(T):
            renderer.overlay.draw_counter(frames[i], int(counter_values[i]))

    xray_on = np.zeros(T, dtype=bool)
    xray_on[n_before:n_before + n_xray] = True
    truth = RunTruth(
        intensity=cfg.intensity, fps=cfg.fps, pulse_rate=cfg.pulse_rate,
        frame_times_s=np.arange(T) / cfg.fps, frame_pulse=frame_pulse, is_new_pulse=is_new, xray_on=xray_on,
        xray_on_frame=n_before, xray_off_frame=n_before + n_xray, run_start_s=t_on, run_end_s=t_off,
        pulse_times_s=pulse_times, pulse_shift_px=pulse_shift, exposure=exposure, inject_start_s=inject,
        bolus=bolus, scene=scene.truth,
        text_boxes=renderer.overlay.all_boxes if renderer.overlay else (), counter_box=counter_box,
        counter_values=counter_values, mu_iodine=cfg.mu_iodine, i0=cfg.i0,
        display_offset=renderer.offset if cfg.intensity == "log" else None,
        display_gain=renderer.gain if cfg.intensity == "log" else None,
        dn_per_quantum=renderer.dn_per_quantum if cfg.intensity == "lin" else None,
        _model=_TdcModel(scene, bolus, t_on, t_off, cfg.mu_iodine))
    return PhantomRun(frames, cfg.fps, truth)


# --------------------------------------------------------------------------------------------- live video

class PhantomVideo:
    """The live appliance's video source: the scripted procedure, rendered pulse by pulse on demand.

    Pulses are seeded by (seed, cycle, run, pulse), so a frame depends only on its time, never on the
    order of calls. Repeated frames and last-image-hold return the cached pulse (read-only array).
    """

    def __init__(self, config: PhantomConfig, timeline: tuple[ScriptedRun, ...] = PROCEDURE,
                 period_s: float = PROCEDURE_PERIOD_S,
                 shifts: tuple[tuple[float, float], ...] | None = None) -> None:
        _positive(period_s=period_s)
        runs = tuple(timeline)
        if not runs:
            raise ValueError("timeline has no runs")
        prev_off = 0.0
        for r in runs:
            if not (0 <= r.xray_on_s < r.xray_off_s <= period_s) or r.xray_on_s < prev_off:
                raise ValueError(f"timeline runs must be ordered, non-overlapping and within the period: {r}")
            if not 0.0 <= r.thrombus_fraction <= 1.0:
                raise ValueError(f"run thrombus_fraction must be in [0, 1]: {r}")
            prev_off = r.xray_off_s
        if shifts is None:
            shifts = (config.shift_px,) * len(runs)
        if len(shifts) != len(runs):
            raise ValueError(f"shifts needs one (dx, dy) per run ({len(runs)}), got {len(shifts)}")
        for sh in shifts:
            replace(config, shift_px=tuple(sh))   # validates the range
        self.config = config
        self.timeline = runs
        self.period_s = float(period_s)
        self.shifts = tuple((float(a), float(b)) for a, b in shifts)
        self.shape = config.size
        self._renderer = _Renderer(config)
        self.dtype = np.dtype(self._renderer.dtype)
        # Every scene is built up front, so the first pulse of a run costs no more than any other.
        self._scenes: dict[tuple, _Scene] = {}
        for i in range(len(runs)):
            self._scene(i)
        self._cache_key: tuple | None = None
        self._cache: np.ndarray | None = None
        self._blank = self._renderer.blank()
        self._blank.flags.writeable = False

    def _scene(self, i: int) -> _Scene:
        key = (self.shifts[i], self.timeline[i].thrombus_fraction)
        if key not in self._scenes:
            self._scenes[key] = _Scene(self.config, key[0], key[1])
        return self._scenes[key]

    def _n_pulses(self, run: ScriptedRun) -> int:
        # pulses at xray_on + k / rate strictly before xray_off
        return max(1, math.ceil((run.xray_off_s - run.xray_on_s) * self.config.pulse_rate - 1e-9))

    def bolus(self, i: int) -> BolusTruth:
        """Bolus truth of run i, times in seconds from the cycle origin."""
        run = self.timeline[i]
        return _bolus(self.config, run.inject_start_s, run.volume_ml, run.xray_on_s)

    def scene_truth(self, i: int) -> SceneTruth:
        """Geometry and burden truth of run i (its shift and thrombus fraction)."""
        return self._scene(self._index(i)).truth

    def timing_truth(self, i: int, roi: tuple[int, int, int, int]) -> TimingTruth:
        """Truth TDC timing of run i for ``roi`` (x, y, w, h), seconds from the run's first pulse."""
        i = self._index(i)
        run = self.timeline[i]
        return _TdcModel(self._scene(i), self.bolus(i), run.xray_on_s, run.xray_off_s,
                         self.config.mu_iodine).timing(roi)

    def _index(self, i: int) -> int:
        if not 0 <= i < len(self.timeline):
            raise ValueError(f"run index {i} outside 0..{len(self.timeline) - 1}")
        return i

    def _locate(self, t_s: float) -> tuple[int, int | None, float]:
        cycle, local = divmod(t_s, self.period_s)
        for i, run in enumerate(self.timeline):
            if run.xray_on_s <= local < run.xray_off_s:
                return int(cycle), i, local
        return int(cycle), None, local

    def _fluoro_seconds(self, cycle: int, local: float) -> int:
        per_cycle = sum(r.xray_off_s - r.xray_on_s for r in self.timeline)
        done = sum(min(max(local - r.xray_on_s, 0.0), r.xray_off_s - r.xray_on_s) for r in self.timeline)
        return int(cycle * per_cycle + done + 1e-9)

    def frame_at(self, t_s: float) -> tuple[np.ndarray, bool]:
        """(frame, xray_on) at ``t_s`` seconds from the timeline origin (repeating every period)."""
        if not (_is_number(t_s) and math.isfinite(t_s) and t_s >= 0):
            raise ValueError(f"t_s must be a finite time >= 0, got {t_s!r}")
        cycle, i, local = self._locate(float(t_s))
        if i is not None:
            run = self.timeline[i]
            k = min(int(math.floor((local - run.xray_on_s) * self.config.pulse_rate + 1e-9)),
                    self._n_pulses(run) - 1)
            frame, on = self._pulse(cycle, i, k), True
        else:
            # Last-image-hold of the most recent run, this cycle or the previous one; dark before any run.
            prev = [j for j, r in enumerate(self.timeline) if r.xray_off_s <= local]
            if prev:
                j, c = prev[-1], cycle
            elif cycle > 0:
                j, c = len(self.timeline) - 1, cycle - 1
            else:
                return self._blank, False
            frame, on = self._pulse(c, j, self._n_pulses(self.timeline[j]) - 1), False
        ov = self._renderer.overlay
        if ov is not None and ov.counter_box is not None:
            frame = frame.copy()
            ov.draw_counter(frame, self._fluoro_seconds(cycle, local))
            frame.flags.writeable = False
        return frame, on

    def _pulse(self, cycle: int, i: int, k: int) -> np.ndarray:
        key = (cycle, i, k)
        if key != self._cache_key:
            run = self.timeline[i]
            rng = np.random.default_rng([self.config.seed, cycle, i, k])
            frame = self._renderer.pulse(self._scene(i), self.bolus(i), run.xray_on_s + k / self.config.pulse_rate,
                                         float(_abc(self.config, k)), rng)
            frame.flags.writeable = False
            self._cache_key, self._cache = key, frame
        return self._cache
