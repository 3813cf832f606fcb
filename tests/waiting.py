"""Waiting in tests on something running in real time: poll a condition, never sleep a fixed time."""
from __future__ import annotations

import time
from typing import Callable


def wait_for(predicate: Callable[[], object], seconds: float, interval: float = 0.05,
             explain: Callable[[], object] | None = None):
    """The first truthy value of ``predicate()`` within ``seconds``; AssertionError if none came, with
    ``explain()`` (e.g. the last status seen) in its message. Exceptions from ``predicate`` propagate."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    detail = f": {str(explain())[:2000]}" if explain is not None else ""
    raise AssertionError(f"not within {seconds} s{detail}")


def received_datagrams(sock) -> list[str]:
    """Every datagram waiting on ``sock`` (a socket with a short timeout), e.g. systemd notifications."""
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except TimeoutError:
            return out
