"""Venographic clearance accuracy on the project's phantom (core/sources/phantom/), whose truth knows the
thrombus volume exactly.

Frames go the whole way a recorded run goes: rendered stack -> FrameStack -> peak_opacity -> registration
-> densitometry. Both encodings: 16-bit linear detector data and 8-bit display video (pulses repeated on the
video line, circular collimator, burnt-in text), at the phantom's clinical quantum noise (Poisson, i0 =
3000 quanta), post runs moved by up to 40 px, several seeds, side-wall and partial-depth (anterior-wall)
thrombus. Tolerances are those of the clearance requirement: burden +-3 points, clearance +-5 points with the
centreline and diameter given, +-8 points found automatically, a clean vessel under 2%.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from core.analysis.clearance.measure import measure_clearance
from core.analysis.peak import peak_opacity
from core.sources.phantom.config import PhantomConfig
from core.sources.phantom.geometry import ThrombusSegment
from core.sources.phantom.render import render_run
from core.sources.stacks import FrameStack

# Short runs keep the default test time down; the bolus still crosses the whole field at its peak.
FAST = dict(xray_s=4.5, inject_at_s=0.5, lih_before_s=0.3, lih_after_s=0.2)


def _stack(run, intensity: str) -> FrameStack:
    return FrameStack(run.frames, run.fps, intensity, 12 if intensity == "lin" else 8,
                      np.arange(run.frames.shape[0]) / run.fps, "phantom")


_cache: dict = {}


def _peak(cfg: PhantomConfig):
    if cfg not in _cache:
        run = render_run(cfg)
        _cache[cfg] = (peak_opacity(_stack(run, cfg.intensity)), run.truth)
    return _cache[cfg]


def _analysed(truth):
    """Truth centreline of the analysed range (baseline coordinates) and segment fractions on it."""
    scene = truth.scene
    a0, a1 = scene.analysed_s
    s = scene.centreline_s
    line = scene.centreline_xy[(s >= a0) & (s <= a1)]
    segs = []
    for g in scene.segments:
        lo, hi = max(g.s_start, a0), min(g.s_end, a1)
        if hi > lo:
            segs.append((g.name, (lo - a0) / (a1 - a0), (hi - a0) / (a1 - a0), lo, hi))
    return line, segs


def _pair(intensity, size, diameter, fractions, shift, seed, **extra):
    cfg = PhantomConfig(size=size, intensity=intensity, diameter_px=diameter, thrombus_fraction=fractions[0],
                        seed=seed, **FAST, **extra)
    base, t0 = _peak(cfg)
    post, t1 = _peak(replace(cfg, thrombus_fraction=fractions[1], shift_px=shift, seed=seed + 1000))
    return base, post, t0, t1


CASES = [
    # intensity, size, diameter, (baseline, post) thrombus fraction, post shift, seed
    ("lin", (512, 512), 16.0, (1.0, 0.3), (40.0, -40.0), 1),
    ("log", (512, 512), 16.0, (1.0, 0.0), (-40.0, 25.0), 2),
    ("lin", (512, 512), 12.0, (0.8, 0.4), (0.0, 40.0), 3),
    ("log", (512, 512), 20.0, (1.0, 0.5), (33.0, 33.0), 4),
    ("log", (256, 256), 10.0, (1.0, 0.2), (-20.0, -15.5), 5),
]
COUNTER = ("log", (512, 512), 14.0, (1.0, 0.25), (-12.0, 36.0), 6)   # + a ticking fluoro-time counter


@pytest.mark.parametrize("intensity, size, diameter, fractions, shift, seed", CASES)
def test_burden_and_clearance_with_centreline_given(intensity, size, diameter, fractions, shift, seed):
    base, post, t0, t1 = _pair(intensity, size, diameter, fractions, shift, seed)
    line, segs = _analysed(t0)
    res = measure_clearance(base, post, centerline=line, diameter_px=diameter,
                            segments=[(n, a, b) for n, a, b, _, _ in segs])
    a0, a1 = t0.scene.analysed_s
    b0, b1 = t0.scene.burden_between(a0, a1), t1.scene.burden_between(a0, a1)
    assert res["burden_baseline_pct"] == pytest.approx(100 * b0, abs=3.0)
    assert res["burden_post_pct"] == pytest.approx(100 * b1, abs=3.0)
    assert res["clearance_pct"] == pytest.approx(100 * (b0 - b1) / b0, abs=5.0)
    assert res["shift_px"] == pytest.approx(list(shift), abs=1.5)
    # Per named segment (the side-wall femoral one and the partial-depth iliac one): same tolerance.
    for (name, _, _, lo, hi), seg in zip(segs, res["segments"]):
        assert seg["name"] == name
        assert seg["burden_baseline_pct"] == pytest.approx(100 * t0.scene.burden_between(lo, hi), abs=3.0), name
        assert seg["burden_post_pct"] == pytest.approx(100 * t1.scene.burden_between(lo, hi), abs=3.0), name


@pytest.mark.parametrize("intensity, seed", [("lin", 11), ("log", 12)])
def test_clean_vessel_measures_under_2_percent(intensity, seed):
    base, post, t0, _ = _pair(intensity, (512, 512), 16.0, (0.0, 0.0), (25.0, -30.0), seed)
    line, _ = _analysed(t0)
    res = measure_clearance(base, post, centerline=line, diameter_px=16.0)
    assert res["burden_baseline_pct"] < 2.0 and res["burden_post_pct"] < 2.0
    assert res["clearance_pct"] is None and res["grade"] is None


@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[3]])
def test_clearance_with_automatic_vessel(case):
    intensity, size, diameter, fractions, shift, seed = case
    base, post, t0, t1 = _pair(intensity, size, diameter, fractions, shift, seed)
    res = measure_clearance(base, post)
    a0, a1 = t0.scene.analysed_s
    b0, b1 = t0.scene.burden_between(a0, a1), t1.scene.burden_between(a0, a1)
    assert res["clearance_pct"] == pytest.approx(100 * (b0 - b1) / b0, abs=8.0)
    assert res["diameter_px"] == pytest.approx(diameter, rel=0.15)


@pytest.mark.parametrize("auto", [False, True])
def test_display_video_with_a_ticking_counter(auto):
    intensity, size, diameter, fractions, shift, seed = COUNTER
    base, post, t0, t1 = _pair(intensity, size, diameter, fractions, shift, seed, counter=True)
    line, _ = _analysed(t0)
    res = measure_clearance(base, post, centerline=None if auto else line, diameter_px=None if auto else diameter)
    a0, a1 = t0.scene.analysed_s
    b0, b1 = t0.scene.burden_between(a0, a1), t1.scene.burden_between(a0, a1)
    assert res["clearance_pct"] == pytest.approx(100 * (b0 - b1) / b0, abs=8.0 if auto else 5.0)
    assert res["shift_px"] == pytest.approx(list(shift), abs=1.5)


@pytest.mark.parametrize("auto", [False, True])
def test_total_occlusion(auto):
    """A stretch no contrast gets through: the automatic vessel must bridge it, not stop at it."""
    occlusion = (ThrombusSegment(0.45, 0.55, 1.0, angle_deg=0.0, taper_px=10.0, name="occlusion"),)
    base, post, t0, t1 = _pair("lin", (512, 512), 16.0, (1.0, 0.3), (10.0, -20.0), 7, segments=occlusion)
    line, _ = _analysed(t0)
    res = measure_clearance(base, post, centerline=None if auto else line, diameter_px=None if auto else 16.0)
    a0, a1 = t0.scene.analysed_s
    b0, b1 = t0.scene.burden_between(a0, a1), t1.scene.burden_between(a0, a1)
    assert res["clearance_pct"] == pytest.approx(100 * (b0 - b1) / b0, abs=8.0 if auto else 5.0)
    if not auto:
        assert res["burden_baseline_pct"] == pytest.approx(100 * b0, abs=3.0)
    assert max(st["burden_baseline_pct"] or 0 for st in res["stations"]) > 90


def test_same_run_twice_is_zero_clearance_and_zero_shift():
    base, _, t0, _ = _pair("log", (256, 256), 10.0, (1.0, 1.0), (0.0, 0.0), 5)
    res = measure_clearance(base, base)
    assert res["shift_px"] == [0.0, 0.0] and res["clearance_pct"] == 0.0
