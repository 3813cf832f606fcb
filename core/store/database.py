"""Opening the event database: the data directory's lock, the write connection (durable settings, migrations,
a health check, a write probe) and the read connections beside it."""
from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
from pathlib import Path

from core.store import schema

log = logging.getLogger("cathlab.eventlog")


class DataDirLocked(Exception):
    """Another process holds the data directory's lock."""


def lock_data_dir(lock_path: Path) -> int:
    """Take the exclusive lock that lets one process write a data directory; returns its file descriptor."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        # Read-only directory with an existing lock file: lock it anyway, let SQLite report.
        fd = os.open(lock_path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirLocked(lock_path) from None
    return fd


def connect(target: Path | str, **kw) -> sqlite3.Connection:
    # Autocommit: the writer spells out its transactions; one connection serves one thread at a time.
    return sqlite3.connect(target, isolation_level=None, check_same_thread=False, **kw)


def open_writer(db_path: Path) -> tuple[sqlite3.Connection, sqlite3.Connection]:
    """The write connection, migrated, checked and proven writable, and a query-only reader beside it.
    Raises schema.NewerSchemaError or sqlite3.Error (having closed what it opened)."""
    conn = connect(db_path, timeout=5.0)
    reader = None
    try:
        schema.check_version(conn, db_path)   # before any pragma below may write a newer file
        # Lets retention give pages back to the filesystem. Takes effect only on a new file, and only
        # before journal_mode=WAL writes the header; a no-op on an existing database.
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            log.warning("event database %s runs in journal mode %s, not WAL", db_path, mode)
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA journal_size_limit=67108864")   # a burst must not leave a huge WAL behind
        schema.migrate(conn, db_path)
        # A damaged page may sit where appends never go: look once per open, so corruption alarms at
        # start instead of surfacing months later in an export.
        problem = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
        if problem != "ok":
            raise sqlite3.DatabaseError(f"database disk image is malformed: {problem}")
        # Probe for writability now, so a read-only file alarms at start, not at the first event.
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("COMMIT")
        reader = connect(db_path, timeout=5.0)
        reader.execute("PRAGMA query_only=ON")
    except BaseException:
        close_quietly(conn)
        if reader is not None:
            close_quietly(reader)
        raise
    return conn, reader


def open_reader_only(db_path: Path) -> sqlite3.Connection | None:
    """A reader on a database that cannot be written (read-only, locked), or None if it cannot be read."""
    if not db_path.is_file():
        return None
    uri = db_path.resolve().as_uri()
    # A WAL database on a read-only directory cannot get its -shm file; immutable=1 reads it without
    # one. Safe here: we hold the lock, so nobody writes it until our writer reopens (and replaces this).
    for target in (f"{uri}?mode=ro", f"{uri}?immutable=1"):
        try:
            reader = connect(target, uri=True, timeout=1.0)
        except sqlite3.Error:
            continue
        try:
            if schema.schema_version(reader) == schema.SCHEMA_VERSION:
                reader.execute("SELECT 1 FROM events LIMIT 1").fetchall()
                return reader
        except sqlite3.Error:
            pass
        close_quietly(reader)
    return None


def rollback(conn: sqlite3.Connection) -> None:
    # SQLite may already have rolled back (SQLITE_FULL does); ROLLBACK then errors harmlessly.
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass


def close_quietly(conn: sqlite3.Connection) -> None:
    try:
        conn.close()
    except sqlite3.Error:
        pass
