"""Free space on the data directory: the low-space alarm, raised before the disk is full.

A full disk stops the event log (its writes then wait in memory) and the recorder. ``SpaceMonitor.check()``
compares the space left to ``min_free_mb`` and says when the state changes, so the appliance can alarm once,
log once, and pause recordings while the log still has room. It is called periodically off the frame path; the
probe is injectable so tests need not fill a disk.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("cathlab.storage")

MB = 2**20
# Clear only this far above the threshold, so a log growing and retention freeing does not flap the alarm.
HYSTERESIS_BYTES = 16 * MB


def available_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem of ``path`` (root's reserve excluded)."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class SpaceMonitor:
    def __init__(self, path: Path | str, min_free_bytes: int,
                 free_bytes: Callable[[Path], int] = available_bytes) -> None:
        if min_free_bytes < 0:
            raise ValueError(f"min_free_bytes must not be negative, got {min_free_bytes}")
        self.path = Path(path)
        self.min_free_bytes = int(min_free_bytes)
        self._free_bytes = free_bytes
        self.alarm: dict | None = None     # {"kind": "disk_low", "message": ...} while low
        self.free: int | None = None       # last reading
        self._probe_failed = False

    def check(self) -> tuple[bool, dict | None]:
        """Read the free space; returns (changed, alarm). ``alarm`` is None when there is enough."""
        try:
            free = int(self._free_bytes(self.path))
        except OSError as exc:
            if not self._probe_failed:   # say it once; the event log's own alarms cover a dead disk
                log.warning("cannot read free space of %s: %s", self.path, exc)
            self._probe_failed = True
            return False, self.alarm
        self._probe_failed = False
        self.free = free
        if self.min_free_bytes == 0:
            low = False
        elif self.alarm is None:
            low = free < self.min_free_bytes
        else:
            low = free < self.min_free_bytes + HYSTERESIS_BYTES
        was_low = self.alarm is not None
        if low:
            self.alarm = {"kind": "disk_low",
                          "message": f"low disk space on {self.path}: {free / MB:.0f} MB free, below "
                                     f"min_free_mb ({self.min_free_bytes / MB:.0f} MB); recordings paused, "
                                     "free space before the event log fills the disk"}
        else:
            self.alarm = None
        return low != was_low, self.alarm
