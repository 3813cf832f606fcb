"""Clearance speed: two 60-frame 1024x1024 runs analysed (peak opacity of both, registration, densitometry)
in under 1 s on one core.

Run with ``.venv/bin/python -m pytest benchmarks/bench_clearance.py --benchmark-only``. The runs are the
project's phantom (16-bit linear and 8-bit display video), rendered once per session; the post run is moved
by (30, -20) px with less thrombus. Each benchmark also checks its answer, so a fast wrong result fails.
The target is asserted on the fastest round, on one core: the module limits NumPy's BLAS to one thread
(threadpoolctl) and pins the process to one CPU, and the timer is the process's CPU time (time.process_time,
all its threads), i.e. the cost on one core; the machine is shared, so wall clock there mostly measures
preemption. A threaded BLAS fighting other processes for the 2 cores took the automatic case from 0.2 to
0.6 s of wall clock.
"""
from __future__ import annotations

import os
import time
from dataclasses import replace

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from core.analysis.clearance.measure import measure_clearance
from core.analysis.peak import peak_and_mask, peak_opacity
from core.analysis.registration import register
from core.sources.phantom.config import PhantomConfig
from core.sources.phantom.render import render_run
from core.sources.stacks import FrameStack

pytestmark = pytest.mark.benchmark(timer=time.process_time)

TARGET_S = 1.0
REGISTRATION_TARGET_S = 0.3   # registration's share of the 1 s
SIZE = (1024, 1024)
DIAMETER = 24.0


def _runs(intensity: str):
    # 60 video frames: 6 of last-image-hold, then 54 at 15 pulses/s on a 30 fps line (27 distinct pulses).
    cfg = PhantomConfig(size=SIZE, intensity=intensity, noise="gaussian", seed=1, lih_before_s=0.2, xray_s=1.8,
                        lih_after_s=0.0, inject_at_s=0.0, transit_delay_s=0.0, bolus_speed_px_s=2000.0,
                        diameter_px=DIAMETER)
    runs = [render_run(cfg), render_run(replace(cfg, seed=2, thrombus_fraction=0.3, shift_px=(30.0, -20.0)))]
    stacks = [FrameStack(r.frames, r.fps, intensity, 12 if intensity == "lin" else 8,
                         np.arange(r.frames.shape[0]) / r.fps, "phantom") for r in runs]
    assert all(s.frames.shape == (60,) + SIZE for s in stacks)
    t0 = runs[0].truth
    a0, a1 = t0.scene.analysed_s
    s = t0.scene.centreline_s
    line = t0.scene.centreline_xy[(s >= a0) & (s <= a1)]
    truth = (t0.scene.burden_between(a0, a1), runs[1].truth.scene.burden_between(a0, a1))
    return stacks, line, truth


@pytest.fixture(scope="module", autouse=True)
def one_core():
    """One BLAS thread, and every thread of the process on one CPU, for this module's benchmarks."""
    with threadpool_limits(limits=1):
        if not hasattr(os, "sched_setaffinity"):
            yield
            return
        allowed = os.sched_getaffinity(0)
        tasks = [int(t) for t in os.listdir("/proc/self/task")]

        def pin(cpus):
            for tid in tasks:
                try:
                    os.sched_setaffinity(tid, cpus)
                except OSError:        # a thread that ended meanwhile
                    pass
        pin({max(allowed)})
        yield
        pin(allowed)


@pytest.fixture(scope="module", params=["lin", "log"])
def pair(request):
    return _runs(request.param)


def _check(res, truth, tol):
    b0, b1 = truth
    assert res["clearance_pct"] == pytest.approx(100 * (b0 - b1) / b0, abs=tol)
    assert res["shift_px"] == pytest.approx([30.0, -20.0], abs=1.5)


def test_two_runs_with_centreline(benchmark, pair):
    stacks, line, truth = pair

    def analyse():
        peaks = [peak_opacity(s) for s in stacks]
        return measure_clearance(peaks[0], peaks[1], centerline=line, diameter_px=DIAMETER)

    res = benchmark.pedantic(analyse, rounds=5, iterations=1, warmup_rounds=1)
    _check(res, truth, 5.0)
    benchmark.extra_info["target_s"] = TARGET_S
    assert benchmark.stats.stats.min < TARGET_S


def test_two_runs_automatic_vessel(benchmark, pair):
    stacks, _, truth = pair

    def analyse():
        peaks = [peak_opacity(s) for s in stacks]
        return measure_clearance(peaks[0], peaks[1])

    res = benchmark.pedantic(analyse, rounds=5, iterations=1, warmup_rounds=1)
    _check(res, truth, 8.0)
    benchmark.extra_info["target_s"] = TARGET_S
    assert benchmark.stats.stats.min < TARGET_S


def test_peak_opacity_one_run(benchmark, pair):
    stacks, _, _ = pair
    peak = benchmark.pedantic(peak_opacity, args=(stacks[0],), rounds=5, iterations=1, warmup_rounds=1)
    assert peak.shape == SIZE and np.isfinite(peak).mean() > 0.5


def test_registration_1024(benchmark, pair):
    stacks, _, _ = pair
    a, b = (peak_opacity(s) for s in stacks)
    reg = benchmark.pedantic(register, args=(a, b), rounds=5, iterations=1, warmup_rounds=1)
    assert (reg.dx, reg.dy) == pytest.approx((30.0, -20.0), abs=1.5)
    benchmark.extra_info["target_s"] = REGISTRATION_TARGET_S
    assert benchmark.stats.stats.min < REGISTRATION_TARGET_S


def test_registration_masks_1024(benchmark, pair):
    """With the runs' masks and the +-160 px search: the phantom's smooth anatomy does not localise the shift,
    so this is the dearest path (anatomy tried at every level, then the vessel)."""
    stacks, _, _ = pair
    (a, ma), (b, mb) = (peak_and_mask(s) for s in stacks)
    reg = benchmark.pedantic(register, args=(a, b), kwargs=dict(fixed_mask=ma, moving_mask=mb, max_shift=160.0),
                             rounds=5, iterations=1, warmup_rounds=1)
    assert (reg.dx, reg.dy) == pytest.approx((30.0, -20.0), abs=1.5)
    benchmark.extra_info["target_s"] = REGISTRATION_TARGET_S
    assert benchmark.stats.stats.min < REGISTRATION_TARGET_S


@pytest.fixture(scope="module")
def anatomy_pair():
    from tests.test_registration import anatomy_mask, vessel_peak

    shift = (150.5, -120.25)
    base = vessel_peak(thrombi=[(0.3, 0.5, 0.6, "side")], seed=1, size=1024), anatomy_mask(seed=3, size=1024)
    post = (vessel_peak(shift, thrombi=[(0.35, 0.4, 0.15, "side")], k=0.03, seed=2, size=1024),
            anatomy_mask(shift, seed=3, size=1024, gain=0.85, offset=-0.3, tilt=0.15, noise_seed=7))
    return base, post, shift


def test_registration_anatomy_1024(benchmark, anatomy_pair):
    """Bone and soft-tissue masks, a 150 px table move, the +-160 px search."""
    (a, ma), (b, mb), shift = anatomy_pair
    reg = benchmark.pedantic(register, args=(a, b), kwargs=dict(fixed_mask=ma, moving_mask=mb, max_shift=160.0),
                             rounds=5, iterations=1, warmup_rounds=1)
    assert reg.basis == "anatomy"
    assert (reg.dx, reg.dy) == pytest.approx(shift, abs=0.5)
    benchmark.extra_info["target_s"] = REGISTRATION_TARGET_S
    assert benchmark.stats.stats.min < REGISTRATION_TARGET_S


def test_densitometry_only_1024(benchmark, pair):
    stacks, line, truth = pair
    a, b = (peak_opacity(s) for s in stacks)
    res = benchmark.pedantic(measure_clearance, args=(a, b), kwargs=dict(centerline=line, diameter_px=DIAMETER),
                             rounds=5, iterations=1, warmup_rounds=1)
    _check(res, truth, 5.0)


def test_longest_operator_centreline_1024(benchmark, pair):
    """The worst centreline ``PUT /api/centerline`` accepts: 256 points zigzagging across the vessel
    to the length limit, 2 x (w + h). It holds the analysis worker for this long at most (a 4,096-point scribble
    took 10-50 s before the limit)."""
    from core.analysis.clearance.measure import (MAX_CENTERLINE_LENGTH_FACTOR, MAX_CENTERLINE_POINTS,
                                                 check_operator_centerline)

    stacks, _, _ = pair
    a, b = (peak_opacity(s) for s in stacks)
    reg = register(a, b)      # the tracker keeps each pair's registration: only the centreline's cost counts
    h, w = SIZE
    n = MAX_CENTERLINE_POINTS
    step = 0.99 * MAX_CENTERLINE_LENGTH_FACTOR * (w + h) / (n - 1)
    across = np.sqrt(max(step ** 2 - ((0.9 * h) / (n - 1)) ** 2, 0.0))
    xs = np.where(np.arange(n) % 2 == 0, w / 2 - across / 2, w / 2 + across / 2)
    line = check_operator_centerline(np.column_stack([xs, np.linspace(0.05 * h, 0.95 * h, n)]), SIZE)

    def analyse():
        try:
            return measure_clearance(a, b, centerline=line, diameter_px=DIAMETER, registration=reg)
        except ValueError as exc:      # a zigzag is rarely measurable; the time spent is what matters here
            return str(exc)

    benchmark.pedantic(analyse, rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info["length_px"] = round(float(np.hypot(*np.diff(line, axis=0).T).sum()))
    benchmark.extra_info["target_s"] = TARGET_S
    assert benchmark.stats.stats.min < TARGET_S
