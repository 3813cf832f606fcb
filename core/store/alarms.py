"""The event log's alarms: which failure an SQLite error is, what the operator is told, and the set active now.

A disk fault never raises into the log's callers; it becomes one alarm per kind, raised once, updated while it
lasts and cleared when a commit proves it over. Raising and clearing are themselves written to the log (once it
takes writes again), so the log shows its own outage.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from core.store.records import utc_iso

log = logging.getLogger("cathlab.eventlog")

ALARM_KINDS = ("disk_full", "db_readonly", "db_corrupt", "db_newer_schema", "db_locked", "db_io_error",
               "db_error", "queue_overflow")
# Alarms that a successful commit proves over.
WRITE_ALARMS = ("disk_full", "db_readonly", "db_corrupt", "db_locked", "db_io_error", "db_error")


def classify(exc: BaseException) -> str:
    """The alarm kind of an SQLite error (by its extended error name where there is one, else by its text)."""
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


def open_failure(kind: str, db_path: Path, exc: sqlite3.Error) -> str:
    """What the operator reads when the database cannot be opened."""
    messages = {
        "db_readonly": f"event database {db_path} cannot be written ({exc}); "
                       "check file permissions and the mount; events are held in memory",
        "db_corrupt": f"event database {db_path} is corrupt or not an SQLite file ({exc}); "
                      "events are held in memory. Move the file aside to start a new log",
        "disk_full": f"no space to open event database {db_path} ({exc}); events are held in memory",
    }
    return messages.get(kind, f"cannot open event database {db_path}: {exc}")


def write_failure(kind: str, db_path: Path, exc: sqlite3.Error, queue_max: int) -> str:
    """What the operator reads when a write to an open database failed."""
    if kind == "disk_full":
        return (f"disk full writing {db_path} ({exc}); events are held in memory "
                f"(up to {queue_max}) until space returns")
    if kind == "db_readonly":
        return f"event database {db_path} became read-only ({exc}); events are held in memory"
    if kind == "db_corrupt":
        return f"event database {db_path} is corrupt ({exc}); events are held in memory. " \
               "Move the file aside to start a new log"
    if kind == "db_locked":
        return f"event database {db_path} is locked by another process ({exc})"
    return f"writing event database {db_path} failed ({exc}); retrying"


class Alarms:
    """The active alarms, one per kind. ``note(kind, data)`` records the raising and the clearing."""

    def __init__(self, wall_clock_ns: Callable[[], int], note: Callable[[str, dict], None]) -> None:
        self._wall_ns = wall_clock_ns
        self._note = note
        self._lock = threading.Lock()
        self._active: dict[str, dict] = {}

    def raise_alarm(self, kind: str, message: str, *, note: bool = True) -> None:
        """Raise ``kind`` (or update the message of the one already raised)."""
        with self._lock:
            existing = self._active.get(kind)
            if existing is not None:
                existing["message"] = message
                return
            self._active[kind] = {"kind": kind, "message": message,
                                  "since_wall": utc_iso(self._wall_ns()), "since_mono_ns": time.monotonic_ns()}
        log.error("event log alarm %s: %s", kind, message)
        if note:
            self._note("alarm", {"alarm": kind, "message": message})

    def clear(self, kinds) -> None:
        cleared = []
        with self._lock:
            for kind in kinds:
                alarm = self._active.pop(kind, None)
                if alarm is not None:
                    cleared.append(alarm)
        for alarm in cleared:
            secs = (time.monotonic_ns() - alarm["since_mono_ns"]) / 1e9
            log.warning("event log alarm %s cleared after %.1f s", alarm["kind"], secs)
            self._note("alarm_cleared", {"alarm": alarm["kind"], "since_wall": alarm["since_wall"],
                                         "duration_s": round(secs, 3)})

    def active(self, kinds) -> bool:
        with self._lock:
            return any(k in self._active for k in kinds)

    def first_message(self, kinds) -> str | None:
        """The message of the first of ``kinds`` that is active, in the order given."""
        with self._lock:
            for kind in kinds:
                if kind in self._active:
                    return self._active[kind]["message"]
        return None

    def snapshot(self) -> list[dict]:
        with self._lock:
            return [dict(a) for a in self._active.values()]
