"""Vessels and objects beside the main vein: a paired (parallel) vein, a collateral, a device in the lumen.

All are anchored to the main vein's anatomy (arc length s, the main centreline's in-plane normal n(s), +d side
= +n) so they move with the patient and the table exactly like it. The two contrast-filled branches are
tubes of circular cross-section: the projected path at in-plane distance d from their own centreline is
the analytic chord 2 sqrt(r^2 - d^2); they fill with the bolus of the main vein's station they run beside
(paired veins drain together). Where a branch overlaps the main lumen in projection (a collateral's
junctions) only the main lumen counts, so no volume is counted twice. The device is a radiopaque tube
(annulus of outer radius ro, wall w) lying in the main lumen parallel to its centreline at in-plane offset
``offset_px`` (depth 0): its wall attenuates in every frame, mask included, and it displaces contrast by
its outer chord. It must lie inside the lumen, and is not thrombus (the burden truth does not count it).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.sources.phantom.geometry import smoothstep


@dataclass(frozen=True)
class ParallelVein:
    """A clean paired vein beside the main one (e.g. duplicated femoral vein)."""
    offset_px: float = 30.0      # centre-to-centre distance from the main centreline, signed like d (+n side)
    diameter_px: float = 12.0
    start: float = 0.0           # main-vein arc fractions it runs between; 0 / 1 run on out of the frame
    end: float = 1.0
    taper_px: float = 20.0       # it closes smoothly over this length at an end inside (0, 1)
    name: str = "parallel"

    def __post_init__(self) -> None:
        _check(self, 0.0 <= self.start < self.end <= 1.0, "needs 0 <= start < end <= 1")
        _check(self, self.diameter_px > 0 and self.taper_px > 0, "needs diameter_px > 0 and taper_px > 0")
        _check(self, abs(self.offset_px) > self.diameter_px / 2, "must not sit on the main centreline")


@dataclass(frozen=True)
class Collateral:
    """A branch leaving the main vein at ``start`` and rejoining it at ``end`` (or ending there, blind)."""
    start: float                 # main-vein arc fractions
    end: float
    bulge_px: float = 40.0       # largest distance from the main centreline, signed like d (+n side)
    diameter_px: float = 8.0
    rejoin: bool = True          # False: the branch ends (a blind end, closing over one diameter)
    name: str = "collateral"

    def __post_init__(self) -> None:
        _check(self, 0.0 <= self.start < self.end <= 1.0, "needs 0 <= start < end <= 1")
        _check(self, self.diameter_px > 0 and self.bulge_px != 0, "needs diameter_px > 0 and bulge_px != 0")


@dataclass(frozen=True)
class Device:
    """A catheter or sheath in the main lumen, entering from below (femoral access) up to its tip at ``end``."""
    end: float                   # tip, main-vein arc fraction
    start: float | None = None   # None: from the run-on below the frame (the access site)
    outer_diameter_px: float = 6.0
    wall_px: float = 1.0
    offset_px: float = 0.0       # in-plane offset of its axis from the main centreline, signed like d
    mu_px: float = 0.12          # ln attenuation per px of wall material (radiopaque)
    name: str = "catheter"

    def __post_init__(self) -> None:
        _check(self, 0.0 <= self.end <= 1.0 and (self.start is None or 0.0 <= self.start < self.end),
               "needs 0 <= start < end <= 1")
        _check(self, 0 < self.wall_px <= self.outer_diameter_px / 2 and self.mu_px > 0,
               "needs 0 < wall_px <= outer radius and mu_px > 0")


def _check(obj, ok: bool, msg: str) -> None:
    if not ok:
        raise ValueError(f"{type(obj).__name__} {msg}: {obj}")


@dataclass
class FeatureTruth:
    """Where a parallel vein, collateral or device is: points in frame coordinates (this run's shift)."""
    name: str
    kind: str                    # "parallel" | "collateral" | "device"
    centreline_xy: np.ndarray    # (K, 2) (x, y) of its axis, ~1 px apart
    centreline_s: np.ndarray     # (K,) main-vein arc length each point sits beside (px, anatomical)
    radius_px: np.ndarray        # (K,) lumen radius (branches) or outer radius (device) at each point
    s_start: float               # main-vein arc length range it spans
    s_end: float
    wall_px: float | None = None     # device only
    offset_px: float | None = None   # device: axis offset from the main centreline; parallel: centre distance
    mu_px: float | None = None       # device only: ln attenuation per px of wall


def chord(r: np.ndarray | float, d: np.ndarray) -> np.ndarray:
    return 2.0 * np.sqrt(np.clip(np.asarray(r) ** 2 - d * d, 0.0, None))


def main_normals(anat: np.ndarray) -> np.ndarray:
    """Unit in-plane normal of the main centreline per point, +d side (see nearest_on_polyline)."""
    t = np.gradient(anat, axis=0)
    t /= np.hypot(t[:, :1], t[:, 1:])
    return np.column_stack([-t[:, 1], t[:, 0]])


def branch_axis(feat: ParallelVein | Collateral, anat: np.ndarray, s_pts: np.ndarray,
                length: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unshifted axis points (K, 2), the main arc length beside each (K,) and the lumen radius (K,)."""
    normal = main_normals(anat)
    if isinstance(feat, ParallelVein):
        lo = s_pts[0] if feat.start == 0.0 else feat.start * length
        hi = s_pts[-1] if feat.end == 1.0 else feat.end * length
        sel = (s_pts >= lo) & (s_pts <= hi)
        s = s_pts[sel]
        r = np.full(s.shape, feat.diameter_px / 2)
        if feat.start > 0.0:
            r *= smoothstep((s - lo) / feat.taper_px)
        if feat.end < 1.0:
            r *= smoothstep((hi - s) / feat.taper_px)
        return anat[sel] + feat.offset_px * normal[sel], s, r
    lo, hi = feat.start * length, feat.end * length
    sel = (s_pts >= lo) & (s_pts <= hi)
    s = s_pts[sel]
    u = (s - lo) / max(hi - lo, 1e-9)
    r = np.full(s.shape, feat.diameter_px / 2)
    if feat.rejoin:
        disp = feat.bulge_px * np.sin(np.pi * u)
    else:
        disp = feat.bulge_px * np.sin(0.5 * np.pi * u)
        r *= smoothstep((hi - s) / feat.diameter_px)     # blind end
    return anat[sel] + disp[:, None] * normal[sel], s, r


def own_arc(pts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(pts, axis=0).T))])


def device_span(dev: Device, s_pts: np.ndarray, length: float) -> tuple[float, float]:
    return (float(s_pts[0]) if dev.start is None else dev.start * length), dev.end * length


def device_chords(dev: Device, s: np.ndarray, d: np.ndarray, s_lo: float, s_hi: float) -> tuple[np.ndarray,
                                                                                                     np.ndarray]:
    """(wall material path, displaced contrast path) of the device at main-vein coordinates (s, d)."""
    ro = dev.outer_diameter_px / 2
    dd = d - dev.offset_px
    inside = (s >= s_lo) & (s <= s_hi)
    outer = np.where(inside, chord(ro, dd), 0.0)
    inner = np.where(inside, chord(ro - dev.wall_px, dd), 0.0)
    return outer - inner, outer


def check_device_fits(dev: Device, s: np.ndarray, R: np.ndarray, s_lo: float, s_hi: float) -> None:
    inside = (s >= s_lo) & (s <= s_hi)
    if inside.any() and dev.outer_diameter_px / 2 + abs(dev.offset_px) > float(R[inside].min()) + 1e-9:
        raise ValueError(f"device {dev.name!r} does not fit in the lumen (narrowest radius "
                         f"{float(R[inside].min()):.1f} px)")


def device_truth(dev: Device, anat: np.ndarray, s_pts: np.ndarray, length: float,
                 shift: np.ndarray) -> FeatureTruth:
    lo, hi = device_span(dev, s_pts, length)
    sel = (s_pts >= lo) & (s_pts <= hi)
    axis = anat[sel] + dev.offset_px * main_normals(anat)[sel] + shift
    return FeatureTruth(dev.name, "device", axis, s_pts[sel], np.full(int(sel.sum()), dev.outer_diameter_px / 2),
                        lo, hi, wall_px=dev.wall_px, offset_px=dev.offset_px, mu_px=dev.mu_px)


def branch_truth(feat: ParallelVein | Collateral, axis: np.ndarray, s: np.ndarray, r: np.ndarray,
                 shift: np.ndarray) -> FeatureTruth:
    kind = "parallel" if isinstance(feat, ParallelVein) else "collateral"
    off = feat.offset_px if isinstance(feat, ParallelVein) else None
    return FeatureTruth(feat.name, kind, axis + shift, s.copy(), r.copy(), float(s[0]), float(s[-1]),
                        offset_px=off)
