"""Event log: recording, idempotency, procedures and their resumption, typed records, reads, bad input."""
from __future__ import annotations

import sqlite3
import tempfile
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.store import schema
from core.store.eventlog import EventLog
from core.store.procedures import Procedures
from core.store.records import utc_iso


@pytest.fixture
def make_log(tmp_path):
    logs = []

    def make(**kw):
        log = EventLog(tmp_path / "data", **kw)
        log.start()
        logs.append(log)
        return log

    yield make
    for log in logs:
        log.close()


@pytest.fixture
def log_and_procedures(tmp_path):
    log = EventLog(tmp_path / "data")
    procs = Procedures(log)
    log.start()
    yield log, procs
    log.close()


def db_rows(tmp_path, sql, args=()):
    conn = sqlite3.connect(tmp_path / "data" / "events.sqlite3")
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def test_events_commit_in_order_and_page(make_log):
    log = make_log()
    for i in range(250):
        log.record("frame_drop", {"i": i})
    assert log.flush(5)
    first = log.events(0, 100)
    assert [e["data"]["i"] for e in first] == list(range(100))
    second = log.events(first[-1]["id"], 200)
    assert [e["data"]["i"] for e in second] == list(range(100, 250))
    assert log.events(second[-1]["id"], 10) == []
    event = first[0]
    assert set(event) == {"id", "procedure_id", "t_mono_ns", "t_wall", "kind", "data"}
    assert event["kind"] == "frame_drop" and event["procedure_id"] is None
    assert event["t_wall"].endswith("Z") and len(event["t_wall"]) == 27
    assert log.stats()["committed"] == 250 and log.stats()["pending"] == 0


def test_database_settings_are_durable_ones(make_log, tmp_path):
    make_log().flush(5)
    conn = sqlite3.connect(tmp_path / "data" / "events.sqlite3")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    conn.close()


def test_idempotency_key_records_once_even_across_restart(tmp_path):
    log = EventLog(tmp_path / "data")
    log.start()
    log.record("injection_summary", {"ml": 10}, key="inj-7")
    log.record("injection_summary", {"ml": 10}, key="inj-7")   # device retransmission
    assert log.flush(5)
    log.close()
    log = EventLog(tmp_path / "data")
    log.start()
    log.record("injection_summary", {"ml": 10}, key="inj-7")   # replay after restart
    log.record("injection_summary", {"ml": 12}, key="inj-8")
    assert log.flush(5)
    log.close()
    rows = db_rows(tmp_path, "SELECT key, data FROM events WHERE kind = 'injection_summary' ORDER BY id")
    assert rows == [("inj-7", '{"ml":10}'), ("inj-8", '{"ml":12}')]


def test_subscriber_sees_only_committed_events(make_log):
    log = make_log()
    seen, visible = [], []

    def on_event(event):
        seen.append(event)
        # Committed means readable through the API at the moment the callback runs.
        visible.append(any(e["id"] == event["id"] for e in log.events(event["id"] - 1, 1)))

    unsubscribe = log.subscribe(on_event)
    log.record("xray_on", {"a": 1}, key="k1")
    log.record("xray_on", {"a": 1}, key="k1")
    assert log.flush(5)
    assert [e["kind"] for e in seen] == ["xray_on"] and all(visible)
    unsubscribe()
    log.record("xray_off", {})
    assert log.flush(5)
    assert len(seen) == 1


def test_failing_subscriber_is_counted_and_does_not_stop_the_log(make_log):
    log = make_log()
    log.subscribe(lambda event: 1 / 0)
    for i in range(3):
        log.record("x", {"i": i})
    assert log.flush(5)
    assert log.stats()["callback_errors"] == 3
    assert len(log.events()) == 3


def test_procedure_lifecycle_and_resume_after_restart(tmp_path):
    log = EventLog(tmp_path / "data")
    procs = Procedures(log)
    log.start()
    assert procs.current() is None
    proc = procs.start("room 2, left iliac")
    assert len(proc["id"]) == 32 and proc["open"]
    with pytest.raises(ValueError, match="still open"):
        procs.start()
    procs.set_fields(weight_kg=70, creatinine_mg_dl=2.0)
    log.record("xray_on", {})
    assert log.flush(5)
    log.close()

    log = EventLog(tmp_path / "data")
    procs = Procedures(log)
    log.start()
    resumed = procs.current()
    assert resumed["id"] == proc["id"] and resumed["fields"] == {"weight_kg": 70, "creatinine_mg_dl": 2.0}
    log.record("xray_off", {})
    ended = procs.end()
    assert ended["id"] == proc["id"] and ended["ended_wall"] is not None
    assert procs.end() is None
    assert log.flush(5)
    kinds = [(e["kind"], e["procedure_id"]) for e in log.events(0, 100)]
    assert kinds == [("procedure_start", proc["id"]), ("procedure_fields", proc["id"]), ("xray_on", proc["id"]),
                     ("procedure_resumed", proc["id"]), ("xray_off", proc["id"]), ("procedure_end", proc["id"])]
    assert procs.get(proc["id"])["open"] is False
    log.close()

    log = EventLog(tmp_path / "data")
    procs = Procedures(log)
    log.start()
    assert procs.current() is None   # an ended procedure is not resumed
    second = procs.start()
    assert [p["id"] for p in procs.recent()] == [second["id"], proc["id"]]
    log.close()


def test_procedure_started_while_database_was_down_supersedes_the_stale_open_one(tmp_path):
    old = EventLog(tmp_path / "data")
    old_procs = Procedures(old)
    old.start()
    stale = old_procs.start("before the power cut")
    assert old.flush(5)
    old.close()
    log = EventLog(tmp_path / "data")   # not started yet: the database is not open
    procs = Procedures(log)
    fresh = procs.start("new")
    log.start()
    assert log.flush(5)
    assert procs.current()["id"] == fresh["id"]
    assert procs.get(stale["id"])["open"] is False
    log.close()


def test_procedure_fields_refuse_identity_and_bad_values(log_and_procedures):
    log, procs = log_and_procedures
    with pytest.raises(ValueError, match="no open procedure"):
        procs.set_fields(weight_kg=70)
    procs.start()
    for bad in ({"patient_name": "x"}, {"date_of_birth": "1950"}, {"mrn": "1"}, {"WeightKg": 1},
                {"weight_kg": float("nan")}, {"weight_kg": [70]}):
        with pytest.raises(ValueError):
            procs.set_fields(**bad)
    procs.set_fields(weight_kg=80)
    assert procs.current()["fields"] == {"weight_kg": 80}   # the refused calls changed nothing
    procs.set_fields(weight_kg=None)
    assert procs.current()["fields"] == {}
    procs.end()
    with pytest.raises(ValueError, match="single-line"):
        procs.start("a\nb")
    assert procs.current() is None


def test_typed_records_and_their_events(log_and_procedures):
    log, procs = log_and_procedures
    proc = procs.start()
    log.record_run({"run_id": "r1", "frames": 90, "pulse_rate": 15.0}, key="run:r1")
    log.record_run({"run_id": "r1", "frames": 90, "pulse_rate": 15.0}, key="run:r1")   # duplicate
    log.record_run({"run_id": "r2", "frames": np.int64(30)}, key="run:r2")   # numpy scalars are fine
    log.record_injection({"run_id": "r1", "volume_ml": 10.0}, key="inj:1")
    log.record_clearance({"run_id": "r2", "clearance_pct": 82.5}, key="clr:r2")
    assert log.flush(5)
    runs = log.runs(proc["id"])
    assert [(r["run_id"], r["frames"]) for r in runs] == [("r1", 90), ("r2", 30)]
    assert log.run("r2")["procedure_id"] == proc["id"] and log.run("nope") is None
    assert log.injections(proc["id"])[0]["volume_ml"] == 10.0
    assert log.clearance_results()[0]["clearance_pct"] == 82.5
    assert [e["kind"] for e in log.events()] == ["procedure_start", "run", "run", "injection", "clearance"]
    with pytest.raises(ValueError, match="key"):
        log.record_run({"run_id": "r3"}, key=None)


def test_a_run_recorded_again_stays_with_its_own_procedure(log_and_procedures):
    log, procs = log_and_procedures
    first = procs.start("first")
    log.record_run({"run_id": "r1", "duration_s": 3.0, "label": None}, key="run:r1")
    log.record_run({"run_id": "r2", "duration_s": 2.0, "label": None}, key="run:r2")
    procs.end()
    second = procs.start("second")
    log.record_run({"run_id": "r3", "duration_s": 4.0, "label": None}, key="run:r3")
    # Relabelled now, while the second procedure is open: explicitly in the first.
    log.record("run_label", {"run_id": "r1", "label": "baseline"}, procedure_id=first["id"])
    log.record_run({"run_id": "r1", "duration_s": 3.0, "label": "baseline"}, key="run:r1:label:1",
                   procedure_id=first["id"])
    log.record("note", {}, procedure_id=None)     # explicitly outside any procedure
    log.record("note", {})                        # by default: the open one
    assert log.flush(5)
    assert log.run("r1")["label"] == "baseline" and log.run("r1")["procedure_id"] == first["id"]
    # Every record is kept; latest_runs gives each run once, as its newest record, in first-recorded order.
    assert [r["run_id"] for r in log.runs(first["id"])] == ["r1", "r2", "r1"]
    assert [(r["run_id"], r["label"]) for r in log.latest_runs(first["id"])] == [("r1", "baseline"),
                                                                                 ("r2", None)]
    assert [r["run_id"] for r in log.latest_runs(second["id"])] == ["r3"]
    assert [r["run_id"] for r in log.latest_runs()] == ["r1", "r2", "r3"]
    assert [r["run_id"] for r in log.latest_runs(limit=2)] == ["r2", "r3"]
    events = [(e["kind"], e["procedure_id"]) for e in log.events() if e["kind"] in ("run_label", "note")]
    assert events == [("run_label", first["id"]), ("note", None), ("note", second["id"])]


@pytest.mark.parametrize("call, match", [
    (lambda log: log.record("x", {}, procedure_id=""), "procedure_id"),
    (lambda log: log.record("x", {}, procedure_id=7), "procedure_id"),
    (lambda log: log.record_run({"run_id": "r"}, key="k", procedure_id="p" * 65), "procedure_id"),
    (lambda log: log.latest_runs(limit=0), "limit"),
    (lambda log: log.record("", {}), "kind"),
    (lambda log: log.record("Bad Kind", {}), "kind"),
    (lambda log: log.record(3, {}), "kind"),
    (lambda log: log.record("x", [1, 2]), "dict"),
    (lambda log: log.record("x", {"v": float("nan")}), "NaN"),
    (lambda log: log.record("x", {"v": object()}), "JSON"),
    (lambda log: log.record("x", {}, key=""), "key"),
    (lambda log: log.record("x", {}, t_mono_ns=-1), "t_mono_ns"),
    (lambda log: log.record("x", {}, t_mono_ns=1.5), "t_mono_ns"),
    (lambda log: log.events(after=-1), "after"),
    (lambda log: log.events(limit=0), "limit"),
    (lambda log: log.events(limit=10**6), "limit"),
    (lambda log: log.set_max_page_count(0), "max_page_count"),
])
def test_bad_input_is_a_clear_value_error(make_log, call, match):
    log = make_log()
    with pytest.raises(ValueError, match=match):
        call(log)
    assert log.stats()["pending"] == 0


@pytest.mark.parametrize("kw", [{"queue_max": 0}, {"max_age_days": -1}, {"max_bytes": 0},
                                {"db_name": "../x.db"}, {"max_page_count": -5}])
def test_bad_constructor_arguments(tmp_path, kw):
    with pytest.raises(ValueError):
        EventLog(tmp_path, **kw)


def test_many_threads_record_concurrently(make_log):
    log = make_log()
    per_thread, threads = 2000, 4

    def worker(t):
        for i in range(per_thread):
            log.record("sample", {"t": t, "i": i}, key=f"{t}:{i}")

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert log.flush(10)
    seen = []
    after = 0
    while page := log.events(after, 1000):
        seen += page
        after = page[-1]["id"]
    assert len(seen) == per_thread * threads
    for t in range(threads):   # each producer's order survives
        assert [e["data"]["i"] for e in seen if e["data"]["t"] == t] == list(range(per_thread))


def test_close_writes_what_is_queued(tmp_path):
    log = EventLog(tmp_path / "data")
    log.start()
    for i in range(500):
        log.record("x", {"i": i})
    log.close(timeout=5)
    assert db_rows(tmp_path, "SELECT COUNT(*) FROM events") == [(500,)]


def test_migration_from_an_empty_file_and_refusal_of_a_newer_schema(tmp_path, caplog):
    (tmp_path / "data").mkdir()
    sqlite3.connect(tmp_path / "data" / "events.sqlite3").close()   # empty file, version 0
    log = EventLog(tmp_path / "data")
    log.start()
    log.record("x", {})
    assert log.flush(5)
    log.close()
    conn = sqlite3.connect(tmp_path / "data" / "events.sqlite3")
    conn.execute(f"PRAGMA user_version={schema.SCHEMA_VERSION + 1}")
    conn.close()

    log = EventLog(tmp_path / "data")
    log.start()                          # must not raise
    alarms = log.alarms
    assert [a["kind"] for a in alarms] == ["db_newer_schema"]
    assert "newer than this cathlab-edge" in alarms[0]["message"]
    log.record("y", {})                  # still accepted, held in memory
    assert log.flush(0.3) is False
    assert log.stats()["pending"] == 1 and log.events() == []
    log.close(timeout=0.5)
    assert db_rows(tmp_path, "SELECT COUNT(*) FROM events") == [(1,)]
    assert db_rows(tmp_path, "PRAGMA user_version") == [(schema.SCHEMA_VERSION + 1,)]


def test_record_never_waits_for_a_stalled_writer(make_log):
    log = make_log()
    gate, stalled = threading.Event(), threading.Event()

    def stall(event):   # holds the writer thread, as a hung disk would
        stalled.set()
        gate.wait(10)

    log.subscribe(stall)
    log.record("first", {})
    assert stalled.wait(5)
    producer = threading.Thread(target=lambda: [log.record("frame", {"i": i}) for i in range(1000)])
    producer.start()
    producer.join(5)
    try:
        assert not producer.is_alive(), "record() blocked behind the writer"
        assert log.stats()["pending"] == 1000   # all accepted while the writer was still stuck
    finally:
        gate.set()
    assert log.flush(5)
    assert log.stats()["committed"] == 1001


def test_flush_from_a_subscriber_is_refused_not_a_deadlock(make_log):
    log = make_log()
    errors = []

    def bad(event):
        try:
            log.flush(1)
        except RuntimeError as exc:
            errors.append(str(exc))

    log.subscribe(bad)
    log.record("x", {})
    assert log.flush(5)
    assert errors and "wait for itself" in errors[0]


@settings(max_examples=20, deadline=None)
@given(keys=st.lists(st.one_of(st.none(), st.integers(0, 8)), max_size=60), limit=st.integers(1, 25))
def test_paging_and_idempotency_property(keys, limit):
    with tempfile.TemporaryDirectory() as tmp:
        log = EventLog(tmp)
        log.start()
        try:
            for n, k in enumerate(keys):
                log.record("sample", {"n": n}, key=None if k is None else f"k{k}")
            assert log.flush(5)
            seen, after = [], 0
            while page := log.events(after, limit):
                seen += page
                after = page[-1]["id"]
        finally:
            log.close()
    first_of_key = {}
    for n, k in enumerate(keys):
        first_of_key.setdefault(k if k is not None else ("none", n), n)
    assert [e["data"]["n"] for e in seen] == sorted(first_of_key.values())
    assert [e["id"] for e in seen] == sorted({e["id"] for e in seen})


@given(st.integers(0, 250_000_000_000 * 10**9), st.integers(0, 250_000_000_000 * 10**9))
def test_wall_time_text_sorts_like_time(a, b):
    # Retention compares t_wall as text: that is only right if the text is fixed width.
    ta, tb = utc_iso(a), utc_iso(b)
    assert len(ta) == len(tb) == 27
    assert (ta < tb) == (a // 1000 < b // 1000)
