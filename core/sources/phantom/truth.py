"""What the phantom knows: the truth of a scene (geometry, burden), a bolus, a run (timing, pulses, overlay), and
the noise-free time-density curves and their timing, all from the same model the frames are rendered from.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from core.sources.phantom.config import is_number
from core.sources.phantom.features import FeatureTruth
from core.sources.phantom.geometry import CrossSections

TDC_STEP_S = 1e-3       # truth time-density curves are evaluated on this grid


@dataclass(frozen=True)
class SegmentTruth:
    name: str
    s_start: float          # anatomical arc length (px from the scripted vessel's start), tapers included
    s_end: float
    burden: float           # thrombus volume / reference lumen volume over [s_start, s_end]
    peak_burden: float      # largest station burden in the segment


@dataclass
class SceneTruth:
    """Geometry and burden truth of one scene (one shift, one thrombus fraction).

    Burden is a volume fraction: sum of thrombus cross-section / sum of reference (lumen) cross-section.
    """
    size: tuple[int, int]
    diameter_px: float               # the config's nominal diameter; the local one is stations_diameter
    thrombus_fraction: float
    shift_px: tuple[float, float]    # total scene shift (dx, dy): patient shift + table_shift_px
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
    table_shift_px: tuple[float, float]     # the table part of shift_px
    stations_diameter: np.ndarray           # (M,) reference lumen diameter (px) per station
    stations_reference_area: np.ndarray     # (M,) pi R^2 (px^2)
    stations_thrombus_area: np.ndarray      # (M,) thrombus cross-section (px^2) = burden * reference area
    features: tuple[FeatureTruth, ...]      # parallel vein, collateral, device (frame coordinates)
    _xs: CrossSections = field(repr=False)
    _path: np.ndarray = field(repr=False)           # (H, W) contrast-filled path length per pixel
    _path_clean: np.ndarray = field(repr=False)     # (H, W) the same without thrombus
    _s_map: np.ndarray = field(repr=False)          # (H, W) arc length per pixel (nan off the vessel)
    _branch_path: np.ndarray = field(repr=False)    # (H, W) contrast path of parallel vein + collateral
    _device_path: np.ndarray = field(repr=False)    # (H, W) device wall material path

    def cross_section(self, s: float) -> tuple[float, float, float, float]:
        """Thrombus geometry at arc length s: (lumen radius, disc centre d, disc centre z, disc radius)."""
        dc, zc, rt = self._xs.at(np.asarray([s], dtype=float))
        R, _ = self._xs.lumen_at(np.asarray([s], dtype=float))
        return float(R[0]), float(dc[0]), float(zc[0]), float(rt[0])

    def layer_radius(self, s: float) -> float:
        """Inner radius of the wall-adherent layer at arc length s (= the lumen radius where there is none)."""
        return float(self._xs.lumen_at(np.asarray([s], dtype=float))[1][0])

    def feature(self, name: str) -> FeatureTruth:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def branch_path_map(self) -> np.ndarray:
        """Contrast-filled path length (px) of the parallel vein and collateral per pixel (0 elsewhere)."""
        return self._branch_path.copy()

    def device_path_map(self) -> np.ndarray:
        """Device wall material path (px) per pixel; its attenuation is mu_px times this, mask frames included."""
        return self._device_path.copy()

    def roi_at(self, s: float, half: int = 8) -> tuple[int, int, int, int]:
        """An (x, y, w, h) box of side 2 * half centred on the centreline at arc length s, clipped to the frame."""
        lo, hi = self.stations_s[0], self.stations_s[-1]
        if not (is_number(s) and lo <= s <= hi) or not (isinstance(half, numbers.Integral) and half > 0):
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
        """Thrombus volume / reference lumen volume between two arc lengths."""
        return burden_between(self._xs, s0, s1)


def burden_between(xs: CrossSections, s0: float, s1: float) -> float:
    """Integral of thrombus area / integral of lumen area over [s0, s1] (fine grid, trapezoid rule)."""
    if not s0 < s1:
        raise ValueError(f"need s0 < s1, got {s0}, {s1}")
    grid = np.linspace(s0, s1, max(int((s1 - s0) / 0.05), 2) + 1)
    vals = np.interp(grid, xs.s, xs.burden)
    if np.ptp(xs.R) == 0:        # a constant tube: the area cancels
        return float(np.trapezoid(vals, grid) / (s1 - s0))
    area = np.interp(grid, xs.s, xs.R) ** 2
    return float(np.trapezoid(vals * area, grid) / np.trapezoid(area, grid))


@dataclass(frozen=True)
class BolusTruth:
    """c(s, t) = K tau^a exp(-tau / b), tau = t - t0 - s / v, plus a uniform washing-out residual.

    With ``injection_s`` = D > 0 the injection lasts D seconds and the gamma variate is spread over it (a box
    convolution): c = K (P(a + 1, tau / b) - P(a + 1, (tau - D) / b)), P the regularised lower incomplete gamma
    function, which plateaus for a long injection.

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
    injection_s: float = 0.0

    def concentration(self, s: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Iodine concentration at arc lengths s and times t (broadcast together)."""
        s = np.asarray(s, dtype=float)
        t = np.asarray(t, dtype=float)
        tau = t - self.t0_s - s / self.speed_px_s
        c = np.zeros(np.broadcast(s, t).shape)
        if self.K > 0 and self.injection_s > 0:
            tau = np.broadcast_to(tau, c.shape)
            c = self.K * (gamma_p(self.a + 1.0, tau / self.b_s) - gamma_p(self.a + 1.0, (tau - self.injection_s)
                                                                          / self.b_s))
        elif self.K > 0:
            pos = tau > 0
            tp = np.broadcast_to(tau, c.shape)[pos]
            c[pos] = self.K * np.exp(self.a * np.log(tp) - tp / self.b_s)
        if self.residual > 0:
            c = c + self.residual * np.exp(-np.clip(t - self.residual_from_s, 0, None) / self.residual_washout_s)
        return c


def gamma_p(a: float, x: np.ndarray) -> np.ndarray:
    """Regularised lower incomplete gamma P(a, x) (0 for x <= 0), by its series summed in log space."""
    x = np.asarray(x, dtype=float)
    out = np.zeros(x.shape)
    pos = x > 0
    if not pos.any():
        return out
    xp = np.minimum(x[pos], 40.0 * a + 200.0)       # P is 1 to double precision well before this
    lx = np.log(xp)
    total = np.zeros(xp.shape)
    n_max = int(xp.max() + 12.0 * math.sqrt(xp.max() + 1.0) + 30.0)
    for n in range(n_max):
        total += np.exp(-xp + (a + n) * lx - math.lgamma(a + n + 1.0))
    out[pos] = np.minimum(total, 1.0)
    return out


PLATEAU_FRACTION = 0.95     # a plateau: the curve within 5% of its maximum ...
PLATEAU_MIN_S = 1.0         # ... for longer than this


@dataclass(frozen=True)
class TimingTruth:
    """The timing (docs/domain.md) of a noise-free ROI time-density curve, seconds from the run's first frame."""
    arrival_s: float | None      # first time the TDC reaches 10% of its peak
    peak_s: float | None         # time of the TDC maximum
    washout_s: float | None      # first time after the peak the TDC is back at 50% of peak (None: not in run)
    peak_opacity: float          # ln units
    injection_delay_s: float | None   # injection start - run start; subtract it for times from injection
    # The curve's first moment over the whole bolus (run clock), and it minus the injection start; a plateau
    # (within 5% of the maximum for > 1 s) with peak_s its middle.
    centroid_s: float | None = None
    mtt_s: float | None = None
    plateau_start_s: float | None = None
    plateau_end_s: float | None = None


class CurveModel(Protocol):
    """The noise-free ROI curves of one run (``scene.TdcModel``: it needs the scene, which needs this module)."""

    def tdc(self, roi: tuple[int, int, int, int], times: np.ndarray) -> np.ndarray: ...

    def timing(self, roi: tuple[int, int, int, int], step_s: float = ...) -> TimingTruth: ...


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
    _model: CurveModel = field(repr=False)

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
