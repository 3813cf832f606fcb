"""Honest writes: while the event log cannot commit, every write endpoint answers 503 with the reason and a
Retry-After, never a 2xx for what is only in memory; every 2xx it gave is in the database file."""
import json
import time

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import TOKEN_FILE
from core.ops.settings import Settings
from core.store.eventlog import EventLog, LogUnavailable
from tests.db import db_rows
from tests.waiting import wait_for

PAD = "x" * 150



@pytest.fixture
def live(tmp_path):
    data_dir = tmp_path / "data"
    app = create_app(Settings(data_dir=data_dir, phantom_size=128, auto_procedure=False))
    with TestClient(app) as client:
        token = (data_dir / TOKEN_FILE).read_text().strip()
        yield client, {"Authorization": f"Bearer {token}"}, app.state.appliance


def write_requests(run_id: str) -> list[tuple[str, str, dict | None]]:
    return [("PUT", "/api/procedures/current/patient", {"weight_kg": 71.5, "creatinine_mg_dl": 1.0}),
            ("PUT", f"/api/runs/{run_id}/label", {"label": "baseline"}),
            ("PUT", "/api/rois", {"rois": [[10, 10, 20, 20]]}),
            ("PUT", "/api/centerline", {"points": [[20, 20], [60, 60]], "diameter_px": 8}),
            ("POST", "/api/procedures/current/end", None),
            ("POST", "/api/procedures", {"label": "second"})]


def test_disk_full_writes_get_503_with_retry_after_and_every_2xx_is_on_disk(live):
    client, auth, appliance = live
    log = appliance.log
    assert client.post("/api/procedures", json={"label": "first"}, headers=auth).status_code == 201
    run_id = wait_for(lambda: appliance.status()["last_runs"], 30)[0]["run_id"]

    # Fill the database to a hard cap (SQLite max_page_count fails exactly as a full disk does).
    pages = db_rows(log.db_path, "PRAGMA page_count")[0][0]
    log.set_max_page_count(pages + 2)
    acknowledged = []
    deadline = time.monotonic() + 30
    n = 0
    while "disk_full" not in {a["kind"] for a in log.alarms}:
        assert time.monotonic() < deadline, "the page cap never filled"
        weight = 40.0 + n * 0.001
        r = client.put("/api/procedures/current/patient", json={"weight_kg": weight, "creatinine_mg_dl": 1.0},
                       headers=auth)
        n += 1
        if r.status_code == 200:
            acknowledged.append(weight)
        else:
            assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0, r.text
            assert "not yet stored" in r.json()["detail"] or "cannot store" in r.json()["detail"]
        log.record("filler", {"pad": PAD * 20})

    for method, path, body in write_requests(run_id):
        r = client.request(method, path, json=body, headers=auth)
        assert r.status_code == 503, (path, r.status_code, r.text)
        assert r.headers["Retry-After"] == "5"
        detail = r.json()["detail"]
        assert "disk full" in detail and "cannot store" in detail, detail
    status = client.get("/api/status").json()
    assert "disk_full" in {a["kind"] for a in status["alarms"]}
    assert client.get("/healthz").status_code == 503

    # Everything acknowledged before the disk filled was committed when its 2xx went out.
    stored = {json.loads(d)["weight_kg"] for (d,) in db_rows(
        log.db_path, "SELECT data FROM events WHERE kind = 'procedure_fields'")}
    assert set(acknowledged) <= stored

    log.set_max_page_count(None)
    wait_for(lambda: log.write_problem() is None, 10)
    r = client.put("/api/procedures/current/patient", json={"weight_kg": 99.5, "creatinine_mg_dl": 1.2},
                   headers=auth)
    assert r.status_code == 200
    assert db_rows(log.db_path, "SELECT COUNT(*) FROM events WHERE kind = 'procedure_fields' AND data LIKE ?",
                   ("%99.5%",))[0][0] == 1


def test_commit_raises_while_the_queued_change_cannot_be_stored_and_succeeds_after(tmp_path):
    # The race the pre-check cannot see: the log was healthy when the request came, then its commit fails.
    log = EventLog(tmp_path / "d", retry_max_s=0.05)
    log.start()
    try:
        log.record("boot", {})
        log.commit(5)
        log.set_max_page_count(db_rows(log.db_path, "PRAGMA page_count")[0][0])
        log.record("change", {"pad": PAD * 40, "v": 63.25})
        with pytest.raises(LogUnavailable) as err:
            log.commit(1.0)
        assert err.value.retry_after_s == 2 and "held in memory but not yet stored" in err.value.reason
        with pytest.raises(LogUnavailable, match="disk full"):
            log.check_writable()
        log.set_max_page_count(None)
        log.commit(10)   # held in memory, written once the database takes writes again
        log.check_writable()
        assert db_rows(log.db_path, "SELECT COUNT(*) FROM events WHERE kind = 'change'")[0][0] == 1
    finally:
        log.close()
