"""``cathlab-edge fleet-report``: the fleet per site and room, from the PostgreSQL that fleet-ingest fills."""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

from api import argtypes
from api.cli.common import JSON_FLAG


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date; expected YYYY-MM-DD") from None


def add_parser(sub) -> None:
    parser = sub.add_parser("fleet-report", parents=[JSON_FLAG],
                            help="procedures, contrast, fluoroscopy, clearance and boxes per site and room")
    parser.add_argument("--db", required=True, type=argtypes.TEXT, help="postgresql://user@host/database")
    parser.add_argument("--since", type=_date, help="only events from this date on (YYYY-MM-DD, UTC)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import psycopg

    from core.fleet.report import fleet_report

    try:
        rows = fleet_report(args.db, args.since)
    except psycopg.Error as exc:
        print(f"cathlab-edge fleet-report: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    head = ("site", "room", "procs", "contrast runs", "contrast ml", "fluoro s", "grades", "boxes", "offline",
            "backlog", "oldest backlog")
    lines = [head] + [(r["site"] or "-", r["room"] or "-", r["procedures"], r["contrast_runs"], r["contrast_ml"],
                       r["fluoro_time_s"], " ".join(f"{g}:{n}" for g, n in sorted(r["clearance_grades"].items()))
                       or "-", r["boxes"], r["boxes_offline"], r["backlog"], r["oldest_backlog_wall"] or "-")
                      for r in rows]
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    for line in lines:
        print("  ".join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip())
    return 0
