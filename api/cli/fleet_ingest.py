"""``cathlab-edge fleet-ingest``: the central side of the fleet, events from the MQTT broker into PostgreSQL.

Runs until SIGTERM or Ctrl-C. Several may run with one ``--group``: the broker's shared subscription spreads the
load. Each needs its own stable ``--client-id`` (default: group and host name), so its persistent session, and
what the broker keeps in it while it is away, is found again at restart.
"""
from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
from pathlib import Path

from api import argtypes


def add_parser(sub) -> None:
    parser = sub.add_parser("fleet-ingest", help="ingest the fleet's events from an MQTT broker into PostgreSQL")
    parser.add_argument("--broker", required=True, type=argtypes.TEXT, help="mqtt://host:1883 or mqtts://host:8883")
    parser.add_argument("--username", type=argtypes.TEXT, help="broker user name")
    parser.add_argument("--password-file", type=Path, help="file holding the broker password")
    parser.add_argument("--ca-file", type=Path, help="CA certificate(s) that signed the broker's (mqtts)")
    parser.add_argument("--db", required=True, type=argtypes.TEXT, help="postgresql://user@host/database")
    parser.add_argument("--group", default="cathlab", type=argtypes.TEXT,
                        help="shared-subscription group: ingesters of one group share the load (default cathlab)")
    parser.add_argument("--client-id", type=argtypes.TEXT,
                        help="stable MQTT client id of this ingester (default cathlab-ingest-GROUP-HOST)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import psycopg

    from core.fleet.config import FleetConfigError, check_name, parse_broker
    from core.fleet.ingest import Ingester

    logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))
    try:
        broker = parse_broker(args.broker, username=args.username, password_file=args.password_file,
                              ca_file=args.ca_file)
        group = check_name("group", args.group)
    except FleetConfigError as exc:
        print(f"cathlab-edge fleet-ingest: {exc}", file=sys.stderr)
        return 2
    client_id = args.client_id or f"cathlab-ingest-{group}-{socket.gethostname()}"
    ingester = Ingester(broker, args.db, group=group, client_id=client_id)
    signal.signal(signal.SIGTERM, lambda *_: ingester.stop())
    try:
        ingester.run()
    except psycopg.OperationalError as exc:
        print(f"cathlab-edge fleet-ingest: cannot use the database: {str(exc).strip().splitlines()[0]}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        ingester.stop()
    print(f"fleet-ingest stopped: {ingester.inserted} inserted, {ingester.duplicates} duplicate(s) ignored, "
          f"{ingester.skipped} malformed", file=sys.stderr)
    return 0
