"""Throughput of run timing on 1024x1024 uint16 frames (the issue's target: >= 300 frames/s on one core).

Run with ``.venv/bin/python -m pytest benchmarks/bench_analyze.py --benchmark-only``. The stack is a phantom
contrast run at 30 pulses/s on a 30 fps line, so every frame is a new pulse (the worst case: no repeat is
skipped). File reading is excluded: the frames are in memory before timing starts. The target is "on one
core", so these benchmarks time CPU seconds of this process (``time.process_time``) and judge the best
round: the CI machine's two cores are shared, and wall time there measures the neighbours as well.
"""
import time

import numpy as np
import pytest

from core.analysis.gamma import gamma_variate
from core.analysis.offline import analyze_stack
from core.analysis.pipeline import FramePipeline
from core.analysis.tdc import tdc_metrics
from core.sources.frames import Frame
from core.sources.phantom.config import PhantomConfig
from core.sources.phantom.render import render_run
from core.sources.stacks import FrameStack

TARGET_FPS = 300.0


@pytest.fixture(scope="module")
def stack():
    cfg = PhantomConfig(size=(1024, 1024), intensity="lin", seed=1, pulse_rate=30.0, fps=30.0, xray_s=5.0,
                        lih_before_s=0.2, lih_after_s=0.2, inject_at_s=0.5, noise="gaussian", supersample=1)
    run = render_run(cfg)
    frames = np.ascontiguousarray(run.frames)
    return FrameStack(frames, cfg.fps, "lin", 12, np.arange(len(frames)) / cfg.fps, "bench"), run.truth


def fps_of(benchmark, frames):
    return frames / benchmark.stats.stats.min


@pytest.mark.benchmark(timer=time.process_time)
def test_analyze_1024_uint16(benchmark, stack):
    st, truth = stack
    result = benchmark.pedantic(analyze_stack, args=(st,), rounds=5, iterations=1, warmup_rounds=1)
    fps = fps_of(benchmark, len(st.frames))
    benchmark.extra_info["frames_per_s"] = round(fps, 1)
    roi = result["rois"][0]
    t = truth.truth_timing(roi["roi"])
    assert abs(roi["peak_s"] - (t.peak_s + truth.run_start_s)) < 1 / 30
    assert fps >= TARGET_FPS, f"analyze ran at {fps:.0f} frames/s"


@pytest.mark.benchmark(timer=time.process_time)
def test_live_pipeline_1024_uint16(benchmark, stack):
    """The appliance's per-frame path: kernel (with the run's mask once contrast arrives) + run timing."""
    st, _ = stack
    times = (st.frame_times_s * 1e9).astype(np.int64)

    def play():
        p = FramePipeline("lin")
        for i in range(len(st.frames)):
            p.process(Frame(st.frames[i], int(times[i]), i))
        return p.close(int(times[-1]) + 10**9)

    benchmark.pedantic(play, rounds=5, iterations=1, warmup_rounds=1)
    fps = fps_of(benchmark, len(st.frames))
    benchmark.extra_info["frames_per_s"] = round(fps, 1)
    assert fps >= TARGET_FPS, f"live pipeline ran at {fps:.0f} frames/s"


def test_gamma_fit_per_roi(benchmark):
    """Run-end cost per ROI: a 60 s run at 30 p/s (1800 samples)."""
    t = np.arange(1800) / 30.0
    y = gamma_variate(t, 5.0, 2.5, 0.35, 1.0)
    y = y / y.max() + 0.01 * np.random.default_rng(0).standard_normal(len(t))
    m = benchmark(tdc_metrics, t, y)
    assert m.method == "gamma"
