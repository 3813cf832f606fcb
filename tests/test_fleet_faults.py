"""Exactly once through the faults, with the real parts: the broker stopped for 20 s during a procedure, the
appliances SIGKILLed and restarted, an ingester killed and restarted. At the end the set of event ids in
PostgreSQL equals the set in each appliance's log, each once (the primary key would refuse a second).

Two appliances: box1 is the log and publisher alone recording 100 events/s (tests/fleet_appliance.py), box2 is
the real ``cathlab-edge run`` (no video, the injector simulator's procedure) configured through CATHLAB_*.
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

from tests.fleet_parts import Mosquitto, Postgres, free_port, have_parts
from tests.test_fleet import USERS, wait_for

pytestmark = pytest.mark.skipif(have_parts() is not None, reason=have_parts() or "")

ROOT = Path(__file__).resolve().parents[1]


def _pw(tmp_path: Path, user: str) -> Path:
    path = tmp_path / f"{user}.pw"
    path.write_text(USERS[user] + "\n")
    return path


def _spawn(argv: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *argv], cwd=ROOT, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


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
        box2_env = {"CATHLAB_FLEET_BROKER": broker.url, "CATHLAB_FLEET_USERNAME": "box2",
                    "CATHLAB_FLEET_PASSWORD_FILE": str(_pw(tmp_path, "box2")),
                    "CATHLAB_FLEET_CA_FILE": str(broker.ca_file), "CATHLAB_APPLIANCE_ID": "box2",
                    "CATHLAB_SITE": "test", "CATHLAB_ROOM": "r2", "CATHLAB_LOG_LEVEL": "warning"}
        box2_argv = ["-m", "api.cli", "run", "--port", str(free_port()), "--data-dir", str(tmp_path / "box2"),
                     "--video", "none"]
        box2 = _spawn(box2_argv, tmp_path / "box2.log", box2_env)
        procs.append(box2)
        wait_for(lambda: len(_pg_ids(dsn, "box1")) > 100 and len(_pg_ids(dsn, "box2")) > 0, 30,
                 "the first events in PostgreSQL")

        broker.stop()                      # a 20 s outage while events keep coming
        time.sleep(20)
        broker.start()
        wait_for(lambda: len(_pg_ids(dsn, "box1")) > 2500, 30, "the catch-up after the outage")

        _kill(app)                         # power cut of the appliances, mid-stream
        _kill(box2)
        wait_for(lambda: _online(dsn, "box1") is False and _online(dsn, "box2") is False, 15,
                 "the last wills marking both boxes offline", lambda: (_online(dsn, "box1"), _online(dsn, "box2")))
        app = _spawn(app_argv, tmp_path / "app.log")
        procs.append(app)
        box2 = _spawn(box2_argv, tmp_path / "box2.log", box2_env)
        procs.append(box2)
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
        _stop(box2)                        # a clean stop forwards its last events (appliance_stop) first
        expected2 = _log_ids(tmp_path / "box2" / "events.sqlite3")
        wait_for(lambda: set(_pg_ids(dsn, "box2")) == expected2, 20, "every event of box2 in PostgreSQL")
        got2 = _pg_ids(dsn, "box2")
        assert len(got2) == len(set(got2)) == len(expected2)
        with psycopg.connect(dsn) as conn:   # two starts, the stop: the SIGKILLed run left no stop of its own
            kinds = [r[0] for r in conn.execute("SELECT kind FROM cathlab_events WHERE appliance_id = 'box2' AND "
                                                "kind LIKE 'appliance_%' ORDER BY event_id")]
        assert kinds == ["appliance_start", "appliance_start", "appliance_stop"]
    finally:
        for proc in procs:
            _stop(proc)
        broker.close()
        pg.close()
        for name in ("app.log", "ingest.log", "box2.log"):
            if (tmp_path / name).exists():
                print(name, (tmp_path / name).read_text()[-3000:])


def _online(dsn: str, aid: str) -> bool | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT online FROM cathlab_appliances WHERE appliance_id = %s", (aid,)).fetchone()
    return None if row is None else row[0]


def _has_table(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT to_regclass('cathlab_events') IS NOT NULL").fetchone()[0]
