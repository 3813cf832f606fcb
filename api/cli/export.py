"""``cathlab-edge export``: the recorded events."""
from __future__ import annotations

import argparse
import sys

from api import argtypes
from api.cli.common import settings_from


def add_parser(sub) -> None:
    parser = sub.add_parser("export", help="export recorded events")
    parser.add_argument("--data-dir", type=argtypes.TEXT, help="data directory (default: per-user data directory)")
    parser.add_argument("--procedure", help="only this procedure's events")
    parser.add_argument("--format", required=True, choices=["jsonl", "csv"])
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.store.export import export_main

    return export_main(settings_from(args).data_dir, args.procedure, args.format, sys.stdout)
