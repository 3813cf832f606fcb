"""``cathlab-edge doctor``: the box check."""
from __future__ import annotations

import argparse
import sys

from api import argtypes
from api.cli.common import settings_from


def add_parser(sub) -> None:
    parser = sub.add_parser("doctor", help="check serial port, grabber, data directory, clock and token")
    parser.add_argument("--data-dir", type=argtypes.TEXT, help="data directory (default: from the configuration)")
    parser.add_argument("--serial", help="injector serial port or URL (default: from the configuration)")
    parser.add_argument("--video", help="video source (default: from the configuration)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.ops.doctor import doctor_main

    return doctor_main(settings_from(args), sys.stdout)
