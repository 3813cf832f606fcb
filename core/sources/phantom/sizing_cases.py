"""Seeded venograms for vessel sizing: a tapering vein with a concentric narrowing of known geometry, and truth;
and a vein flattened over a few diameters and seen edge-on (make_edge_on_case: wider and fainter there).

The narrowing is a cosine dip of the lumen diameter, ``d(s) = ref(s) * (1 - p * (1 + cos(pi (s - c) / h)) / 2)``
for |s - c| < h, on a vein tapering linearly along its arc; the truth follows from that formula alone
(reference at the lesion, MLD, % stenosis, the length below 80% of the reference), before anything is rendered.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from core.sources.phantom.cases import FAST
from core.sources.phantom.config import DEFAULT_VESSEL, PhantomConfig
from core.sources.phantom.features import Device
from core.sources.phantom.scene import analysed_range, vessel_model

DIP_POINTS = 41          # diameter_profile points across the dip (linear between them: <0.1% off the cosine)


@dataclass(frozen=True)
class SizingTruth:
    reference_px: float          # reference diameter at the lesion
    mld_px: float
    diameter_stenosis_pct: float
    lesion_length_px: float      # contiguous length below 80% of the reference (0 when none)
    lesion_xy: tuple[float, float]
    lesion_s: float              # anatomical arc length of the lesion (px)
    centreline_xy: np.ndarray    # (N, 2) frame coordinates over the analysed range, inflow (bottom) end first
    catheter_px: float | None    # outer diameter of the catheter, when the case has one
    catheter_xy: np.ndarray | None   # two points along it (frame coordinates)


@dataclass(frozen=True)
class SizingCase:
    config: PhantomConfig
    truth: SizingTruth


def lesion_length(stenosis: float, half_px: float) -> float:
    """Length of a cosine dip of depth ``stenosis`` (fraction) and half length ``half_px`` below 80% of its
    reference: 1 - p (1 + cos u) / 2 < 0.8  <=>  cos u > 0.4 / p - 1."""
    if stenosis <= 0.2:
        return 0.0
    return 2.0 * half_px * math.acos(0.4 / stenosis - 1.0) / math.pi


def _anatomy(rng: np.random.Generator, **kw) -> PhantomConfig:
    """A seeded iliofemoral vein (path curvature and position) on a bony background."""
    dx = rng.uniform(-0.04, 0.04)
    pts = tuple((x + dx + (rng.uniform(-0.035, 0.035) if 0 < i < len(DEFAULT_VESSEL) - 1 else 0.0), y)
                for i, (x, y) in enumerate(DEFAULT_VESSEL))
    return PhantomConfig(vessel_points=pts, segments=(), background="anatomy", **kw)


def analysed_span(cfg: PhantomConfig) -> tuple[float, float, float]:
    """(analysed s0, s1, scripted length) of a configuration."""
    anat, s_pts, length, _ = vessel_model(cfg, 0.0)
    s0, s1 = analysed_range(cfg, anat, s_pts)
    return s0, s1, length


def make_sizing_case(seed: int = 0, stenosis_pct: float = 50.0, intensity: str = "lin",
                     catheter: bool = False, length_diameters: float | None = None,
                     at: float | None = None, **overrides) -> SizingCase:
    """A tapering vein (seeded widths, path, place of the narrowing) with a ``stenosis_pct`` concentric
    narrowing (0: none) ``length_diameters`` reference diameters long end to end (None: 2 to 3.5, seeded), in
    the middle part of the field (or at fraction ``at`` of the analysed range)."""
    rng = np.random.default_rng(10_000 + seed)
    d0, d1 = rng.uniform(12.0, 15.0), rng.uniform(20.0, 26.0)
    kw = dict(seed=seed, intensity=intensity, diameter_px=d0, diameter_profile=((0.0, d0), (1.0, d1)))
    kw.update(FAST)
    kw.update(overrides)
    cfg = _anatomy(rng, **kw)
    s0, s1, length = analysed_span(cfg)
    p = stenosis_pct / 100.0
    centre = rng.uniform(s0 + 0.4 * (s1 - s0), s0 + 0.65 * (s1 - s0))
    if at is not None:
        centre = s0 + float(at) * (s1 - s0)
    ref_at = lambda s: d0 + (d1 - d0) * np.clip(s / length, 0.0, 1.0)   # noqa: E731
    span = rng.uniform(2.0, 3.5) if length_diameters is None else float(length_diameters)
    half = span * float(ref_at(centre)) / 2.0
    if p > 0:
        ss = centre + np.linspace(-half, half, DIP_POINTS)
        dd = ref_at(ss) * (1.0 - p * (1.0 + np.cos(np.pi * (ss - centre) / half)) / 2.0)
        prof = ((0.0, d0),) + tuple((float(s / length), float(d)) for s, d in zip(ss, dd)) + ((1.0, d1),)
        cfg = replace(cfg, diameter_profile=prof)
    cath_px, cath_xy = None, None
    if catheter:
        # Along the bottom part of the vein, well below the narrowing.
        end = (s0 + 0.3 * (s1 - s0)) / length
        cath_px = 6.0
        cfg = replace(cfg, device=Device(end=end, outer_diameter_px=cath_px, wall_px=1.2))
    anat, s_pts, _, _ = vessel_model(cfg, 0.0)
    shift = np.asarray(cfg.shift_px) + np.asarray(cfg.table_shift_px)
    xy = anat + shift
    inside = (s_pts >= s0) & (s_pts <= s1)
    k = int(np.argmin(np.abs(s_pts - centre)))
    ref = float(ref_at(centre))
    if catheter:
        a, b = (int(np.argmin(np.abs(s_pts - (s0 + f * (s1 - s0))))) for f in (0.05, 0.22))
        cath_xy = xy[[a, b]]
    truth = SizingTruth(ref, ref * (1.0 - p), 100.0 * p, lesion_length(p, half),
                        (float(xy[k, 0]), float(xy[k, 1])), float(centre), xy[inside], cath_px, cath_xy)
    return SizingCase(cfg, truth)


@dataclass(frozen=True)
class EdgeOnCase:
    config: PhantomConfig
    xy: tuple[float, float]      # the middle of the flattened stretch (frame coordinates)
    centreline_xy: np.ndarray    # (N, 2) over the analysed range, inflow end first
    half_px: float               # half length of the flattened stretch (px of arc)


def make_edge_on_case(seed: int = 0, intensity: str = "lin", widening_pct: float = 35.0,
                      depth_ratio: float = 0.45, length_diameters: float = 3.0) -> EdgeOnCase:
    """A tapering vein compressed flat over ``length_diameters`` and seen edge-on: its projected width grows
    by up to ``widening_pct`` while its depth falls to ``depth_ratio`` of that width (a cosine bump in both),
    so it reads wider and fainter; its cross-section is ``(1 + w) * depth_ratio`` of the round vein's."""
    base = make_sizing_case(seed, 0.0, intensity)
    cfg = base.config
    rng = np.random.default_rng(20_000 + seed)
    s0, s1, length = analysed_span(cfg)
    (_, d0), (_, d1) = cfg.diameter_profile[0], cfg.diameter_profile[-1]
    centre = rng.uniform(s0 + 0.4 * (s1 - s0), s0 + 0.6 * (s1 - s0))
    ref_at = lambda s: d0 + (d1 - d0) * np.clip(s / length, 0.0, 1.0)   # noqa: E731
    half = length_diameters * float(ref_at(centre)) / 2.0
    ss = centre + np.linspace(-half, half, DIP_POINTS)
    bump = (1.0 + np.cos(np.pi * (ss - centre) / half)) / 2.0
    width = ref_at(ss) * (1.0 + widening_pct / 100.0 * bump)
    depth = 1.0 - (1.0 - depth_ratio) * bump
    cfg = replace(cfg, diameter_profile=((0.0, d0),) + tuple((float(s / length), float(d)) for s, d in zip(ss, width))
                  + ((1.0, d1),), depth_profile=tuple((float(s / length), float(r)) for s, r in zip(ss, depth)))
    anat, s_pts, _, _ = vessel_model(cfg, 0.0)
    xy = anat + np.asarray(cfg.shift_px) + np.asarray(cfg.table_shift_px)
    k = int(np.argmin(np.abs(s_pts - centre)))
    inside = (s_pts >= s0) & (s_pts <= s1)
    return EdgeOnCase(cfg, (float(xy[k, 0]), float(xy[k, 1])), xy[inside], half)
