"""Device time -> appliance time: map a packet's u32 ``device_ms`` to host ``time.monotonic_ns()``.

Two estimates of ``offset = host_ns - device_ns``:
- TIME_REQ / TIME_RESP round trips (devices with capability bit2): the device read its clock between our
  send and our receive, so ``offset ~ midpoint - device``; the round trip with the smallest RTT in the
  last minute wins (its error is at most RTT/2; a minute of 50 ppm crystal drift adds 3 ms).
- otherwise the lower envelope of ``arrival - device`` over a sliding window: every packet arrives after
  its event, so the minimum is the offset plus the smallest transmission delay seen.
No I/O; the caller passes host times.
"""
from __future__ import annotations

from collections import deque

WRAP_MS = 1 << 32
REBOOT_BACKSTEP_MS = 60_000  # device time jumping back more than this (not a wrap) means a restarted device


class DeviceClock:
    def __init__(self, window_s: float = 30.0, sync_window_s: float = 60.0) -> None:
        if window_s <= 0 or sync_window_s <= 0:
            raise ValueError("clock windows must be positive")
        self._window_ns = int(window_s * 1e9)
        self._sync_window_ns = int(sync_window_s * 1e9)
        self.resets = 0
        self.reset()

    def reset(self) -> None:
        self._last_ms: int | None = None  # unwrapped device ms of the newest packet
        self._envelope: deque[tuple[int, int]] = deque()  # (arrival_ns, offset_ns), increasing offsets
        self._syncs: deque[tuple[int, int, int]] = deque()  # (host_ns, rtt_ns, offset_ns)

    def unwrap(self, device_ms: int) -> int:
        """Extend a u32 ms counter past its 49.7-day wrap, relative to the newest time seen."""
        if not 0 <= device_ms < WRAP_MS:
            raise ValueError(f"device_ms={device_ms} is not a u32")
        if self._last_ms is None:
            return device_ms
        delta = (device_ms - self._last_ms) % WRAP_MS
        if delta >= WRAP_MS // 2:
            delta -= WRAP_MS  # an older time (a retransmission carries its original device_ms)
        return self._last_ms + delta

    def is_restart(self, device_ms: int) -> bool:
        """True when ``device_ms`` is more than REBOOT_BACKSTEP_MS behind the newest time seen (not a wrap)."""
        return self._last_ms is not None and self.unwrap(device_ms) < self._last_ms - REBOOT_BACKSTEP_MS

    def observe(self, device_ms: int, arrival_ns: int) -> None:
        """Learn from a freshly sent packet (not a retransmission) that arrived at ``arrival_ns``."""
        ms = self.unwrap(device_ms)
        if self._last_ms is not None and ms < self._last_ms - REBOOT_BACKSTEP_MS:
            self.reset()
            self.resets += 1
            ms = device_ms
        if self._last_ms is None or ms > self._last_ms:
            self._last_ms = ms
        offset = arrival_ns - ms * 1_000_000
        env = self._envelope
        while env and env[-1][1] >= offset:
            env.pop()  # a later, smaller offset makes older larger ones irrelevant
        env.append((arrival_ns, offset))
        while env and env[0][0] < arrival_ns - self._window_ns and len(env) > 1:
            env.popleft()

    def time_sync(self, device_ms: int, sent_ns: int, received_ns: int) -> None:
        """One TIME_REQ/TIME_RESP round trip: sent and received in host ns, device_ms from the response."""
        if received_ns < sent_ns:
            raise ValueError("time sync response received before the request was sent")
        ms = self.unwrap(device_ms)
        rtt = received_ns - sent_ns
        self._syncs.append((received_ns, rtt, (sent_ns + received_ns) // 2 - ms * 1_000_000))
        while self._syncs and self._syncs[0][0] < received_ns - self._sync_window_ns:
            self._syncs.popleft()

    @property
    def offset_ns(self) -> int | None:
        if self.synced:
            return min(self._syncs, key=lambda s: s[1])[2]
        if self._envelope:
            return self._envelope[0][1]
        return None

    @property
    def synced(self) -> bool:
        """A recent round trip exists (a device that stopped answering falls back to the envelope)."""
        if not self._syncs:
            return False
        newest = self._envelope[-1][0] if self._envelope else self._syncs[-1][0]
        return newest - self._syncs[-1][0] <= self._sync_window_ns

    def to_host_ns(self, device_ms: int, fallback_ns: int) -> int:
        """Host monotonic ns of a device event; ``fallback_ns`` (its arrival) before any estimate exists."""
        offset = self.offset_ns
        if offset is None:
            return fallback_ns
        return self.unwrap(device_ms) * 1_000_000 + offset
