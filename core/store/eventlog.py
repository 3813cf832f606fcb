"""Durable event log: everything the appliance observes, in SQLite, surviving power cuts and full disks.

``record()`` only appends to an in-memory queue (core.store.queue: the frame path must never wait on a disk);
one writer thread (core.store.writer) drains it into one transaction per batch. WAL with ``synchronous=FULL``
makes each committed batch durable; an event counts as recorded, is visible to readers and is handed to
subscribers only after its COMMIT returned. Every row carries a UNIQUE idempotency key and is written with
INSERT OR IGNORE, so a device retransmission or a replay after a restart is recorded once. Event ids only grow
(AUTOINCREMENT) but have gaps: an ignored duplicate or retention leaves holes.

Disk faults never raise into callers: they become alarms (core.store.alarms), the batch stays in memory
(bounded; overflow is counted as dropped) and the writer retries with backoff until the disk takes it again.
A caller that must not acknowledge what is only in memory (an API write) asks ``check_writable()`` before and
``commit()`` after: they raise LogUnavailable while the log is failing or when the COMMIT does not come in time.

A run, injection or clearance record is stored once, in its own table; its event refers to that row (schema 2).
Reads are in core.store.reads, pruning in core.store.retention; procedures (core.store.procedures) use the log.
"""
from __future__ import annotations

import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from core.store.alarms import WRITE_ALARMS, Alarms
from core.store.queue import KEEP, WriteQueue
from core.store.reads import EventReads
from core.store.records import OPEN_PROCEDURE, check_data, check_key, check_kind, check_procedure_id, dumps
from core.store.writer import EVENT, TYPED, WRITE, Writer


class LogUnavailable(RuntimeError):
    """The log cannot commit now: a write asked for is not durable (yet). ``reason`` says why for the caller,
    ``retry_after_s`` when it is worth asking again."""

    def __init__(self, reason: str, retry_after_s: int = 5) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class EventLog(EventReads):
    """The appliance's durable log. Construct, ``start()``, ``record()`` from any thread, ``close()``."""

    def __init__(self, data_dir: Path | str, *, queue_max: int = 100_000, max_age_days: float | None = None,
                 max_bytes: int | None = None, db_name: str = "events.sqlite3",
                 max_page_count: int | None = None, retention_interval_s: float = 600.0,
                 batch_max: int = 5_000, retry_max_s: float = 0.5,
                 wall_clock_ns: Callable[[], int] = time.time_ns) -> None:
        """
        queue_max: events held in memory while the database cannot take them; beyond it they are dropped
            (counted in stats()["dropped"], alarm ``queue_overflow``).
        max_age_days, max_bytes: retention (core.store.retention); the open procedure is never deleted.
            max_bytes counts database pages in use; the WAL is bounded separately.
        max_page_count: hard cap on the database size in pages (SQLite ``PRAGMA max_page_count``); beyond it
            writes fail exactly as on a full disk. Changeable at run time with ``set_max_page_count``.
        retention_interval_s: how often the writer enforces max_age_days / max_bytes (also once at open).
        wall_clock_ns: UTC wall clock, for t_wall and retention age only (never for ordering or durations).
        """
        if not isinstance(queue_max, int) or queue_max < 1:
            raise ValueError(f"queue_max must be a positive int, got {queue_max!r}")
        _check_retention(max_age_days, max_bytes)
        if not isinstance(db_name, str) or not db_name or "/" in db_name or db_name.startswith("."):
            raise ValueError(f"db_name must be a plain file name, got {db_name!r}")
        _check_page_count(max_page_count)
        if not retention_interval_s > 0:
            raise ValueError(f"retention_interval_s must be > 0, got {retention_interval_s!r}")
        if not (isinstance(batch_max, int) and batch_max > 0):
            raise ValueError(f"batch_max must be a positive int, got {batch_max!r}")
        if not retry_max_s > 0:
            raise ValueError(f"retry_max_s must be > 0, got {retry_max_s!r}")
        self.data_dir = Path(data_dir)
        self.db_path = self.data_dir / db_name
        self.wall_clock_ns = wall_clock_ns
        self._alarms = Alarms(wall_clock_ns, self._note)
        self._queue = WriteQueue(queue_max, self._alarms)
        self._writer = Writer(self.db_path, self._queue, self._alarms, max_page_count=max_page_count,
                              max_age_days=max_age_days, max_bytes=max_bytes,
                              retention_interval_s=float(retention_interval_s), batch_max=batch_max,
                              retry_max_s=float(retry_max_s), wall_clock_ns=wall_clock_ns, note=self._note)
        self._sub_lock = threading.Lock()
        self._closed = False

    # ------------------------------------------------------------------ lifecycle
    def on_open(self, hook: Callable[[sqlite3.Connection], None]) -> None:
        """Call ``hook(conn)`` on the writer thread each time the database opens, after migration and before
        any queued write (procedures resume there). Register before ``start()``; an sqlite3.Error from it
        fails the open, which is retried."""
        if self._writer.started:
            raise RuntimeError("on_open() hooks are registered before start()")
        self._writer.open_hooks = self._writer.open_hooks + (hook,)

    def start(self, open_timeout: float = 10.0) -> None:
        """Open (create, migrate) the database and start the writer. Never raises for a bad database: that
        becomes an alarm and the writer keeps retrying (a newer schema is refused for good)."""
        if self._writer.started or self._closed:
            raise RuntimeError("EventLog.start() may be called once, before close()")
        # Waits for the first open attempt, so a resumed procedure is visible as soon as start() returns.
        self._writer.start(open_timeout)

    def close(self, timeout: float = 2.0) -> None:
        """Write what can be written within ``timeout`` seconds, then stop the writer and close the database."""
        if self._closed:
            return
        self._closed = True
        if self._writer.started:
            self._writer.stop(timeout)

    # ------------------------------------------------------------------ recording (any thread, never blocks)
    def record(self, kind: str, data: dict, *, key: str | None = None, t_mono_ns: int | None = None,
               procedure_id: str | None = OPEN_PROCEDURE) -> None:
        """Queue one event for the open procedure (if any). Cheap and non-blocking; disk trouble never raises
        here. ``key`` is the idempotency key: a second event with the same key is ignored. ``procedure_id``
        attributes the event to another procedure (None: to none), for a change to something recorded
        earlier, such as a run relabelled after its procedure ended."""
        check_kind(kind)
        blob = check_data(data)
        check_key(key)
        check_procedure_id(procedure_id)
        if t_mono_ns is None:
            t_mono_ns = time.monotonic_ns()
        elif type(t_mono_ns) is not int or not 0 <= t_mono_ns < 2**63:
            raise ValueError(f"t_mono_ns must be a non-negative int below 2**63, got {t_mono_ns!r}")
        self._queue.put(EVENT, (kind, blob, key, t_mono_ns, self.wall_clock_ns()), procedure_id=procedure_id)

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
        blob = check_data(data)
        if key is None:
            raise ValueError(f"record_{kind} needs an idempotency key")
        check_key(key)
        check_procedure_id(procedure_id)
        self._queue.put(TYPED, (kind, blob, key, None if run_id is None else str(run_id),
                                time.monotonic_ns(), self.wall_clock_ns()), procedure_id=procedure_id)

    def write(self, apply: Callable, *, procedure_id: str | None, default_procedure=KEEP) -> None:
        """Queue a write of the caller's own rows (a procedure opened, closed, changed). The writer calls
        ``apply(conn, event)`` inside its transaction, in queue order; ``event(key, t_mono_ns, t_wall, kind,
        blob)`` adds an event of ``procedure_id`` (key None: an automatic one). Never dropped for queue space.
        ``default_procedure`` (an id or None): where OPEN_PROCEDURE records queued from now on go."""
        check_procedure_id(procedure_id)
        self._queue.put(WRITE, apply, bounded=False, procedure_id=procedure_id, default_procedure=default_procedure)

    def _note(self, kind: str, data: dict) -> None:
        # The log's own events (alarms, retention) are rare and never dropped for queue space.
        self._queue.put(EVENT, (kind, dumps(data), None, time.monotonic_ns(), self.wall_clock_ns()), bounded=False)

    def flush(self, timeout: float = 2.0) -> bool:
        """Wait until everything queued before this call is committed. False if the timeout passed first."""
        if self._writer.is_current_thread():
            raise RuntimeError("flush() from a subscriber callback would wait for itself")
        return self._queue.wait(timeout)

    def write_problem(self) -> str | None:
        """Why the log cannot commit now (the active write alarm's message), or None when it can."""
        problem = self._alarms.first_message((*WRITE_ALARMS, "db_newer_schema", "queue_overflow"))
        if problem is None and not self._writer.is_open:
            return f"event database {self.db_path} is not open"
        return problem

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
            self._writer.subscribers = self._writer.subscribers + (callback,)

        def unsubscribe() -> None:
            with self._sub_lock:
                subs = list(self._writer.subscribers)
                if callback in subs:
                    subs.remove(callback)
                self._writer.subscribers = tuple(subs)
        return unsubscribe

    def query(self, sql: str, args: tuple) -> list[tuple]:
        """Rows of a read of committed data; [] while the database cannot be read (an alarm says why)."""
        return self._writer.query(sql, args)

    # ------------------------------------------------------------------ status and limits
    @property
    def alarms(self) -> list[dict]:
        return self._alarms.snapshot()

    def stats(self) -> dict:
        pending, dropped = self._queue.counts()
        w = self._writer
        lat = sorted(w.latencies_ms)
        p99 = lat[min(len(lat) - 1, math.ceil(0.99 * len(lat)) - 1)] if lat else None
        db_bytes = 0
        for suffix in ("", "-wal"):
            try:
                db_bytes += os.stat(str(self.db_path) + suffix).st_size
            except OSError:
                pass
        return {"committed": w.committed, "pending": pending, "dropped": dropped,
                "duplicates": w.duplicates, "rejected": w.rejected, "callback_errors": w.callback_errors,
                "commit_latency_p99_ms": p99, "last_commit_ms": w.last_commit_ms,
                "last_commit_wall": w.last_commit_wall, "db_bytes": db_bytes,
                "writable": w.is_open and not self._alarms.active(WRITE_ALARMS)}

    def set_max_page_count(self, pages: int | None) -> None:
        """Change the database size cap (pages; None lifts it). Applied by the writer before its next write."""
        _check_page_count(pages)
        self._writer.max_page_count = pages
        self._writer.wake()

    def set_retention(self, *, max_age_days: float | None, max_bytes: int | None) -> None:
        """Change the retention limits (None: no limit); the writer applies them at its next retention pass."""
        _check_retention(max_age_days, max_bytes)
        self._writer.max_age_days, self._writer.max_bytes = max_age_days, max_bytes

    def keep_unforwarded(self, on: bool) -> None:
        """While on, age retention spares events not yet forwarded to the fleet broker (past the fleet cursor);
        the size limit still forces them out, and then an alarm and a ``retention`` event say how many."""
        self._writer.keep_unforwarded = bool(on)

    def enforce_retention(self, timeout: float = 10.0) -> dict | None:
        """Run retention now on the writer thread; returns what it deleted, None on timeout or no database."""
        return self._writer.retention_now(timeout)


def _check_retention(max_age_days, max_bytes) -> None:
    if max_age_days is not None and not (isinstance(max_age_days, (int, float)) and max_age_days > 0):
        raise ValueError(f"max_age_days must be > 0 or None, got {max_age_days!r}")
    if max_bytes is not None and not (isinstance(max_bytes, int) and max_bytes > 0):
        raise ValueError(f"max_bytes must be a positive int or None, got {max_bytes!r}")


def _check_page_count(pages) -> None:
    if pages is not None and not (isinstance(pages, int) and pages > 0):
        raise ValueError(f"max_page_count must be a positive int or None, got {pages!r}")
