"""Exactly once through the faults, with the real parts: the broker stopped for 20 s during a procedure, the
appliance SIGKILLed and restarted, an ingester killed and restarted. At the end the set of event ids in
PostgreSQL equals the set in the appliance's log, each once (the primary key would refuse a second).
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from tests.fleet_parts import Mosquitto, Postgres, have_parts
from tests.test_fleet import USERS, wait_for

pytestmark = pytest.mark.skipif(have_parts() is not None, reason=have_parts() or "")

ROOT = Path(__file__).resolve().parents[1]


def _pw(tmp_path: Path, user: str) -> Path:
    path = tmp_path / f"{user}.pw"
    path.write_text(USERS[user] + "\n")
    return path


def _spawn(argv: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *argv], cwd=ROOT, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            _kill(proc)


def _log_ids(db: Path) -> set[int]:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return {r[0] for r in conn.execute("SELECT id FROM events")}
    finally:
        conn.close()


def _pg_ids(dsn: str, aid: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        try:
            return [r[0] for r in conn.execute("SELECT event_id FROM cathlab_events WHERE appliance_id = %s",
                                               (aid,))]
        except psycopg.errors.UndefinedTable:
            return []


def test_broker_outage_appliance_sigkill_and_ingester_restart_lose_and_double_nothing(tmp_path):
    pg = Postgres()
    broker = Mosquitto(USERS)
    procs: list[subprocess.Popen] = []
    try:
        pg.start()
        broker.start()
        dsn = pg.new_db()
        ingest_argv = ["-m", "api.cli", "fleet-ingest", "--broker", broker.url, "--username", "ingest",
                       "--password-file", str(_pw(tmp_path, "ingest")), "--ca-file", str(broker.ca_file),
                       "--db", dsn, "--group", "g", "--client-id", "ingest-a"]
        ingester = _spawn(ingest_argv, tmp_path / "ingest.log")
        procs.append(ingester)
        data = tmp_path / "box1"
        stop_file = tmp_path / "stop"
        app_argv = ["-m", "tests.fleet_appliance", str(data), broker.url, "box1", str(_pw(tmp_path, "box1")),
                    str(broker.ca_file), "box1", "--rate", "100", "--stop-file", str(stop_file)]
        wait_for(lambda: _pg_ids(dsn, "box1") == [] and _has_table(dsn), 20, "the ingester's schema")
        app = _spawn(app_argv, tmp_path / "app.log")
        procs.append(app)
        wait_for(lambda: len(_pg_ids(dsn, "box1")) > 100, 20, "the first events in PostgreSQL")

        broker.stop()                      # a 20 s outage while events keep coming
        time.sleep(20)
        broker.start()
        wait_for(lambda: len(_pg_ids(dsn, "box1")) > 2500, 30, "the catch-up after the outage")

        _kill(app)                         # power cut of the appliance, mid-stream
        app = _spawn(app_argv, tmp_path / "app.log")
        procs.append(app)
        time.sleep(2)

        _kill(ingester)                    # the ingester dies with messages unacknowledged
        time.sleep(2)
        ingester = _spawn(ingest_argv, tmp_path / "ingest.log")
        procs.append(ingester)
        time.sleep(2)

        stop_file.touch()                  # the procedure ends; everything must arrive
        time.sleep(0.5)
        expected = _log_ids(data / "events.sqlite3")
        wait_for(lambda: set(_pg_ids(dsn, "box1")) >= _log_ids(data / "events.sqlite3"), 40,
                 "every event of the log in PostgreSQL")
        _stop(app)
        expected = _log_ids(data / "events.sqlite3")
        wait_for(lambda: set(_pg_ids(dsn, "box1")) == expected, 20, "the appliance_stop event")
        got = _pg_ids(dsn, "box1")
        assert len(got) == len(set(got)) == len(expected)
        assert set(got) == expected
        assert len(expected) > 3000
    finally:
        for proc in procs:
            _stop(proc)
        broker.close()
        pg.close()
        for name in ("app.log", "ingest.log"):
            if (tmp_path / name).exists():
                print(name, (tmp_path / name).read_text()[-3000:])


def _has_table(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT to_regclass('cathlab_events') IS NOT NULL").fetchone()[0]
