"""``cathlab-edge serial-check``: the serial conformance checker."""
from __future__ import annotations

import argparse

from api import argtypes
from api.cli.common import JSON_FLAG


def add_parser(sub) -> None:
    parser = sub.add_parser("serial-check", parents=[JSON_FLAG],
                            help="decode a device's stream and judge its conformance")
    parser.add_argument("--port", required=True, help="serial port or pyserial URL")
    parser.add_argument("--seconds", type=argtypes.CHECK_SECONDS, default=10.0, help="how long to listen (default 10)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from firmware_bridge.checker import check_main

    return check_main(args.port, seconds=args.seconds, as_json=args.json)
