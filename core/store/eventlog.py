"""Durable event log: everything the appliance observes, in SQLite, surviving power cuts and full disks.

One writer thread owns the write connection. ``record()`` only appends to an in-memory queue (the frame path
must never wait on a disk), and the writer drains the queue into one transaction per batch. WAL with
``synchronous=FULL`` makes each committed batch durable; an event counts as recorded, is visible to readers
and is handed to subscribers only after its COMMIT returned. Every row carries a UNIQUE idempotency key and is
written with INSERT OR IGNORE, so a device retransmission or a replay after a restart is recorded once.
Event ids only grow (AUTOINCREMENT) but have gaps: an ignored duplicate or retention leaves holes.

Disk faults never raise into callers: they become alarms, the batch stays in memory (bounded; overflow is
counted as dropped) and the writer retries with backoff until the disk takes it again. A caller that must not
acknowledge what is only in memory (an API write) asks ``check_writable()`` before and ``commit()`` after: they
raise LogUnavailable while the log is failing or when the COMMIT does not come in time.

A run, injection or clearance record is stored once, in its own table; its event refers to that row (schema 2).
"""
from __future__ import annotations

import collections
import fcntl
import json
import logging
import math
import os
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from core.identity import check_text
from core.store import schema

log = logging.getLogger("cathlab.eventlog")

ALARM_KINDS = ("disk_full", "db_readonly", "db_corrupt", "db_newer_schema", "db_locked", "db_io_error",
               "db_error", "queue_overflow")
# Alarms that a successful commit proves over.
_WRITE_ALARMS = ("disk_full", "db_readonly", "db_corrupt", "db_locked", "db_io_error", "db_error")

_MAX_KIND = 64
_MAX_KEY = 256
_MAX_LIMIT = 10_000
_KIND_RE = re.compile(r"^[a-z][a-z0-9_.]*$")
_FIELD_RE = re.compile(r"^[a-z][a-z0-9_]*$")

# Queue entries: (seq, op, procedure_id, payload, bounded). Procedure ops are never dropped (rare, and losing one
# would orphan or mis-attach everything after it); data ops count against queue_max.
_EVENT, _TYPED, _PROC_START, _PROC_END, _PROC_FIELDS = "event", "typed", "proc_start", "proc_end", "proc_fields"
_TYPED_TABLES = schema.REF_TABLES
_EVENT_COLUMNS = schema.event_columns(schema.SCHEMA_VERSION)   # the writer migrates first
_MAX_PROCEDURE_ID = 64


class _OpenProcedure:
    def __repr__(self) -> str:
        return "OPEN_PROCEDURE"


# Default ``procedure_id`` of every record: the procedure open when it is queued (None if none is).
OPEN_PROCEDURE = _OpenProcedure()


class LogUnavailable(RuntimeError):
    """The log cannot commit now: a write asked for is not durable (yet). ``reason`` says why for the caller,
    ``retry_after_s`` when it is worth asking again."""

    def __init__(self, reason: str, retry_after_s: int = 5) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class _Poison(Exception):
    """A queued item that SQLite rejects on its own merits (a bug upstream, not the disk)."""


def utc_iso(wall_ns: int) -> str:
    """Fixed-width UTC ISO-8601 with microseconds, so text order is time order."""
    sec, ns = divmod(wall_ns, 1_000_000_000)
    dt = datetime.fromtimestamp(sec, tz=timezone.utc).replace(microsecond=ns // 1000)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json_default(obj):
    # NumPy scalars and arrays arrive from the kernels; anything else is a caller bug.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def dumps(data: dict) -> str:
    try:
        return json.dumps(data, separators=(",", ":"), allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"event data is not JSON-serialisable (NaN/inf are refused): {exc}") from None


def _classify(exc: BaseException) -> str:
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc).lower()
    if name.startswith("SQLITE_FULL") or "disk is full" in text:
        return "disk_full"
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")) or "readonly" in text:
        return "db_readonly"
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "not a database" in text or "malformed" in text:
        return "db_corrupt"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return "db_locked"
    if name.startswith("SQLITE_IOERR"):
        return "db_io_error"
    return "db_error"


class EventLog:
    """The appliance's durable log. Construct, ``start()``, ``record()`` from any thread, ``close()``."""

    def __init__(self, data_dir: Path | str, *, queue_max: int = 100_000, max_age_days: float | None = None,
                 max_bytes: int | None = None, db_name: str = "events.sqlite3",
                 max_page_count: int | None = None, retention_interval_s: float = 600.0,
                 batch_max: int = 5_000, retry_max_s: float = 0.5,
                 wall_clock_ns: Callable[[], int] = time.time_ns) -> None:
        """
        queue_max: events held in memory while the database cannot take them; beyond it they are dropped
            (counted in stats()["dropped"], alarm ``queue_overflow``).
        max_age_days, max_bytes: retention. Oldest closed procedures (with their events, runs, injections,
            clearance results) and events outside any procedure go first; the open procedure never does.
            max_bytes counts database pages in use; the WAL is bounded separately.
        max_page_count: hard cap on the database size in pages (SQLite ``PRAGMA max_page_count``); beyond it
            writes fail exactly as on a full disk. Changeable at run time with ``set_max_page_count``.
        retention_interval_s: how often the writer enforces max_age_days / max_bytes (also once at open).
        wall_clock_ns: UTC wall clock, for t_wall and retention age only (never for ordering or durations).
        """
        if not isinstance(queue_max, int) or queue_max < 1:
            raise ValueError(f"queue_max must be a positive int, got {queue_max!r}")
        if max_age_days is not None and not (isinstance(max_age_days, (int, float)) and max_age_days > 0):
            raise ValueError(f"max_age_days must be > 0 or None, got {max_age_days!r}")
        if max_bytes is not None and not (isinstance(max_bytes, int) and max_bytes > 0):
            raise ValueError(f"max_bytes must be a positive int or None, got {max_bytes!r}")
        if not isinstance(db_name, str) or not db_name or "/" in db_name or db_name.startswith("."):
            raise ValueError(f"db_name must be a plain file name, got {db_name!r}")
        if max_page_count is not None and not (isinstance(max_page_count, int) and max_page_count > 0):
            raise ValueError(f"max_page_count must be a positive int or None, got {max_page_count!r}")
        if not retention_interval_s > 0:
            raise ValueError(f"retention_interval_s must be > 0, got {retention_interval_s!r}")
        if not (isinstance(batch_max, int) and batch_max > 0):
            raise ValueError(f"batch_max must be a positive int, got {batch_max!r}")
        if not retry_max_s > 0:
            raise ValueError(f"retry_max_s must be > 0, got {retry_max_s!r}")
        self.data_dir = Path(data_dir)
        self.db_path = self.data_dir / db_name
        self._lock_path = self.data_dir / (db_name + ".lock")
        self._queue_max = queue_max
        self._max_age_days = max_age_days
        self._max_bytes = max_bytes
        self._max_page_count = max_page_count
        self._retention_interval_s = float(retention_interval_s)
        self._batch_max = batch_max
        self._retry_max_s = float(retry_max_s)
        self._wall_ns = wall_clock_ns
        self._session = uuid.uuid4().hex[:12]  # prefix of automatic idempotency keys

        # Queue state, guarded by _qlock. _seq numbers every accepted item so flush() knows what "before" is.
        self._qlock = threading.Lock()
        self._queue: collections.deque = collections.deque()
        self._seq = 0
        self._n_bounded = 0          # data items queued or in flight, bounded by queue_max
        self._dropped = 0
        self._current: dict | None = None   # the open procedure, authoritative in memory

        self._done = threading.Condition()   # committed_seq advanced
        self._committed_seq = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._stop_deadline = math.inf
        self._opened = threading.Event()    # first open attempt finished (either way)
        self._retention_due = threading.Event()
        self._retention_done = threading.Condition()
        self._retention_runs = 0
        self._last_retention: dict = {}

        self._conn: sqlite3.Connection | None = None
        self._applied_pages: int | None = None
        self._procedure_touched = False     # started/ended one this session: do not resume an old one
        self._lock_fd: int | None = None
        self._refused = False               # newer schema: never write
        self._read_lock = threading.Lock()
        self._reader: sqlite3.Connection | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

        self._alarm_lock = threading.Lock()
        self._alarms: dict[str, dict] = {}
        self._subscribers: tuple[Callable[[dict], None], ...] = ()
        self._sub_lock = threading.Lock()
        self._callback_errors = 0
        self._committed = 0
        self._duplicates = 0
        self._rejected = 0
        self._latencies_ms: collections.deque = collections.deque(maxlen=2048)
        self._last_commit_ms: float | None = None
        self._last_commit_wall: str | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self, open_timeout: float = 10.0) -> None:
        """Open (create, migrate) the database and start the writer. Never raises for a bad database: that
        becomes an alarm and the writer keeps retrying (a newer schema is refused for good)."""
        if self._thread is not None or self._closed:
            raise RuntimeError("EventLog.start() may be called once, before close()")
        self._thread = threading.Thread(target=self._run, name="eventlog-writer", daemon=True)
        self._thread.start()
        # Wait for the first attempt so a resumed procedure is visible as soon as start() returns.
        self._opened.wait(open_timeout)

    def close(self, timeout: float = 2.0) -> None:
        """Write what can be written within ``timeout`` seconds, then stop the writer and close the database."""
        if self._closed:
            return
        self._closed = True
        if self._thread is None:
            return
        self._stop_deadline = time.monotonic() + max(0.0, timeout)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout + 5.0)
        if self._thread.is_alive():
            log.error("event writer did not stop within %.1f s", timeout + 5.0)

    # ------------------------------------------------------------------ recording (any thread, never blocks)
    def record(self, kind: str, data: dict, *, key: str | None = None, t_mono_ns: int | None = None,
               procedure_id: str | None = OPEN_PROCEDURE) -> None:
        """Queue one event for the open procedure (if any). Cheap and non-blocking; disk trouble never raises
        here. ``key`` is the idempotency key: a second event with the same key is ignored. ``procedure_id``
        attributes the event to another procedure (None: to none), for a change to something recorded
        earlier, such as a run relabelled after its procedure ended."""
        _check_kind(kind)
        blob = _check_data(data)
        _check_key(key)
        _check_procedure_id(procedure_id)
        if t_mono_ns is None:
            t_mono_ns = time.monotonic_ns()
        elif type(t_mono_ns) is not int or not 0 <= t_mono_ns < 2**63:
            raise ValueError(f"t_mono_ns must be a non-negative int below 2**63, got {t_mono_ns!r}")
        self._enqueue(_EVENT, (kind, blob, key, t_mono_ns, self._wall_ns()), procedure_id=procedure_id)

    def record_run(self, run: dict, *, key: str, procedure_id: str | None = OPEN_PROCEDURE) -> None:
        """One contrast/fluoro run (its timing dict). Also appears as a ``run`` event. A run recorded again
        (relabelled, completed by a late injector summary) keeps all its records; the newest one counts
        (``run``, ``latest_runs``). Pass the run's own ``procedure_id`` when re-recording it: by default a
        record belongs to the procedure open now."""
        run_id = run.get("run_id", run.get("id")) if isinstance(run, dict) else None
        self._record_typed("run", run, key, run_id if run_id is not None else key, procedure_id)

    def record_injection(self, injection: dict, *, key: str,
                         procedure_id: str | None = OPEN_PROCEDURE) -> None:
        """One injection summary. Also appears as an ``injection`` event."""
        run_id = injection.get("run_id") if isinstance(injection, dict) else None
        self._record_typed("injection", injection, key, run_id, procedure_id)

    def record_clearance(self, result: dict, *, key: str,
                         procedure_id: str | None = OPEN_PROCEDURE) -> None:
        """One clearance result (its ``run_id`` is the post run). Also appears as a ``clearance`` event."""
        run_id = result.get("run_id", result.get("post_run_id")) if isinstance(result, dict) else None
        self._record_typed("clearance", result, key, run_id, procedure_id)

    def _record_typed(self, kind: str, data: dict, key: str, run_id, procedure_id) -> None:
        blob = _check_data(data)
        if key is None:
            raise ValueError(f"record_{kind} needs an idempotency key")
        _check_key(key)
        _check_procedure_id(procedure_id)
        self._enqueue(_TYPED, (kind, blob, key, None if run_id is None else str(run_id),
                               time.monotonic_ns(), self._wall_ns()), procedure_id=procedure_id)

    def _enqueue(self, op: str, payload: tuple, *, bounded: bool = True,
                 procedure_id: str | None = OPEN_PROCEDURE) -> None:
        with self._qlock:
            self._enqueue_locked(op, payload, bounded=bounded, procedure_id=procedure_id)

    def _enqueue_locked(self, op: str, payload: tuple, *, bounded: bool = True,
                        procedure_id: str | None = OPEN_PROCEDURE) -> None:
        if bounded and self._n_bounded >= self._queue_max:
            self._dropped += 1
            dropped = self._dropped
            overflow = True
        else:
            overflow = False
            self._seq += 1
            pid = procedure_id
            if pid is OPEN_PROCEDURE:
                pid = self._current["id"] if self._current else None
            self._queue.append((self._seq, op, pid, payload, bounded))
            if bounded:
                self._n_bounded += 1
        if overflow:
            # Alarm bookkeeping takes its own lock; it never enqueues while we hold _qlock.
            self._raise_alarm("queue_overflow",
                              f"event queue full ({self._queue_max} pending, database not accepting writes); "
                              f"{dropped} events dropped so far", log_event=False)
        else:
            self._wake.set()

    def flush(self, timeout: float = 2.0) -> bool:
        """Wait until everything queued before this call is committed. False if the timeout passed first."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("flush() from a subscriber callback would wait for itself")
        with self._qlock:
            target = self._seq
        deadline = time.monotonic() + timeout
        with self._done:
            while self._committed_seq < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._done.wait(left)
        return True

    def write_problem(self) -> str | None:
        """Why the log cannot commit now (the active write alarm's message), or None when it can."""
        with self._alarm_lock:
            for kind in (*_WRITE_ALARMS, "db_newer_schema", "queue_overflow"):
                if kind in self._alarms:
                    return self._alarms[kind]["message"]
        if self._conn is None:
            return f"event database {self.db_path} is not open"
        return None

    def check_writable(self) -> None:
        """Raise LogUnavailable while the log is failing, so a caller can refuse before changing anything."""
        problem = self.write_problem()
        if problem is not None:
            raise LogUnavailable(f"the event log cannot store changes now: {problem}")

    def commit(self, timeout: float = 2.0) -> None:
        """Wait until everything queued so far is committed; LogUnavailable if it is not within ``timeout``.
        What was queued stays in memory and is written when the database takes writes again."""
        if self.flush(timeout):
            return
        problem = self.write_problem() or f"the database did not commit within {timeout:g} s"
        raise LogUnavailable(f"the change is held in memory but not yet stored: {problem}", retry_after_s=2)

    def subscribe(self, callback: Callable[[dict], None]) -> Callable[[], None]:
        """Call ``callback(event)`` on the writer thread for every newly committed event. Errors in the
        callback are counted and logged, never propagated. Returns the unsubscribe function."""
        if not callable(callback):
            raise ValueError("subscribe() needs a callable")
        with self._sub_lock:
            self._subscribers = self._subscribers + (callback,)

        def unsubscribe() -> None:
            with self._sub_lock:
                subs = list(self._subscribers)
                if callback in subs:
                    subs.remove(callback)
                self._subscribers = tuple(subs)
        return unsubscribe

    # ------------------------------------------------------------------ procedures
    def start_procedure(self, label: str | None = None) -> dict:
        """Open a procedure with an opaque id. ``label`` is a short operator note that passes
        core.identity.check_text (IdentityRefused otherwise): never patient data."""
        if label is not None:
            check_text(label, "procedure label")
        mono, wall = time.monotonic_ns(), utc_iso(self._wall_ns())
        with self._qlock:
            if self._current is not None:
                raise ValueError(f"procedure {self._current['id']} is still open; end it first")
            proc = {"id": uuid.uuid4().hex, "label": label, "started_mono_ns": mono, "started_wall": wall,
                    "ended_mono_ns": None, "ended_wall": None, "fields": {}, "open": True}
            self._current = proc
            self._procedure_touched = True
            self._enqueue_locked(_PROC_START, (dict(proc),), bounded=False, procedure_id=proc["id"])
        return dict(proc, fields={})

    def end_procedure(self) -> dict | None:
        """Close the open procedure; returns it, or None if none was open."""
        mono, wall = time.monotonic_ns(), utc_iso(self._wall_ns())
        with self._qlock:
            proc = self._current
            if proc is None:
                return None
            proc = dict(proc, ended_mono_ns=mono, ended_wall=wall, open=False, fields=dict(proc["fields"]))
            self._current = None
            self._procedure_touched = True
            self._enqueue_locked(_PROC_END, (proc,), bounded=False, procedure_id=proc["id"])
        return dict(proc)

    def current_procedure(self) -> dict | None:
        with self._qlock:
            cur = self._current
            return None if cur is None else dict(cur, fields=dict(cur["fields"]))

    def set_procedure_fields(self, **fields) -> None:
        """Merge clinical parameters (e.g. weight_kg=70, creatinine_mg_dl=1.1) into the open procedure.
        Values are JSON scalars; None removes a field. Identity-like names are refused."""
        for name, value in fields.items():
            if not _FIELD_RE.match(name) or len(name) > _MAX_KIND:
                raise ValueError(f"field name {name!r} must be lower_snake_case")
            check_text(name, "field name")
            if value is not None and not isinstance(value, (bool, int, float, str)):
                raise ValueError(f"field {name!r} must be a number, string, bool or None")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"field {name!r} must be finite, got {value!r}")
            if isinstance(value, str):
                check_text(value, f"field {name}")
        with self._qlock:
            if self._current is None:
                raise ValueError("no open procedure to set fields on")
            merged = dict(self._current["fields"])
            for name, value in fields.items():
                if value is None:
                    merged.pop(name, None)
                else:
                    merged[name] = value
            self._current["fields"] = merged
            self._enqueue_locked(_PROC_FIELDS, (dumps(merged), dumps(fields), time.monotonic_ns(),
                                                self._wall_ns()), bounded=False)

    def procedures(self, limit: int = 50) -> list[dict]:
        """Most recent first. The open procedure is included even before its row is committed."""
        limit = _check_limit(limit)
        rows = [_proc_row(r) for r in self._read(
            "SELECT id, label, started_mono_ns, started_wall, ended_mono_ns, ended_wall, fields "
            "FROM procedures ORDER BY n DESC LIMIT ?", (limit,))]
        cur = self.current_procedure()
        if cur is not None:
            rows = [cur] + [r for r in rows if r["id"] != cur["id"]][: limit - 1]
        return rows

    def procedure(self, pid: str) -> dict | None:
        if not isinstance(pid, str):
            raise ValueError("procedure id must be a string")
        cur = self.current_procedure()
        if cur is not None and cur["id"] == pid:
            return cur
        rows = self._read("SELECT id, label, started_mono_ns, started_wall, ended_mono_ns, ended_wall, fields "
                          "FROM procedures WHERE id = ?", (pid,))
        return _proc_row(rows[0]) if rows else None

    # ------------------------------------------------------------------ reads (committed data only)
    def events(self, after: int = 0, limit: int = 100, procedure_id: str | None = None) -> list[dict]:
        """Committed events with id > after, in id order."""
        if type(after) is not int or after < 0:
            raise ValueError(f"after must be a non-negative int, got {after!r}")
        limit = _check_limit(limit)
        if procedure_id is None:
            rows = self._read(f"SELECT {_EVENT_COLUMNS} FROM events e "
                              "WHERE e.id > ? ORDER BY e.id LIMIT ?", (after, limit))
        else:
            rows = self._read(f"SELECT {_EVENT_COLUMNS} FROM events e "
                              "WHERE e.procedure_id = ? AND e.id > ? ORDER BY e.id LIMIT ?",
                              (procedure_id, after, limit))
        return [_event_row(r) for r in rows]

    def page(self, after: int = 0, limit: int = 100, procedure_id: str | None = None) -> dict:
        """The body of ``GET /api/events``: ``{"events": [...], "next": ID}``; pass ``next`` as ``after``."""
        events = self.events(after, limit, procedure_id)
        return {"events": events, "next": events[-1]["id"] if events else after}

    def runs(self, procedure_id: str | None = None, limit: int = 50) -> list[dict]:
        """The last ``limit`` runs (of one procedure, or all), oldest first. Each is the recorded run dict plus
        ``run_id``, ``procedure_id`` and ``recorded_wall``."""
        return self._typed_rows("runs", procedure_id, limit)

    def run(self, run_id) -> dict | None:
        """A run's newest record (with ``procedure_id``), or None."""
        rows = self._read("SELECT run_id, procedure_id, t_wall, data FROM runs WHERE run_id = ? "
                          "ORDER BY n DESC LIMIT 1", (str(run_id),))
        return _typed_row(rows[0]) if rows else None

    def latest_runs(self, procedure_id: str | None = None, limit: int = 50) -> list[dict]:
        """The last ``limit`` runs (of one procedure, or all), each once, as its newest record; in the order
        they were first recorded, oldest first. A run belongs to the procedure of its newest record."""
        limit = _check_limit(limit)
        where, args = ("WHERE r.procedure_id = ?", (procedure_id, limit)) if procedure_id else ("", (limit,))
        rows = self._read("SELECT r.run_id, r.procedure_id, r.t_wall, r.data FROM runs r JOIN "
                          "(SELECT MIN(n) AS first, MAX(n) AS last FROM runs GROUP BY run_id) g ON r.n = g.last "
                          f"{where} ORDER BY g.first DESC LIMIT ?", args)
        return [_typed_row(r) for r in reversed(rows)]

    def injections(self, procedure_id: str | None = None, limit: int = 50) -> list[dict]:
        return self._typed_rows("injections", procedure_id, limit)

    def clearance_results(self, procedure_id: str | None = None, limit: int = 50) -> list[dict]:
        return self._typed_rows("clearance", procedure_id, limit)

    def _typed_rows(self, table: str, procedure_id: str | None, limit: int) -> list[dict]:
        limit = _check_limit(limit)
        where, args = ("WHERE procedure_id = ?", (procedure_id, limit)) if procedure_id else ("", (limit,))
        rows = self._read(f"SELECT run_id, procedure_id, t_wall, data FROM {table} {where} "
                          "ORDER BY n DESC LIMIT ?", args)
        return [_typed_row(r) for r in reversed(rows)]

    def _read(self, sql: str, args: tuple) -> list[tuple]:
        # A separate connection: in WAL, readers see the last commit and never wait for the writer.
        with self._read_lock:
            if self._reader is None:
                return []
            try:
                return self._reader.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                kind = _classify(exc)
                if kind == "db_corrupt":
                    self._raise_alarm(kind, f"event database {self.db_path} is corrupt: {exc}")
                log.warning("event log read failed: %s", exc)
                return []

    # ------------------------------------------------------------------ status
    @property
    def alarms(self) -> list[dict]:
        with self._alarm_lock:
            return [dict(a) for a in self._alarms.values()]

    def stats(self) -> dict:
        with self._qlock:
            pending, dropped = self._n_bounded, self._dropped
        lat = sorted(self._latencies_ms)
        p99 = lat[min(len(lat) - 1, math.ceil(0.99 * len(lat)) - 1)] if lat else None
        db_bytes = 0
        for suffix in ("", "-wal"):
            try:
                db_bytes += os.stat(str(self.db_path) + suffix).st_size
            except OSError:
                pass
        return {"committed": self._committed, "pending": pending, "dropped": dropped,
                "duplicates": self._duplicates, "rejected": self._rejected,
                "callback_errors": self._callback_errors,
                "commit_latency_p99_ms": p99, "last_commit_ms": self._last_commit_ms,
                "last_commit_wall": self._last_commit_wall, "db_bytes": db_bytes,
                "writable": self._conn is not None and not self._alarms_active(_WRITE_ALARMS)}

    def set_max_page_count(self, pages: int | None) -> None:
        """Change the database size cap (pages; None lifts it). Applied by the writer before its next write."""
        if pages is not None and not (isinstance(pages, int) and pages > 0):
            raise ValueError(f"max_page_count must be a positive int or None, got {pages!r}")
        self._max_page_count = pages
        self._wake.set()

    def set_retention(self, *, max_age_days: float | None, max_bytes: int | None) -> None:
        """Change the retention limits (None: no limit); the writer applies them at its next retention pass."""
        if max_age_days is not None and not (isinstance(max_age_days, (int, float)) and max_age_days > 0):
            raise ValueError(f"max_age_days must be > 0 or None, got {max_age_days!r}")
        if max_bytes is not None and not (isinstance(max_bytes, int) and max_bytes > 0):
            raise ValueError(f"max_bytes must be a positive int or None, got {max_bytes!r}")
        self._max_age_days, self._max_bytes = max_age_days, max_bytes

    def enforce_retention(self, timeout: float = 10.0) -> dict | None:
        """Run retention now on the writer thread; returns what it deleted, None on timeout or no database."""
        with self._retention_done:
            before = self._retention_runs
            self._retention_due.set()
            self._wake.set()
            if not self._retention_done.wait_for(lambda: self._retention_runs > before, timeout):
                return None
            return dict(self._last_retention) if self._last_retention else None

    # ------------------------------------------------------------------ alarms
    def _raise_alarm(self, kind: str, message: str, *, log_event: bool = True) -> None:
        with self._alarm_lock:
            existing = self._alarms.get(kind)
            if existing is not None:
                existing["message"] = message
                return
            self._alarms[kind] = {"kind": kind, "message": message,
                                  "since_wall": utc_iso(self._wall_ns()), "since_mono_ns": time.monotonic_ns()}
        log.error("event log alarm %s: %s", kind, message)
        if log_event:
            # Written once the database takes writes again: the log shows its own outage.
            self._try_record("alarm", {"alarm": kind, "message": message})

    def _clear_alarms(self, kinds) -> None:
        cleared = []
        with self._alarm_lock:
            for kind in kinds:
                alarm = self._alarms.pop(kind, None)
                if alarm is not None:
                    cleared.append(alarm)
        for alarm in cleared:
            secs = (time.monotonic_ns() - alarm["since_mono_ns"]) / 1e9
            log.warning("event log alarm %s cleared after %.1f s", alarm["kind"], secs)
            self._try_record("alarm_cleared", {"alarm": alarm["kind"], "since_wall": alarm["since_wall"],
                                               "duration_s": round(secs, 3)})

    def _alarms_active(self, kinds) -> bool:
        with self._alarm_lock:
            return any(k in self._alarms for k in kinds)

    def _try_record(self, kind: str, data: dict) -> None:
        # The log's own events (alarms, resume, retention) are rare and never dropped for queue space.
        self._enqueue(_EVENT, (kind, dumps(data), None, time.monotonic_ns(), self._wall_ns()), bounded=False)

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        batch: list = []
        backoff = 0.0
        next_retention = 0.0
        try:
            while True:
                stopping = self._stop.is_set()
                if stopping and time.monotonic() >= self._stop_deadline:
                    break
                if self._conn is None:
                    if self._refused or not self._open():
                        self._open_reader_only()
                        self._opened.set()
                        if stopping and self._refused:
                            break
                        # A corrupt file does not heal by itself: retry (and re-check it) less often.
                        slow = self._alarms_active(("db_corrupt", "db_newer_schema"))
                        backoff = self._sleep(backoff, 10 * self._retry_max_s if slow else self._retry_max_s)
                        continue
                    self._opened.set()
                    next_retention = 0.0
                if self._max_page_count is not None or self._applied_pages is not None:
                    try:
                        self._apply_page_cap()
                    except sqlite3.Error as exc:
                        self._write_failed(exc)
                        continue
                if self._retention_due.is_set() or (self._retention_enabled and time.monotonic() >= next_retention):
                    self._retention_due.clear()
                    next_retention = time.monotonic() + self._retention_interval_s
                    self._run_retention()
                    continue
                self._wake.clear()
                if not batch:
                    batch = self._drain()
                if not batch:
                    if stopping:
                        break
                    wait = min(1.0, max(0.0, next_retention - time.monotonic())) if self._retention_enabled else 1.0
                    self._wake.wait(wait)
                    continue
                batch = self._commit(batch)
                backoff = self._sleep(backoff) if batch else 0.0
        except Exception:  # a bug here must not silently stop durable logging
            log.exception("event writer crashed")
            self._raise_alarm("db_error", "event writer thread crashed (see log); events are not being written")
        finally:
            unwritten = len(batch) + len(self._queue)
            if unwritten:
                log.error("event log closed with %d queued items not written", unwritten)
            self._disconnect()
            self._opened.set()

    @property
    def _retention_enabled(self) -> bool:
        return self._max_age_days is not None or self._max_bytes is not None

    def _sleep(self, backoff: float, limit: float | None = None) -> float:
        # Wakes on close(), not on record(): a burst of events must not turn the retry into a busy loop.
        backoff = min(limit or self._retry_max_s, max(0.05, backoff * 2))
        if self._stop.is_set():   # closing: keep retrying until the deadline, but not in a busy loop
            time.sleep(max(0.0, min(backoff, self._stop_deadline - time.monotonic())))
        else:
            self._stop.wait(backoff)
        return backoff

    def _drain(self) -> list:
        q, out = self._queue, []
        with self._qlock:
            for _ in range(min(len(q), self._batch_max)):
                out.append(q.popleft())
        return out

    def _apply_page_cap(self) -> None:
        pages = self._max_page_count
        if pages == self._applied_pages:
            return
        # PRAGMA max_page_count cannot go below the current size; None means SQLite's maximum.
        self._conn.execute(f"PRAGMA max_page_count={pages if pages is not None else 4294967294}")
        self._applied_pages = pages

    def _open(self) -> bool:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            if self._lock_fd is None:
                try:
                    fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
                except OSError:
                    # Read-only directory with an existing lock file: lock it anyway, let SQLite report.
                    fd = os.open(self._lock_path, os.O_RDONLY)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    self._raise_alarm("db_locked", f"another process is writing {self.db_path}; "
                                                   "only one cathlab-edge may use a data directory")
                    return False
                self._lock_fd = fd
            conn = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False, timeout=5.0)
        except OSError as exc:
            self._raise_alarm("db_readonly", f"cannot create or lock the event database in {self.data_dir}: "
                                             f"{exc}; events are held in memory")
            return False
        except sqlite3.Error as exc:
            self._open_failed(exc)
            return False
        reader = None
        try:
            schema.check_version(conn, self.db_path)   # before any pragma below may write a newer file
            # Lets retention give pages back to the filesystem. Takes effect only on a new file, and only
            # before journal_mode=WAL writes the header; a no-op on an existing database.
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                log.warning("event database %s runs in journal mode %s, not WAL", self.db_path, mode)
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA journal_size_limit=67108864")   # a burst must not leave a huge WAL behind
            schema.migrate(conn, self.db_path)
            # A damaged page may sit where appends never go: look once per open, so corruption alarms at
            # start instead of surfacing months later in an export.
            problem = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
            if problem != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed: {problem}")
            # Probe for writability now, so a read-only file alarms at start, not at the first event.
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("COMMIT")
            self._applied_pages = None
            reader = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False, timeout=5.0)
            reader.execute("PRAGMA query_only=ON")
            self._conn = conn
            self._resume(conn)
        except schema.NewerSchemaError as exc:
            conn.close()
            self._refused = True
            self._raise_alarm("db_newer_schema", str(exc), log_event=False)
            return False
        except sqlite3.Error as exc:
            self._conn = None
            _close_quietly(conn)
            if reader is not None:
                _close_quietly(reader)
            self._open_failed(exc)
            return False
        with self._read_lock:
            if self._reader is not None:
                _close_quietly(self._reader)
            self._reader = reader
        self._clear_alarms(("db_locked",))
        log.info("event database %s open (schema %d)", self.db_path, schema.SCHEMA_VERSION)
        return True

    def _open_reader_only(self) -> None:
        """While the database cannot be written (read-only, locked), keep serving what it already holds."""
        if self._refused or self._reader is not None or not self.db_path.is_file():
            return
        uri = self.db_path.resolve().as_uri()
        # A WAL database on a read-only directory cannot get its -shm file; immutable=1 reads it without
        # one. Safe here: we hold the lock, so nobody writes it until our writer reopens (and replaces this).
        for target in (f"{uri}?mode=ro", f"{uri}?immutable=1"):
            try:
                reader = sqlite3.connect(target, uri=True, isolation_level=None, check_same_thread=False,
                                         timeout=1.0)
            except sqlite3.Error:
                continue
            try:
                if schema.schema_version(reader) == schema.SCHEMA_VERSION:
                    reader.execute("SELECT 1 FROM events LIMIT 1").fetchall()
                    with self._read_lock:
                        self._reader = reader
                    return
            except sqlite3.Error:
                pass
            _close_quietly(reader)
        # Unreadable as well: reads return nothing, the alarm already says why.

    def _open_failed(self, exc: sqlite3.Error) -> None:
        kind = _classify(exc)
        messages = {
            "db_readonly": f"event database {self.db_path} cannot be written ({exc}); "
                           "check file permissions and the mount; events are held in memory",
            "db_corrupt": f"event database {self.db_path} is corrupt or not an SQLite file ({exc}); "
                          "events are held in memory. Move the file aside to start a new log",
            "disk_full": f"no space to open event database {self.db_path} ({exc}); events are held in memory",
        }
        self._raise_alarm(kind, messages.get(kind, f"cannot open event database {self.db_path}: {exc}"))

    def _resume(self, conn: sqlite3.Connection) -> None:
        rows = conn.execute("SELECT id, label, started_mono_ns, started_wall, ended_mono_ns, ended_wall, fields "
                            "FROM procedures WHERE ended_wall IS NULL ORDER BY n DESC").fetchall()
        if not rows:
            return
        wall, mono = utc_iso(self._wall_ns()), time.monotonic_ns()
        resumed = None
        with self._qlock:
            if self._current is None and not self._procedure_touched:
                self._current = resumed = dict(_proc_row(rows[0]), open=True)
            keep = self._current["id"] if self._current else None
        stale = [r[0] for r in rows if r[0] != keep]
        if stale:
            # Several open procedures can only come from a procedure started while the database was down.
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("UPDATE procedures SET ended_wall = ?, ended_mono_ns = ? WHERE id = ?",
                             [(wall, mono, pid) for pid in stale])
            conn.execute("COMMIT")
            log.warning("closed %d stale open procedure(s) superseded by %s", len(stale), keep)
        if resumed is not None:
            log.info("resumed open procedure %s", resumed["id"])
            self._try_record("procedure_resumed", {"procedure_id": resumed["id"]})

    def _disconnect(self) -> None:
        with self._read_lock:
            if self._reader is not None:
                _close_quietly(self._reader)
                self._reader = None
        if self._conn is not None:
            _close_quietly(self._conn)
            self._conn = None
        if self._lock_fd is not None and self._stop.is_set():
            os.close(self._lock_fd)   # keep the lock across reconnects; give it up only on close()
            self._lock_fd = None

    def _commit(self, batch: list) -> list:
        """Write one batch in one transaction. Returns what is left to write ([] when done)."""
        conn = self._conn
        t0 = time.perf_counter_ns()
        new_events: list[dict] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for item in batch:
                self._apply(conn, item, new_events)
            conn.execute("COMMIT")
        except _Poison as exc:
            self._rollback(conn)
            if len(batch) == 1:
                self._rejected += 1
                log.error("event log rejected a queued item (%s): %.200r", exc, batch[0])
                self._finish(batch, [], None)
                return []
            # Isolate the bad item without losing the good ones: one transaction each.
            for i, item in enumerate(batch):
                if self._commit([item]):
                    return batch[i:]
            return []
        except sqlite3.Error as exc:
            self._rollback(conn)
            self._write_failed(exc)
            return batch
        self._finish(batch, new_events, (time.perf_counter_ns() - t0) / 1e6)
        return []

    def _apply(self, conn: sqlite3.Connection, item: tuple, new_events: list) -> None:
        seq, op, pid, payload, _ = item
        try:
            if op == _EVENT:
                kind, blob, key, mono, wall_ns = payload
                self._insert_event(conn, key or f"{self._session}:{seq}", pid, mono, utc_iso(wall_ns), kind,
                                   blob, new_events)
            elif op == _TYPED:
                kind, blob, key, run_id, mono, wall_ns = payload
                wall = utc_iso(wall_ns)
                cur = conn.execute(f"INSERT OR IGNORE INTO {_TYPED_TABLES[kind]} "
                                   "(key, run_id, procedure_id, t_mono_ns, t_wall, data) VALUES (?,?,?,?,?,?)",
                                   (key, run_id, pid, mono, wall, blob))
                if cur.rowcount == 1:
                    # Stored once: the event refers to the record (subscribers still get the data).
                    self._insert_event(conn, f"{kind}:{key}", pid, mono, wall, kind, blob, new_events,
                                       ref=cur.lastrowid)
                else:
                    self._duplicates += 1
            elif op == _PROC_START:
                (p,) = payload
                conn.execute("INSERT OR IGNORE INTO procedures (id, label, started_mono_ns, started_wall, fields) "
                             "VALUES (?,?,?,?,'{}')", (p["id"], p["label"], p["started_mono_ns"],
                                                       p["started_wall"]))
                self._insert_event(conn, f"procedure_start:{p['id']}", pid, p["started_mono_ns"],
                                   p["started_wall"], "procedure_start", dumps({"label": p["label"]}), new_events)
            elif op == _PROC_END:
                (p,) = payload
                conn.execute("UPDATE procedures SET ended_mono_ns = ?, ended_wall = ?, fields = ? WHERE id = ?",
                             (p["ended_mono_ns"], p["ended_wall"], dumps(p["fields"]), p["id"]))
                self._insert_event(conn, f"procedure_end:{p['id']}", pid, p["ended_mono_ns"], p["ended_wall"],
                                   "procedure_end", "{}", new_events)
            elif op == _PROC_FIELDS:
                merged, changed, mono, wall_ns = payload
                conn.execute("UPDATE procedures SET fields = ? WHERE id = ?", (merged, pid))
                self._insert_event(conn, f"{self._session}:{seq}", pid, mono, utc_iso(wall_ns),
                                   "procedure_fields", changed, new_events)
            else:
                raise _Poison(f"unknown queue op {op!r}")
        except (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError, OverflowError) as exc:
            raise _Poison(str(exc)) from exc

    def _insert_event(self, conn, key, pid, mono, wall, kind, blob, new_events, ref: int | None = None) -> None:
        cur = conn.execute("INSERT OR IGNORE INTO events (key, procedure_id, t_mono_ns, t_wall, kind, data, ref) "
                           "VALUES (?,?,?,?,?,?,?)", (key, pid, mono, wall, kind, "{}" if ref else blob, ref))
        if cur.rowcount == 1:
            new_events.append((cur.lastrowid, pid, mono, wall, kind, blob))
        else:
            self._duplicates += 1

    def _rollback(self, conn: sqlite3.Connection) -> None:
        # SQLite may already have rolled back (SQLITE_FULL does); ROLLBACK then errors harmlessly.
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def _write_failed(self, exc: sqlite3.Error) -> None:
        kind = _classify(exc)
        if kind == "disk_full":
            self._raise_alarm(kind, f"disk full writing {self.db_path} ({exc}); events are held in memory "
                                    f"(up to {self._queue_max}) until space returns")
            return   # the connection is fine; retry on it
        if kind == "db_readonly":
            msg = f"event database {self.db_path} became read-only ({exc}); events are held in memory"
        elif kind == "db_corrupt":
            msg = f"event database {self.db_path} is corrupt ({exc}); events are held in memory. " \
                  "Move the file aside to start a new log"
        elif kind == "db_locked":
            msg = f"event database {self.db_path} is locked by another process ({exc})"
        else:
            msg = f"writing event database {self.db_path} failed ({exc}); retrying"
        self._raise_alarm(kind, msg)
        # Anything but a full disk may have left the connection unusable: reconnect from scratch.
        self._disconnect()

    def _finish(self, batch: list, new_events: list, latency_ms: float | None) -> None:
        bounded = sum(1 for item in batch if item[4])
        with self._qlock:
            self._n_bounded -= bounded
            queue_empty = self._n_bounded == 0
        self._committed += len(new_events)
        if latency_ms is not None:
            self._latencies_ms.append(latency_ms)
            self._last_commit_ms = latency_ms
            self._last_commit_wall = utc_iso(self._wall_ns())
        if self._alarms_active(_WRITE_ALARMS):
            self._clear_alarms(_WRITE_ALARMS)
        if queue_empty and self._alarms_active(("queue_overflow",)):
            self._clear_alarms(("queue_overflow",))
        subs = self._subscribers
        if subs:
            for eid, pid, mono, wall, kind, blob in new_events:
                event = {"id": eid, "procedure_id": pid, "t_mono_ns": mono, "t_wall": wall, "kind": kind,
                         "data": json.loads(blob)}
                for callback in subs:
                    try:
                        callback(event)
                    except Exception:  # a subscriber's bug must not stop the log
                        self._callback_errors += 1
                        if self._callback_errors == 1 or self._callback_errors % 1000 == 0:
                            log.exception("event subscriber failed (%d failures so far)", self._callback_errors)
        # Last: flush() returns once the batch is committed *and* delivered to subscribers.
        with self._done:
            self._committed_seq = batch[-1][0]
            self._done.notify_all()

    # ------------------------------------------------------------------ retention (writer thread)
    def _run_retention(self) -> None:
        conn = self._conn
        result = {"procedures": 0, "orphan_rows": 0}
        try:
            with self._qlock:
                keep = self._current["id"] if self._current else None
            if self._max_age_days is not None:
                cutoff = utc_iso(self._wall_ns() - int(self._max_age_days * 86400e9))
                old = [r[0] for r in conn.execute(
                    "SELECT id FROM procedures WHERE ended_wall IS NOT NULL AND ended_wall < ? ORDER BY n",
                    (cutoff,))]
                for pid in old:
                    if pid != keep:
                        self._delete_procedure(conn, pid)
                        result["procedures"] += 1
                result["orphan_rows"] += self._delete_orphans(conn, cutoff, None)
            if self._max_bytes is not None:
                while self._used_bytes(conn) > self._max_bytes:
                    proc = conn.execute(
                        "SELECT id, started_wall FROM procedures WHERE ended_wall IS NOT NULL AND id IS NOT ? "
                        "ORDER BY started_wall, n LIMIT 1", (keep,)).fetchone()
                    orphan = min((w for (w,) in (conn.execute(
                        f"SELECT MIN(t_wall) FROM {t} WHERE procedure_id IS NULL").fetchone()
                        for t in schema.PROCEDURE_TABLES) if w is not None), default=None)
                    if proc is None and orphan is None:
                        log.warning("event database above max_bytes (%d) but only the open procedure is left",
                                    self._max_bytes)
                        break
                    if orphan is not None and (proc is None or orphan < proc[1]):
                        # Oldest orphans first, up to the next procedure's start, a chunk at a time.
                        result["orphan_rows"] += self._delete_orphans(conn, proc[1] if proc else None, 2000)
                    else:
                        self._delete_procedure(conn, proc[0])
                        result["procedures"] += 1
            if result["procedures"] or result["orphan_rows"]:
                # Python's execute() stops this pragma after one step (one page); executescript() runs it out.
                conn.executescript("PRAGMA incremental_vacuum;")
                # In WAL the file shrinks when the checkpoint copies the vacuum back; TRUNCATE also empties
                # the WAL the deletes filled (a reader mid-query only postpones it to the next pass).
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                log.info("retention deleted %d procedure(s) and %d orphan row(s)", result["procedures"],
                         result["orphan_rows"])
                self._try_record("retention", dict(result))
        except sqlite3.Error as exc:
            self._rollback(conn)
            log.warning("retention failed: %s", exc)
            self._write_failed(exc)
            result = {}
        with self._retention_done:
            self._last_retention = result
            self._retention_runs += 1
            self._retention_done.notify_all()

    @staticmethod
    def _used_bytes(conn: sqlite3.Connection) -> int:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * conn.execute("PRAGMA page_size").fetchone()[0]

    @staticmethod
    def _delete_procedure(conn: sqlite3.Connection, pid: str) -> None:
        conn.execute("BEGIN IMMEDIATE")
        for table in schema.PROCEDURE_TABLES:
            conn.execute(f"DELETE FROM {table} WHERE procedure_id = ?", (pid,))
        conn.execute("DELETE FROM procedures WHERE id = ?", (pid,))
        conn.execute("COMMIT")

    @staticmethod
    def _delete_orphans(conn: sqlite3.Connection, before: str | None, chunk: int | None) -> int:
        """Delete rows outside any procedure older than ``before`` (or all); with ``chunk``, at most that many
        events plus the other tables' orphans up to the newest deleted event's time."""
        deleted = 0
        conn.execute("BEGIN IMMEDIATE")
        if chunk is not None:
            row = conn.execute("SELECT MAX(t_wall) FROM (SELECT t_wall FROM events WHERE procedure_id IS NULL "
                               "AND (? IS NULL OR t_wall < ?) ORDER BY t_wall LIMIT ?)",
                               (before, before, chunk)).fetchone()
            # Nothing in events: the oldest orphan sits in another table; take those up to `before`.
            limit_wall = row[0] if row[0] is not None else before
            cond, args = ("t_wall <= ?", (limit_wall,)) if limit_wall is not None else ("1", ())
        else:
            cond, args = "t_wall < ?", (before,)
        for table in schema.PROCEDURE_TABLES:
            deleted += conn.execute(f"DELETE FROM {table} WHERE procedure_id IS NULL AND {cond}", args).rowcount
        conn.execute("COMMIT")
        return deleted


# ---------------------------------------------------------------------- validation and row helpers
def _check_kind(kind) -> None:
    if not isinstance(kind, str) or not _KIND_RE.match(kind) or len(kind) > _MAX_KIND:
        raise ValueError(f"event kind must be lower_snake_case (dots allowed), at most {_MAX_KIND} "
                         f"characters, got {kind!r}")


def _check_data(data) -> str:
    if not isinstance(data, dict):
        raise ValueError(f"event data must be a dict, got {type(data).__name__}")
    # Operator labels travel in events and run records: whoever writes them, they pass the identity check.
    if data.get("label") is not None:
        check_text(data["label"], "label")
    return dumps(data)


def _check_key(key) -> None:
    if key is not None and (not isinstance(key, str) or not key or len(key) > _MAX_KEY):
        raise ValueError(f"idempotency key must be a non-empty string of at most {_MAX_KEY} characters, "
                         f"got {key!r}")


def _check_procedure_id(procedure_id) -> None:
    if procedure_id is OPEN_PROCEDURE or procedure_id is None:
        return
    if not isinstance(procedure_id, str) or not procedure_id or len(procedure_id) > _MAX_PROCEDURE_ID:
        raise ValueError(f"procedure_id must be a procedure's id, None or OPEN_PROCEDURE, got {procedure_id!r}")


def _check_limit(limit) -> int:
    if type(limit) is not int or not 1 <= limit <= _MAX_LIMIT:
        raise ValueError(f"limit must be an int in 1..{_MAX_LIMIT}, got {limit!r}")
    return limit


def _event_row(r: tuple) -> dict:
    return {"id": r[0], "procedure_id": r[1], "t_mono_ns": r[2], "t_wall": r[3], "kind": r[4],
            "data": json.loads(r[5])}


def _proc_row(r: tuple) -> dict:
    return {"id": r[0], "label": r[1], "started_mono_ns": r[2], "started_wall": r[3], "ended_mono_ns": r[4],
            "ended_wall": r[5], "fields": json.loads(r[6]), "open": r[5] is None}


def _typed_row(r: tuple) -> dict:
    out = json.loads(r[3])
    out.setdefault("run_id", r[0])
    out["procedure_id"] = r[1]
    out["recorded_wall"] = r[2]
    return out


def _close_quietly(conn: sqlite3.Connection) -> None:
    try:
        conn.close()
    except sqlite3.Error:
        pass
