"""Live vessel sizing in-process (TestClient) against the real appliance on its simulators: runs labelled
completion measured on the worker, sizing on request, the operator's calibration, the status page."""
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import TOKEN_FILE
from core.ops.settings import Settings
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
    run = wait_for(lambda: (r := client.get(f"/api/runs/{run_id}").json())["vessel"] and r, 10, interval=0.1,
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
