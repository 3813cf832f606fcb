"""The analysis worker: run-end analysis ahead of on-demand renders, the clearance picture rendered once per
result, bounded operator centrelines, and six HTTP clients asking for images without delaying run recording
(a real uvicorn on a socket, the appliance on its simulators)."""
from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import uvicorn

from api.app import create_app
from core.analysis.clearance.measure import MAX_CENTERLINE_POINTS, check_operator_centerline
from core.analysis.clearance.tracker import ClearanceTracker
from core.appliance.worker import AnalysisWorker
from core.ops.settings import Settings
from tests.test_clearance import synthetic_vessel
from tests.waiting import wait_for

PNG = b"\x89PNG\r\n\x1a\n"


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


# -- six clients against a live appliance ---------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 15.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The appliance behind a real uvicorn on a socket, with the app object at hand."""
    port = _free_port()
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("data"), phantom_size=256))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 20)
    yield app, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def _status(url: str) -> dict:
    import json
    return json.loads(_get(url + "/api/status")[1])


def test_six_image_clients_do_not_delay_run_recording(served):
    app, url = served
    appliance = app.state.appliance
    # The demo procedure's second contrast run gives the first clearance result (about 30 s in).
    wait_for(lambda: _status(url)["clearance"] is not None, 60, interval=0.5)
    recorded_before = {r["run_id"] for r in appliance.runs(limit=1000)}
    stop = threading.Event()
    answers: list[tuple[int, float]] = []
    refused: list[tuple[str, int, bytes]] = []

    def client(k: int) -> None:
        while not stop.is_set():
            runs = [r["run_id"] for r in appliance.runs(limit=20) if r.get("contrast")]
            path = "/api/clearance/latest.png" if k % 2 == 0 or not runs else f"/api/runs/{runs[-1]}/image.png"
            t = time.monotonic()
            status, body = _get(url + path)
            answers.append((status, time.monotonic() - t))
            if status != 200 or body[:8] != PNG:
                refused.append((path, status, body[:200]))

    def new_runs() -> set[str]:
        return {r["run_id"] for r in appliance.runs(limit=1000)} - recorded_before

    clients = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(6)]
    for c in clients:
        c.start()
    try:
        # Two more runs end under load (fluoroscopy at 33-35 s, completion at 38-44 s of the demo).
        wait_for(lambda: len(new_runs()) >= 2, 45, interval=0.5, explain=lambda: "runs stopped being recorded")
    finally:
        stop.set()
        for c in clients:
            c.join(20)
    ended = new_runs()

    def recorded_and_off() -> tuple[dict, dict] | None:
        events = appliance.events(limit=10_000)
        off = {e["data"]["run_id"]: e["t_mono_ns"] for e in events if e["kind"] == "xray_off"}
        recorded = {e["data"]["run_id"]: e["t_mono_ns"] for e in events if e["kind"] == "run"
                    and e["data"].get("run_id") in ended}
        return (recorded, off) if set(recorded) == ended <= set(off) else None

    recorded, off = wait_for(recorded_and_off, 5)    # the log's writer commits in batches
    delays = {run_id: (recorded[run_id] - off[run_id]) / 1e9 for run_id in ended}
    # From the run's last frame to its record: the X-ray-off wait, the run's analysis and at most one render
    # already under way (0.05 s unloaded; 1.4 s before the worker put renders behind run-end work).
    assert max(delays.values()) < 1.0, delays
    # Every answer is the image: a contrast run listed by the API has its peak image, and the clearance picture
    # is served while renders queue behind run-end work.
    assert answers and not refused, refused[:20]
    # One render per result: the same bytes object every time until the next result.
    first = appliance.clearance_png()
    assert first is appliance.clearance_png() and first[:8] == PNG
    print(f"\nrun recording delays under six image clients: {delays}; {len(answers)} images served, "
          f"median {sorted(t for _, t in answers)[len(answers) // 2] * 1000:.0f} ms")
