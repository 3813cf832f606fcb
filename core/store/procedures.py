"""Procedures: the one open now, its fields (weight, creatinine, ...) and the ones before it.

A procedure is a span of the event log with an opaque id, an operator label and clinical fields; it lives in
the log's ``procedures`` table and its opening, closing and field changes are events. The log stores them in
queue order and never drops them (losing one would orphan or mis-attach everything after it); every record
queued while a procedure is open belongs to it by default. Labels and fields pass core.identity.check_text:
never patient data. An open procedure survives a restart: it is resumed when the database opens.
"""
from __future__ import annotations

import logging
import math
import re
import sqlite3
import threading
import time
import uuid

from core.identity import check_text
from core.store.eventlog import EventLog
from core.store.reads import PROCEDURE_COLUMNS, procedure_row
from core.store.records import MAX_KIND, check_limit, dumps, utc_iso

log = logging.getLogger("cathlab.eventlog")

_FIELD_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class Procedures:
    """Open, close and annotate procedures in ``log``. Construct before ``log.start()``, so an open procedure
    left by the last run is resumed before the first record."""

    def __init__(self, log: EventLog) -> None:
        self._log = log
        self._lock = threading.Lock()
        self._current: dict | None = None   # authoritative in memory; the table follows through the queue
        self._touched = False               # started/ended one this session: do not resume an old one
        log.on_open(self._resume)

    def start(self, label: str | None = None) -> dict:
        """Open a procedure with an opaque id. ``label`` is a short operator note that passes
        core.identity.check_text (IdentityRefused otherwise): never patient data."""
        if label is not None:
            check_text(label, "procedure label")
        mono, wall = time.monotonic_ns(), utc_iso(self._log.wall_clock_ns())
        with self._lock:
            if self._current is not None:
                raise ValueError(f"procedure {self._current['id']} is still open; end it first")
            proc = {"id": uuid.uuid4().hex, "label": label, "started_mono_ns": mono, "started_wall": wall,
                    "ended_mono_ns": None, "ended_wall": None, "fields": {}, "open": True}
            self._current = proc
            self._touched = True
            started = dict(proc)
            self._log.write(lambda conn, event: _insert(conn, event, started), procedure_id=proc["id"],
                            default_procedure=proc["id"])
        return dict(proc, fields={})

    def end(self) -> dict | None:
        """Close the open procedure; returns it, or None if none was open."""
        mono, wall = time.monotonic_ns(), utc_iso(self._log.wall_clock_ns())
        with self._lock:
            proc = self._current
            if proc is None:
                return None
            proc = dict(proc, ended_mono_ns=mono, ended_wall=wall, open=False, fields=dict(proc["fields"]))
            self._current = None
            self._touched = True
            ended = dict(proc)
            self._log.write(lambda conn, event: _close(conn, event, ended), procedure_id=proc["id"],
                            default_procedure=None)
        return dict(proc)

    def current(self) -> dict | None:
        """The open procedure, or None."""
        with self._lock:
            cur = self._current
            return None if cur is None else dict(cur, fields=dict(cur["fields"]))

    def set_fields(self, **fields) -> None:
        """Merge clinical parameters (e.g. weight_kg=70, creatinine_mg_dl=1.1) into the open procedure.
        Values are JSON scalars; None removes a field. Identity-like names are refused."""
        for name, value in fields.items():
            if not _FIELD_RE.match(name) or len(name) > MAX_KIND:
                raise ValueError(f"field name {name!r} must be lower_snake_case")
            check_text(name, "field name")
            if value is not None and not isinstance(value, (bool, int, float, str)):
                raise ValueError(f"field {name!r} must be a number, string, bool or None")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"field {name!r} must be finite, got {value!r}")
            if isinstance(value, str):
                check_text(value, f"field {name}")
        mono, wall = time.monotonic_ns(), utc_iso(self._log.wall_clock_ns())
        with self._lock:
            if self._current is None:
                raise ValueError("no open procedure to set fields on")
            merged = dict(self._current["fields"])
            for name, value in fields.items():
                if value is None:
                    merged.pop(name, None)
                else:
                    merged[name] = value
            self._current["fields"] = merged
            pid, merged_blob, changed_blob = self._current["id"], dumps(merged), dumps(fields)

            def apply(conn: sqlite3.Connection, event) -> None:
                conn.execute("UPDATE procedures SET fields = ? WHERE id = ?", (merged_blob, pid))
                event(None, mono, wall, "procedure_fields", changed_blob)
            self._log.write(apply, procedure_id=pid)

    def recent(self, limit: int = 50) -> list[dict]:
        """Most recent first. The open procedure is included even before its row is committed."""
        limit = check_limit(limit)
        rows = [procedure_row(r) for r in self._log.query(
            f"SELECT {PROCEDURE_COLUMNS} FROM procedures ORDER BY n DESC LIMIT ?", (limit,))]
        cur = self.current()
        if cur is not None:
            rows = [cur] + [r for r in rows if r["id"] != cur["id"]][: limit - 1]
        return rows

    def get(self, pid: str) -> dict | None:
        if not isinstance(pid, str):
            raise ValueError("procedure id must be a string")
        cur = self.current()
        if cur is not None and cur["id"] == pid:
            return cur
        rows = self._log.query(f"SELECT {PROCEDURE_COLUMNS} FROM procedures WHERE id = ?", (pid,))
        return procedure_row(rows[0]) if rows else None

    def _resume(self, conn: sqlite3.Connection) -> None:
        """On the writer thread, each time the database opens: take up the procedure left open, close any
        other left open (several can only come from a procedure started while the database was down)."""
        rows = conn.execute(f"SELECT {PROCEDURE_COLUMNS} FROM procedures WHERE ended_wall IS NULL "
                            "ORDER BY n DESC").fetchall()
        if not rows:
            return
        wall, mono = utc_iso(self._log.wall_clock_ns()), time.monotonic_ns()
        resumed = None
        with self._lock:
            if self._current is None and not self._touched:
                self._current = resumed = dict(procedure_row(rows[0]), open=True)
                note = dumps({"procedure_id": resumed["id"]})
                self._log.write(lambda c, event: event(None, mono, wall, "procedure_resumed", note),
                                procedure_id=resumed["id"], default_procedure=resumed["id"])
            keep = self._current["id"] if self._current else None
        stale = [r[0] for r in rows if r[0] != keep]
        if stale:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("UPDATE procedures SET ended_wall = ?, ended_mono_ns = ? WHERE id = ?",
                             [(wall, mono, pid) for pid in stale])
            conn.execute("COMMIT")
            log.warning("closed %d stale open procedure(s) superseded by %s", len(stale), keep)
        if resumed is not None:
            log.info("resumed open procedure %s", resumed["id"])


def _insert(conn: sqlite3.Connection, event, p: dict) -> None:
    conn.execute("INSERT OR IGNORE INTO procedures (id, label, started_mono_ns, started_wall, fields) "
                 "VALUES (?,?,?,?,'{}')", (p["id"], p["label"], p["started_mono_ns"], p["started_wall"]))
    event(f"procedure_start:{p['id']}", p["started_mono_ns"], p["started_wall"], "procedure_start",
          dumps({"label": p["label"]}))


def _close(conn: sqlite3.Connection, event, p: dict) -> None:
    conn.execute("UPDATE procedures SET ended_mono_ns = ?, ended_wall = ?, fields = ? WHERE id = ?",
                 (p["ended_mono_ns"], p["ended_wall"], dumps(p["fields"]), p["id"]))
    event(f"procedure_end:{p['id']}", p["ended_mono_ns"], p["ended_wall"], "procedure_end", "{}")

