"""``cathlab-edge serial-check``: the serial conformance checker."""
from __future__ import annotations

import argparse

from api import argtypes


def add_parser(sub) -> None:
    parser = sub.add_parser("serial-check", help="decode a device's stream and judge its conformance")
    parser.add_argument("--port", required=True, help="serial port or pyserial URL")
    parser.add_argument("--seconds", type=argtypes.CHECK_SECONDS, default=10.0, help="how long to listen (default 10)")
    parser.add_argument("--json", action="store_true", help="one JSON object per packet, then a summary")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from firmware_bridge.checker import check_main

    return check_main(args.port, seconds=args.seconds, as_json=args.json)
