"""``cathlab-edge export``: the recorded events, to stdout; a count or one clear error line to stderr."""
from __future__ import annotations

import argparse
import io
import os
import sqlite3
import sys
from pathlib import Path
from typing import TextIO

from api import argtypes
from api.cli.common import settings_from


def add_parser(sub) -> None:
    parser = sub.add_parser("export", help="export recorded events")
    parser.add_argument("--data-dir", type=argtypes.TEXT, help="data directory (default: per-user data directory)")
    parser.add_argument("--procedure", help="only this procedure's events")
    parser.add_argument("--format", required=True, choices=["jsonl", "csv"])
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return write_export(settings_from(args).data_dir, args.procedure, args.format, sys.stdout)


def write_export(data_dir: Path | str, procedure_id: str | None, fmt: str, out: TextIO) -> int:
    """Write the export to ``out``. Returns the exit status (0 ok, 1 error)."""
    from core.store.export import iter_export

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
