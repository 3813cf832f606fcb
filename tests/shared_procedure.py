"""One pass of the scripted procedure through the live appliance, observed once for several tests: the
appliance on its simulators behind a real uvicorn on a socket, six HTTP clients asking for images during the
second half (from the first clearance result to the completion run). The procedure takes ~45 s of real time;
tests that need it share this one pass (the ``procedure_under_load`` fixture in conftest.py) instead of each
waiting through their own."""
from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn

from api.app import create_app
from core.ops.settings import Settings
from tests.waiting import wait_for

PNG = b"\x89PNG\r\n\x1a\n"
CLIENTS = 6


@dataclass
class ProcedureUnderLoad:
    """What the tests assert on."""
    status: dict                                  # /api/status once the completion run's clearance is in
    delays: dict[str, float]                      # run id -> s from X-ray off to its record, runs ended under load
    answers: list[tuple[int, float]] = field(default_factory=list)   # (HTTP status, s) of every image request
    refused: list[tuple[str, int, bytes]] = field(default_factory=list)   # (path, status, body head) not a PNG
    clearance_pngs: tuple[bytes | None, bytes | None] = (None, None)     # two calls for the same result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 15.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def status_when(predicate, url: str, seconds: float) -> dict:
    """The first /api/status of the appliance at ``url`` that satisfies ``predicate`` within ``seconds``."""
    last = {}

    def poll():
        try:
            code, body = get(url + "/api/status", timeout=2.0)
        except OSError:
            return None
        last["status"] = status = json.loads(body) if code == 200 else None
        return status if status is not None and predicate(status) else None
    return wait_for(poll, seconds, interval=0.2, explain=lambda: f"last status: {json.dumps(last.get('status'))}")


def observe_procedure_under_load(data_dir: Path) -> ProcedureUnderLoad:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    app = create_app(Settings(data_dir=data_dir, phantom_size=256))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 20)
        appliance = app.state.appliance
        # The procedure's second contrast run gives the first clearance result (about 30 s in).
        status_when(lambda s: s["clearance"] is not None, url, 60)
        recorded_before = {r["run_id"] for r in appliance.runs(limit=1000)}
        observed = ProcedureUnderLoad(status={}, delays={})
        stop = threading.Event()

        def client(k: int) -> None:
            while not stop.is_set():
                runs = [r["run_id"] for r in appliance.runs(limit=20) if r.get("contrast")]
                path = "/api/clearance/latest.png" if k % 2 == 0 or not runs else f"/api/runs/{runs[-1]}/image.png"
                t = time.monotonic()
                status, body = get(url + path)
                observed.answers.append((status, time.monotonic() - t))
                if status != 200 or body[:8] != PNG:
                    observed.refused.append((path, status, body[:200]))

        def new_runs() -> set[str]:
            return {r["run_id"] for r in appliance.runs(limit=1000)} - recorded_before

        clients = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(CLIENTS)]
        for c in clients:
            c.start()
        try:
            # Two more runs end under load (fluoroscopy at 33-35 s, completion at 38-44 s of the procedure).
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
        observed.delays = {run_id: (recorded[run_id] - off[run_id]) / 1e9 for run_id in ended}
        observed.clearance_pngs = (appliance.clearance_png(), appliance.clearance_png())
        # The completion run (the procedure's last) is measured against the baseline.
        observed.status = status_when(lambda s: (s.get("clearance") or {}).get("run_id", "").endswith("-5"), url, 30)
        return observed
    finally:
        server.should_exit = True
        thread.join(10)
