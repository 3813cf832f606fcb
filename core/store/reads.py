"""Reads of the event log: committed events, runs, injections and clearance results, and the row decoders.

Mixed into EventLog, which supplies ``query``: a read connection beside the writer's, so in WAL a read sees
the last commit and never waits for the writer.
"""
from __future__ import annotations

import json

from core.store import schema
from core.store.records import check_limit

_EVENT_COLUMNS = schema.event_columns(schema.SCHEMA_VERSION)   # the writer migrates before anyone reads
PROCEDURE_COLUMNS = "id, label, started_mono_ns, started_wall, ended_mono_ns, ended_wall, fields"


class EventReads:
    """Queries over committed data; what is only queued is not seen."""

    def query(self, sql: str, args: tuple) -> list[tuple]:
        """Rows of ``sql`` on a read connection: EventLog, which mixes these reads in, supplies it."""
        raise NotImplementedError   # the abstract hook of this mixin, not a stub

    def events(self, after: int = 0, limit: int = 100, procedure_id: str | None = None) -> list[dict]:
        """Committed events with id > after, in id order; page on with the last one's id as ``after``."""
        if type(after) is not int or after < 0:
            raise ValueError(f"after must be a non-negative int, got {after!r}")
        limit = check_limit(limit)
        if procedure_id is None:
            rows = self.query(f"SELECT {_EVENT_COLUMNS} FROM events e "
                              "WHERE e.id > ? ORDER BY e.id LIMIT ?", (after, limit))
        else:
            rows = self.query(f"SELECT {_EVENT_COLUMNS} FROM events e "
                              "WHERE e.procedure_id = ? AND e.id > ? ORDER BY e.id LIMIT ?",
                              (procedure_id, after, limit))
        return [event_row(r) for r in rows]

    def runs(self, procedure_id: str | None = None, limit: int = 50) -> list[dict]:
        """The last ``limit`` runs (of one procedure, or all), oldest first. Each is the recorded run dict plus
        ``run_id``, ``procedure_id`` and ``recorded_wall``."""
        return self._typed_rows("runs", procedure_id, limit)

    def run(self, run_id) -> dict | None:
        """A run's newest record (with ``procedure_id``), or None."""
        rows = self.query("SELECT run_id, procedure_id, t_wall, data FROM runs WHERE run_id = ? "
                          "ORDER BY n DESC LIMIT 1", (str(run_id),))
        return typed_row(rows[0]) if rows else None

    def latest_runs(self, procedure_id: str | None = None, limit: int = 50) -> list[dict]:
        """The last ``limit`` runs (of one procedure, or all), each once, as its newest record; in the order
        they were first recorded, oldest first. A run belongs to the procedure of its newest record."""
        limit = check_limit(limit)
        where, args = ("WHERE r.procedure_id = ?", (procedure_id, limit)) if procedure_id else ("", (limit,))
        rows = self.query("SELECT r.run_id, r.procedure_id, r.t_wall, r.data FROM runs r JOIN "
                          "(SELECT MIN(n) AS first, MAX(n) AS last FROM runs GROUP BY run_id) g ON r.n = g.last "
                          f"{where} ORDER BY g.first DESC LIMIT ?", args)
        return [typed_row(r) for r in reversed(rows)]

    def latest_events(self, kinds: tuple[str, ...], after: int = 0, limit: int = 50,
                      within: int = 200_000) -> list[dict]:
        """The newest ``limit`` committed events of ``kinds`` with id > ``after``, among the newest ``within``
        ids (kind has no index: this bounds the scan), oldest first: what a live result rebuilds itself from
        after a restart."""
        if type(after) is not int or after < 0:
            raise ValueError(f"after must be a non-negative int, got {after!r}")
        limit = check_limit(limit)
        marks = ", ".join("?" * len(kinds))
        rows = self.query(f"SELECT {_EVENT_COLUMNS} FROM events e WHERE e.kind IN ({marks}) AND e.id > ? "
                          "AND e.id > (SELECT COALESCE(MAX(id), 0) FROM events) - ? ORDER BY e.id DESC LIMIT ?",
                          (*kinds, after, int(within), limit))
        return [event_row(r) for r in reversed(rows)]

    def injections(self, procedure_id: str | None = None, limit: int = 50) -> list[dict]:
        return self._typed_rows("injections", procedure_id, limit)

    def clearance_results(self, procedure_id: str | None = None, limit: int = 50) -> list[dict]:
        return self._typed_rows("clearance", procedure_id, limit)

    def _typed_rows(self, table: str, procedure_id: str | None, limit: int) -> list[dict]:
        limit = check_limit(limit)
        where, args = ("WHERE procedure_id = ?", (procedure_id, limit)) if procedure_id else ("", (limit,))
        rows = self.query(f"SELECT run_id, procedure_id, t_wall, data FROM {table} {where} "
                          "ORDER BY n DESC LIMIT ?", args)
        return [typed_row(r) for r in reversed(rows)]


def event_row(r: tuple) -> dict:
    return {"id": r[0], "procedure_id": r[1], "t_mono_ns": r[2], "t_wall": r[3], "kind": r[4],
            "data": json.loads(r[5])}


def procedure_row(r: tuple) -> dict:
    """A row of PROCEDURE_COLUMNS."""
    return {"id": r[0], "label": r[1], "started_mono_ns": r[2], "started_wall": r[3], "ended_mono_ns": r[4],
            "ended_wall": r[5], "fields": json.loads(r[6]), "open": r[5] is None}


def typed_row(r: tuple) -> dict:
    out = json.loads(r[3])
    out.setdefault("run_id", r[0])
    out["procedure_id"] = r[1]
    out["recorded_wall"] = r[2]
    return out
