"""Read an appliance's SQLite file the way an auditor would: plain sqlite3, a connection per query."""
from __future__ import annotations

import sqlite3
from pathlib import Path


def db_rows(db: Path | str, sql: str, args=()) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()
