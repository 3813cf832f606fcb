"""Stores no patient identity, against a live appliance: `cathlab-edge run` in a subprocess replaying a DICOM
file named after the patient, the red team's label through the HTTP API with the token. The name, MRN and birth
date must appear nowhere: not in the SQLite files (raw bytes, WAL included), the export, /api/status,
/api/procedures, /api/events, /api/runs, stdout or the log lines."""
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from core.identity import content_label
from core.sources.phantom.config import PhantomConfig
from core.sources.phantom.render import render_run
from tests.dicom_files import write_multiframe
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
ISSUE_LABEL = "DOE^JOHN MRN 00412345 DOB 1957-03-14"
STUDY_DIR = "PACS_DOE^JOHN"                      # the folder is user input as much as the file name
DICOM_NAME = "DOE^JOHN_MRN00412345_XA.dcm"
NEEDLES = ("DOE^JOHN", "DOE_JOHN", "00412345", "MRN0041", "1957-03-14", "_XA.dcm", STUDY_DIR)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(method: str, url: str, body=None, token: str | None = None) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_status(url: str, predicate, seconds: float) -> dict:
    last = {}

    def poll():
        try:
            code, text = call("GET", url + "/api/status")
        except OSError:
            return None
        last["status"] = status = json.loads(text)
        return status if code == 200 and predicate(status) else None
    return wait_for(poll, seconds, interval=0.2, explain=lambda: f"last status: {json.dumps(last.get('status'))}")


def assert_clean(where: str, blob: bytes | str) -> None:
    data = blob.encode() if isinstance(blob, str) else blob
    for needle in NEEDLES:
        assert needle.encode() not in data, f"{needle!r} found in {where}"


def db_bytes(data_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(data_dir.glob("events.sqlite3*")))


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A contrast run as a DICOM XA file, named the way PACS exports often are: after the patient."""
    run = render_run(PhantomConfig(size=(128, 128), intensity="log", xray_s=2.5, lih_before_s=0.5,
                                   lih_after_s=1.0, inject_at_s=0.3))
    folder = tmp_path_factory.mktemp("export") / STUDY_DIR
    folder.mkdir()
    path = folder / DICOM_NAME
    write_multiframe(path, np.asarray(run.frames), frame_time_ms=1000.0 / run.fps)
    return path


def test_identity_is_refused_or_hashed_and_appears_nowhere(study, tmp_path):
    port, data_dir = free_port(), tmp_path / "data"
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONUNBUFFERED="1", CATHLAB_AUTO_PROCEDURE="false")
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "--log-level", "debug", "run", "--port", str(port),
                             "--data-dir", str(data_dir), "--video", str(study)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        status = wait_status(url, lambda s: s["last_runs"] and s["injector"]["link"] == "up", 40)
        token = (data_dir / "api-token").read_text().strip()
        run_id = status["last_runs"][0]["run_id"]

        # The red team's label, as a procedure label and as a run label: refused, with the rule.
        code, text = call("POST", url + "/api/procedures", {"label": ISSUE_LABEL}, token)
        assert code == 422 and "DICOM form" in text, text
        for label in ("MRN 00412345", "DOB 1957-03-14", "1957-03-14", "14.03.1957", "00412345"):
            code, text = call("POST", url + "/api/procedures", {"label": label}, token)
            assert code == 422, (label, text)
        code, text = call("PUT", url + f"/api/runs/{run_id}/label", {"label": ISSUE_LABEL}, token)
        assert code == 422, text

        # Normal labels still work, and the ids are the appliance's own.
        for label in ("baseline", "post pass 2", "L iliac"):
            code, text = call("POST", url + "/api/procedures", {"label": label}, token)
            assert code == 201, text
            assert json.loads(text)["label"] == label
            assert call("POST", url + "/api/procedures/current/end", token=token)[0] == 200
        code, text = call("PUT", url + f"/api/runs/{run_id}/label", {"label": "baseline"}, token)
        assert code == 200, text

        def committed() -> dict | None:             # until the three procedures are committed
            served = {path: call("GET", url + path)[1] for path in
                      ("/api/status", "/api/procedures", "/api/events?limit=1000", "/api/runs", "/")}
            labels = {p["label"] for p in json.loads(served["/api/procedures"])["procedures"]}
            return served if labels == {"baseline", "post pass 2", "L iliac"} else None
        served = wait_for(committed, 10, interval=0.2)
        running_db = db_bytes(data_dir)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    assert proc.returncode == 0, err[-2000:]

    for path, text in served.items():
        assert_clean(path, text)
    assert_clean("the database while running", running_db)
    assert_clean("the database after stop", db_bytes(data_dir))
    assert_clean("stdout", out)
    assert_clean("the log (stderr)", err)
    assert err.strip(), "the appliance logged nothing: the log check would prove nothing"

    # The replayed file is named by its content hash where the appliance reports its video source.
    events = json.loads(served["/api/events?limit=1000"])["events"]
    start = next(e for e in events if e["kind"] == "appliance_start")
    assert start["data"]["video"] == content_label(study)

    for fmt in ("jsonl", "csv"):
        export = subprocess.run([sys.executable, "-m", "api.cli", "export", "--data-dir", str(data_dir),
                                 "--format", fmt], capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert export.returncode == 0, export.stderr
        assert "procedure_start" in export.stdout and "L iliac" in export.stdout
        assert_clean(f"export --format {fmt}", export.stdout + export.stderr)

    analyze = subprocess.run([sys.executable, "-m", "api.cli", "--log-level", "debug", "analyze", str(study),
                              "--json"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert analyze.returncode == 0, analyze.stderr
    assert json.loads(analyze.stdout)["source"] == content_label(study)
    assert_clean("analyze output", analyze.stdout + analyze.stderr)
