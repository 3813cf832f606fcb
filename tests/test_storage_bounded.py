"""Bounded storage: event-log retention applied by the appliance from its settings, each record stored once,
the low-space alarm, and the recorder on a full disk (one alarm, one log line)."""
from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.appliance.appliance import Appliance
from core.ops.config import render_toml
from core.ops.settings import Settings
from core.sources.frames import Frame
from core.store.eventlog import EventLog
from core.store.export import iter_export
from core.store.procedures import Procedures
from core.store.recorder import ProcedureRecorder
from core.store.space import SpaceMonitor, available_bytes
from core.vocab import NS
from tests.db import db_rows
from tests.waiting import wait_for

DAY_NS = 86_400 * 10**9
MB = 2**20



@pytest.fixture
def tmpfs(tmp_path):
    """A small real filesystem we can fill (needs root to mount; skipped otherwise)."""
    mounts = []

    def mount(size: str) -> Path:
        mnt = tmp_path / f"mnt{len(mounts)}"
        mnt.mkdir()
        try:
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], check=True,
                           capture_output=True, timeout=10)
        except (OSError, subprocess.SubprocessError) as exc:
            pytest.skip(f"cannot mount a tmpfs here ({exc})")
        mounts.append(mnt)
        return mnt

    yield mount
    for mnt in mounts:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_retention_settings_are_shown_by_config_show():
    text = render_toml(Settings.from_sources(None))
    assert "event_retention_days = 365.0  # default" in text
    assert "event_retention_mb = 1024.0  # default" in text
    with pytest.raises(ValueError):
        Settings(event_retention_mb=0)


def test_the_appliance_trims_a_synthetic_year_to_its_limits_at_start_and_keeps_the_open_procedure(tmp_path):
    data = tmp_path / "data"
    now = time.time_ns()
    clock = [now - 400 * DAY_NS]
    log = EventLog(data, wall_clock_ns=lambda: clock[0])
    procs = Procedures(log)
    log.start()
    pad = "v" * 1500
    # 400 days, one procedure a day with a run and a clearance result each: ~8 MB.
    for day in range(400):
        clock[0] = now - (400 - day) * DAY_NS
        procs.start(f"day {day}")
        for k in range(6):
            log.record("sample", {"k": k, "pad": pad})
        log.record_run({"run_id": f"d{day}-1", "contrast": True, "pad": pad}, key=f"run:d{day}")
        log.record_clearance({"run_id": f"d{day}-1", "stations": [pad] * 2}, key=f"clearance:d{day}")
        procs.end()
        if day % 50 == 0:
            assert log.flush(30)
    # The open one started 400 days ago and is still open: neither age nor size may take it.
    clock[0] = now - 400 * DAY_NS
    open_proc = procs.start("still open")
    for k in range(20):
        log.record("sample", {"k": k, "pad": pad})
    assert log.flush(60)
    log.close()
    before = (data / "events.sqlite3").stat().st_size
    assert before > 3 * 2 * MB   # far beyond the 2 MB limit below

    settings = Settings(data_dir=data, event_retention_days=365, event_retention_mb=2, phantom_size=64,
                        auto_procedure=False)
    appliance = Appliance(settings)
    appliance.start()
    try:
        db = appliance.log.db_path
        # Retention runs on the writer thread as soon as the log opens.
        wait_for(lambda: db_rows(db, "SELECT COUNT(*) FROM events WHERE kind = 'retention'")[0][0], 60)
        page_size = db_rows(db, "PRAGMA page_size")[0][0]
        pages, free = db_rows(db, "PRAGMA page_count")[0][0], db_rows(db, "PRAGMA freelist_count")[0][0]
        assert (pages - free) * page_size <= 2 * MB
        assert db.stat().st_size <= 2 * MB + 64 * 1024, "the file did not shrink"
        oldest = db_rows(db, "SELECT MIN(started_wall) FROM procedures WHERE ended_wall IS NOT NULL")[0][0]
        cutoff = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime((now - 365 * DAY_NS) / 1e9))
        assert oldest > cutoff
        assert appliance.procs.current()["id"] == open_proc["id"]
        kept = db_rows(db, "SELECT COUNT(*) FROM events WHERE procedure_id = ? AND kind = 'sample'",
                        (open_proc["id"],))[0][0]
        assert kept == 20
        # Runs and clearance go with their procedure: nothing is left orphaned or dangling.
        assert db_rows(db, "SELECT COUNT(*) FROM runs WHERE procedure_id NOT IN (SELECT id FROM procedures)"
                        )[0][0] == 0
        assert db_rows(db, "SELECT COUNT(*) FROM events e WHERE ref IS NOT NULL AND NOT EXISTS "
                        "(SELECT 1 FROM clearance c WHERE c.n = e.ref) AND kind = 'clearance'")[0][0] == 0
    finally:
        appliance.stop()
    assert before > 3 * (data / "events.sqlite3").stat().st_size


def test_a_clearance_result_is_stored_once_and_read_back_whole(tmp_path):
    log = EventLog(tmp_path / "d")
    log.start()
    result = {"run_id": "s-2", "baseline_run_id": "s-1", "stations": [{"i": i, "w": 1.5} for i in range(1500)]}
    blob_size = len(str(result))
    log.record_clearance(result, key="clearance:s-2:s-1")
    log.record_run({"run_id": "s-2", "contrast": True, "curve": list(range(500))}, key="run:s-2")
    assert log.flush(10)
    stored = db_rows(log.db_path, "SELECT SUM(length(data)) FROM events")[0][0]
    assert stored < 1000 < blob_size, "the event holds a second copy of the record"
    (event,) = [e for e in log.events() if e["kind"] == "clearance"]
    assert event["data"] == result
    (run_event,) = [e for e in log.events() if e["kind"] == "run"]
    assert run_event["data"]["curve"] == list(range(500))
    assert log.clearance_results()[0]["stations"] == result["stations"]
    log.close()
    # The export reads the record back into its event as well.
    exported = [json.loads(line) for line in iter_export(tmp_path / "d", None, "jsonl")]
    assert [e["data"] for e in exported if e["kind"] == "clearance"] == [result]


def test_low_space_alarm_fires_before_the_disk_is_full_and_clears(tmp_path):
    free = [5000 * MB]
    settings = Settings(data_dir=tmp_path / "data", min_free_mb=1024, phantom_size=64, auto_procedure=False)
    appliance = Appliance(settings, free_bytes=lambda path: free[0], space_check_s=0.05)
    with TestClient(create_app(settings, appliance=appliance)) as client:
        def kinds():
            return {a["kind"] for a in client.get("/api/status").json()["alarms"]}
        assert "disk_low" not in kinds()
        free[0] = 900 * MB
        wait_for(lambda: "disk_low" in kinds(), 5)
        (alarm,) = [a for a in client.get("/api/status").json()["alarms"] if a["kind"] == "disk_low"]
        assert "900 MB free" in alarm["message"] and "min_free_mb" in alarm["message"]
        assert client.get("/healthz").status_code == 503
        free[0] = 1030 * MB    # just above the threshold: within the hysteresis, still low
        time.sleep(0.3)        # several storage checks pass: the alarm must not clear in any of them
        assert "disk_low" in kinds()
        free[0] = 4000 * MB
        wait_for(lambda: "disk_low" not in kinds(), 5)
        assert appliance.log.flush(5)
        events = [(e["kind"], e["data"].get("alarm")) for e in appliance.log.events(limit=1000)]
    # Raised once and cleared once, in the log too.
    assert events.count(("alarm", "disk_low")) == 1 and events.count(("alarm_cleared", "disk_low")) == 1


def test_space_monitor_reads_a_real_small_filesystem(tmpfs):
    mnt = tmpfs("8m")
    assert 0 < available_bytes(mnt) <= 8 * MB
    changed, alarm = SpaceMonitor(mnt, 16 * MB).check()
    assert changed and alarm["kind"] == "disk_low"
    assert SpaceMonitor(mnt, 1 * MB).check() == (False, None)


def test_recorder_on_a_full_disk_raises_one_alarm_and_logs_once(tmpfs, caplog):
    mnt = tmpfs("1m")
    rec = ProcedureRecorder(mnt / "rec", retention_bytes=10**9, serial_chunk_bytes=4096,
                            keep_raw=True)   # disk behaviour, not blanking (tests/test_recorder.py)
    caplog.set_level(logging.INFO, logger="cathlab.recorder")
    pixels = np.full((64, 64), 9, np.uint8)    # 4 kB a pulse: the disk fills within the first runs
    t = 0
    for r in range(12):
        rec.run_started(f"r{r}", t, 15.0, "log")
        for i in range(60):
            t += NS // 15
            rec.frame(Frame(pixels, t, i), new_pulse=True)
            rec.serial(b"y" * 200, t)
        rec.run_ended(f"r{r}", t, contrast=True)
        assert rec.drain()
    assert rec.alarm is not None and "No space left on device" in rec.alarm
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert not any(r.exc_info for r in caplog.records), "a traceback was logged"
    stats = rec.stats()
    assert stats["runs_recorded"] < 12 and stats["errors"] > 1   # failures went on, counted, not logged
    assert not list((mnt / "rec").glob("*.part")), "a failed run left its partial file behind"
    assert all(p.stat().st_size > 8 for p in (mnt / "rec").glob("serial-*.bin")), "empty serial chunks left"

    # Space again: the next run records and the alarm clears, with one line.
    for p in sorted((mnt / "rec").glob("run-*")):
        p.unlink()
    rec.run_started("again", t, 15.0, "log")
    for i in range(5):
        t += NS // 15
        rec.frame(Frame(pixels, t, i), new_pulse=True)
    rec.run_ended("again", t, contrast=True)
    assert rec.drain()
    rec.close()
    assert rec.alarm is None
    assert any("recording works again" in r.getMessage() for r in caplog.records)
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1


def test_recorder_pauses_and_resumes(tmp_path):
    rec = ProcedureRecorder(tmp_path, retention_bytes=10**9, keep_raw=True)
    pixels = np.full((16, 16), 3, np.uint8)
    rec.pause("low disk space")
    assert "paused" in rec.alarm
    rec.run_started("p1", 0, 15.0, "log")
    rec.frame(Frame(pixels, 1, 0), new_pulse=True)
    rec.serial(b"abc", 1)
    rec.run_ended("p1", 2, contrast=True)
    rec.resume()
    assert rec.alarm is None
    rec.run_started("p2", 3, 15.0, "log")
    rec.frame(Frame(pixels, 4, 1), new_pulse=True)
    rec.run_ended("p2", 5, contrast=True)
    assert rec.drain()
    rec.close()
    assert [p.name for p in sorted(tmp_path.glob("run-*.npy"))] == ["run-000002-p2.npy"]
    assert rec.stats()["runs_skipped"] == 1 and not list(tmp_path.glob("serial-*"))


def test_a_run_larger_than_the_whole_budget_is_abandoned(tmp_path):
    rec = ProcedureRecorder(tmp_path, retention_bytes=10 * 32 * 32, keep_raw=True)
    rec.run_started("big", 0, 15.0, "log")
    for i in range(20):
        rec.frame(Frame(np.full((32, 32), i, np.uint8), i, i), new_pulse=True)
    rec.run_ended("big", 30, contrast=True)
    assert rec.drain()
    rec.close()
    assert not list(tmp_path.glob("run-*")) and rec.stats()["runs_too_large"] == 1


def test_a_recorder_whose_directory_cannot_be_made_starts_with_its_alarm(tmp_path, caplog):
    (tmp_path / "blocked").write_text("a file where the directory should be")
    rec = ProcedureRecorder(tmp_path / "blocked" / "recordings", retention_bytes=10**6)
    assert rec.alarm is not None and "directory" in rec.alarm
    rec.serial(b"abc", 1)
    rec.run_started("r1", 0, 15.0, "log")
    rec.frame(Frame(np.zeros((8, 8), np.uint8), 1, 0), new_pulse=True)
    rec.run_ended("r1", 2, contrast=True)
    assert rec.drain()
    rec.close()
    assert rec.stats()["runs_recorded"] == 0 and rec.stats()["errors"] >= 2
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1


def test_the_appliance_shows_the_recorders_alarm_and_logs_it_once(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "recordings").write_text("not a directory: every recording write fails")
    settings = Settings(data_dir=data, record=True, phantom_size=64, auto_procedure=False)
    appliance = Appliance(settings, space_check_s=0.05)
    appliance.start()
    try:
        alarm = wait_for(lambda: [a for a in appliance.status()["alarms"] if a["kind"] == "recording"], 5)
        assert "recording failed" in alarm[0]["message"]
        time.sleep(0.3)   # several storage checks pass: the alarm must be logged once, not once per check
        assert appliance.log.flush(5)
        logged = [e for e in appliance.log.events(limit=1000)
                  if e["kind"] == "alarm" and e["data"]["alarm"] == "recording"]
        assert len(logged) == 1
    finally:
        appliance.stop()


def test_a_schema_1_log_is_migrated_and_its_old_copies_still_read(tmp_path):
    from core.store import schema

    data = tmp_path / "d"
    data.mkdir()
    conn = sqlite3.connect(data / "events.sqlite3")
    for statement in schema._statements(schema.MIGRATIONS[0]):
        conn.execute(statement)
    blob, wall = '{"run_id":"r1","v":1}', "2026-01-01T00:00:00.000000Z"
    conn.execute("INSERT INTO clearance (key, run_id, procedure_id, t_mono_ns, t_wall, data) "
                 "VALUES ('c1', 'r1', NULL, 1, ?, ?)", (wall, blob))
    conn.execute("INSERT INTO events (key, procedure_id, t_mono_ns, t_wall, kind, data) "
                 "VALUES ('clearance:c1', NULL, 1, ?, 'clearance', ?)", (wall, blob))   # the old double copy
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    # An export of the old file, before any migration, reads it as it is.
    assert [json.loads(line)["data"] for line in iter_export(data, None, "jsonl")] == [{"run_id": "r1", "v": 1}]
    log = EventLog(data)
    log.start()
    log.record_clearance({"run_id": "r2", "v": 2}, key="c2")
    assert log.flush(5)
    assert [e["data"] for e in log.events() if e["kind"] == "clearance"] == [{"run_id": "r1", "v": 1},
                                                                            {"run_id": "r2", "v": 2}]
    log.close()
    assert db_rows(data / "events.sqlite3", "PRAGMA user_version")[0][0] == schema.SCHEMA_VERSION == 2
