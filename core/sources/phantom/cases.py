"""Named, seeded venogram scenarios for clearance: a baseline run, later run(s), and their analytic truth.

Every condition docs/domain.md names for venographic clearance has a case: tapering and stepped veins, focal
(side or front) and diffuse wall-adherent thrombus, a paired vein, a collateral, a device in the lumen (on one run,
or left in place in both), table moves and contrast strength differing between runs. The seed varies the
anatomy (path curvature and position, lumen widths, thrombus place, wall side) and the noise; the truth is
computed from the same geometry the frames are rendered from (vessel_model), before anything is rendered.

Truth conventions: arc lengths s are anatomical (px along the main centreline from the scripted inflow end,
the same in every run whatever the shift); ``analysed_s`` is the part of the vein inside the field in every
run; fractions are of that range, which is what the clearance tools take as ``segments``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from core.sources.phantom.config import DEFAULT_VESSEL, MAX_TABLE_SHIFT_PX, PhantomConfig
from core.sources.phantom.features import Collateral, Device, ParallelVein
from core.sources.phantom.geometry import ThrombusSegment
from core.sources.phantom.scene import analysed_range, vessel_model
from core.sources.phantom.truth import burden_between

GRADE_THRESHOLDS = (50.0, 95.0)
# Short runs, as the clearance tests use: the bolus still crosses the whole field at its peak.
FAST = dict(xray_s=4.5, inject_at_s=0.5, lih_before_s=0.3, lih_after_s=0.2)
SEGMENT_NAMES = ("distal", "mid", "proximal")   # thirds of the analysed range, inflow (bottom) first


@dataclass(frozen=True)
class SegmentCaseTruth:
    name: str
    s_start: float                        # anatomical arc length (px)
    s_end: float
    start_frac: float                     # the same as fractions of the analysed range
    end_frac: float
    burden_pct: tuple[float, ...]         # per run, baseline first
    clearance_pct: tuple[float | None, ...]   # per later run
    grade: tuple[str | None, ...]


@dataclass(frozen=True)
class CaseTruth:
    analysed_s: tuple[float, float]       # arc-length range inside the field in every run
    burden_pct: tuple[float, ...]         # thrombus volume / reference volume over analysed_s, baseline first
    clearance_pct: tuple[float | None, ...]   # per later run: (b0 - b) / b0 * 100; None when b0 < 1%
    grade: tuple[str | None, ...]         # per later run under GRADE_THRESHOLDS; None: no clearance or progression
    segments: tuple[SegmentCaseTruth, ...]
    shift_px: tuple[tuple[float, float], ...]   # per later run: its total scene shift minus the baseline's
    contrast_ratio: tuple[float, ...]     # per later run: its contrast_scale / the baseline's


@dataclass(frozen=True)
class Case:
    name: str
    seed: int
    baseline: PhantomConfig
    posts: tuple[PhantomConfig, ...]
    truth: CaseTruth
    about: str                            # the condition the case stands for

    @property
    def configs(self) -> tuple[PhantomConfig, ...]:
        return (self.baseline,) + self.posts


def grade(clearance_pct: float | None, thresholds: tuple[float, float] = GRADE_THRESHOLDS) -> str | None:
    """SIR lysis grade of a clearance, taken from the value as displayed (one decimal): I below the first
    threshold, II up to and including the second, III above; None without a clearance or below -5 %."""
    if clearance_pct is None:
        return None
    v = round(clearance_pct, 1)
    if v < -5.0:
        return None
    return "I" if v < thresholds[0] else ("II" if v <= thresholds[1] else "III")


def run_burden(cfg: PhantomConfig, s0: float, s1: float) -> float:
    """Analytic burden (fraction) of one run's configuration over [s0, s1]."""
    _, _, _, xs = vessel_model(cfg, cfg.thrombus_fraction)
    return burden_between(xs, s0, s1)


def case_truth(baseline: PhantomConfig, posts: tuple[PhantomConfig, ...],
               thresholds: tuple[float, float] = GRADE_THRESHOLDS) -> CaseTruth:
    runs = (baseline,) + tuple(posts)
    lo, hi = -np.inf, np.inf
    for cfg in runs:
        anat, s_pts, _, _ = vessel_model(cfg, 0.0)
        a, b = analysed_range(cfg, anat, s_pts)
        lo, hi = max(lo, a), min(hi, b)
    if not hi > lo:
        raise ValueError("the runs share no analysed part of the vein")

    def clear(b0, b):
        return None if b0 < 0.01 else round(100.0 * (b0 - b) / b0, 6)

    burdens = [run_burden(cfg, lo, hi) for cfg in runs]
    clears = tuple(clear(burdens[0], b) for b in burdens[1:])
    segs = []
    for k, name in enumerate(SEGMENT_NAMES):
        f0, f1 = k / len(SEGMENT_NAMES), (k + 1) / len(SEGMENT_NAMES)
        s0, s1 = lo + f0 * (hi - lo), lo + f1 * (hi - lo)
        bs = [run_burden(cfg, s0, s1) for cfg in runs]
        cs = tuple(clear(bs[0], b) for b in bs[1:])
        segs.append(SegmentCaseTruth(name, s0, s1, f0, f1, tuple(100 * b for b in bs), cs,
                                     tuple(grade(c, thresholds) for c in cs)))

    def total(cfg):
        return (cfg.shift_px[0] + cfg.table_shift_px[0], cfg.shift_px[1] + cfg.table_shift_px[1])

    t0 = total(baseline)
    return CaseTruth((lo, hi), tuple(100 * b for b in burdens), clears, tuple(grade(c, thresholds) for c in clears),
                     tuple(segs), tuple((round(total(p)[0] - t0[0], 6), round(total(p)[1] - t0[1], 6)) for p in posts),
                     tuple(p.contrast_scale / baseline.contrast_scale for p in posts))


# ------------------------------------------------------------------------------------------ building blocks

def _anatomy(rng: np.random.Generator, **kw) -> PhantomConfig:
    """A seeded iliofemoral vein: path curvature and position, a mild taper, bone background."""
    dx = rng.uniform(-0.04, 0.04)
    pts = tuple((x + dx + (rng.uniform(-0.035, 0.035) if 0 < i < len(DEFAULT_VESSEL) - 1 else 0.0), y)
                for i, (x, y) in enumerate(DEFAULT_VESSEL))
    d0 = rng.uniform(14.0, 18.0)
    base = dict(vessel_points=pts, diameter_px=d0, diameter_profile=((0.0, d0), (1.0, d0 + rng.uniform(0.0, 8.0))),
                segments=(), background="anatomy", table_travel_px=MAX_TABLE_SHIFT_PX, **FAST)
    base.update(kw)
    return PhantomConfig(**base)


def _range(cfg: PhantomConfig) -> tuple[float, float, float]:
    """(analysed s0, s1, scripted length) of a configuration."""
    anat, s_pts, length, _ = vessel_model(cfg, 0.0)
    s0, s1 = analysed_range(cfg, anat, s_pts)
    return s0, s1, length


def _focal(rng, cfg, burden_target: float, plateau: float = 0.6, name: str = "thrombus",
           lo: float = 0.2, hi: float = 0.8) -> PhantomConfig:
    """Add one focal thrombus (side or front wall, by the seed) inside [lo, hi] of the analysed range of
    cfg whose burden over that range is ``burden_target``: the span is sized so that the
    plateau is ``plateau``."""
    s0, s1, length = _range(cfg)
    angle = float(rng.choice([0.0, 180.0, 90.0, 270.0])) + rng.uniform(-15.0, 15.0)
    span = 0.3 * (s1 - s0)
    m = min(0.15, (hi - lo) / 4)
    centre = rng.uniform(s0 + (lo + m) * (s1 - s0), s0 + (hi - m) * (s1 - s0))
    for _ in range(6):     # the burden grows with the span: a few secant-free rescalings converge
        a, b = max(centre - span / 2, s0 + lo * (s1 - s0)), min(centre + span / 2, s0 + hi * (s1 - s0))
        seg = ThrombusSegment(a / length, b / length, plateau, angle_deg=angle, taper_px=12.0, name=name)
        trial = replace(cfg, segments=cfg.segments + (seg,), thrombus_fraction=1.0)
        got = run_burden(trial, s0, s1)
        span = min(span * burden_target / max(got, 1e-6), (hi - lo) * (s1 - s0))
    seg = ThrombusSegment(a / length, b / length, min(plateau * burden_target / got, 1.0), angle_deg=angle,
                          taper_px=12.0, name=name)
    return replace(cfg, segments=cfg.segments + (seg,))


def _layer(cfg: PhantomConfig, burden: float, name: str = "wall") -> PhantomConfig:
    return replace(cfg, segments=cfg.segments + (ThrombusSegment(0.0, 1.0, burden, taper_px=0.0, name=name,
                                                                 kind="layer"),))


def _post(rng, cfg: PhantomConfig, seed: int, fraction: float | None = None, move: float = 25.0,
          **kw) -> PhantomConfig:
    """A later run: other noise, the patient moved a little (up to ``move`` px), the thrombus left at ``fraction``."""
    shift = (round(float(rng.uniform(-move, move)), 1), round(float(rng.uniform(-move, move)), 1))
    out = replace(cfg, seed=seed + 1000, shift_px=shift, **kw)
    return out if fraction is None else replace(out, thrombus_fraction=fraction)


# ------------------------------------------------------------------------------------------ the cases

def _taper_clean(rng, seed):
    d0, d1 = rng.uniform(13.0, 15.0), rng.uniform(28.0, 31.0)
    base = _anatomy(rng, seed=seed, diameter_px=d0, diameter_profile=((0.0, d0), (1.0, d1)))
    return base, (_post(rng, base, seed),), "clean vein tapering ~14 -> ~30 px (femoral into iliac): burden 0"


def _step_clean(rng, seed):
    d0, d1 = rng.uniform(18.5, 21.5), rng.uniform(28.5, 31.5)
    probe = _anatomy(rng, seed=seed)
    s0, s1, length = _range(probe)
    at = rng.uniform(s0 + 0.35 * (s1 - s0), s0 + 0.65 * (s1 - s0)) / length
    half = 3.0 / length       # the confluence widens over ~6 px
    base = replace(probe, diameter_px=d0, diameter_profile=((0.0, d0), (at - half, d0), (at + half, d1), (1.0, d1)))
    return base, (_post(rng, base, seed),), "clean vein with a step ~20 -> ~30 px at a confluence: burden 0"


def _taper_focal15(rng, seed):
    d0, d1 = rng.uniform(13.0, 15.0), rng.uniform(28.0, 31.0)
    base = _focal(rng, _anatomy(rng, seed=seed, diameter_px=d0, diameter_profile=((0.0, d0), (1.0, d1))), 0.15)
    return base, (_post(rng, base, seed, 0.3),), "tapering vein, one focal (side or front) thrombus of 15% burden"


def _focal75_vs_residue(rng, seed):
    clean = _anatomy(rng, seed=seed)
    base = _focal(rng, clean, 0.22, plateau=0.75, lo=0.1, hi=0.9)
    post = _layer(_post(rng, clean, seed), 0.15, name="residue")
    return base, (post,), ("focal 75% thrombus (~22% burden) against thin wall-adherent residue along the whole "
                           "vein (15%): clearance ~33%, grade I")


def _diffuse40_vs_clean(rng, seed):
    clean = _anatomy(rng, seed=seed)
    return _layer(clean, 0.40), (_post(rng, clean, seed),), "thrombus lining the whole vein (40%), clean post run"


def _focal_parallel(rng, seed):
    side = float(rng.choice([-1.0, 1.0]))
    par = ParallelVein(offset_px=side * rng.uniform(26.0, 34.0), diameter_px=rng.uniform(10.0, 14.0))
    base = _focal(rng, _anatomy(rng, seed=seed, parallel=par), 0.15)
    return base, (_post(rng, base, seed, 0.3),), "focal thrombus beside a clean parallel (paired) vein"


def _table(move: float):
    def build(rng, seed):
        ang = rng.uniform(-0.35, 0.35)          # mostly along the body axis, as a table moves
        sign = float(rng.choice([-1.0, 1.0]))
        table = (round(float(move * np.sin(ang)), 1), round(float(sign * move * np.cos(ang)), 1))
        clean = _anatomy(rng, seed=seed)
        moved = replace(clean, table_shift_px=table)
        # the thrombus must lie where both runs see the vein
        s0a, s1a, length = _range(clean)
        s0b, s1b, _ = _range(moved)
        lo, hi = max(s0a, s0b), min(s1a, s1b)
        base = _focal(rng, clean, 0.15 * (hi - lo) / (s1a - s0a),
                      lo=(lo - s0a) / (s1a - s0a), hi=(hi - s0a) / (s1a - s0a))
        post = _post(rng, replace(base, table_shift_px=table), seed, 0.3, move=3.0)
        return base, (post,), f"table moved {move:.0f} px between runs (focal thrombus, partly cleared)"
    return build


def _contrast40(rng, seed):
    c0 = rng.uniform(0.8, 1.0)
    c1 = c0 * 1.4 if rng.random() < 0.5 else c0 / 1.4
    base = _focal(rng, _anatomy(rng, seed=seed, contrast_scale=c0), 0.15)
    return base, (_post(rng, base, seed, 0.3, contrast_scale=c1),), "contrast strength differing by 40% between runs"


def _catheter(rng, seed):
    base = _focal(rng, _anatomy(rng, seed=seed), 0.15, lo=0.5, hi=0.95)
    s0, s1, length = _range(base)
    tip = rng.uniform(s0 + 0.25 * (s1 - s0), s0 + 0.45 * (s1 - s0)) / length
    dev = Device(end=tip, outer_diameter_px=rng.uniform(4.5, 6.5), wall_px=1.0, offset_px=rng.uniform(-1.5, 1.5))
    return base, (_post(rng, base, seed, 0.3, device=dev),), "a catheter / sheath in the lumen on the post run"


def _sheath_both(rng, seed):
    """A sheath left in place: the same device, at the same anatomical place, in both runs (their masks'
    difference cancels it)."""
    base = _focal(rng, _anatomy(rng, seed=seed), 0.15, lo=0.5, hi=0.95)
    s0, s1, length = _range(base)
    tip = rng.uniform(s0 + 0.25 * (s1 - s0), s0 + 0.45 * (s1 - s0)) / length
    dev = Device(end=tip, outer_diameter_px=rng.uniform(4.5, 7.0), wall_px=1.0, offset_px=rng.uniform(-1.5, 1.5),
                 name="sheath")
    base = replace(base, device=dev)
    return base, (_post(rng, base, seed, 0.3),), "a sheath in the lumen in both runs (static: left in place)"


def _collateral(rng, seed):
    clean = _anatomy(rng, seed=seed)
    s0, s1, length = _range(clean)
    a = rng.uniform(s0 + 0.15 * (s1 - s0), s0 + 0.3 * (s1 - s0))
    b = a + rng.uniform(0.35, 0.5) * (s1 - s0)
    col = Collateral(a / length, b / length, bulge_px=float(rng.choice([-1.0, 1.0])) * rng.uniform(35.0, 50.0),
                     diameter_px=rng.uniform(6.0, 9.0))
    base = _focal(rng, replace(clean, collateral=col), 0.15, plateau=0.7,
                  lo=(a - s0) / (s1 - s0) + 0.05, hi=(b - s0) / (s1 - s0) - 0.05)
    return base, (_post(rng, base, seed, 0.3),), "a collateral bypassing a focal thrombus (leaves and rejoins)"


BUILDERS = {
    "taper_clean": _taper_clean,
    "step_clean": _step_clean,
    "taper_focal15": _taper_focal15,
    "focal75_vs_residue": _focal75_vs_residue,
    "diffuse40_vs_clean": _diffuse40_vs_clean,
    "focal_parallel": _focal_parallel,
    "table70": _table(70.0),
    "table120": _table(120.0),
    "contrast40": _contrast40,
    "catheter": _catheter,
    "collateral": _collateral,
    "sheath_both": _sheath_both,        # appended: the other cases' seeds stay as they were
}
CASE_NAMES = tuple(BUILDERS)


def make_case(name: str, seed: int = 0, thresholds: tuple[float, float] = GRADE_THRESHOLDS, **overrides) -> Case:
    """Scenario ``name`` (one of CASE_NAMES) for ``seed``; ``overrides`` (e.g. intensity="log", noise="none",
    size=(1024, 1024)) apply to every run of it."""
    if name not in BUILDERS:
        raise ValueError(f"unknown case {name!r}; known: {', '.join(CASE_NAMES)}")
    rng = np.random.default_rng([seed, CASE_NAMES.index(name)])
    base, posts, about = BUILDERS[name](rng, seed)
    base, posts = replace(base, **overrides), tuple(replace(p, **overrides) for p in posts)
    return Case(name, seed, base, tuple(posts), case_truth(base, tuple(posts), thresholds), about)
