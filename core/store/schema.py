"""Event-log schema and its migrations.

The version lives in SQLite's ``PRAGMA user_version``. Each migration runs in the same transaction as the
version bump, so a power cut mid-migration leaves the previous version intact. A database newer than this
code is refused (``NewerSchemaError``): an old build must never write into a layout it does not know.
"""
from __future__ import annotations

import sqlite3

# Migration n (1-based) brings the schema from version n-1 to n. Append only; never edit a shipped one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE procedures (
        n               INTEGER PRIMARY KEY,      -- stable order; VACUUM keeps explicit rowids
        id              TEXT NOT NULL UNIQUE,     -- opaque (uuid4 hex); never patient identity
        label           TEXT,
        started_mono_ns INTEGER NOT NULL,
        started_wall    TEXT NOT NULL,            -- UTC ISO-8601, fixed width: sorts as text
        ended_mono_ns   INTEGER,
        ended_wall      TEXT,                     -- NULL while open
        fields          TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX procedures_open ON procedures(ended_wall) WHERE ended_wall IS NULL;

    -- Append-only. AUTOINCREMENT: ids are never reused after retention, so `after=ID` paging stays valid.
    CREATE TABLE events (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        key          TEXT NOT NULL UNIQUE,         -- idempotency key: a retransmission is ignored
        procedure_id TEXT,
        t_mono_ns    INTEGER NOT NULL,
        t_wall       TEXT NOT NULL,
        kind         TEXT NOT NULL,
        data         TEXT NOT NULL
    );
    CREATE INDEX events_procedure ON events(procedure_id, id);
    CREATE INDEX events_orphan_wall ON events(t_wall) WHERE procedure_id IS NULL;

    CREATE TABLE runs (
        n            INTEGER PRIMARY KEY,
        key          TEXT NOT NULL UNIQUE,
        run_id       TEXT NOT NULL,
        procedure_id TEXT,
        t_mono_ns    INTEGER NOT NULL,
        t_wall       TEXT NOT NULL,
        data         TEXT NOT NULL
    );
    CREATE INDEX runs_run_id ON runs(run_id);
    CREATE INDEX runs_procedure ON runs(procedure_id, n);

    CREATE TABLE injections (
        n            INTEGER PRIMARY KEY,
        key          TEXT NOT NULL UNIQUE,
        run_id       TEXT,
        procedure_id TEXT,
        t_mono_ns    INTEGER NOT NULL,
        t_wall       TEXT NOT NULL,
        data         TEXT NOT NULL
    );
    CREATE INDEX injections_procedure ON injections(procedure_id, n);

    CREATE TABLE clearance (
        n            INTEGER PRIMARY KEY,
        key          TEXT NOT NULL UNIQUE,
        run_id       TEXT,
        procedure_id TEXT,
        t_mono_ns    INTEGER NOT NULL,
        t_wall       TEXT NOT NULL,
        data         TEXT NOT NULL
    );
    CREATE INDEX clearance_procedure ON clearance(procedure_id, n);
    """,
    # 2: a run, injection or clearance record is stored once, in its own table; its event refers to the row
    # (events.ref = that table's n, data '{}') instead of holding a second copy (a clearance result is ~30 kB).
    # Rows written before keep their copy.
    """
    ALTER TABLE events ADD COLUMN ref INTEGER;
    """,
    # 3: store and forward to the fleet broker: the highest event id the broker acknowledged (PUBACK) with all
    # before it. One row per destination; absent while the appliance never forwarded.
    """
    CREATE TABLE fleet_cursor (
        name     TEXT PRIMARY KEY,
        last_id  INTEGER NOT NULL
    );
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)

# The fleet_cursor row of the broker the fleet publisher forwards to (retention reads it too).
FLEET_CURSOR = "broker"

# Tables whose rows belong to a procedure; retention deletes from all of them.
PROCEDURE_TABLES = ("events", "runs", "injections", "clearance")

# Event kind -> the table holding the record an event with a ``ref`` refers to.
REF_TABLES = {"run": "runs", "injection": "injections", "clearance": "clearance"}

_PLAIN_EVENT_COLUMNS = "e.id, e.procedure_id, e.t_mono_ns, e.t_wall, e.kind, e.data"
_REF_EVENT_COLUMNS = ("e.id, e.procedure_id, e.t_mono_ns, e.t_wall, e.kind, CASE WHEN e.ref IS NULL THEN e.data "
                      "ELSE COALESCE(CASE e.kind "
                      + " ".join(f"WHEN '{kind}' THEN (SELECT data FROM {table} WHERE n = e.ref)"
                                 for kind, table in REF_TABLES.items())
                      + " END, e.data) END")


def event_columns(version: int) -> str:
    """The columns of an event as readers see them (id, procedure_id, t_mono_ns, t_wall, kind, data), selected
    from ``events e`` of a database at ``version``: an event with a ref takes its data from the record it
    refers to (its own '{}' should the record be gone)."""
    return _PLAIN_EVENT_COLUMNS if version < 2 else _REF_EVENT_COLUMNS


class NewerSchemaError(RuntimeError):
    """The database was written by a newer cathlab-edge; this build must not touch it."""


def schema_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def check_version(conn: sqlite3.Connection, path: object) -> int:
    version = schema_version(conn)
    if version > SCHEMA_VERSION:
        raise NewerSchemaError(
            f"event database {path} has schema version {version}, newer than this cathlab-edge "
            f"(supports up to {SCHEMA_VERSION}); upgrade the software or use another --data-dir. "
            "Nothing was written to it."
        )
    return version


def migrate(conn: sqlite3.Connection, path: object) -> int:
    """Bring ``conn`` (autocommit mode) to SCHEMA_VERSION. Returns the version found before migrating."""
    found = check_version(conn, path)
    if found == SCHEMA_VERSION:
        return found
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Re-read inside the write lock: another process may have migrated meanwhile.
        current = check_version(conn, path)
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in _statements(MIGRATIONS[version - 1]):
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return found


def _statements(script: str) -> list[str]:
    # executescript() would COMMIT first and break the single-transaction migration; split instead.
    out, buf = [], ""
    for line in script.splitlines():
        buf += line.split("--", 1)[0] + "\n"
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        raise ValueError(f"incomplete SQL statement in migration: {buf.strip()[:80]}")
    return out
