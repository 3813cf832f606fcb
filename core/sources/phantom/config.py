"""The phantom's parameters: every geometry and acquisition setting in one frozen ``PhantomConfig``, checked once.

Conventions of the whole phantom package: sizes are (rows, cols); points and shifts are (x, y) = (col, row),
pixel centres at integers; ROIs and boxes are ``(x, y, w, h)`` like everywhere else in the project
(core.vocab.check_roi), i.e. ``frame[y:y + h, x:x + w]``; arc length s runs along the centreline from
the scripted inflow end (s = 0, bottom, femoral) upward, fixed to the anatomy, with straight run-ons past
both ends (negative s below) so no vessel end is ever in the frame; the bolus leaves s = 0 at t0;
timing truth is in seconds from the run's first frame (its first pulse), everything else in video seconds
from frame 0 (render_run) or from the timeline origin (PhantomVideo).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from core.sources.phantom.features import Collateral, Device, ParallelVein
from core.sources.phantom.geometry import ThrombusSegment
from core.sources.phantom.psf import MAX_PSF_PX

MAX_SHIFT_PX = 48.0     # table / patient shift the registration must cope with
MAX_TABLE_SHIFT_PX = 160.0   # table moves between runs of one procedure (table_shift_px, table_travel_px)

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
    psf_px: float = 0.0                  # the detector's blur (Gaussian sd, px) of the quanta: 0 none
    supersample: int = 2                 # sub-samples per pixel side for the projected path length
    # Real-anatomy conditions; the defaults leave every render exactly as without them.
    diameter_profile: tuple[tuple[float, float], ...] = ()   # (arc fraction, lumen diameter px) points, linear
                                         # between them, constant past the ends; empty: diameter_px everywhere
    depth_profile: tuple[tuple[float, float], ...] = ()   # (arc fraction, depth / width of the lumen) points,
                                         # linear between them, 1 past the ends: a flattened (compressed) vein
                                         # seen edge-on looks as wide as diameter_profile says, but fainter
    table_shift_px: tuple[float, float] = (0.0, 0.0)   # table move of this run (dx, dy), |.| <= table_travel_px
    table_travel_px: float = 0.0         # largest table move of the procedure (<= 160 px; the same for all its
                                         # runs): vessel and anatomy run on this much further past the frame
    contrast_scale: float = 1.0          # iodine concentration factor of this run (injection, dilution, kV)
    background: str = "smooth"           # "smooth" blobs | "anatomy": + bone edges and soft-tissue texture
    parallel: ParallelVein | None = None     # a clean paired vein beside the main one
    collateral: Collateral | None = None     # a branch leaving the main vein (rejoining it or ending)
    device: Device | None = None             # a catheter / sheath along the centreline (radiopaque, no contrast)
    # Digital angiography (DSA) acquisitions; the defaults leave every render exactly as without them.
    frame_rates: tuple[tuple[float, float], ...] = ()   # (from X-ray on s, exposures/s) steps of a DSA program,
                                         # e.g. ((0, 4), (3, 1)); empty: pulses at pulse_rate
    injection_s: float = 0.0             # injection length (hand or injector): > 0 gives a plateau bolus, the
                                         # gamma variate spread over this long

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
        check_positive(fps=self.fps, pulse_rate=self.pulse_rate, diameter_px=self.diameter_px, i0=self.i0,
                  xray_s=self.xray_s, bolus_a=self.bolus_a, bolus_b_s=self.bolus_b_s,
                  reference_volume_ml=self.reference_volume_ml, display_gain=self.display_gain,
                  residual_washout_s=self.residual_washout_s, abc_tau_pulses=self.abc_tau_pulses)
        check_finite(lih_before_s=self.lih_before_s, lih_after_s=self.lih_after_s, volume_ml=self.volume_ml,
                bolus_peak=self.bolus_peak, transit_delay_s=self.transit_delay_s, mu_iodine=self.mu_iodine,
                residual_contrast=self.residual_contrast, electronic_sd=self.electronic_sd)
        if not (is_number(self.psf_px) and 0.0 <= self.psf_px <= MAX_PSF_PX):
            raise ValueError(f"psf_px must be in [0, {MAX_PSF_PX}] px, got {self.psf_px!r}")
        if self.pulse_rate > self.fps:
            raise ValueError(f"pulse_rate {self.pulse_rate} exceeds the video line rate {self.fps}")
        if self.max_diameter_px > min(h, w) / 4:
            raise ValueError(f"diameter {self.max_diameter_px} is too large for a {h}x{w} image")
        self._check_anatomy()
        self._check_dsa()
        if not 0.0 <= self.thrombus_fraction <= 1.0:
            raise ValueError(f"thrombus_fraction must be in [0, 1], got {self.thrombus_fraction}")
        if (len(self.shift_px) != 2 or not all(is_number(v) for v in self.shift_px)
                or any(not math.isfinite(v) or abs(v) > MAX_SHIFT_PX for v in self.shift_px)):
            raise ValueError(f"shift_px must be (dx, dy) within +-{MAX_SHIFT_PX} px, got {self.shift_px}")
        if len(self.drift_px_s) != 2:
            raise ValueError(f"drift_px_s must be (vx, vy), got {self.drift_px_s}")
        check_finite(drift_x=self.drift_px_s[0], drift_y=self.drift_px_s[1])
        end = [self.shift_px[i] + self.drift_px_s[i] * self.xray_s for i in (0, 1)]
        if any(abs(v) > MAX_SHIFT_PX for v in end):
            raise ValueError(f"shift_px + drift_px_s * xray_s = {end} leaves the +-{MAX_SHIFT_PX} px range")
        if min(self.lih_before_s, self.lih_after_s, self.volume_ml, self.bolus_peak, self.transit_delay_s,
               self.mu_iodine, self.residual_contrast, self.electronic_sd) < 0:
            raise ValueError("LIH times, volume, bolus peak, transit delay, mu_iodine, residual contrast "
                             "and electronic noise must not be negative")
        if self.inject_at_s is not None and not (is_number(self.inject_at_s) and math.isfinite(self.inject_at_s)):
            raise ValueError(f"inject_at_s must be finite or None, got {self.inject_at_s}")
        if self.bolus_speed_px_s is not None:
            check_positive(bolus_speed_px_s=self.bolus_speed_px_s)
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

    def _check_anatomy(self) -> None:
        prof = self.diameter_profile
        try:
            ok = all(len(p) == 2 and is_number(p[0]) and is_number(p[1]) for p in prof)
        except TypeError:
            ok = False
        if not ok or any(not (0.0 <= f <= 1.0 and math.isfinite(d) and d > 0) for f, d in prof) \
                or any(b[0] < a[0] for a, b in zip(prof, prof[1:])):
            raise ValueError(f"diameter_profile must be (fraction 0..1 ascending, diameter > 0) pairs, got {prof!r}")
        dep = self.depth_profile
        try:
            ok = all(len(p) == 2 and is_number(p[0]) and is_number(p[1]) for p in dep)
        except TypeError:
            ok = False
        if not ok or any(not (0.0 <= f <= 1.0 and 0.0 < r <= 1.0) for f, r in dep) \
                or any(b[0] < a[0] for a, b in zip(dep, dep[1:])):
            raise ValueError(f"depth_profile must be (fraction 0..1 ascending, ratio in (0, 1]) pairs, got {dep!r}")
        check_finite(table_travel_px=self.table_travel_px)
        if not 0.0 <= self.table_travel_px <= MAX_TABLE_SHIFT_PX:
            raise ValueError(f"table_travel_px must be in [0, {MAX_TABLE_SHIFT_PX}], got {self.table_travel_px}")
        ts = self.table_shift_px
        if (len(ts) != 2 or not all(is_number(v) for v in ts)
                or any(not math.isfinite(v) or abs(v) > self.table_travel_px for v in ts)):
            raise ValueError(f"table_shift_px must be (dx, dy) within +-table_travel_px "
                             f"({self.table_travel_px}), got {ts}")
        check_positive(contrast_scale=self.contrast_scale)
        if self.background not in ("smooth", "anatomy"):
            raise ValueError(f"background must be 'smooth' or 'anatomy', got {self.background!r}")
        for name, kind in (("parallel", ParallelVein), ("collateral", Collateral), ("device", Device)):
            v = getattr(self, name)
            if v is not None and not isinstance(v, kind):
                raise ValueError(f"{name} must be a {kind.__name__} or None, got {v!r}")

    def _check_dsa(self) -> None:
        check_finite(injection_s=self.injection_s)
        if self.injection_s < 0:
            raise ValueError(f"injection_s must not be negative, got {self.injection_s}")
        steps = self.frame_rates
        try:
            ok = all(len(p) == 2 and is_number(p[0]) and is_number(p[1]) for p in steps)
        except TypeError:
            ok = False
        if not ok or any(not (math.isfinite(t) and math.isfinite(r) and 0 < r <= self.fps) for t, r in steps) \
                or (steps and steps[0][0] != 0) or any(b[0] <= a[0] for a, b in zip(steps, steps[1:])):
            raise ValueError(f"frame_rates must be (from s ascending from 0, rate in (0, fps]) steps, got {steps!r}")

    def pulse_offsets_s(self) -> list[float]:
        """Pulse times from X-ray on, each on a video frame: every 1 / pulse_rate, or the DSA program's steps."""
        if not self.frame_rates:
            n = max(1, math.ceil(self.xray_s * self.pulse_rate - 1e-9))
            return [k / self.pulse_rate for k in range(n)]
        out, t = [], 0.0
        while t < self.xray_s - 1e-9:
            frame = round(t * self.fps)
            if not out or frame / self.fps > out[-1]:
                out.append(frame / self.fps)
            rate = [r for start, r in self.frame_rates if start <= t + 1e-9][-1]
            t += 1.0 / rate
        return out

    @property
    def max_diameter_px(self) -> float:
        """Widest lumen anywhere along the main vein (px)."""
        return max([self.diameter_px] if not self.diameter_profile else [d for _, d in self.diameter_profile])

    @property
    def run_on_px(self) -> float:
        """Straight run-on of the vessel past both scripted ends: no end shows under any allowed shift."""
        return MAX_SHIFT_PX + self.max_diameter_px + self.table_travel_px

    @property
    def speed_px_s(self) -> float:
        return self.bolus_speed_px_s if self.bolus_speed_px_s is not None else 0.6 * self.size[0]


def is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def check_positive(**values: float) -> None:
    for name, v in values.items():
        if not (is_number(v) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive finite number, got {v!r}")


def check_finite(**values: float) -> None:
    for name, v in values.items():
        if not (is_number(v) and math.isfinite(v)):
            raise ValueError(f"{name} must be a finite number, got {v!r}")

