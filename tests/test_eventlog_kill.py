"""SIGKILL the writing process at random moments during a burst of events, many times over.

The child records a paced burst (3,000 events/s offered) and prints each event's key to a file from the
commit callback, i.e. only after its transaction committed: those are the acknowledged events. After each
kill the parent opens the database with plain sqlite3 and checks that every acknowledged event is present
exactly once, no key appears twice, the open procedure survived, and ``PRAGMA integrity_check`` says ok.
Each restart retransmits the last few hundred acknowledged keys, as a device would after a reconnect.

CATHLAB_KILL_CYCLES=200 runs a long version (default 20 cycles, about 10 s).
"""
from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RATE = 3000          # events/s offered by the child
OVERLAP = 300        # keys re-sent after each restart

CHILD = f"""
import os, sys, time
sys.path.insert(0, {str(ROOT)!r})
from core.store.eventlog import EventLog
from core.store.procedures import Procedures

data_dir, start = sys.argv[1], int(sys.argv[2])
log = EventLog(data_dir)
procs = Procedures(log)

def ack(event):
    k = event["data"].get("k")
    if k is not None:
        os.write(1, b"A %d\\n" % k)   # after COMMIT: acknowledged

log.subscribe(ack)
log.start()
proc = procs.current() or procs.start("kill test")
os.write(1, ("P " + proc["id"] + "\\n").encode())
i, t0 = start, time.monotonic()
while True:
    due = int((time.monotonic() - t0) * {RATE})
    while i - start < due:
        log.record("sample", {{"k": i}}, key="e%d" % i)
        i += 1
    time.sleep(0.001)
"""


def read_acks(path: Path) -> tuple[set[int], set[str]]:
    acked, procs = set(), set()
    for line in path.read_bytes().split(b"\n")[:-1]:   # a torn last line was never acknowledged
        tag, value = line.split(b" ", 1)
        if tag == b"A":
            acked.add(int(value))
        elif tag == b"P":
            procs.add(value.decode())
    return acked, procs


def test_sigkill_during_burst_loses_no_acknowledged_event(tmp_path):
    cycles = int(os.environ.get("CATHLAB_KILL_CYCLES", "20"))
    rng = random.Random(7)
    data = tmp_path / "data"
    db = data / "events.sqlite3"
    acked: set[int] = set()
    procedure_ids: set[str] = set()
    next_start, cycles_with_acks, mid_burst = 0, 0, 0
    for cycle in range(cycles):
        out = tmp_path / f"child{cycle}.out"
        with open(out, "wb") as f:
            child = subprocess.Popen([sys.executable, "-c", CHILD, str(data), str(next_start)], stdout=f,
                                     stderr=subprocess.PIPE)
        if cycle % 5 == 0:   # early: during start-up, open, migration or resume
            time.sleep(rng.uniform(0.0, 0.08))
        else:                # mid-burst: a random moment after the child is up and recording
            mid_burst += 1
            deadline = time.monotonic() + 20
            while b"P " not in out.read_bytes() and time.monotonic() < deadline and child.poll() is None:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.1, 0.4))
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        stderr = child.stderr.read().decode()
        child.stderr.close()
        assert "Traceback" not in stderr, stderr
        new_acks, procs = read_acks(out)
        acked |= new_acks
        procedure_ids |= procs
        cycles_with_acks += bool(new_acks)
        if os.environ.get("CATHLAB_KILL_VERBOSE"):
            print(f"cycle {cycle}: {len(new_acks)} acks, up to {max(new_acks, default=None)}")
        if not db.exists():
            assert not acked
            continue

        conn = sqlite3.connect(db)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            counts = dict(conn.execute("SELECT key, COUNT(*) FROM events WHERE key LIKE 'e%' GROUP BY key"))
            open_procs = conn.execute("SELECT id FROM procedures WHERE ended_wall IS NULL").fetchall()
            foreign = conn.execute("SELECT COUNT(*) FROM events WHERE kind = 'sample' AND procedure_id IS NOT ?",
                                   (open_procs[0][0] if open_procs else None,)).fetchone()[0]
        finally:
            conn.close()
        missing = [k for k in acked if counts.get(f"e{k}") != 1]
        assert not missing, f"cycle {cycle}: {len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"
        assert all(n == 1 for n in counts.values())
        # One procedure for the whole test: started once, resumed after every kill.
        assert len(procedure_ids) <= 1 and len(open_procs) <= 1 and foreign == 0
        if acked:
            next_start = max(0, max(acked) - OVERLAP)

    print(f"{cycles} kills, {len(acked)} acknowledged events, {cycles_with_acks} cycles with commits")
    assert cycles_with_acks >= 0.75 * mid_burst, "too few cycles reached a commit before the kill"
    assert len(acked) > 1000
