"""Venographic clearance on the phantom's named scenarios (core/sources/phantom/cases.py): a device in the
lumen (on one run, or left in place in both), a collateral. Frames go the whole way a recorded run goes
(rendered stack -> FrameStack -> peak opacity and mask -> registration on the masks -> densitometry). Every
scenario against its truth: tests/test_clearance_sweep.py."""
from __future__ import annotations

import numpy as np
import pytest

from core.analysis.clearance.measure import measure_runs
from core.analysis.peak import peak_and_mask
from core.sources.phantom.cases import make_case
from core.sources.phantom.render import render_run
from core.sources.stacks import FrameStack

_cache: dict = {}


def _case(name: str, seed: int):
    """(case, [(peak, mask)] baseline first, the baseline's truth centreline over the analysed range)."""
    key = (name, seed)
    if key not in _cache:
        case = make_case(name, seed)
        runs, truth = [], None
        for cfg in case.configs:
            run = render_run(cfg)
            stack = FrameStack(run.frames, run.fps, cfg.intensity, 12 if cfg.intensity == "lin" else 8,
                               np.arange(run.frames.shape[0]) / run.fps, "phantom")
            runs.append(peak_and_mask(stack))
            truth = truth or run.truth
        a0, a1 = case.truth.analysed_s
        s = truth.scene.centreline_s
        _cache[key] = (case, runs, truth.scene.centreline_xy[(s >= a0) & (s <= a1)])
    return _cache[key]


def _measure(name: str, seed: int, given: bool = True) -> tuple[dict, object]:
    case, runs, line = _case(name, seed)
    res = measure_runs(runs[0][0], [p for p, _ in runs[1:]], centerline=line if given else None,
                       masks=[m for _, m in runs])
    return res, case


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_catheter_on_the_post_run_is_left_out_of_the_burden(seed):
    res, case = _measure("catheter", seed)
    assert res["gradable"], res["warnings"]
    assert any("device" in n for n in res["notes"])
    assert res["clearance_pct"] == pytest.approx(case.truth.clearance_pct[0], abs=5.0)
    assert res["grade"] == case.truth.grade[0]


@pytest.mark.parametrize("seed", [0, 2, 3])
def test_a_sheath_left_in_place_in_both_runs_is_found_and_left_out(seed):
    """The same device in both runs: the masks' difference cancels it, its walls in each mask do not."""
    res, case = _measure("sheath_both", seed)
    assert any("device" in n and "both" in n.replace("baseline and post runs", "both") for n in res["notes"]), \
        res["notes"]
    assert res["gradable"], res["warnings"]
    # The stations under the sheath (from the inflow end to its tip) are the ones left out.
    tip = case.baseline.device.end
    frac = np.array([st["frac"] for st in res["stations"]])
    out = np.array([st["burden_baseline_pct"] is None for st in res["stations"]])
    assert out[frac < 0.5 * _tip_frac(case, tip)].all() and not out[frac > 1.2 * _tip_frac(case, tip)].any()
    assert res["grade"] == case.truth.grade[0]


def _tip_frac(case, tip: float) -> float:
    """The device's tip as a fraction of the analysed range."""
    from core.sources.phantom.cases import _range
    s0, s1, length = _range(case.baseline)
    return (tip * length - s0) / (s1 - s0)


@pytest.mark.parametrize("name, seed", [("table120", 0), ("taper_clean", 0), ("step_clean", 4), ("contrast40", 0),
                                        ("focal75_vs_residue", 3)])
def test_no_device_is_found_without_one(name, seed):
    """Bone rims and cortices crossing the vein are no device: they drift across it, or step on one side only."""
    res, _ = _measure(name, seed)
    assert not any("device" in n for n in res["notes"] + res["warnings"])


def test_without_masks_no_device_is_looked_for():
    case, runs, line = _case("catheter", 0)
    res = measure_runs(runs[0][0], [runs[1][0]], centerline=line)
    assert not any("device" in n for n in res["notes"])


@pytest.mark.parametrize("name, seed", [("collateral", 1), ("collateral", 2), ("collateral", 3),
                                        ("focal_parallel", 1), ("focal_parallel", 3)])
def test_a_branch_beside_the_vein_leaves_the_background_alone(name, seed):
    """A collateral's junctions and a paired vein put contrast in one background band: the lower band is the
    background, so neither reads as thrombus."""
    res, case = _measure(name, seed)
    assert res["gradable"], res["warnings"]
    assert res["burden_baseline_pct"] == pytest.approx(case.truth.burden_pct[0], abs=3.0)
    assert res["burden_post_pct"] == pytest.approx(case.truth.burden_pct[1], abs=3.0)
    assert res["clearance_pct"] == pytest.approx(case.truth.clearance_pct[0], abs=5.0)
