"""``cathlab-edge doctor``: the box check, printed with the fix for anything not ok.

Exit status 0 when nothing FAILed, 1 else. Warnings (NTP state unknown, token not yet created) do not fail:
the appliance runs, but look at them.
"""
from __future__ import annotations

import argparse
import sys
from typing import TextIO

from api import argtypes
from api.cli.common import settings_from


def add_parser(sub) -> None:
    parser = sub.add_parser("doctor", help="check serial port, grabber, data directory, clock and token")
    parser.add_argument("--data-dir", type=argtypes.TEXT, help="data directory (default: from the configuration)")
    parser.add_argument("--serial", help="injector serial port or URL (default: from the configuration)")
    parser.add_argument("--video", help="video source (default: from the configuration)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return doctor_main(settings_from(args), sys.stdout)


def doctor_main(settings, out: TextIO) -> int:
    from core.ops.doctor import FAIL, OK, WARN, run_checks

    checks = run_checks(settings)
    width = max(len(c.name) for c in checks)
    for c in checks:
        print(f"[{c.status:^4}] {c.name:<{width}}  {c.detail}", file=out)
        if c.fix and c.status != OK:
            print(f"       {'':<{width}}  fix: {c.fix}", file=out)
    failed = sum(c.status == FAIL for c in checks)
    warned = sum(c.status == WARN for c in checks)
    if failed:
        print(f"{failed} problem(s) to fix, {warned} warning(s)", file=out)
        return 1
    print(f"all checks passed ({warned} warning(s))" if warned else "all checks passed", file=out)
    return 0
