"""``cathlab-edge simulate-injector``: the injector simulator on a pty, a TCP socket or a serial line."""
from __future__ import annotations

import argparse
import sys
import time
from typing import TextIO

from api import argtypes
from firmware_bridge.scenarios import SCENARIOS
from firmware_bridge.sim_lines import open_line, play
from firmware_bridge.simulator import InjectorDevice


def add_parser(sub) -> None:
    parser = sub.add_parser("simulate-injector", help="play scripted injections on a serial port, pty or socket")
    parser.add_argument("--port", required=True, help="pty path, socket://host:port, or 'pty' to create one")
    parser.add_argument("--scenario", default="procedure", choices=sorted(SCENARIOS), metavar="NAME",
                        help=f"one of {', '.join(sorted(SCENARIOS))} (default procedure)")
    parser.add_argument("--seconds", type=argtypes.SIM_SECONDS,
                        help="stop after this many seconds (default: run until Ctrl-C)")
    parser.add_argument("--ber", type=argtypes.BIT_ERROR_RATE, default=0.0,
                        help="bit-error rate injected on the line (default 0)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return simulate_main(args.port, args.scenario, seconds=args.seconds, bit_error_rate=args.ber)


def simulate_main(port: str, scenario: str = "procedure", *, seconds: float | None = None,
                  bit_error_rate: float = 0.0, t0_ns: int | None = None, out: TextIO | None = None) -> int:
    """Play ``scenario`` on ``port`` ("pty" to create a pty pair and print its path, ``socket://host:port``
    to serve TCP, or a device path / pyserial URL). Returns 0 when done, 2 when the port cannot be used."""
    out = out or sys.stdout
    if scenario not in SCENARIOS:
        print(f"simulate-injector: unknown scenario {scenario!r}; choose from {', '.join(sorted(SCENARIOS))}",
              file=sys.stderr)
        return 2
    if seconds is not None and seconds <= 0:
        print("simulate-injector: --seconds must be positive", file=sys.stderr)
        return 2
    if not 0.0 <= bit_error_rate < 1.0:
        print("simulate-injector: bit error rate must be in [0, 1)", file=sys.stderr)
        return 2
    try:
        line = open_line(port)
    except Exception as exc:  # OSError, ValueError, pyserial's SerialException: the port cannot be used
        print(f"simulate-injector: cannot open {port}: {exc}", file=sys.stderr)
        return 2
    start = time.monotonic_ns()
    sc = SCENARIOS[scenario]
    dev = InjectorDevice(sc, t0_ns=start if t0_ns is None else t0_ns, bit_error_rate=bit_error_rate or None)
    print(f"simulate-injector: scenario {scenario!r} ({sc.description}) on {line.path}", file=out, flush=True)
    try:
        play(line, dev, start, None if seconds is None else start + int(seconds * 1e9))
    except KeyboardInterrupt:
        pass
    return 0
