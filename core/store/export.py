"""Export committed events as JSON Lines or CSV, for the CLI (``cathlab-edge export``) and the API.

Reads through its own read-only connection, so an export runs while the appliance keeps writing (WAL lets
readers and the writer proceed together). The export is the set of events committed when it started, read
in id order a page at a time, so memory stays flat for any log size.
"""
from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from core.store import schema

FORMATS = ("jsonl", "csv")
CSV_COLUMNS = ("id", "procedure_id", "t_mono_ns", "t_wall", "kind", "data")
_PAGE = 1000


def iter_export(source, procedure_id: str | None = None, fmt: str = "jsonl", *,
                db_name: str = "events.sqlite3") -> Iterator[str]:
    """Lines (each ending in a newline) of the export. ``source`` is a data directory or an EventLog.

    Bad arguments (unknown format, no database, unknown procedure, newer schema) raise ValueError here,
    before the first line, so an HTTP handler can answer 400/404 instead of a broken stream.
    """
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    db_path = getattr(source, "db_path", None) or Path(source) / db_name
    conn = _open_readonly(Path(db_path))
    try:
        if procedure_id is not None and not conn.execute(
                "SELECT 1 FROM procedures WHERE id = ?", (procedure_id,)).fetchone():
            raise ValueError(f"no procedure {procedure_id!r} in {db_path}")
        last = conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]
    except BaseException:
        conn.close()
        raise
    return _lines(conn, procedure_id, fmt, last)


def _lines(conn: sqlite3.Connection, procedure_id: str | None, fmt: str, last: int) -> Iterator[str]:
    try:
        if fmt == "csv":
            yield _csv_line(CSV_COLUMNS)
        after = 0
        columns = schema.event_columns(schema.schema_version(conn))   # an older file is read as it is
        while True:
            rows = conn.execute(
                f"SELECT {columns} FROM events e "
                "WHERE e.id > ? AND e.id <= ? AND (? IS NULL OR e.procedure_id = ?) ORDER BY e.id LIMIT ?",
                (after, last, procedure_id, procedure_id, _PAGE)).fetchall()
            if not rows:
                return
            for row in rows:
                if fmt == "csv":
                    yield _csv_line(row)
                else:
                    yield json.dumps({"id": row[0], "procedure_id": row[1], "t_mono_ns": row[2],
                                      "t_wall": row[3], "kind": row[4], "data": json.loads(row[5])},
                                     separators=(",", ":")) + "\n"
            after = rows[-1][0]
    finally:
        conn.close()


def _csv_line(values) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)   # data stays the stored JSON text
    return buf.getvalue()


def _open_readonly(db_path: Path) -> sqlite3.Connection:
    if not db_path.is_file():
        raise ValueError(f"no event database at {db_path}")
    uri = db_path.resolve().as_uri()
    # mode=ro: an export must never create, migrate or write the log it reads. A copy on read-only media
    # has no -shm and cannot make one; with no -wal either, immutable=1 reads the file as it is.
    targets = [f"{uri}?mode=ro"]
    if not Path(f"{db_path}-wal").exists():
        targets.append(f"{uri}?immutable=1")
    error: Exception | None = None
    for target in targets:
        try:
            conn = sqlite3.connect(target, uri=True, isolation_level=None, check_same_thread=False, timeout=5.0)
        except sqlite3.Error as exc:
            error = exc
            continue
        try:
            schema.check_version(conn, db_path)
            version = schema.schema_version(conn)
        except schema.NewerSchemaError as exc:
            conn.close()
            raise ValueError(str(exc)) from None
        except sqlite3.Error as exc:
            conn.close()
            error = exc
            continue
        if version == 0:
            conn.close()
            raise ValueError(f"{db_path} holds no event log yet (schema not created)")
        return conn
    raise ValueError(f"cannot read event database {db_path}: {error}")


def export_main(data_dir: Path | str, procedure_id: str | None, fmt: str, out: TextIO) -> int:
    """The ``export`` command: write the export to ``out``. Returns the exit status (0 ok, 1 error);
    errors go to stderr as one clear line."""
    try:
        lines = iter_export(data_dir, procedure_id, fmt)
        n = 0
        for line in lines:
            out.write(line)
            n += 1
        out.flush()
    except ValueError as exc:
        print(f"cathlab-edge export: {exc}", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:
        print(f"cathlab-edge export: reading the event database failed: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:   # `... | head`: the reader left, not an error of ours
        _silence(out)
        return 0
    if fmt == "csv":
        n -= 1
    print(f"cathlab-edge export: {n} events", file=sys.stderr)
    return 0


def _silence(out: TextIO) -> None:
    # Point the closed pipe at /dev/null so the interpreter's final flush does not complain.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass
