"""The event log's queue: what callers recorded and the writer has not committed yet.

Every accepted item gets the next sequence number, so ``wait`` knows what "queued before" means. Data items
count against ``queue_max`` (beyond it they are dropped and counted, alarm ``queue_overflow``); the rare
writes whose loss would mis-attach what follows (procedures, the log's own notes) are never dropped. An item
queued for OPEN_PROCEDURE goes to the default procedure at the moment it is queued.
"""
from __future__ import annotations

import collections
import threading
import time

from core.store.alarms import Alarms
from core.store.records import OPEN_PROCEDURE

KEEP = object()   # put(default_procedure=KEEP): leave the default procedure as it is


class WriteQueue:
    """Entries are ``(seq, op, procedure_id, payload, bounded)``."""

    def __init__(self, queue_max: int, alarms: Alarms) -> None:
        self.queue_max = queue_max
        self._alarms = alarms
        self._lock = threading.Lock()
        self._items: collections.deque = collections.deque()
        self._seq = 0
        self._n_bounded = 0          # data items queued or in flight, bounded by queue_max
        self._dropped = 0
        self._default_pid: str | None = None
        self._done = threading.Condition()   # _committed_seq advanced
        self._committed_seq = 0
        self.wake = threading.Event()        # set when something is queued: wakes the writer

    def put(self, op: str, payload, *, bounded: bool = True, procedure_id=OPEN_PROCEDURE,
            default_procedure=KEEP) -> None:
        """Queue one item. ``default_procedure`` (an id or None) becomes where OPEN_PROCEDURE items queued
        after this one go, in the same step."""
        with self._lock:
            if default_procedure is not KEEP:
                self._default_pid = default_procedure
            if bounded and self._n_bounded >= self.queue_max:
                self._dropped += 1
                dropped = self._dropped
            else:
                dropped = 0
                self._seq += 1
                pid = self._default_pid if procedure_id is OPEN_PROCEDURE else procedure_id
                self._items.append((self._seq, op, pid, payload, bounded))
                if bounded:
                    self._n_bounded += 1
        if dropped:
            # The alarm takes its own lock and notes nothing here: it never queues under ours.
            self._alarms.raise_alarm("queue_overflow",
                                     f"event queue full ({self.queue_max} pending, database not accepting "
                                     f"writes); {dropped} events dropped so far", note=False)
        else:
            self.wake.set()

    @property
    def default_procedure(self) -> str | None:
        with self._lock:
            return self._default_pid

    def take(self, n: int) -> list:
        """Up to ``n`` items, oldest first, for one transaction."""
        out = []
        with self._lock:
            for _ in range(min(len(self._items), n)):
                out.append(self._items.popleft())
        return out

    def release(self, batch: list) -> bool:
        """The writer is done with ``batch`` (committed or rejected): its data items no longer count against
        queue_max. True when no data item is left queued or in flight."""
        bounded = sum(1 for item in batch if item[4])
        with self._lock:
            self._n_bounded -= bounded
            return self._n_bounded == 0

    def mark_done(self, batch: list) -> None:
        """Everything up to ``batch`` is committed and delivered: wake whoever waits for it."""
        with self._done:
            self._committed_seq = batch[-1][0]
            self._done.notify_all()

    def wait(self, timeout: float) -> bool:
        """Wait until everything queued before this call is done. False if the timeout passed first."""
        with self._lock:
            target = self._seq
        deadline = time.monotonic() + timeout
        with self._done:
            while self._committed_seq < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._done.wait(left)
        return True

    def counts(self) -> tuple[int, int]:
        """(pending data items, dropped so far)."""
        with self._lock:
            return self._n_bounded, self._dropped

    def __len__(self) -> int:
        return len(self._items)
