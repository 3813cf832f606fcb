"""``cathlab-edge simulate-injector``: the injector simulator."""
from __future__ import annotations

import argparse

from api import argtypes
from firmware_bridge.simulator import SCENARIOS


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
    from firmware_bridge.simulator import simulate_main

    return simulate_main(args.port, args.scenario, seconds=args.seconds, bit_error_rate=args.ber)
