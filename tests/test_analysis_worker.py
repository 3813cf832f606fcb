"""The analysis worker: run-end analysis ahead of on-demand renders, the clearance picture rendered once per
result, bounded operator centrelines, and six HTTP clients asking for images without delaying run recording
(observed during the scripted procedure shared with the end-to-end test)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from api.app import create_app
from core.analysis.clearance.measure import MAX_CENTERLINE_POINTS, check_operator_centerline
from core.analysis.clearance.tracker import ClearanceTracker
from core.appliance.worker import AnalysisWorker
from core.ops.settings import Settings
from tests.shared_procedure import PNG
from tests.test_clearance import synthetic_vessel
from tests.waiting import wait_for


# -- the worker's two queues ----------------------------------------------------------------------------------
def test_ordered_work_runs_before_queued_on_demand_work_and_in_order():
    worker = AnalysisWorker("test")
    release = threading.Event()
    done: list[str] = []
    busy = worker.submit_on_demand(release.wait, 5)          # a render already under way
    wait_for(busy.running, 5, interval=0.001)
    renders = [worker.submit_on_demand(done.append, f"render{i}") for i in range(6)]
    ends = [worker.submit(done.append, f"run{i}") for i in range(3)]
    assert worker.pending() == (3, 6)
    release.set()
    for f in [busy, *renders, *ends]:
        f.result(timeout=5)
    assert done == ["run0", "run1", "run2"] + [f"render{i}" for i in range(6)]
    worker.shutdown()


def test_errors_reach_the_caller_and_the_worker_goes_on():
    worker = AnalysisWorker("test")
    failing = worker.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.result(timeout=5)
    assert worker.submit(lambda: 42).result(timeout=5) == 42
    worker.shutdown()


def test_shutdown_cancels_what_waits_and_refuses_new_work():
    worker = AnalysisWorker("test")
    release = threading.Event()
    running = worker.submit(release.wait, 5)
    waiting = [worker.submit(lambda: None), worker.submit_on_demand(lambda: None)]
    wait_for(running.running, 5, interval=0.001)
    worker.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in waiting)
    with pytest.raises(RuntimeError):
        worker.submit(lambda: None)
    release.set()
    assert running.result(timeout=5) is True


# -- bounded centrelines --------------------------------------------------------------------------------------
def test_operator_centrelines_are_bounded_in_points_and_length():
    shape = (256, 256)
    few = np.column_stack([np.full(40, 128.0), np.linspace(10, 245, 40)])
    assert check_operator_centerline(few, shape).shape == (40, 2)
    many = np.column_stack([np.full(MAX_CENTERLINE_POINTS + 1, 128.0), np.linspace(10, 245, MAX_CENTERLINE_POINTS + 1)])
    with pytest.raises(ValueError, match=f"at most {MAX_CENTERLINE_POINTS} points"):
        check_operator_centerline(many, shape)
    zigzag = np.column_stack([np.tile([5.0, 250.0], 50), np.linspace(10, 245, 100)])   # ~24,500 px
    with pytest.raises(ValueError, match="more than 1024 px"):
        check_operator_centerline(zigzag, shape)
    tracker = ClearanceTracker()
    image, _ = synthetic_vessel(size=shape)
    tracker.add_run("a", image, "baseline")
    with pytest.raises(ValueError, match="a vein crosses the image once"):
        tracker.set_centerline(zigzag, None)


def test_api_and_cli_refuse_too_many_points(tmp_path):
    from fastapi.testclient import TestClient

    from api.auth import TOKEN_FILE
    from api.cli.clearance import clearance_main

    app = create_app(Settings(data_dir=tmp_path, phantom_size=64))
    with TestClient(app) as client:
        token = (tmp_path / TOKEN_FILE).read_text().strip()
        points = [[10.0, float(y)] for y in range(MAX_CENTERLINE_POINTS + 1)]
        r = client.put("/api/centerline", json={"points": points, "diameter_px": None},
                       headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 422 and "at most 256 items" in r.text
        schema = client.get("/openapi.json").json()["components"]["schemas"]["Centerline"]
        assert f"At most {MAX_CENTERLINE_POINTS} points" in schema["properties"]["points"]["anyOf"][0].get(
            "description", schema["properties"]["points"].get("description", ""))
    import io
    err = io.StringIO()
    text = ";".join(f"10,{y}" for y in range(MAX_CENTERLINE_POINTS + 1))
    code = clearance_main("missing-a.npy", "missing-b.npy", 30.0, None, text, None, None, True, None,
                          out=io.StringIO(), err=err)
    assert code == 2 and "at most 256 points" in err.getvalue() and err.getvalue().count("\n") == 1


# -- the clearance picture, rendered once per result -----------------------------------------------------------
def test_the_clearance_picture_is_rendered_once_per_result(tmp_path):
    from core.appliance.clearance import LiveClearance
    from core.store.eventlog import EventLog
    from core.store.procedures import Procedures

    log = EventLog(tmp_path)
    procs = Procedures(log)                  # before start(), as the appliance does
    log.start()
    worker = AnalysisWorker("test")
    live = LiveClearance(worker, log, procs)
    base, _ = synthetic_vessel(size=(128, 128))
    assert live.png() is None
    for run_id, label in (("r-1", "baseline"), ("r-2", "completion")):
        worker.submit(live.measure, run_id, base, label).result(timeout=10)
    first, again = live.png(), live.png()
    # The same bytes object every time until the next result.
    assert first is again and first[:8] == PNG
    worker.submit(live.measure, "r-3", base, "completion").result(timeout=10)
    assert live.png() is not first
    worker.shutdown()
    log.close()


# -- six clients against a live appliance ---------------------------------------------------------------------
@pytest.mark.xdist_group("procedure")
def test_six_image_clients_do_not_delay_run_recording(procedure_pass):
    """Six HTTP clients ask for images from the first clearance result to the procedure's end (`cathlab-edge run`
    in a subprocess on its simulators, under the short soak's 20 status clients: tests/shared_procedure.py)."""
    observed = procedure_pass.observed()
    delays, answers, refused = observed.delays, observed.answers, observed.refused
    assert len(delays) >= 2, delays
    # From the run's last frame to its record: the X-ray-off wait, the run's analysis and at most one render
    # already under way (0.05 s unloaded; 1.4 s before the worker put renders behind run-end work).
    assert max(delays.values()) < 1.0, delays
    # Every answer is the image: a contrast run listed by the API has its peak image, and the clearance picture
    # is served while renders queue behind run-end work.
    assert answers and not refused, refused[:20]
    # The same picture for the same result (rendered once: test_the_clearance_picture_is_rendered_once_per_result).
    first, again = observed.clearance_pngs
    assert first == again and first[:8] == PNG
    print(f"\nrun recording delays under six image clients: {delays}; {len(answers)} images served, "
          f"median {sorted(t for _, t in answers)[len(answers) // 2] * 1000:.0f} ms")
