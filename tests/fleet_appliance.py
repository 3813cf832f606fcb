"""A stand-in appliance for the fleet fault tests, run as its own process (so it can be SIGKILLed): the real
event log and fleet publisher, and events recorded at ``--rate`` per second until ``--stop-file`` exists.

    python -m tests.fleet_appliance DATA_DIR BROKER_URL USER PASSWORD_FILE CA_FILE APPLIANCE_ID [--rate N]
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

from core.fleet.config import parse_broker
from core.fleet.publisher import Publisher
from core.store.eventlog import EventLog


def main() -> int:
    p = argparse.ArgumentParser()
    for name in ("data_dir", "broker", "user", "password_file", "ca_file", "appliance_id"):
        p.add_argument(name)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--stop-file", type=Path)
    p.add_argument("--backlog", type=int, default=0, help="record this many events before starting the link")
    args = p.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log = EventLog(args.data_dir)
    log.start()
    for i in range(args.backlog):
        log.record("backlog", {"i": i})
    log.flush(60)
    broker = parse_broker(args.broker, username=args.user, password_file=Path(args.password_file),
                          ca_file=Path(args.ca_file))
    pub = Publisher(log, broker, site="test", room="r1", appliance_id=args.appliance_id, reconnect_max_s=2,
                    status_interval_s=1.0)
    pub.start()
    print("started", flush=True)
    n = 0
    t0 = time.monotonic()
    while not stop.is_set():
        if args.stop_file is None or not args.stop_file.exists():
            log.record("tick", {"n": n})
            n += 1
        stop.wait(max(0.0, t0 + n / args.rate - time.monotonic()) if args.rate else 0.5)
        if args.stop_file is not None and args.stop_file.exists():
            stop.wait(0.2)
            sys.stdout.write(f"backlog {pub.backlog} link {pub.link} cursor {pub.cursor}\n")
            sys.stdout.flush()
    pub.stop()
    log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
