"""The ``cathlab-edge`` command line: an interface like the HTTP one, sitting above core/."""
from __future__ import annotations

import argparse
import logging
import sys
import traceback

from api.argtypes import OneLineParser
from api.cli import (analyze, check, clearance, config, doctor, export, fleet_ingest, fleet_report, replay, run,
                     simulate, vessel)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="cathlab-edge", description="Passive cath-lab edge appliance for DVT venography.")
    parser.add_argument("--config", metavar="FILE.toml", help="settings file (flags and CATHLAB_* variables win)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                        help="log verbosity (default: the log_level setting, info)")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (run, simulate, check, analyze, clearance, vessel, export, config, doctor, replay, fleet_ingest,
                    fleet_report):
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Offline commands log plain text; `run` switches to the configured format (JSON lines by default).
    logging.basicConfig(level=(args.log_level or "warning").upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except UnicodeDecodeError:   # tomllib reads text; a binary file given as --config fails here
        print(f"cathlab-edge: config file {args.config} is not UTF-8 text (expected TOML)", file=sys.stderr)
        return 2
    except RecursionError as exc:
        if args.config is None or not any("tomllib" in frame.filename
                                          for frame in traceback.extract_tb(exc.__traceback__)):
            raise                # not the config file's doing: our bug, keep the traceback
        # tomllib parses nested arrays recursively: "a = [[[[...]]]]" thousands deep exhausts the stack.
        print(f"cathlab-edge: config file {args.config} is not valid TOML: arrays or tables nested too deeply",
              file=sys.stderr)
        return 2
    except ValueError as exc:   # SettingsError included: it names the setting and where it came from
        print(f"cathlab-edge: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
