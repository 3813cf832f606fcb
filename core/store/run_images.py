"""The open procedure's run images on disk: what live clearance rebuilds its baseline from after a restart.

One ``<run_id>.npy`` per contrast run under ``<dir>/<procedure_id>/``: float32 (planes, H, W), the run's
peak-opacity image and, when there is one, its contrast-free mask. The caller blanks them first (no patient
identity: the burnt-in text and the surround are NaN). Written atomically (a temporary file, fsync, rename),
so a power cut leaves the old file or the new one, never half of one; ``*.tmp`` left by a crash go at start.

Only the open procedure's images are kept: ``keep_only`` deletes every other procedure's folder (at start, a
new procedure, the end of one), and the caller deletes a run's file when it stops tracking the run.
A write that fails (full disk, read-only, I/O error) is counted and logged once until one succeeds again; it
never raises: the appliance goes on, that run is then not restored after a restart. ``low_space()`` true (the
free-space alarm) skips writes, counted too: the event log has the better claim on what is left.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from core.store.durable import fsync_dir

log = logging.getLogger("cathlab.storage")

_SAFE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")   # ids are generated (uuid hex, <session>-<n>): nothing else is a file


class RunImages:
    def __init__(self, directory: Path | str, low_space: Callable[[], bool] = lambda: False) -> None:
        self.directory = Path(directory)
        self._low_space = low_space
        self._lock = threading.Lock()
        self.saved = 0
        self.failed = 0          # writes that failed on the disk
        self.skipped = 0         # not written: low disk space
        self.error: str | None = None     # the last failure, until a write succeeds again

    # -- writes (the analysis worker) --------------------------------------------------------------------
    def save(self, procedure_id: str, run_id: str, planes: list[np.ndarray]) -> bool:
        """``planes`` (same shape, float32) kept as ``run_id``'s file of ``procedure_id``; False when not."""
        path = self._path(procedure_id, run_id)
        if self._low_space():
            with self._lock:
                self.skipped += 1
            return False
        tmp = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                np.save(fh, np.stack([np.asarray(p, dtype=np.float32) for p in planes]))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            fsync_dir(path.parent)
        except OSError as exc:
            self._failed(f"run image {run_id} not kept: {exc.strerror or exc}")
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            return False
        with self._lock:
            self.saved += 1
            if self.error is not None:
                log.warning("run images are written again")
            self.error = None
        return True

    def discard(self, procedure_id: str, run_id: str) -> None:
        try:
            self._path(procedure_id, run_id).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot delete the image of run %s: %s", run_id, exc)

    def keep_only(self, procedure_id: str | None) -> None:
        """Delete every procedure's images but ``procedure_id``'s (None: all), and partial files of a crash."""
        try:
            folders = [p for p in self.directory.iterdir() if p.is_dir()] if self.directory.is_dir() else []
        except OSError as exc:
            log.warning("cannot list %s: %s", self.directory, exc)
            return
        for folder in folders:
            if folder.name != procedure_id:
                shutil.rmtree(folder, ignore_errors=True)
            else:
                for stale in folder.glob("*.tmp"):
                    stale.unlink(missing_ok=True)

    # -- reads ---------------------------------------------------------------------------------------------
    def load(self, procedure_id: str, run_id: str) -> np.ndarray | None:
        """The run's planes (P, H, W) float32, or None when not kept or unreadable (said in the log)."""
        path = self._path(procedure_id, run_id)
        try:
            planes = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("run image %s unreadable, not restored: %s", run_id, exc)
            return None
        if planes.ndim != 3 or planes.dtype != np.float32 or not 1 <= planes.shape[0] <= 2:
            log.warning("run image %s has an unexpected shape %s, not restored", run_id, planes.shape)
            return None
        return planes

    def run_ids(self, procedure_id: str) -> set[str]:
        folder = self.directory / _check(procedure_id)
        try:
            return {p.stem for p in folder.glob("*.npy")}
        except OSError:
            return set()

    def bytes_used(self) -> int:
        total = 0
        try:
            for path in self.directory.rglob("*.npy"):
                total += path.stat().st_size
        except OSError:
            pass
        return total

    def stats(self) -> dict:
        with self._lock:
            return {"saved": self.saved, "failed": self.failed, "skipped_low_space": self.skipped,
                    "error": self.error}

    def _failed(self, message: str) -> None:
        with self._lock:
            self.failed += 1
            first = self.error is None
            self.error = message
        if first:   # once until a write succeeds again: a full disk must not flood the journal
            log.warning("%s", message)

    def _path(self, procedure_id: str, run_id: str) -> Path:
        return self.directory / _check(procedure_id) / f"{_check(run_id)}.npy"


def _check(name: str) -> str:
    if not isinstance(name, str) or not _SAFE.match(name):
        raise ValueError(f"not a generated id: {name!r}")
    return name
