"""Venographic clearance on the phantom's named scenarios (core/sources/phantom/cases.py): a device in the
lumen, a collateral, the automatic centreline. Frames go the whole way a recorded run goes (rendered stack ->
FrameStack -> peak opacity and mask -> registration on the masks -> densitometry)."""
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


def test_no_device_is_found_without_one():
    res, _ = _measure("table120", 0)
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


def _truth_on_measured_range(res: dict, case, runs_truth) -> float:
    """The truth's clearance over the part of the vein the result measured (an automatic centreline reaches
    nearer the field's edges than the truth's analysed range: with residue along the whole vein, the
    clearance depends on the range)."""
    scene = runs_truth[0].scene
    xy = np.array([[st["x"], st["y"]] for st in res["stations"] if st["burden_baseline_pct"] is not None])
    d2 = ((xy[:, None, :] - scene.centreline_xy[None, ::2, :]) ** 2).sum(axis=2)
    s = scene.centreline_s[::2][np.argmin(d2, axis=1)]
    b = [t.scene.burden_between(float(s.min()), float(s.max())) for t in runs_truth]
    return 100.0 * (b[0] - b[1]) / b[0]


AUTO = [("taper_focal15", s) for s in range(5)] + [
    ("focal75_vs_residue", 1), ("focal_parallel", 0), ("focal_parallel", 3), ("collateral", 1), ("collateral", 3),
    ("table120", 0), ("catheter", 1), ("contrast40", 2)]


@pytest.mark.parametrize("name, seed", AUTO)
def test_automatic_centreline_within_8_points_or_not_gradable_with_the_reason(name, seed):
    case = make_case(name, seed)
    peaks, truths = [], []
    for cfg in case.configs:
        run = render_run(cfg)
        stack = FrameStack(run.frames, run.fps, cfg.intensity, 12 if cfg.intensity == "lin" else 8,
                           np.arange(run.frames.shape[0]) / run.fps, "phantom")
        peaks.append(peak_and_mask(stack))
        truths.append(run.truth)
    res = measure_runs(peaks[0][0], [p for p, _ in peaks[1:]], masks=[m for _, m in peaks])
    if not res["gradable"]:
        assert res["warnings"] and res["grade"] is None
        if name in ("focal_parallel", "collateral"):
            assert any("beside" in w or "differs between runs" in w for w in res["warnings"]), res["warnings"]
        return
    assert res["clearance_pct"] == pytest.approx(_truth_on_measured_range(res, case, truths), abs=8.0)
    assert res["grade"] == case.truth.grade[0]
