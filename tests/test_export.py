"""Export as JSON Lines and CSV: same events as the API, per procedure or all, clear errors, live database."""
from __future__ import annotations

import csv
import io
import json
import sqlite3

import pytest

from api.cli.export import write_export
from core.store import schema
from core.store.eventlog import EventLog
from core.store.export import CSV_COLUMNS, iter_export
from core.store.procedures import Procedures


@pytest.fixture
def filled(tmp_path):
    log = EventLog(tmp_path / "d")
    procs = Procedures(log)
    log.start()
    log.record("boot", {"version": "0.1.0"})
    first = procs.start("left iliac")
    log.record("xray_on", {"pulses": 15})
    log.record_run({"run_id": "r1", "note": 'comma, "quote"\nnewline'}, key="r1")
    procs.end()
    second = procs.start()
    log.record("xray_on", {"pulses": 7.5})
    assert log.flush(5)
    yield log, first["id"], second["id"]
    log.close()


def test_jsonl_matches_the_api_events(filled):
    log, _, _ = filled
    out = io.StringIO()
    assert write_export(log.data_dir, None, "jsonl", out) == 0
    lines = out.getvalue().splitlines()
    assert [json.loads(line) for line in lines] == log.events(0, 1000)


def test_csv_round_trips_including_awkward_text(filled):
    log, first, _ = filled
    out = io.StringIO()
    assert write_export(log.data_dir, first, "csv", out) == 0
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert tuple(rows[0]) == CSV_COLUMNS
    expected = log.events(0, 1000, procedure_id=first)
    assert [int(r["id"]) for r in rows] == [e["id"] for e in expected]
    assert [json.loads(r["data"]) for r in rows] == [e["data"] for e in expected]
    assert [int(r["t_mono_ns"]) for r in rows] == [e["t_mono_ns"] for e in expected]
    assert {r["procedure_id"] for r in rows} == {first}
    assert json.loads(rows[2]["data"])["note"] == 'comma, "quote"\nnewline'


def test_procedure_filter_and_an_empty_export(filled):
    log, _, second = filled
    lines = list(iter_export(log, second, "jsonl"))
    assert [json.loads(line)["kind"] for line in lines] == ["procedure_start", "xray_on"]
    fresh = EventLog(log.data_dir.parent / "empty")
    fresh.start()
    fresh.flush()
    assert list(iter_export(fresh, None, "csv")) == [",".join(CSV_COLUMNS) + "\n"]
    fresh.close()


@pytest.mark.parametrize("fmt, pid, message", [
    ("xml", None, "format"),
    ("jsonl", "no-such-procedure", "no procedure"),
])
def test_bad_arguments_give_exit_1_and_one_clear_line(filled, capsys, fmt, pid, message):
    log, _, _ = filled
    out = io.StringIO()
    assert write_export(log.data_dir, pid, fmt, out) == 1
    assert out.getvalue() == ""
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    with pytest.raises(ValueError, match=message):
        iter_export(log, pid, fmt)


def test_missing_and_newer_databases_are_refused(tmp_path, capsys):
    assert write_export(tmp_path / "nothing", None, "jsonl", io.StringIO()) == 1
    assert "no event database" in capsys.readouterr().err
    log = EventLog(tmp_path / "d")
    log.start()
    log.close()
    conn = sqlite3.connect(log.db_path)
    conn.execute(f"PRAGMA user_version={schema.SCHEMA_VERSION + 1}")
    conn.close()
    assert write_export(tmp_path / "d", None, "jsonl", io.StringIO()) == 1
    assert "newer" in capsys.readouterr().err


def test_export_is_a_snapshot_while_the_writer_keeps_going(filled):
    log, _, _ = filled
    lines = iter_export(log, None, "jsonl")
    n_before = len(log.events(0, 1000))
    for i in range(2500):
        log.record("sample", {"i": i})
    assert log.flush(5)
    exported = [json.loads(line) for line in lines]
    assert len(exported) == n_before   # what was committed when the export began, no more
    assert [e["id"] for e in exported] == sorted(e["id"] for e in exported)


def test_large_export_pages_through_everything(tmp_path):
    log = EventLog(tmp_path / "d")
    log.start()
    for i in range(3500):
        log.record("sample", {"i": i})
    assert log.flush(10)
    ids = [json.loads(line)["id"] for line in iter_export(log, None, "jsonl")]
    assert len(ids) == 3500 and ids == sorted(set(ids))
    log.close()
