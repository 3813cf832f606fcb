"""The event log's writer thread: it owns the write connection, drains the queue into one transaction per
batch, retries with backoff while the disk refuses, reconnects, runs retention, and hands committed events
to subscribers. Nothing here raises into the log's callers: failures become alarms.
"""
from __future__ import annotations

import collections
import json
import logging
import math
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from core.store import database, retention, schema
from core.store.alarms import WRITE_ALARMS, Alarms, classify, open_failure, write_failure
from core.store.queue import WriteQueue
from core.store.records import utc_iso

log = logging.getLogger("cathlab.eventlog")

# Queue ops: one event; a run, injection or clearance record with its event; a caller's own write.
EVENT, TYPED, WRITE = "event", "typed", "write"


class _Poison(Exception):
    """A queued item that SQLite rejects on its own merits (a bug upstream, not the disk)."""


class Writer:
    """Writes ``queue`` into ``db_path``. ``max_page_count``, ``max_age_days`` and ``max_bytes`` may be
    changed while it runs (then ``wake()``)."""

    def __init__(self, db_path: Path, queue: WriteQueue, alarms: Alarms, *, max_page_count: int | None,
                 max_age_days: float | None, max_bytes: int | None, retention_interval_s: float,
                 batch_max: int, retry_max_s: float, wall_clock_ns: Callable[[], int],
                 note: Callable[[str, dict], None]) -> None:
        self.db_path = db_path
        self._lock_path = db_path.with_name(db_path.name + ".lock")
        self._queue = queue
        self._alarms = alarms
        self.max_page_count = max_page_count
        self.max_age_days = max_age_days
        self.max_bytes = max_bytes
        self.keep_unforwarded = False        # the fleet publisher's backlog outlives age retention
        self._retention_interval_s = retention_interval_s
        self._batch_max = batch_max
        self._retry_max_s = retry_max_s
        self._wall_ns = wall_clock_ns
        self._note = note                      # the log's own events, never dropped
        self._session = uuid.uuid4().hex[:12]  # prefix of automatic idempotency keys
        self.subscribers: tuple[Callable[[dict], None], ...] = ()
        self.open_hooks: tuple[Callable[[sqlite3.Connection], None], ...] = ()

        self._stop = threading.Event()
        self._stop_deadline = math.inf
        self._opened = threading.Event()    # first open attempt finished (either way)
        self._retention_due = threading.Event()
        self._retention_done = threading.Condition()
        self._retention_runs = 0
        self._last_retention: dict = {}
        self._thread: threading.Thread | None = None

        self._conn: sqlite3.Connection | None = None
        self._applied_pages: int | None = None
        self._lock_fd: int | None = None
        self._refused = False               # newer schema: never write
        self._read_lock = threading.Lock()
        self._reader: sqlite3.Connection | None = None

        self.callback_errors = 0
        self.committed = 0
        self.duplicates = 0
        self.rejected = 0
        self.latencies_ms: collections.deque = collections.deque(maxlen=2048)
        self.last_commit_ms: float | None = None
        self.last_commit_wall: str | None = None

    # ------------------------------------------------------------------ control (other threads)
    def start(self, open_timeout: float) -> None:
        self._thread = threading.Thread(target=self._run, name="eventlog-writer", daemon=True)
        self._thread.start()
        self._opened.wait(open_timeout)

    def stop(self, timeout: float) -> None:
        """Write what can be written within ``timeout`` seconds, then close the database."""
        self._stop_deadline = time.monotonic() + max(0.0, timeout)
        self._stop.set()
        self.wake()
        self._thread.join(timeout + 5.0)
        if self._thread.is_alive():
            log.error("event writer did not stop within %.1f s", timeout + 5.0)

    def wake(self) -> None:
        self._queue.wake.set()

    @property
    def started(self) -> bool:
        return self._thread is not None

    def is_current_thread(self) -> bool:
        return threading.current_thread() is self._thread

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    def query(self, sql: str, args: tuple) -> list[tuple]:
        # A separate connection: in WAL, readers see the last commit and never wait for the writer.
        with self._read_lock:
            if self._reader is None:
                return []
            try:
                return self._reader.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                kind = classify(exc)
                if kind == "db_corrupt":
                    self._alarms.raise_alarm(kind, f"event database {self.db_path} is corrupt: {exc}")
                log.warning("event log read failed: %s", exc)
                return []

    def retention_now(self, timeout: float) -> dict | None:
        with self._retention_done:
            before = self._retention_runs
            self._retention_due.set()
            self.wake()
            if not self._retention_done.wait_for(lambda: self._retention_runs > before, timeout):
                return None
            return dict(self._last_retention) if self._last_retention else None

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        batch: list = []
        backoff = 0.0
        next_retention = 0.0
        wake = self._queue.wake
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
                        slow = self._alarms.active(("db_corrupt", "db_newer_schema"))
                        backoff = self._sleep(backoff, 10 * self._retry_max_s if slow else self._retry_max_s)
                        continue
                    self._opened.set()
                    next_retention = 0.0
                if self.max_page_count is not None or self._applied_pages is not None:
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
                wake.clear()
                if not batch:
                    batch = self._queue.take(self._batch_max)
                if not batch:
                    if stopping:
                        break
                    wait = min(1.0, max(0.0, next_retention - time.monotonic())) if self._retention_enabled else 1.0
                    wake.wait(wait)
                    continue
                batch = self._commit(batch)
                backoff = self._sleep(backoff) if batch else 0.0
        except Exception:  # a bug here must not silently stop durable logging
            log.exception("event writer crashed")
            self._alarms.raise_alarm("db_error",
                                     "event writer thread crashed (see log); events are not being written")
        finally:
            unwritten = len(batch) + len(self._queue)
            if unwritten:
                log.error("event log closed with %d queued items not written", unwritten)
            self._disconnect()
            self._opened.set()

    @property
    def _retention_enabled(self) -> bool:
        return self.max_age_days is not None or self.max_bytes is not None

    def _sleep(self, backoff: float, limit: float | None = None) -> float:
        # Wakes on stop(), not on a queued item: a burst of events must not turn the retry into a busy loop.
        backoff = min(limit or self._retry_max_s, max(0.05, backoff * 2))
        if self._stop.is_set():   # closing: keep retrying until the deadline, but not in a busy loop
            time.sleep(max(0.0, min(backoff, self._stop_deadline - time.monotonic())))
        else:
            self._stop.wait(backoff)
        return backoff

    def _apply_page_cap(self) -> None:
        pages = self.max_page_count
        if pages == self._applied_pages:
            return
        # PRAGMA max_page_count cannot go below the current size; None means SQLite's maximum.
        self._conn.execute(f"PRAGMA max_page_count={pages if pages is not None else 4294967294}")
        self._applied_pages = pages

    # ------------------------------------------------------------------ connections
    def _open(self) -> bool:
        try:
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
            if self._lock_fd is None:
                self._lock_fd = database.lock_data_dir(self._lock_path)
        except database.DataDirLocked:
            self._alarms.raise_alarm("db_locked", f"another process is writing {self.db_path}; "
                                                  "only one cathlab-edge may use a data directory")
            return False
        except OSError as exc:
            self._alarms.raise_alarm("db_readonly", f"cannot create or lock the event database in "
                                                    f"{self.db_path.parent}: {exc}; events are held in memory")
            return False
        try:
            conn, reader = database.open_writer(self.db_path)
        except schema.NewerSchemaError as exc:
            self._refused = True
            self._alarms.raise_alarm("db_newer_schema", str(exc), note=False)
            return False
        except sqlite3.Error as exc:
            self._open_failed(exc)
            return False
        self._applied_pages = None
        try:
            for hook in self.open_hooks:
                hook(conn)
        except sqlite3.Error as exc:
            database.close_quietly(conn)
            database.close_quietly(reader)
            self._open_failed(exc)
            return False
        self._conn = conn
        with self._read_lock:
            if self._reader is not None:
                database.close_quietly(self._reader)
            self._reader = reader
        self._alarms.clear(("db_locked",))
        log.info("event database %s open (schema %d)", self.db_path, schema.SCHEMA_VERSION)
        return True

    def _open_reader_only(self) -> None:
        """While the database cannot be written (read-only, locked), keep serving what it already holds."""
        if self._refused or self._reader is not None:
            return
        reader = database.open_reader_only(self.db_path)
        if reader is not None:   # unreadable as well: reads return nothing, the alarm already says why
            with self._read_lock:
                self._reader = reader

    def _open_failed(self, exc: sqlite3.Error) -> None:
        kind = classify(exc)
        self._alarms.raise_alarm(kind, open_failure(kind, self.db_path, exc))

    def _disconnect(self) -> None:
        with self._read_lock:
            if self._reader is not None:
                database.close_quietly(self._reader)
                self._reader = None
        if self._conn is not None:
            database.close_quietly(self._conn)
            self._conn = None
        if self._lock_fd is not None and self._stop.is_set():
            os.close(self._lock_fd)   # keep the lock across reconnects; give it up only on stop()
            self._lock_fd = None

    # ------------------------------------------------------------------ batches
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
            database.rollback(conn)
            if len(batch) == 1:
                self.rejected += 1
                log.error("event log rejected a queued item (%s): %.200r", exc, batch[0])
                self._finish(batch, [], None)
                return []
            # Isolate the bad item without losing the good ones: one transaction each.
            for i, item in enumerate(batch):
                if self._commit([item]):
                    return batch[i:]
            return []
        except sqlite3.Error as exc:
            database.rollback(conn)
            self._write_failed(exc)
            return batch
        self._finish(batch, new_events, (time.perf_counter_ns() - t0) / 1e6)
        return []

    def _apply(self, conn: sqlite3.Connection, item: tuple, new_events: list) -> None:
        seq, op, pid, payload, _ = item
        try:
            if op == EVENT:
                kind, blob, key, mono, wall_ns = payload
                self._insert_event(conn, key or f"{self._session}:{seq}", pid, mono, utc_iso(wall_ns), kind,
                                   blob, new_events)
            elif op == TYPED:
                kind, blob, key, run_id, mono, wall_ns = payload
                wall = utc_iso(wall_ns)
                cur = conn.execute(f"INSERT OR IGNORE INTO {schema.REF_TABLES[kind]} "
                                   "(key, run_id, procedure_id, t_mono_ns, t_wall, data) VALUES (?,?,?,?,?,?)",
                                   (key, run_id, pid, mono, wall, blob))
                if cur.rowcount == 1:
                    # Stored once: the event refers to the record (subscribers still get the data).
                    self._insert_event(conn, f"{kind}:{key}", pid, mono, wall, kind, blob, new_events,
                                       ref=cur.lastrowid)
                else:
                    self.duplicates += 1
            elif op == WRITE:
                def event(key, mono, wall, kind, blob) -> None:
                    self._insert_event(conn, key or f"{self._session}:{seq}", pid, mono, wall, kind, blob,
                                       new_events)
                payload(conn, event)
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
            self.duplicates += 1

    def _write_failed(self, exc: sqlite3.Error) -> None:
        kind = classify(exc)
        self._alarms.raise_alarm(kind, write_failure(kind, self.db_path, exc, self._queue.queue_max))
        if kind != "disk_full":
            # Anything but a full disk may have left the connection unusable: reconnect from scratch.
            self._disconnect()

    def _finish(self, batch: list, new_events: list, latency_ms: float | None) -> None:
        queue_empty = self._queue.release(batch)
        self.committed += len(new_events)
        if latency_ms is not None:
            self.latencies_ms.append(latency_ms)
            self.last_commit_ms = latency_ms
            self.last_commit_wall = utc_iso(self._wall_ns())
        if self._alarms.active(WRITE_ALARMS):
            self._alarms.clear(WRITE_ALARMS)
        if queue_empty and self._alarms.active(("queue_overflow",)):
            self._alarms.clear(("queue_overflow",))
        subs = self.subscribers
        if subs:
            for eid, pid, mono, wall, kind, blob in new_events:
                event = {"id": eid, "procedure_id": pid, "t_mono_ns": mono, "t_wall": wall, "kind": kind,
                         "data": json.loads(blob)}
                for callback in subs:
                    try:
                        callback(event)
                    except Exception:  # a subscriber's bug must not stop the log
                        self.callback_errors += 1
                        if self.callback_errors == 1 or self.callback_errors % 1000 == 0:
                            log.exception("event subscriber failed (%d failures so far)", self.callback_errors)
        # Last: a flush returns once the batch is committed *and* delivered to subscribers.
        self._queue.mark_done(batch)

    def _run_retention(self) -> None:
        try:
            result = retention.enforce(self._conn, keep=self._queue.default_procedure,
                                       max_age_days=self.max_age_days, max_bytes=self.max_bytes,
                                       now_wall_ns=self._wall_ns(), keep_unforwarded=self.keep_unforwarded)
            if result["procedures"] or result["orphan_rows"]:
                self._note("retention", dict(result))
            if result.get("unforwarded_lost"):
                self._alarms.raise_alarm("fleet_backlog_lost", f"the event database reached its size limit: "
                                         f"{result['unforwarded_lost']} event(s) never forwarded to the fleet "
                                         "broker were deleted")
        except sqlite3.Error as exc:
            database.rollback(self._conn)
            log.warning("retention failed: %s", exc)
            self._write_failed(exc)
            result = {}
        with self._retention_done:
            self._last_retention = result
            self._retention_runs += 1
            self._retention_done.notify_all()
