"""``cathlab-edge replay``: a recorded procedure through the pipeline."""
from __future__ import annotations

import argparse
import sys


def add_parser(sub) -> None:
    parser = sub.add_parser("replay", help="run a recorded procedure (data-dir/recordings) through the pipeline")
    parser.add_argument("directory", help="a recordings directory")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.store.recorder import replay_main

    return replay_main(args.directory, sys.stdout)
