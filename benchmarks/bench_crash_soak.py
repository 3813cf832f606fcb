"""Crash soak: SIGKILL the running appliance at random moments while API writes are in flight, many times over.

Each cycle starts the real ``python -m api.cli run`` on its simulators (phantom and injector), sends writes with
the API token from two client threads (patient values, each a unique weight, and run labels), and SIGKILLs the
process at a random moment 0.5-3 s after its first acknowledged write, with requests still in flight. Then it
opens the database with plain sqlite3 and checks that every write the API acknowledged (a 2xx) is in the event
log and that ``PRAGMA integrity_check`` says ok; the next cycle restarts on the same data directory, so each
start also resumes the open procedure from a database killed mid-write.

    CATHLAB_CRASH_CYCLES=1000 nice -n 10 .venv/bin/python -m benchmarks.bench_crash_soak --out soak.jsonl
    CATHLAB_CRASH_CYCLES=20 .venv/bin/python -m pytest benchmarks/bench_crash_soak.py --benchmark-only -s

Default 20 cycles (a few seconds each). ``--out`` appends one JSON line per cycle, so a long run can be watched
and its figures survive an interruption; ``--data-dir`` continues on an existing data directory (the checks
then cover the writes acknowledged in this run). Results: docs/performance.md.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.vocab import RUN_LABELS

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 90.0
WRITE_PAUSE_S = 0.01    # per writer thread: ~100 writes/s each, so 1,000 cycles keep the database checkable
WEIGHT_BASE, WEIGHT_STEP, WEIGHT_SLOTS = 10.0, 0.001, 330_000   # unique weights within the API's 2-350 kg


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Acks:
    """Writes the API acknowledged (2xx), shared by the writer threads of one cycle."""
    weights: list[float] = field(default_factory=list)
    labels: list[tuple[str, str]] = field(default_factory=list)
    refused: int = 0            # non-2xx answers (503 while starting, 404 before a run exists, ...)
    failed: int = 0             # no answer: the kill cut the connection (never acknowledged)
    first_ack: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ack(self, kind: str, value) -> None:
        with self.lock:
            (self.weights if kind == "weight" else self.labels).append(value)
        self.first_ack.set()


class Client:
    def __init__(self, port: int, token: str | None = None) -> None:
        self.port, self.token = port, token
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 5.0):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            self.conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
            response = self.conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = None
            raise
        return response.status, (json.loads(data) if data else None)


def _patient_writer(port: int, token: str, acks: Acks, stop: threading.Event, counter: list[int]) -> None:
    client = Client(port, token)
    while not stop.is_set():
        with acks.lock:
            n = counter[0]
            counter[0] += 1
        weight = round(WEIGHT_BASE + (n % WEIGHT_SLOTS) * WEIGHT_STEP, 3)
        try:
            status, body = client.request("PUT", "/api/procedures/current/patient",
                                          {"weight_kg": weight, "creatinine_mg_dl": 1.0})
            if status == 404:   # no procedure open yet (the first cycle): open one
                client.request("POST", "/api/procedures", {"label": "crash soak"})
                continue
        except (OSError, http.client.HTTPException, ValueError):
            acks.failed += 1
            time.sleep(0.02)
            continue
        if 200 <= status < 300:
            acks.ack("weight", weight)
            time.sleep(WRITE_PAUSE_S)
        else:
            acks.refused += 1
            time.sleep(0.05)


def _label_writer(port: int, token: str, acks: Acks, stop: threading.Event, rng: random.Random) -> None:
    client = Client(port, token)
    run_ids: list[str] = []
    while not stop.is_set():
        try:
            if not run_ids or rng.random() < 0.05:
                status, body = client.request("GET", "/api/runs?limit=20")
                run_ids = [r["run_id"] for r in body["runs"]] if status == 200 else []
                if not run_ids:
                    time.sleep(0.2)
                    continue
            run_id, label = rng.choice(run_ids), rng.choice(RUN_LABELS)
            status, _ = client.request("PUT", f"/api/runs/{run_id}/label", {"label": label})
        except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError):
            acks.failed += 1
            time.sleep(0.02)
            continue
        if 200 <= status < 300:
            acks.ack("label", (run_id, label))
            time.sleep(10 * WRITE_PAUSE_S)   # a label re-records the whole run (tens of kB)
        else:
            acks.refused += 1
            time.sleep(0.05)


def _wait_up(proc: subprocess.Popen, port: int, deadline: float) -> bool:
    client = Client(port)
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            status, _ = client.request("GET", "/api/status", timeout=2.0)
            if status == 200:
                return True
        except (OSError, http.client.HTTPException, ValueError):
            pass
        time.sleep(0.05)
    return False


def _wait_for_run(port: int, deadline: float) -> None:
    client = Client(port)
    while time.monotonic() < deadline:
        try:
            status, body = client.request("GET", "/api/runs?limit=1")
            if status == 200 and body["runs"]:
                return
        except (OSError, http.client.HTTPException, ValueError):
            pass
        time.sleep(0.2)


def check_database(db: Path, weights: set[float], labels: set[tuple[str, str]]) -> dict:
    """Which acknowledged writes the database lacks, and its integrity, read with plain sqlite3."""
    conn = sqlite3.connect(db)
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchall()
        stored_weights = set()
        for (data,) in conn.execute("SELECT data FROM events WHERE kind = 'procedure_fields'"):
            w = json.loads(data).get("weight_kg")
            if w is not None:
                stored_weights.add(round(w, 3))
        stored_labels = set()
        for (data,) in conn.execute("SELECT data FROM events WHERE kind = 'run_label'"):
            d = json.loads(data)
            stored_labels.add((d["run_id"], d["label"]))
        open_procedures = conn.execute("SELECT COUNT(*) FROM procedures WHERE ended_wall IS NULL").fetchone()[0]
    finally:
        conn.close()
    return {"integrity_ok": integrity == [("ok",)], "integrity": [r[0] for r in integrity[:5]],
            "lost_weights": sorted(weights - stored_weights), "lost_labels": sorted(labels - stored_labels),
            "open_procedures": open_procedures}


def run_crash_soak(cycles: int, data_dir: Path, *, seed: int = 19, out: Path | None = None,
                   verbose: bool = False) -> dict:
    rng = random.Random(seed)
    data_dir.mkdir(parents=True, exist_ok=True)
    db = data_dir / "events.sqlite3"
    env = dict(os.environ, CATHLAB_PHANTOM_SIZE="128", CATHLAB_LOG_FORMAT="text", PYTHONUNBUFFERED="1")
    all_weights: set[float] = set()
    all_labels: set[tuple[str, str]] = set()
    counter = [int(time.time()) % WEIGHT_SLOTS]     # a continued run does not reuse the last run's weights
    report = {"cycles": 0, "acknowledged": 0, "acknowledged_weights": 0, "acknowledged_labels": 0, "lost": 0,
              "integrity_failures": 0, "refused": 0, "cut_by_kill": 0, "tracebacks": 0, "start_failures": 0,
              "start_s_max": 0.0, "cycle_s_mean": 0.0, "multiple_open_procedures": 0}
    t_total = time.monotonic()
    stderr_path = Path(tempfile.mkstemp(prefix="crash-soak-", suffix=".stderr")[1])
    try:
        for cycle in range(cycles):
            t_cycle = time.monotonic()
            port = free_port()
            with open(stderr_path, "wb") as err:
                proc = subprocess.Popen([sys.executable, "-m", "api.cli", "--log-level", "warning", "run",
                                         "--port", str(port), "--data-dir", str(data_dir)],
                                        stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=ROOT)
            acks, stop = Acks(), threading.Event()
            threads: list[threading.Thread] = []
            up = _wait_up(proc, port, time.monotonic() + START_TIMEOUT_S)
            start_s = time.monotonic() - t_cycle
            if up:
                token = (data_dir / "api-token").read_text().strip()
                threads = [threading.Thread(target=_patient_writer, args=(port, token, acks, stop, counter)),
                           threading.Thread(target=_label_writer,
                                            args=(port, token, acks, stop, random.Random(rng.random())))]
                for t in threads:
                    t.start()
                acks.first_ack.wait(30)
                if cycle == 0:
                    # The simulated procedure's first run ends ~10 s in; later cycles label the runs logged.
                    _wait_for_run(port, time.monotonic() + 60)
                time.sleep(rng.uniform(0.5, 3.0))   # a random moment with writes in flight
            else:
                report["start_failures"] += 1
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            stop.set()
            for t in threads:
                t.join(10)
            stderr = stderr_path.read_text(errors="replace")
            tracebacks = stderr.count("Traceback")
            all_weights |= set(acks.weights)
            all_labels |= set(acks.labels)
            result = check_database(db, all_weights, all_labels) if db.exists() else {
                "integrity_ok": True, "integrity": [], "lost_weights": sorted(all_weights),
                "lost_labels": sorted(all_labels), "open_procedures": 0}
            lost = len(result["lost_weights"]) + len(result["lost_labels"])
            report["cycles"] += 1
            report["acknowledged"] += len(acks.weights) + len(acks.labels)
            report["acknowledged_weights"] += len(acks.weights)
            report["acknowledged_labels"] += len(acks.labels)
            report["lost"] = lost          # cumulative: every acknowledged write so far is checked each cycle
            report["integrity_failures"] += not result["integrity_ok"]
            report["refused"] += acks.refused
            report["cut_by_kill"] += acks.failed
            report["tracebacks"] += tracebacks
            report["multiple_open_procedures"] += result["open_procedures"] > 1
            report["start_s_max"] = max(report["start_s_max"], round(start_s, 2))
            line = {"cycle": cycle, "start_s": round(start_s, 2), "cycle_s": round(time.monotonic() - t_cycle, 2),
                    "acked": len(acks.weights) + len(acks.labels), "refused": acks.refused, "cut": acks.failed,
                    "lost": lost, "integrity_ok": result["integrity_ok"], "tracebacks": tracebacks}
            if not up or lost or not result["integrity_ok"] or tracebacks:
                line["stderr_tail"] = stderr[-3000:]
                line["lost_sample"] = (result["lost_weights"][:5], result["lost_labels"][:5])
            if out is not None:
                with open(out, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(line) + "\n")
            if verbose:
                print(json.dumps({k: v for k, v in line.items() if k != "stderr_tail"}), flush=True)
    finally:
        stderr_path.unlink(missing_ok=True)
    report["total_s"] = round(time.monotonic() - t_total, 1)
    report["cycle_s_mean"] = round(report["total_s"] / max(1, report["cycles"]), 2)
    report["db_bytes"] = db.stat().st_size if db.exists() else 0
    return report


def test_crash_soak(benchmark, tmp_path):
    cycles = int(os.environ.get("CATHLAB_CRASH_CYCLES", "20"))
    report = benchmark.pedantic(run_crash_soak, args=(cycles, tmp_path / "data"), rounds=1, iterations=1)
    benchmark.extra_info.update(report)
    print(json.dumps(report, indent=1))
    assert report["lost"] == 0, report
    assert report["integrity_failures"] == 0, report
    assert report["start_failures"] == 0 and report["tracebacks"] == 0, report
    assert report["acknowledged"] >= cycles, "too few writes acknowledged to prove anything"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=int(os.environ.get("CATHLAB_CRASH_CYCLES", "20")))
    parser.add_argument("--data-dir", type=Path, help="default: a new temporary directory")
    parser.add_argument("--out", type=Path, help="append one JSON line per cycle here")
    parser.add_argument("--seed", type=int, default=19)
    args = parser.parse_args(argv)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="crash-soak-")) / "data"
    report = run_crash_soak(args.cycles, data_dir, seed=args.seed, out=args.out, verbose=True)
    print(json.dumps(report, indent=1))
    ok = report["lost"] == 0 and report["integrity_failures"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
