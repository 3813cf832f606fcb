"""Retention by age and by size: oldest closed procedures (and orphan events, by their time) go first; the
open procedure never goes. A settable wall clock ages the log without waiting days."""
from __future__ import annotations

import sqlite3
import time

import pytest

from core.store.eventlog import EventLog
from core.store.procedures import Procedures

HOUR = 3600 * 10**9
DAY = 24 * HOUR
T0 = 1_780_000_000 * 10**9   # an arbitrary UTC instant in 2026


class Clock:
    def __init__(self) -> None:
        self.ns = T0

    def __call__(self) -> int:
        return self.ns


def db_query(log: EventLog, sql: str, args=()):
    conn = sqlite3.connect(log.db_path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def test_age_retention_deletes_old_closed_procedures_and_orphans_never_the_open_one(tmp_path):
    clock = Clock()
    log = EventLog(tmp_path / "d", max_age_days=10, wall_clock_ns=clock)
    procs = Procedures(log)
    log.start()
    a = procs.start("a")
    log.record("xray_on", {})
    log.record_run({"run_id": "ra"}, key="ra")
    log.record_injection({"run_id": "ra", "volume_ml": 10}, key="ia")
    procs.end()
    clock.ns = T0 + DAY
    for i in range(3):
        log.record("link_down", {"i": i})                  # outside any procedure
    clock.ns = T0 + 2 * DAY
    b = procs.start("b")
    log.record("xray_on", {})
    procs.end()
    clock.ns = T0 + 3 * DAY
    c = procs.start("c")                           # stays open
    log.record("xray_on", {})
    assert log.flush(5)

    clock.ns = T0 + int(11.5 * DAY)                          # cutoff: day 1.5
    assert log.enforce_retention() == {"procedures": 1, "orphan_rows": 3}
    assert procs.get(a["id"]) is None and log.events(procedure_id=a["id"]) == []
    assert log.runs(a["id"]) == [] and log.injections(a["id"]) == []
    assert [e for e in log.events(0, 1000) if e["procedure_id"] is None] == []
    assert procs.get(b["id"]) is not None

    clock.ns = T0 + 100 * DAY                               # everything is old now, even c's start
    assert log.enforce_retention() == {"procedures": 1, "orphan_rows": 0}
    assert procs.get(b["id"]) is None
    assert procs.current()["id"] == c["id"]
    assert [e["kind"] for e in log.events(procedure_id=c["id"])][:2] == ["procedure_start", "xray_on"]
    log.close()


def test_retention_runs_periodically_on_its_own(tmp_path):
    clock = Clock()
    log = EventLog(tmp_path / "d", max_age_days=1, retention_interval_s=0.05, wall_clock_ns=clock)
    log.start()
    log.record("old", {})
    assert log.flush(5)
    clock.ns = T0 + 2 * DAY
    deadline = time.monotonic() + 5
    while any(e["kind"] == "old" for e in log.events()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(e["kind"] == "old" for e in log.events())
    log.close()


def _fill(log: EventLog, procs: Procedures, clock: Clock) -> dict[str, str | None]:
    """Chronological units: closed procedures, orphan stretches, and finally an open procedure."""
    pad = "x" * 1000
    units: dict[str, str | None] = {}
    for hour, name in enumerate(["p1", "o1", "p2", "p3", "o2", "p4", "open"]):
        clock.ns = T0 + hour * HOUR
        if name in ("o1", "o2"):   # outside any procedure
            for i in range(60):
                log.record("sample", {"unit": name, "i": i, "pad": pad})
            continue
        proc = procs.start(name)
        for i in range(60):
            log.record("sample", {"unit": name, "i": i, "pad": pad})
        if name != "open":
            procs.end()
        units[name] = proc["id"]
    assert log.flush(10)
    return units


def test_size_retention_deletes_oldest_first_never_the_open_procedure(tmp_path):
    clock = Clock()
    log = EventLog(tmp_path / "d", wall_clock_ns=clock)
    procs = Procedures(log)
    log.start()
    units = _fill(log, procs, clock)
    all_samples = {e["id"]: (e["data"]["unit"], e["t_wall"]) for e in log.events(0, 10_000)
                   if e["kind"] == "sample"}
    page_size = db_query(log, "PRAGMA page_size")[0][0]
    start_bytes = db_query(log, "PRAGMA page_count")[0][0] * page_size
    open_rows = sum(1 for unit, _ in all_samples.values() if unit == "open")

    for fraction in (0.8, 0.6, 0.4, 0.2, 0.01):
        max_bytes = int(start_bytes * fraction)
        log.set_retention(max_age_days=None, max_bytes=max_bytes)
        assert log.enforce_retention() is not None
        left = {e["id"] for e in log.events(0, 10_000) if e["kind"] == "sample"}
        deleted = set(all_samples) - left
        assert all(all_samples[i][0] != "open" for i in deleted), "the open procedure lost events"
        kept_closed = [all_samples[i][1] for i in left if all_samples[i][0] != "open"]
        if deleted and kept_closed:   # everything deleted is older than everything kept
            assert max(all_samples[i][1] for i in deleted) <= min(kept_closed)
        pages, free = db_query(log, "PRAGMA page_count")[0][0], db_query(log, "PRAGMA freelist_count")[0][0]
        assert free == 0   # incremental_vacuum gave the pages back
        assert pages * page_size <= max_bytes or not kept_closed
        for name, pid in units.items():   # a procedure row goes with its last event
            has_events = any(all_samples[i][0] == name for i in left)
            assert (procs.get(pid) is not None) == has_events, name

    # Only the open procedure is left, whole.
    assert sum(1 for i in left if all_samples[i][0] == "open") == open_rows
    assert [p["id"] for p in procs.recent()] == [units["open"]]
    log.close()


def test_set_retention_validates(tmp_path):
    log = EventLog(tmp_path / "d")
    with pytest.raises(ValueError):
        log.set_retention(max_age_days=0, max_bytes=None)
    with pytest.raises(ValueError):
        log.set_retention(max_age_days=None, max_bytes=-1)
