"""Clearance against the phantom's analytic truth over every named scenario (core/sources/phantom/cases.py),
a bounded subset of seeds: the full sweep (seeds 0-4, both modes) is benchmarks/sweep_clearance.py, its numbers
in docs/clearance-accuracy.md. Frames go the whole way a recorded run goes (rendered stack -> peak opacity and
mask -> registration on the masks -> densitometry).

- Centreline given: burden within +-3 points and clearance within +-5 of the truth over the stations measured,
  gradable (issue 15, Accuracy).
- Automatic centreline: clearance within +-8 points, or not gradable with the reason.
"""
from __future__ import annotations

import pytest

from benchmarks.sweep_clearance import measure
from core.sources.phantom.cases import CASE_NAMES

SEEDS = (0, 4)
# Automatic centreline on seed 0 of every scenario and on seed 4 of those where the path may take another vessel
# or a device sits in the lumen. Listed case by case, given then automatic, so each case is rendered once.
AUTO_SEED_4 = ("taper_focal15", "focal_parallel", "collateral", "contrast40", "catheter", "sheath_both")
RUNS = [(n, s, mode) for n in CASE_NAMES for s in SEEDS
        for mode in (("given", "auto") if s == 0 or n in AUTO_SEED_4 else ("given",))]


def _say(r: dict) -> str:
    keys = ("burden_baseline", "truth_baseline", "burden_post", "truth_post", "clearance", "truth_clearance",
            "grade", "truth_grade", "warnings", "notes", "error")
    return ", ".join(f"{k}={r.get(k)!r}" for k in keys if k in r)


@pytest.mark.parametrize("name, seed, mode", RUNS)
def test_within_the_issue_tolerances_or_not_gradable_with_the_reason(name, seed, mode):
    r = measure(name, seed, mode, None)
    assert r["ok"], _say(r)
    if mode == "given" or r["gradable"]:
        assert r["grade"] == r["truth_grade"] or r["truth_clearance"] is None, _say(r)
    else:
        assert r["grade"] is None
        if name in ("focal_parallel", "collateral"):
            assert any("beside" in w or "differs between runs" in w for w in r["warnings"]), _say(r)
