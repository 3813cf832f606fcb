"""``cathlab-edge config``: the configuration check."""
from __future__ import annotations

import argparse
import sys


def add_parser(sub) -> None:
    parser = sub.add_parser("config", help="validate the configuration; --show prints what is in force")
    parser.add_argument("--show", action="store_true", help="print every setting as TOML, with its source")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.ops.config import config_main

    return config_main(args.config, args.show, sys.stdout)
