"""Live vessel sizing in-process (TestClient) against the real appliance on its simulators: runs labelled
completion measured on the worker, sizing on request, the operator's calibration, the status page."""
import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import TOKEN_FILE
from core.analysis.clearance.measure import check_operator_centerline
from core.analysis.peak import peak_and_mask
from core.analysis.sizing import measure_sizing
from core.appliance.sizing import LiveSizing, NotKept
from core.appliance.worker import AnalysisWorker
from core.ops.settings import Settings
from core.sources.phantom.render import render_run
from core.sources.phantom.sizing_cases import make_sizing_case
from core.sources.stacks import FrameStack
from tests.waiting import wait_for

VESSEL_KEYS = {"calibration", "mm_per_px", "reference_diameter_px", "reference_diameter_mm", "mld_px", "mld_mm",
               "diameter_stenosis_pct", "area_stenosis_pct", "lesion_length_px", "lesion_length_mm", "lesion",
               "residual_stenosis_ge_50", "profile", "warnings"}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """One appliance on its simulators with a contrast run recorded; yields (client, auth headers, run id)."""
    data_dir = tmp_path_factory.mktemp("data")
    app = create_app(Settings(data_dir=data_dir, phantom_size=256))
    with TestClient(app) as client:
        def contrast_run():
            runs = [r for r in client.get("/api/runs").json()["runs"] if r.get("contrast")]
            # Its image is kept before the run is recorded: a listed contrast run can be sized.
            return runs and runs[-1]["run_id"]
        run_id = wait_for(contrast_run, 30, interval=0.1, explain=lambda: client.get("/api/runs").json())
        token = (data_dir / TOKEN_FILE).read_text().strip()
        yield client, {"Authorization": f"Bearer {token}"}, run_id


def events(client, kind: str) -> list[dict]:
    return [e for e in client.get("/api/events", params={"limit": 1000}).json()["events"] if e["kind"] == kind]


def test_a_run_relabelled_completion_is_sized_and_logged(live):
    client, h, run_id = live
    assert client.put(f"/api/runs/{run_id}/label", json={"label": "completion"}, headers=h).status_code == 200
    run = wait_for(lambda: (r := client.get(f"/api/runs/{run_id}").json())["vessel"] and r, 30, interval=0.1,
                   explain=lambda: events(client, "vessel_sizing_failed"))
    vessel = run["vessel"]
    assert set(vessel) >= VESSEL_KEYS
    assert vessel["reference_diameter_px"] > vessel["mld_px"] > 0
    assert 0 <= vessel["diameter_stenosis_pct"] <= 100
    logged = wait_for(lambda: [e for e in events(client, "vessel_sizing") if e["data"]["run_id"] == run_id], 3)
    assert logged[-1]["data"]["vessel"]["mld_px"] == vessel["mld_px"]
    status = client.get("/api/status").json()
    assert status["vessel"]["run_id"] == run_id and status["vessel"]["mld_px"] == vessel["mld_px"]
    page = client.get("/").text
    assert "MLD" in page and "pixels (no calibration)" in page


def test_an_unmeasured_run_has_a_null_vessel(live):
    client, h, _ = live
    sized = {e["data"]["run_id"] for e in events(client, "vessel_sizing")}
    unsized = [r["run_id"] for r in client.get("/api/runs").json()["runs"] if r["run_id"] not in sized]
    assert unsized, "the simulator records several runs"
    assert client.get(f"/api/runs/{unsized[0]}").json()["vessel"] is None


def test_sizing_on_request_needs_the_token_and_a_kept_image(live):
    client, h, run_id = live
    assert client.put(f"/api/runs/{run_id}/vessel").status_code == 401
    r = client.put(f"/api/runs/{run_id}/vessel", headers=h)
    assert r.status_code == 200, r.text
    assert set(r.json()) >= VESSEL_KEYS
    missing = client.put("/api/runs/zz-404/vessel", headers=h)
    assert missing.status_code == 404 and "zz-404" in missing.json()["detail"]


def test_operator_calibration_gives_millimetres(live):
    client, h, run_id = live
    assert client.put("/api/calibration", json={"mm_per_px": 0.2}).status_code == 401
    r = client.put("/api/calibration", json={"mm_per_px": 0.2}, headers=h)
    assert r.status_code == 200 and r.json() == {"calibration": "operator", "mm_per_px": 0.2,
                                                 "catheter_french": None, "catheter": None, "run_id": None}
    assert wait_for(lambda: events(client, "calibration_set"), 3)[-1]["data"]["mm_per_px"] == 0.2
    vessel = client.put(f"/api/runs/{run_id}/vessel", headers=h).json()
    assert vessel["calibration"] == "operator" and vessel["mm_per_px"] == 0.2
    assert vessel["mld_mm"] == pytest.approx(vessel["mld_px"] * 0.2, rel=0.01)
    assert client.get(f"/api/runs/{run_id}").json()["vessel"]["mld_mm"] == vessel["mld_mm"]
    assert "operator calibration 0.200 mm/px" in client.get("/").text


@pytest.mark.parametrize("body", [{}, {"mm_per_px": 0}, {"mm_per_px": -1}, {"mm_per_px": 11}, {"mm_per_px": "1"},
                                  {"mm_per_px": 0.2, "catheter_french": 6},
                                  {"catheter_french": 6, "catheter": [[1, 1], [20, 20]]},
                                  {"catheter_french": 2, "catheter": [[1, 1], [20, 20]], "run_id": "a-1"},
                                  {"catheter_french": 6, "catheter": [[1, 1]], "run_id": "a-1"},
                                  {"mm_per_px": 0.2, "extra": 1}])
def test_bad_calibrations_are_422(live, body):
    client, h, _ = live
    r = client.put("/api/calibration", json=body, headers=h)
    assert r.status_code == 422, r.text
    assert r.json()["detail"]


def test_catheter_calibration_is_measured_on_a_kept_run(live):
    client, h, run_id = live
    missing = client.put("/api/calibration", json={"catheter_french": 6, "catheter": [[10, 10], [10, 60]],
                                                   "run_id": "zz-404"}, headers=h)
    assert missing.status_code == 404 and "zz-404" in missing.json()["detail"]
    # Two points in the empty corner of the phantom: no catheter there, said in one line.
    r = client.put("/api/calibration", json={"catheter_french": 6, "catheter": [[2, 2], [2, 40]],
                                             "run_id": run_id}, headers=h)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["msg"]


# -- LiveSizing on its worker, on a phantom vein of known geometry with a 6 F catheter ------------------------
class ListLog:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def record(self, kind: str, data: dict, **_) -> None:
        self.events.append((kind, data))


@pytest.fixture(scope="module")
def phantom():
    case = make_sizing_case(0, 50.0, "lin", catheter=True)
    run = render_run(case.config)
    stack = FrameStack(run.frames, run.fps, "lin", 12, np.arange(run.frames.shape[0]) / run.fps, "phantom")
    peak, mask = peak_and_mask(stack)
    return case.truth, peak, mask


@pytest.fixture
def sizing():
    worker = AnalysisWorker("test-sizing")
    log = ListLog()
    yield LiveSizing(worker, log), worker, log
    worker.shutdown()


def test_a_run_recorded_completion_is_sized_with_the_centreline_and_the_catheter(phantom, sizing):
    truth, peak, mask = phantom
    live, worker, log = sizing
    worker.submit(live.add_run, "s-1", peak, mask, "intraprocedural").result(timeout=10)
    assert live.result("s-1") is None and live.headline() is None      # not completion: not sized
    cal = live.set_calibration(catheter_french=6.0, catheter=truth.catheter_xy.tolist(), run_id="s-1")
    assert cal["calibration"] == "catheter" and cal["mm_per_px"] == pytest.approx(2.0 / truth.catheter_px, rel=0.1)
    assert ("calibration_set", cal) in log.events
    drawn = np.vstack([truth.centreline_xy[::10], truth.centreline_xy[-1:]])   # as an operator draws it
    live.set_centerline([tuple(p) for p in drawn])
    worker.submit(live.add_run, "s-2", peak, mask, "completion").result(timeout=10)
    result = live.result("s-2")
    # As the command measures it: the operator's centreline checked (and resampled) the same way, the run's
    # mask showing the catheter in the lumen.
    line = check_operator_centerline(drawn, peak.shape)
    expected = measure_sizing(peak, line, mm_per_px=cal["mm_per_px"], calibration="catheter", mask=mask)
    assert result == expected.to_json()
    logged = [d for k, d in log.events if k == "vessel_sizing"]
    assert logged == [{"run_id": "s-2", "centerline": "operator", "vessel": result}]
    assert live.headline()["run_id"] == "s-2" and live.headline()["mld_mm"] == result["mld_mm"]


def test_relabelled_completion_is_sized_and_a_new_procedure_forgets(phantom, sizing):
    _, peak, mask = phantom
    live, worker, log = sizing
    worker.submit(live.add_run, "s-1", peak, mask, None).result(timeout=10)
    live.relabel("s-1", "completion", "p1")
    worker.submit(lambda: None).result(timeout=10)
    assert live.result("s-1")["calibration"] is None and live.headline()["run_id"] == "s-1"
    live.new_procedure()
    assert live.headline() is None
    with pytest.raises(NotKept):
        live.request("s-1")
    with pytest.raises(ValueError, match="mm_per_px must be a finite number"):
        live.set_calibration(mm_per_px=float("inf"))
