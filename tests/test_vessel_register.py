"""The operator's centreline, drawn on the baseline, follows the table to the completion run: live sizing
registers the two runs on the anatomy (as clearance does) and moves the centreline by the shift found.
Phantom venograms of known geometry, the table moved between the runs; seeded."""
from dataclasses import replace

import numpy as np
import pytest

from core.analysis.peak import peak_and_mask
from core.appliance.sizing import LiveSizing
from core.appliance.worker import AnalysisWorker
from core.sources.phantom.render import render_run
from core.sources.phantom.sizing_cases import make_sizing_case
from core.sources.stacks import FrameStack
from tests.test_vessel_live import ListLog

TRAVEL_PX = 40.0


def images(cfg):
    run = render_run(cfg)
    stack = FrameStack(run.frames, run.fps, "lin", 12, np.arange(run.frames.shape[0]) / run.fps, "phantom")
    return peak_and_mask(stack)


@pytest.fixture
def sizing():
    worker = AnalysisWorker("test-register")
    log = ListLog()
    yield LiveSizing(worker, log), worker, log
    worker.shutdown()


@pytest.mark.parametrize("seed, table", [(0, (30.0, -20.0)), (1, (-25.0, 35.0))])
def test_the_operator_centreline_is_registered_to_a_run_after_a_table_move(sizing, seed, table):
    live, worker, log = sizing
    case = make_sizing_case(seed, 50.0, "lin", table_travel_px=TRAVEL_PX)
    base_peak, base_mask = images(case.config)
    # The same anatomy and narrowing, the table moved: everything in the image moves by ``table``.
    post_peak, post_mask = images(replace(case.config, table_shift_px=table))
    lesion = np.asarray(case.truth.lesion_xy) + table
    drawn = np.vstack([case.truth.centreline_xy[::12], case.truth.centreline_xy[-1:]])   # on the baseline

    worker.submit(live.add_run, "base", base_peak, base_mask, "baseline").result(timeout=10)
    live.set_centerline([tuple(p) for p in drawn], "base")
    worker.submit(live.add_run, "post", post_peak, post_mask, "completion").result(timeout=30)

    (event,) = [d for k, d in log.events if k == "vessel_sizing"]
    assert event["centerline"] == "operator" and event["registered_to"] == "base"
    assert event["centerline_shift_px"] == pytest.approx(table, abs=1.0)
    v = live.result("post")
    assert v["diameter_stenosis_pct"] == pytest.approx(case.truth.diameter_stenosis_pct, abs=5.0)
    assert v["mld_px"] == pytest.approx(case.truth.mld_px, rel=0.12)
    assert np.hypot(v["lesion"]["x"] - lesion[0], v["lesion"]["y"] - lesion[1]) <= 8.0


def test_a_centreline_drawn_on_a_run_no_longer_kept_is_not_guessed(sizing):
    live, worker, log = sizing
    case = make_sizing_case(2, 50.0, "lin")
    peak, mask = images(case.config)
    live.set_centerline([tuple(p) for p in case.truth.centreline_xy[::12]], "gone-1")
    worker.submit(live.add_run, "post", peak, mask, "completion").result(timeout=30)
    (event,) = [d for k, d in log.events if k == "vessel_sizing"]
    assert event["centerline"] == "automatic" and "gone-1" in event["centerline_note"]
