"""Retention: prune the event database by age and by size, on the writer's connection.

Oldest closed procedures (with their events, runs, injections and clearance results) and rows outside any
procedure go first; the procedure open now never does. Size counts database pages in use; deleted pages go
back to the filesystem (incremental vacuum, then a checkpoint that copies the shrink out of the WAL).
"""
from __future__ import annotations

import logging
import sqlite3

from core.store import schema
from core.store.records import utc_iso

log = logging.getLogger("cathlab.eventlog")


def enforce(conn: sqlite3.Connection, *, keep: str | None, max_age_days: float | None, max_bytes: int | None,
            now_wall_ns: int, keep_unforwarded: bool = False) -> dict:
    """Delete what the limits (None: no limit) leave no room for, never procedure ``keep``. With
    ``keep_unforwarded``, age spares what the fleet cursor has not passed; size does not, and the result's
    ``unforwarded_lost`` counts such events deleted. Returns how many procedures and orphan rows went.
    Raises sqlite3.Error (the caller rolls back)."""
    result = {"procedures": 0, "orphan_rows": 0}
    cursor = _fleet_cursor(conn) if keep_unforwarded else None
    if max_age_days is not None:
        cutoff = utc_iso(now_wall_ns - int(max_age_days * 86400e9))
        hold = None
        if cursor is not None:
            # Nothing from the oldest unforwarded event on goes for age: t_wall follows the id closely enough.
            hold = conn.execute("SELECT t_wall FROM events WHERE id > ? ORDER BY id LIMIT 1", (cursor,)).fetchone()
            hold = hold[0] if hold else None
        old = [r[0] for r in conn.execute(
            "SELECT id FROM procedures p WHERE ended_wall IS NOT NULL AND ended_wall < ? AND NOT EXISTS "
            "(SELECT 1 FROM events e WHERE e.procedure_id = p.id AND e.id > ?) ORDER BY n",
            (cutoff, cursor if cursor is not None else 2**63 - 1))]
        for pid in old:
            if pid != keep:
                _delete_procedure(conn, pid)
                result["procedures"] += 1
        result["orphan_rows"] += _delete_orphans(conn, min(cutoff, hold) if hold else cutoff, None)
    if max_bytes is not None:
        unforwarded = _count_after(conn, cursor)
        while used_bytes(conn) > max_bytes:
            proc = conn.execute(
                "SELECT id, started_wall FROM procedures WHERE ended_wall IS NOT NULL AND id IS NOT ? "
                "ORDER BY started_wall, n LIMIT 1", (keep,)).fetchone()
            orphan = min((w for (w,) in (conn.execute(
                f"SELECT MIN(t_wall) FROM {t} WHERE procedure_id IS NULL").fetchone()
                for t in schema.PROCEDURE_TABLES) if w is not None), default=None)
            if proc is None and orphan is None:
                log.warning("event database above max_bytes (%d) but only the open procedure is left", max_bytes)
                break
            if orphan is not None and (proc is None or orphan < proc[1]):
                # Oldest orphans first, up to the next procedure's start, a chunk at a time.
                result["orphan_rows"] += _delete_orphans(conn, proc[1] if proc else None, 2000)
            else:
                _delete_procedure(conn, proc[0])
                result["procedures"] += 1
        if cursor is not None:
            result["unforwarded_lost"] = unforwarded - _count_after(conn, cursor)
    if result["procedures"] or result["orphan_rows"]:
        # Python's execute() stops this pragma after one step (one page); executescript() runs it out.
        conn.executescript("PRAGMA incremental_vacuum;")
        # In WAL the file shrinks when the checkpoint copies the vacuum back; TRUNCATE also empties
        # the WAL the deletes filled (a reader mid-query only postpones it to the next pass).
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        log.info("retention deleted %d procedure(s) and %d orphan row(s)", result["procedures"],
                 result["orphan_rows"])
    return result


def _fleet_cursor(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT last_id FROM fleet_cursor WHERE name = ?", (schema.FLEET_CURSOR,)).fetchone()
    return row[0] if row else 0


def _count_after(conn: sqlite3.Connection, cursor: int | None) -> int:
    return conn.execute("SELECT COUNT(*) FROM events WHERE id > ?", (cursor,)).fetchone()[0] if cursor is not None \
        else 0


def used_bytes(conn: sqlite3.Connection) -> int:
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return (pages - free) * conn.execute("PRAGMA page_size").fetchone()[0]


def _delete_procedure(conn: sqlite3.Connection, pid: str) -> None:
    conn.execute("BEGIN IMMEDIATE")
    for table in schema.PROCEDURE_TABLES:
        conn.execute(f"DELETE FROM {table} WHERE procedure_id = ?", (pid,))
    conn.execute("DELETE FROM procedures WHERE id = ?", (pid,))
    conn.execute("COMMIT")


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
