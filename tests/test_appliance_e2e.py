"""The foundation end to end: `cathlab-edge run` on its simulators, in a subprocess, as a user starts it."""
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.waiting import wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 2.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


@pytest.fixture
def appliance(tmp_path):
    port = free_port()
    env = dict(os.environ, CATHLAB_PHANTOM_SIZE="256", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "run", "--port", str(port),
                             "--data-dir", str(tmp_path / "data")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=Path(__file__).resolve().parent.parent)
    yield proc, f"http://127.0.0.1:{port}", tmp_path / "data"
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def status_when(predicate, url, seconds):
    """The first /api/status of the appliance at ``url`` that satisfies ``predicate`` within ``seconds``."""
    last = {}

    def poll():
        try:
            last["status"] = status = get_json(url + "/api/status")
        except OSError:
            return None
        return status if predicate(status) else None
    return wait_for(poll, seconds, interval=0.2, explain=lambda: f"last status: {json.dumps(last.get('status'))}")


def test_runs_on_simulators_and_stops_cleanly(appliance):
    proc, url, data_dir = appliance
    first = status_when(lambda s: s["injector"]["link"] == "up" and s["counters"]["frames"] > 0, url, 20)
    assert first["injector"]["device"]["model"]
    later = status_when(lambda s: s["counters"]["frames"] > first["counters"]["frames"] + 15, url, 5)
    assert later["counters"]["serial"]["crc_errors"] == 0
    with urllib.request.urlopen(url + "/", timeout=2) as page:
        assert "cathlab-edge" in page.read().decode()

    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    elapsed = time.monotonic() - started
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert elapsed < 2.0, f"took {elapsed:.2f} s to stop"
    assert f"{url}/" in out                      # the status page's URL was printed

    db = sqlite3.connect(data_dir / "events.sqlite3")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        kinds = [k for (k,) in db.execute("SELECT kind FROM events ORDER BY id")]
    finally:
        db.close()
    assert kinds[0] == "appliance_start" and kinds[-1] == "appliance_stop"
    assert "serial_link" in kinds and "injector_hello" in kinds


def test_one_simulated_procedure_end_to_end(appliance):
    """One pass of the scripted procedure (baseline, two thrombectomy passes, completion) through the live
    appliance: runs timed, injections matched, clearance measured against the phantom's truth."""
    from firmware_bridge.scenarios import PROCEDURE

    proc, url, data_dir = appliance
    contrast = [run for run in PROCEDURE if run.inject_start_s is not None]
    status = status_when(lambda s: (s.get("clearance") or {}).get("run_id", "").endswith("-5"), url, 75)
    runs = {r["run_id"].rsplit("-", 1)[1]: r for r in status["last_runs"]}
    assert len(runs) == len(PROCEDURE)
    for index, scripted in enumerate(PROCEDURE):
        run = runs[str(index)]
        assert run["contrast"] == (scripted.inject_start_s is not None)
        assert abs(run["duration_s"] - (scripted.xray_off_s - scripted.xray_on_s)) < 0.1
        assert abs(run["pulse_rate"] - 15.0) < 0.1
        if run["contrast"]:
            assert abs(run["injection_delay_s"] - (scripted.inject_start_s - scripted.xray_on_s)) < 1 / 30 + 0.01
            assert run["delivered_volume_ml"] == scripted.volume_ml
    totals = status["procedure"]["totals"]
    assert totals["contrast_ml"] >= sum(r.volume_ml for r in contrast[:2])

    clearance = status["clearance"]
    truth = (1 - PROCEDURE[-1].thrombus_fraction) * 100
    assert clearance["baseline_run_id"].endswith("-1")
    assert abs(clearance["clearance_pct"] - truth) < 8, clearance
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
