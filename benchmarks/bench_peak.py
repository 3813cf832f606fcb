"""Peak image speed: ``peak_and_mask`` on one 60-frame 1024x1024 run, the compiled kernels (ext/_peak.pyx) beside
their NumPy reference (core/analysis/peak_ref.py), in the same session.

Run with ``.venv/bin/python -m pytest benchmarks/bench_peak.py --benchmark-only``. The run is bench_vessel.py's
sizing phantom (16-bit linear and 8-bit display video: 6 frames of last-image-hold, then 27 distinct pulses
each on two video frames), rendered once per intensity. Timed like bench_clearance.py: one BLAS thread, the
process pinned to one CPU, the process's CPU time. The compiled images must equal the reference's bit for bit
(the reference shares pass 1, on the subsample, with the compiled path); the compiled path must take under
TARGET_S, half of what the pre-kernel code took here (145-186 ms), asserted on the fastest round.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from benchmarks.bench_clearance import one_core  # noqa: F401  (the module's one-core fixture)
from benchmarks.bench_vessel import TIMING, _stack
from core.analysis.peak import peak_and_mask
from core.sources.phantom.sizing_cases import make_sizing_case

pytestmark = pytest.mark.benchmark(timer=time.process_time)

TARGET_S = 0.09     # s, compiled, on one core


@pytest.fixture(scope="module", params=["lin", "log"])
def run(request):
    case = make_sizing_case(seed=3, stenosis_pct=50.0, intensity=request.param, **TIMING)
    stack = _stack(case.config)
    return stack, peak_and_mask(stack, impl="reference")


@pytest.mark.parametrize("impl", ["reference", "compiled"])
def test_peak_and_mask(benchmark, run, impl):
    stack, expected = run
    peak, mask = benchmark.pedantic(lambda: peak_and_mask(stack, impl=impl), rounds=5, iterations=1,
                                    warmup_rounds=1)
    np.testing.assert_array_equal(peak, expected[0])
    np.testing.assert_array_equal(mask, expected[1])
    if impl == "compiled":
        benchmark.extra_info["target_s"] = TARGET_S
        assert benchmark.stats.stats.min < TARGET_S
