"""Waiting on a running appliance in tests: poll, never sleep a fixed time."""
from __future__ import annotations

import time


def wait_for(predicate, seconds: float, interval: float = 0.05):
    """The first truthy value of ``predicate()`` within ``seconds``; AssertionError if none came."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"not within {seconds} s")


def received_datagrams(sock) -> list[str]:
    """Every datagram waiting on ``sock`` (a socket with a short timeout), e.g. systemd notifications."""
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except TimeoutError:
            return out
