"""Event log under disk faults: full disk (page cap and a real full tmpfs), read-only, corrupt, locked, newer.

Each fault must raise an alarm, leave record()/reads/stats working, hold events in a bounded queue, and write
them once the fault is gone.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from core.store.eventlog import EventLog
from tests.waiting import wait_for

PAD = "x" * 2000   # big events fill pages quickly


def alarm_kinds(log: EventLog) -> set[str]:
    return {a["kind"] for a in log.alarms}


def keys_in(db: Path, prefix: str) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [k for (k,) in conn.execute("SELECT key FROM events WHERE key LIKE ? ORDER BY id", (prefix + "%",))]
    finally:
        conn.close()


def page_count(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("PRAGMA page_count").fetchone()[0]
    finally:
        conn.close()


@pytest.fixture
def tmpfs(tmp_path):
    """A small tmpfs we can fill, remount read-only and grow again (needs root; skipped otherwise)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], check=True,
                       capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here ({exc}); the max_page_count test covers the full disk")

    def remount(opts: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{opts}", str(mnt)], check=True, capture_output=True, timeout=10)

    yield mnt, remount
    for _ in range(50):
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode == 0:
            break
        time.sleep(0.1)
    else:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_disk_by_page_cap_alarms_within_a_second_and_writes_when_space_returns(tmp_path):
    log = EventLog(tmp_path / "d", retry_max_s=0.1)
    log.start()
    log.record("boot", {})
    assert log.flush(5)
    log.set_max_page_count(page_count(log.db_path) + 4)
    t0 = time.monotonic()
    for i in range(200):
        log.record("sample", {"i": i, "pad": PAD}, key=f"s{i}")
    wait_for(lambda: "disk_full" in alarm_kinds(log), 1.0, interval=0.01, explain=lambda: "no disk_full alarm")
    assert time.monotonic() - t0 < 1.5
    assert "disk full" in log.alarms[0]["message"]
    # Still serving: reads, stats, and record() accepting more.
    assert log.events()[0]["kind"] == "boot"
    stats = log.stats()
    assert stats["pending"] > 0 and stats["writable"] is False
    log.record("after", {}, key="after")
    assert log.flush(0.3) is False

    log.set_max_page_count(None)   # space returns
    assert log.flush(10)
    assert keys_in(log.db_path, "s") == [f"s{i}" for i in range(200)]
    assert keys_in(log.db_path, "after") == ["after"]
    assert log.alarms == []
    kinds = [e["kind"] for e in log.events(0, 1000)]
    assert "alarm" in kinds and "alarm_cleared" in kinds   # the outage is in the log itself
    log.close()


def test_queue_is_bounded_and_overflow_is_counted(tmp_path):
    log = EventLog(tmp_path / "d", queue_max=50, retry_max_s=0.1)
    log.start()
    log.record("boot", {})
    assert log.flush(5)
    log.set_max_page_count(page_count(log.db_path))
    for i in range(300):
        log.record("sample", {"i": i, "pad": PAD}, key=f"s{i}")
    wait_for(lambda: "disk_full" in alarm_kinds(log), 1.0, interval=0.01)
    stats = log.stats()
    assert stats["pending"] <= 50 and "queue_overflow" in alarm_kinds(log)
    dropped = stats["dropped"]
    assert dropped >= 250
    log.set_max_page_count(None)
    assert log.flush(10)
    written = keys_in(log.db_path, "s")
    assert len(written) + dropped == 300 and len(set(written)) == len(written)
    assert written == [f"s{i}" for i in range(len(written))]   # the oldest were kept, the newest dropped
    assert log.alarms == [] and log.stats()["dropped"] == dropped
    log.close()


def test_full_tmpfs(tmpfs):
    mnt, remount = tmpfs
    log = EventLog(mnt, retry_max_s=0.1)
    log.start()
    n = 0
    while "disk_full" not in alarm_kinds(log) and n < 3000:
        for _ in range(50):
            log.record("sample", {"i": n, "pad": PAD}, key=f"s{n}")
            n += 1
        time.sleep(0.02)
    wait_for(lambda: "disk_full" in alarm_kinds(log), 1.0, interval=0.01,
             explain=lambda: "a full tmpfs raised no alarm")
    assert log.stats()["pending"] > 0
    assert log.events(0, 1)   # still reading committed events
    remount("size=16m")
    assert log.flush(10)
    assert keys_in(mnt / "events.sqlite3", "s") == [f"s{i}" for i in range(n)]
    assert log.alarms == []
    log.close()
    conn = sqlite3.connect(mnt / "events.sqlite3")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_read_only_database_alarms_and_recovers(tmp_path, request):
    if os.geteuid() == 0:
        # root ignores file modes; a read-only mount is the real thing.
        mnt, remount = request.getfixturevalue("tmpfs")
        data = mnt
        make_ro, make_rw = (lambda: remount("ro")), (lambda: remount("rw"))
    else:
        data = tmp_path / "d"
        make_ro = lambda: [os.chmod(p, 0o555 if p.is_dir() else 0o444) for p in [*data.iterdir(), data]]
        make_rw = lambda: [os.chmod(p, 0o755 if p.is_dir() else 0o644) for p in [data, *data.iterdir()]]
    log = EventLog(data)
    log.start()
    log.record("before", {}, key="before")
    log.close()
    make_ro()
    log = EventLog(data, retry_max_s=0.1)
    log.start()                      # must not raise
    assert alarm_kinds(log) == {"db_readonly"}
    assert "cannot be written" in log.alarms[0]["message"] and str(data) in log.alarms[0]["message"]
    assert [e["kind"] for e in log.events()] == ["before"]   # what it holds is still served
    log.record("during", {}, key="ro-during")
    assert log.stats()["pending"] == 1
    make_rw()
    assert log.flush(10)
    assert keys_in(data / "events.sqlite3", "ro-") == ["ro-during"]
    assert log.alarms == []
    log.close()


def test_corrupt_file_alarms_once_without_a_crash_loop_and_recovers_when_moved_aside(tmp_path, caplog):
    data = tmp_path / "d"
    data.mkdir()
    (data / "events.sqlite3").write_bytes(b"this is not an sqlite database\n" * 200)
    caplog.set_level(logging.ERROR, logger="cathlab.eventlog")
    log = EventLog(data, retry_max_s=0.05)
    log.start()
    assert alarm_kinds(log) == {"db_corrupt"}
    assert "Move the file aside" in log.alarms[0]["message"]
    log.record("held", {}, key="held")
    time.sleep(1.2)                  # several retries (what is under test: one log line for all of them)
    assert alarm_kinds(log) == {"db_corrupt"} and log.stats()["pending"] == 1
    assert sum("db_corrupt" in r.getMessage() for r in caplog.records) == 1   # logged once, not per retry
    os.rename(data / "events.sqlite3", data / "events.sqlite3.corrupt")
    assert log.flush(10)
    assert keys_in(log.db_path, "held") == ["held"] and log.alarms == []
    log.close()


def test_damaged_page_inside_a_valid_file_is_found_at_open(tmp_path):
    data = tmp_path / "d"
    log = EventLog(data)
    log.start()
    for i in range(2000):
        log.record("sample", {"i": i, "pad": PAD[:200]})
    log.close()
    db = data / "events.sqlite3"
    size = db.stat().st_size
    assert size > 40 * 4096
    with open(db, "r+b") as f:       # scribble over pages in the middle, keep the header intact
        f.seek(20 * 4096)
        f.write(os.urandom(8 * 4096))
    log = EventLog(data, retry_max_s=0.05)
    log.start()
    assert alarm_kinds(log) == {"db_corrupt"}
    log.record("held", {})
    assert log.stats()["pending"] == 1
    log.close(timeout=0.2)


def test_second_writer_on_the_same_directory_waits_for_the_lock(tmp_path):
    first = EventLog(tmp_path / "d")
    first.start()
    second = EventLog(tmp_path / "d", retry_max_s=0.05)
    second.start()
    assert alarm_kinds(second) == {"db_locked"} and alarm_kinds(first) == set()
    second.record("from_second", {}, key="second")
    first.record("from_first", {}, key="first")
    assert first.flush(5)
    first.close()
    assert second.flush(5)
    assert second.alarms == []
    assert [e["kind"] for e in second.events() if e["kind"].startswith("from")] == ["from_first", "from_second"]
    second.close()


def test_close_during_a_full_disk_gives_up_at_its_timeout(tmp_path, caplog):
    before = set(threading.enumerate())
    log = EventLog(tmp_path / "d", retry_max_s=0.1)
    log.start()
    writer = [t for t in set(threading.enumerate()) - before if t.name == "eventlog-writer"]
    assert len(writer) == 1
    log.record("boot", {})
    assert log.flush(5)
    log.set_max_page_count(page_count(log.db_path))
    for i in range(100):
        log.record("sample", {"i": i, "pad": PAD})
    wait_for(lambda: "disk_full" in alarm_kinds(log), 1.0, interval=0.01)
    t0 = time.monotonic()
    log.close(timeout=0.3)
    assert time.monotonic() - t0 < 2.0   # bounded shutdown, not a hang (generous: shared CI cores)
    assert not writer[0].is_alive()
    assert any("not written" in r.getMessage() for r in caplog.records)
