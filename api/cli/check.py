"""``cathlab-edge serial-check``: the serial conformance checker, as a report or JSON lines.

Exit status 0: the stream conforms, 1: it does not, 2: the port cannot be used.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TextIO

from api import argtypes
from api.cli.common import JSON_FLAG


def add_parser(sub) -> None:
    parser = sub.add_parser("serial-check", parents=[JSON_FLAG],
                            help="decode a device's stream and judge its conformance")
    parser.add_argument("--port", required=True, help="serial port or pyserial URL")
    parser.add_argument("--seconds", type=argtypes.CHECK_SECONDS, default=10.0, help="how long to listen (default 10)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return check_main(args.port, seconds=args.seconds, as_json=args.json)


def check_main(port: str, seconds: float = 10.0, as_json: bool = False, out: TextIO | None = None) -> int:
    """Judge the stream on ``port`` for ``seconds``. 0: conforms, 1: does not, 2: the port cannot be used."""
    import serial

    from firmware_bridge.checker import StreamCheck, listen, open_port

    out = out or sys.stdout
    if not seconds > 0:
        print("serial-check: --seconds must be positive", file=sys.stderr)
        return 2
    try:
        ser = open_port(port)
    except (serial.SerialException, OSError, ValueError) as exc:
        print(f"serial-check: cannot open {port}: {exc}", file=sys.stderr)
        return 2
    start = time.monotonic_ns()
    check = StreamCheck(start)
    end = start + int(seconds * 1e9)
    lost = None
    try:
        lost = listen(ser, check, end, (lambda rec: print(json.dumps(rec), file=out)) if as_json else None)
    except KeyboardInterrupt:
        pass  # Ctrl-C ends the check early; judge what was seen
    finally:
        ser.close()
    summary = check.summary(min(time.monotonic_ns(), end), lost)
    if as_json:
        print(json.dumps({"summary": summary}), file=out)
    else:
        _print_report(port, summary, check.judge.hello, out)
    return 0 if not summary["violations"] else 1


def _print_report(port: str, s: dict, hello, out: TextIO) -> None:
    print(f"serial-check {port}: {s['packets']} packets in {s['seconds']} s", file=out)
    if hello is not None:
        h = hello.to_dict()
        print(f"  device: vendor 0x{h['vendor_id']:04X} product 0x{h['product_id']:04X} {h['model']!r} "
              f"serial {h['serial_no']!r} firmware {h['fw_version']} capabilities 0b{h['capabilities']:03b}", file=out)
    for name, n in sorted(s["by_type"].items()):
        print(f"  {name:<22} {n}", file=out)
    for key in ("crc_errors", "framing_errors", "recovered", "unknown_types", "malformed", "seq_gaps", "duplicates"):
        print(f"  {key:<22} {s[key]}", file=out)
    if s["banner_bytes"]:
        print(f"  before the first packet: {s['banner_bytes']} bytes {s['banner']}", file=out)
    if s["violations"]:
        print("DOES NOT CONFORM:", file=out)
        for v in s["violations"]:
            print(f"  - {v}", file=out)
    else:
        print("CONFORMS to serial protocol v1", file=out)
