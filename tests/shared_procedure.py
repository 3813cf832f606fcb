"""One pass of the scripted procedure through the appliance as users get it, observed once for several tests.

``cathlab-edge run`` (``python -m api.cli run``) in a subprocess on its built-in simulators, the phantom at
its default 512x512 30 fps, seen through HTTP only: the short soak's 20 status clients and /proc sampling for one
procedure period (benchmarks/bench_soak.py), and six image clients during the second half (from the first
clearance result to the completion run). The procedure takes ~45 s of real time; the tests that need it share this
one pass (the ``procedure_pass`` fixture in conftest.py) instead of each waiting through their own.

The injector is the built-in simulator, not the soak benchmark's 50 Hz pty: the end-to-end test matches each run's
injection (volume, delay) against the scripted procedure, which only the simulator playing the phantom's timeline
from the same origin gives; a pty line would carry other injections. SAMPLE at 50 Hz still reaches the link
during each injection, and that is checked.
"""
from __future__ import annotations

import http.client
import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.bench_soak import SoakResult, run_soak
from tests.waiting import wait_for

PNG = b"\x89PNG\r\n\x1a\n"
CLIENTS = 6
# The phantom's default size, as users get it: at 1024 a cold start on a busy machine came up ~1 s into the
# procedure's first run, which the end-to-end test times from its first frame.
SIZE = 512
# One period of the phantom's procedure (firmware_bridge.scenarios.PROCEDURE_PERIOD_S); + ~10 s start and stop.
DURATION_S = float(os.environ.get("CATHLAB_SOAK_SHORT_S", "50"))
WARMUP_S = 15.0


@dataclass
class ProcedureUnderLoad:
    """What the procedure tests assert on, all read through the HTTP API."""
    status: dict = field(default_factory=dict)    # /api/status once the completion run's clearance is in
    delays: dict[str, float] = field(default_factory=dict)   # run id -> s from X-ray off to its record (under load)
    answers: list[tuple[int, float]] = field(default_factory=list)   # (HTTP status, s) of every image request
    refused: list[tuple[str, int, bytes]] = field(default_factory=list)   # (path, status, body head) not a PNG
    clearance_pngs: tuple[bytes | None, bytes | None] = (None, None)     # two calls for the same result
    sample_counts: list[tuple[float, int]] = field(default_factory=list)  # (monotonic s, SAMPLE packets so far)


@dataclass
class ProcedurePass:
    soak: SoakResult
    procedure: ProcedureUnderLoad | None
    error: BaseException | None                   # why the procedure could not be observed

    def observed(self) -> ProcedureUnderLoad:
        if self.error is not None:
            raise self.error
        assert self.procedure is not None, "the appliance stopped before the procedure was observed: " + \
            self.soak.stderr_tail
        return self.procedure


def get(url: str, timeout: float = 15.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Client:
    """One keep-alive connection, as a browser tab holds: the appliance's open files follow the clients."""

    def __init__(self, url: str) -> None:
        self._netloc = urllib.parse.urlsplit(url).netloc
        self._conn = http.client.HTTPConnection(self._netloc, timeout=15)

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            self._conn.request("GET", path)
            resp = self._conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException):
            self._conn.close()
            self._conn = http.client.HTTPConnection(self._netloc, timeout=15)
            raise

    def close(self) -> None:
        self._conn.close()


def get_json(url: str) -> dict:
    code, body = get(url)
    assert code == 200, (url, code, body[:200])
    return json.loads(body)


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


def _events(url: str) -> list[dict]:
    """Every committed event, page by page."""
    out, after = [], 0
    while True:
        page = get_json(f"{url}/api/events?after={after}&limit=1000")
        out += page["events"]
        if not page["events"]:
            return out
        after = page["next"]


def observe_procedure(url: str) -> ProcedureUnderLoad:
    observed = ProcedureUnderLoad()
    stop = threading.Event()

    def count_samples() -> None:
        # The injector's SAMPLE packets as the link counts them, 10 times a second: 50 Hz during each injection.
        conn = Client(url)
        while not stop.wait(0.1):
            try:
                code, body = conn.get("/api/status")
            except (OSError, http.client.HTTPException):
                continue
            if code == 200:
                by_type = json.loads(body)["counters"]["serial"].get("packets_by_type", {})
                observed.sample_counts.append((time.monotonic(), int(by_type.get("SAMPLE", 0))))
        conn.close()

    def runs(limit: int) -> list[dict]:
        return get_json(f"{url}/api/runs?limit={limit}")["runs"]

    sampler = threading.Thread(target=count_samples, daemon=True)
    sampler.start()
    try:
        # The procedure's second contrast run gives the first clearance result (about 30 s in).
        status_when(lambda s: s["clearance"] is not None, url, 60)
        recorded_before = {r["run_id"] for r in runs(1000)}
        loaded = threading.Event()

        def client(k: int) -> None:
            conn = Client(url)
            while not loaded.is_set():
                listed = json.loads(conn.get("/api/runs?limit=20")[1])["runs"]
                contrast = [r["run_id"] for r in listed if r.get("contrast")]
                path = "/api/clearance/latest.png" if k % 2 == 0 or not contrast else \
                    f"/api/runs/{contrast[-1]}/image.png"
                t = time.monotonic()
                status, body = conn.get(path)
                observed.answers.append((status, time.monotonic() - t))
                if status != 200 or body[:8] != PNG:
                    observed.refused.append((path, status, body[:200]))
            conn.close()

        def new_runs() -> set[str]:
            return {r["run_id"] for r in runs(1000)} - recorded_before

        clients = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(CLIENTS)]
        for c in clients:
            c.start()
        try:
            # Two more runs end under load (fluoroscopy at 33-35 s, completion at 38-44 s of the procedure).
            wait_for(lambda: len(new_runs()) >= 2, 45, interval=0.5, explain=lambda: "runs stopped being recorded")
        finally:
            loaded.set()
            for c in clients:
                c.join(20)
        ended = new_runs()

        def recorded_and_off() -> tuple[dict, dict] | None:
            events = _events(url)
            off = {e["data"]["run_id"]: e["t_mono_ns"] for e in events if e["kind"] == "xray_off"}
            recorded = {e["data"]["run_id"]: e["t_mono_ns"] for e in events if e["kind"] == "run"
                        and e["data"].get("run_id") in ended}
            return (recorded, off) if set(recorded) == ended <= set(off) else None

        recorded, off = wait_for(recorded_and_off, 5)    # the log's writer commits in batches
        observed.delays = {run_id: (recorded[run_id] - off[run_id]) / 1e9 for run_id in ended}
        # The completion run (the procedure's last) is measured against the baseline; no other result comes
        # before the next period's second contrast run, so two calls now ask for the same result.
        observed.status = status_when(lambda s: (s.get("clearance") or {}).get("run_id", "").endswith("-5"), url, 30)
        observed.clearance_pngs = (get(url + "/api/clearance/latest.png")[1],
                                   get(url + "/api/clearance/latest.png")[1])
        return observed
    finally:
        stop.set()
        sampler.join(5)


def run_procedure_pass(data_dir: Path) -> ProcedurePass:
    soak = run_soak(DURATION_S, data_dir, size=SIZE, warmup_s=WARMUP_S, sample_every_s=5.0, telemetry=False,
                    watch=observe_procedure)
    return ProcedurePass(soak, soak.extra.get("watch"), soak.extra.get("watch_error"))
