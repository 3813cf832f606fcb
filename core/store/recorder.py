"""Record a procedure so it can be replayed through the same pipeline later: how a field problem becomes a test.

What is kept, in one directory:
- ``run-<seq>-<run_id>.npy`` + ``.json``: the pulses (each X-ray pulse once, not its repeated video frames) of
  every contrast run, with up to ``preroll_s`` of pulses before the run so the replay sees the run start the
  way the live pipeline did; the sidecar holds each pulse's monotonic time and frame index, the frame rate,
  intensity and the run summary. Runs without contrast are discarded when they end.
- ``serial-<seq>.bin``: every byte from the injector line with its host arrival time (monotonic ns), as
  records ``<int64 t_ns><uint32 length><bytes>`` after an 8-byte magic, in chunks of ``serial_chunk_bytes``.
  A record cut short by a power loss is the file's end (counted as ``truncated`` on reading).
Privacy: by default every recorded pulse is blanked (set to 0) outside the collimated field and inside the
burnt-in text boxes, where C-arms print the patient's name and birth date (``set_mask``, fed by the appliance's
field detection, see ``privacy_mask``). Pulses queued before the field is known are blanked when their run is
closed; a run that ends before the field is ever found is discarded, not kept raw. ``keep_raw=True`` (setting
``record_raw``) keeps the frames as captured, for a device whose overlay carries no identity.
Budget: after every run and chunk, the oldest files (by sequence number) go until the directory fits
``retention_bytes`` (a recording exists to reproduce a recent field problem, so the newest matter most); the
chunk being written is never removed, and a run that alone outgrows the budget is abandoned.

Disk trouble: a write that fails (full disk, read-only, I/O error) abandons the run being written, deletes its
partial file and sets ``alarm``, logged once; later failures are only counted until a recording succeeds again.
``pause(reason)`` stops recording while the appliance needs the space for the event log (low disk space);
``resume()`` starts again with the next run.

Disk writes happen on the recorder's own thread behind a bounded queue, so a slow disk costs recorded pulses
(counted in ``stats()["dropped"]``), never frames of the live pipeline.

Reading a recording: ``core.sources.recording``; replaying it through the pipeline: ``core.appliance.replay``.
"""
from __future__ import annotations

import collections
import datetime as dt
import logging
import os
import queue
import re
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

from core.sources.frames import Frame
from core.sources.recording import SERIAL_MAGIC, SERIAL_RECORD
from core.store.run_files import NPY_HEADER_LEN, blank_leading, dir_size, discard, npy_header, write_json
from core.vocab import NS

log = logging.getLogger("cathlab.recorder")

_NAME = re.compile(r"^(run|serial)-(\d{6})")
QUEUE_DEPTH = 64                      # ~4 s of 15 p/s pulses at 1024x1024: about 64 MB in flight at most
SERIAL_RETRY_NS = 5 * NS              # after a failed serial write, try the disk again this much later


def privacy_mask(geometry) -> np.ndarray:
    """What a recording keeps of a frame (bool, True = keep) from a ``core.sources.collimator.FieldGeometry``: the
    measured field (its mask already leaves out the surround and the text pixels) less every whole text box."""
    keep = np.array(geometry.mask, dtype=bool, copy=True)
    for x, y, w, h in geometry.text_boxes:
        keep[y:y + h, x:x + w] = False
    return keep


class ProcedureRecorder:
    def __init__(self, directory: Path | str, retention_bytes: int, *, preroll_s: float = 1.0,
                 serial_chunk_bytes: int = 64 * 2**20, keep_raw: bool = False) -> None:
        if retention_bytes <= 0:
            raise ValueError(f"retention_bytes must be positive, got {retention_bytes}")
        if preroll_s < 0:
            raise ValueError(f"preroll_s must not be negative, got {preroll_s}")
        if serial_chunk_bytes <= len(SERIAL_MAGIC) + SERIAL_RECORD.size:
            raise ValueError(f"serial_chunk_bytes too small: {serial_chunk_bytes}")
        self.directory = Path(directory)
        self.retention_bytes = int(retention_bytes)
        self.preroll_ns = int(preroll_s * NS)
        self.serial_chunk_bytes = int(serial_chunk_bytes)
        self.keep_raw = bool(keep_raw)
        self._mask: np.ndarray | None = None      # bool (H, W), True = keep; replaced whole, never mutated
        self._counts = collections.Counter()
        self._failure: str | None = None           # why the last write failed, until one succeeds again
        self._failure_lock = threading.Lock()      # the writer and the serial reader both report
        self._seq = 0
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._seq = max((int(m.group(2)) for p in self.directory.iterdir() if (m := _NAME.match(p.name))),
                            default=0)
            for stale in self.directory.glob("*.part"):   # a crash mid-run leaves an unusable partial run
                stale.unlink()
        except OSError as exc:   # a full or read-only disk must not stop the appliance from starting
            self._write_failed("directory", exc)
        self._preroll: collections.deque[tuple[np.ndarray, int, int]] = collections.deque()
        self._run: dict | None = None             # frame thread's view of the run being recorded
        self._serial_lock = threading.Lock()
        self._serial_fh = None
        self._serial_path: Path | None = None
        self._serial_size = 0
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_DEPTH)
        self._paused: str | None = None
        self._serial_retry_ns = 0
        self._thread = threading.Thread(target=self._writer, name="recorder", daemon=True)
        self._thread.start()

    # -- serial (bridge reader thread) -----------------------------------------------------------------
    def serial(self, data: bytes, t_ns: int) -> None:
        """Append the bytes as they arrived; small and sequential, so written directly (buffered)."""
        if not data or self._paused is not None or t_ns < self._serial_retry_ns:
            return
        with self._serial_lock:
            try:
                size = self._serial_size + SERIAL_RECORD.size + len(data)
                if self._serial_fh is None or size > self.serial_chunk_bytes:
                    self._rotate_serial()
                self._serial_fh.write(SERIAL_RECORD.pack(t_ns, len(data)) + data)
                self._serial_size += SERIAL_RECORD.size + len(data)
                self._counts["serial_bytes"] += len(data)
            except OSError as exc:
                self._close_serial_quietly()
                self._serial_retry_ns = t_ns + SERIAL_RETRY_NS
                self._write_failed("serial", exc)
        # Buffered serial writes succeed before they reach the disk: only a recorded run clears the alarm.

    def _close_serial_quietly(self) -> None:
        fh, self._serial_fh = self._serial_fh, None
        if fh is None:
            return
        try:
            fh.close()   # flushes what it buffered: fails again on a full disk
        except OSError:
            pass
        try:
            # A chunk that never got past its magic holds nothing: retries on a full disk leave no litter.
            if self._serial_path is not None and self._serial_path.stat().st_size <= len(SERIAL_MAGIC):
                self._serial_path.unlink()
        except OSError:
            pass

    def _rotate_serial(self) -> None:
        if self._serial_fh is not None:
            self._serial_fh.close()
        self._seq += 1
        self._serial_path = self.directory / f"serial-{self._seq:06d}.bin"
        self.directory.mkdir(parents=True, exist_ok=True)
        self._serial_fh = open(self._serial_path, "wb")
        self._serial_fh.write(SERIAL_MAGIC)
        self._serial_size = len(SERIAL_MAGIC)
        self._queue_put(("retain", None))

    def flush_serial(self) -> None:
        with self._serial_lock:
            if self._serial_fh is not None:
                try:
                    self._serial_fh.flush()
                except OSError as exc:
                    self._close_serial_quietly()
                    self._write_failed("serial", exc)

    def set_mask(self, keep: np.ndarray | None) -> None:
        """The pixels recordings keep (bool, frame shape, True = keep), e.g. ``privacy_mask(geometry)``."""
        if keep is not None:
            keep = np.array(keep, dtype=bool, copy=True)
            if keep.ndim != 2:
                raise ValueError(f"mask must be 2-D (rows, columns), got shape {keep.shape}")
        self._mask = keep

    # -- frames (frame thread) -------------------------------------------------------------------------
    def frame(self, frame: Frame, new_pulse: bool) -> None:
        """Every frame of the stream; only new pulses are kept (repeats of a pulse carry nothing new)."""
        if not new_pulse:
            return
        if self._run is not None and self._run["skip"]:
            return
        pixels = frame.pixels.copy()             # a grabber may reuse its buffer for the next frame
        if self._run is not None:
            self._run["pulses"].append((frame.t_ns, frame.index))
            self._queue_put(("pulse", (self._run["part"], pixels)))
            return
        self._preroll.append((pixels, frame.t_ns, frame.index))
        while self._preroll and frame.t_ns - self._preroll[0][1] > self.preroll_ns:
            self._preroll.popleft()

    def run_started(self, run_id: str, start_ns: int, fps: float, intensity: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", run_id):
            raise ValueError(f"run id must be 1-64 letters, digits, '_', '.', '-', got {run_id!r}")
        if self._run is not None:
            self.run_ended(self._run["run_id"], start_ns, contrast=False)
        self._seq += 1
        part = self.directory / f"run-{self._seq:06d}-{run_id}.part"
        pre = [p for p in self._preroll if p[1] >= start_ns - self.preroll_ns]
        self._preroll.clear()
        self._run = {"run_id": run_id, "part": part, "start_ns": start_ns, "fps": fps, "intensity": intensity,
                     "pulses": [(t, i) for _, t, i in pre], "skip": self._paused is not None,
                     "recorded_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        if self._run["skip"]:
            return
        if not pre:
            log.warning("run %s started with no pulse in the pre-roll", run_id)
        self._queue_put(("open", part))
        for pixels, _, _ in pre:
            self._queue_put(("pulse", (part, pixels)))

    def run_ended(self, run_id: str, end_ns: int, contrast: bool, summary: dict | None = None) -> None:
        """Keep the run (contrast) or throw it away; the files appear once the writer has caught up."""
        self.end_run(run_id, end_ns)(contrast, summary)

    def end_run(self, run_id: str, end_ns: int) -> Callable[[bool, dict | None], None]:
        """Stop adding pulses to the run now (frame thread); the returned ``keep(contrast, summary)`` decides
        later, from any thread, once the run's analysis says whether it showed contrast."""
        run, self._run = self._run, None
        if run is None or run["run_id"] != run_id:
            raise ValueError(f"run {run_id!r} is not being recorded")
        meta = {k: run[k] for k in ("run_id", "start_ns", "fps", "intensity", "recorded_at")}
        meta.update(end_ns=end_ns, pulse_t_ns=[t for t, _ in run["pulses"]],
                    pulse_index=[i for _, i in run["pulses"]])

        def keep(contrast: bool, summary: dict | None = None) -> None:
            if run["skip"]:
                self._counts["runs_skipped"] += 1
                return
            self._queue_put(("close", (run["part"], dict(meta, summary=summary or {}), contrast)), block=True)
        return keep

    # -- lifecycle -------------------------------------------------------------------------------------
    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued is on disk (tests, shutdown)."""
        self.flush_serial()
        done = threading.Event()
        self._queue_put(("mark", done), block=True)
        return done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        if self._run is not None:
            self.run_ended(self._run["run_id"], 0, contrast=False)
        self._queue.put(("stop", None))
        self._thread.join(timeout)
        self.flush_serial()
        with self._serial_lock:
            self._close_serial_quietly()

    def pause(self, reason: str) -> None:
        """Record nothing more (runs from the next one on, serial bytes now) until resume()."""
        if self._paused is None:
            log.warning("recording paused: %s", reason)
        self._paused = reason

    def resume(self) -> None:
        if self._paused is not None:
            log.info("recording resumed")
        self._paused = None

    @property
    def alarm(self) -> str | None:
        """Why recording is not happening (a failed write or a pause), or None."""
        if self._failure is not None:
            return f"recording failed, nothing recorded until the disk takes writes again: {self._failure}"
        if self._paused is not None:
            return f"recording paused: {self._paused}"
        return None

    def stats(self) -> dict:
        return {"runs_recorded": self._counts["runs_recorded"], "runs_discarded": self._counts["runs_discarded"],
                "runs_unblankable": self._counts["runs_unblankable"],
                "runs_skipped": self._counts["runs_skipped"], "runs_too_large": self._counts["runs_too_large"],
                "pulses": self._counts["pulses"], "dropped": self._counts["dropped"],
                "serial_bytes": self._counts["serial_bytes"], "files_deleted": self._counts["files_deleted"],
                "errors": self._counts["errors"], "bytes_on_disk": dir_size(self.directory)}

    def _write_failed(self, what: str, exc: OSError) -> None:
        # One alarm and one log line per outage: a full disk fails every pulse, 15 times a second.
        with self._failure_lock:
            self._counts["errors"] += 1
            first = self._failure is None
            if first:
                self._failure = f"{what}: {exc.strerror or exc}"
        if first:
            log.error("recording stopped, %s write failed: %s (nothing more is logged until it recovers)",
                      what, exc)

    def _write_recovered(self) -> None:
        with self._failure_lock:
            failed, self._failure = self._failure, None
        if failed is not None:
            log.info("recording works again")

    def _queue_put(self, item, block: bool = False) -> None:
        try:
            self._queue.put(item, block=block, timeout=5.0 if block else None)
        except queue.Full:
            self._counts["dropped"] += 1
            if item[0] == "pulse":
                # A pulse missing from the file would shift every later one: abandon this run's recording.
                self._queue_put(("spoil", item[1][0]), block=True)

    # -- writer thread ---------------------------------------------------------------------------------
    def _writer(self) -> None:
        files: dict[Path, Any] = {}
        spoiled: set[Path] = set()
        shapes: dict[Path, tuple] = {}
        unblanked: collections.Counter = collections.Counter()   # leading pulses written before the mask
        sizes: collections.Counter = collections.Counter()
        while True:
            op, arg = self._queue.get()
            try:
                if op == "stop":
                    break
                if op == "mark":
                    arg.set()
                elif op == "open":
                    arg.parent.mkdir(parents=True, exist_ok=True)
                    files[arg] = open(arg, "wb")
                    files[arg].write(b"\0" * NPY_HEADER_LEN)
                elif op == "pulse":
                    part, pixels = arg
                    if part in spoiled or part not in files:
                        continue
                    if shapes.setdefault(part, (pixels.shape, pixels.dtype.str)) != (pixels.shape, pixels.dtype.str):
                        spoiled.add(part)             # the grabber changed mode mid-run: cannot be one stack
                        log.warning("recording of %s abandoned: frame geometry changed", part.name)
                        continue
                    sizes[part] += pixels.nbytes
                    if sizes[part] > self.retention_bytes:
                        spoiled.add(part)             # the budget could not hold it even alone
                        self._counts["runs_too_large"] += 1
                        log.warning("recording of %s abandoned: larger than record_retention_mb", part.name)
                        continue
                    if not self.keep_raw:
                        mask = self._mask
                        if mask is not None and mask.shape == pixels.shape:
                            pixels = np.where(mask, pixels, 0).astype(pixels.dtype, copy=False)
                        else:
                            unblanked[part] += 1          # blanked at close, once the field is known
                    files[part].write(np.ascontiguousarray(pixels).tobytes())
                    self._counts["pulses"] += 1
                elif op == "spoil":
                    spoiled.add(arg)
                elif op == "close":
                    part, meta, contrast = arg
                    fh = files.pop(part, None)
                    keep = contrast and fh is not None and part not in spoiled and part in shapes
                    raw_pulses = unblanked.pop(part, 0)
                    if keep and raw_pulses and (self._mask is None or self._mask.shape != shapes[part][0]):
                        keep = False                   # never keep frames that could not be blanked
                        self._counts["runs_unblankable"] += 1
                        log.warning("recording of run %s discarded: the collimated field was not found, so "
                                    "its frames could not be blanked", meta["run_id"])
                    if keep:
                        shape, dtype = shapes[part]
                        fh.seek(0)
                        fh.write(npy_header(dtype, (len(meta["pulse_t_ns"]), *shape)))
                        fh.flush()
                        if raw_pulses:
                            blank_leading(part, dtype, shape, raw_pulses, self._mask)
                        os.fsync(fh.fileno())
                    if fh is not None:
                        fh.close()
                    spoiled.discard(part)
                    shapes.pop(part, None)
                    sizes.pop(part, None)
                    if keep:
                        final = part.with_suffix(".npy")
                        meta.update(shape=list(shape), dtype=np.dtype(dtype).name, blanked=not self.keep_raw)
                        write_json(part.with_suffix(".json"), meta)
                        os.replace(part, final)
                        self._counts["runs_recorded"] += 1
                        self._write_recovered()
                        self._retain()
                    else:
                        part.unlink(missing_ok=True)
                        self._counts["runs_discarded"] += 1
                elif op == "retain":
                    self._retain()
            except OSError as exc:
                # The disk (full, read-only, I/O error): give up the run being written and free its space.
                part = arg[0] if op in ("pulse", "close") else arg if op == "open" else None
                if part is not None:
                    discard(files.pop(part, None), part)
                    spoiled.add(part)
                    if op == "close":
                        spoiled.discard(part)
                        shapes.pop(part, None)
                        sizes.pop(part, None)
                self._write_failed("run", exc)
            except Exception:  # boundary: a bug must not kill the recorder thread; count, log, go on
                self._counts["errors"] += 1
                log.exception("recorder %s failed", op)
        for fh in files.values():
            fh.close()

    def _retain(self) -> None:
        """Delete the oldest recordings until the directory fits the retention size."""
        with self._serial_lock:
            active = self._serial_path
        groups: dict[int, list[Path]] = collections.defaultdict(list)
        for p in self.directory.iterdir():
            m = _NAME.match(p.name)
            if m and p.suffix in (".npy", ".json", ".bin"):
                groups[int(m.group(2))].append(p)
        total = dir_size(self.directory)
        for seq in sorted(groups):
            if total <= self.retention_bytes:
                break
            if active in groups[seq]:
                continue
            for p in groups[seq]:
                try:
                    size = p.stat().st_size
                    p.unlink()
                    total -= size
                    self._counts["files_deleted"] += 1
                except FileNotFoundError:
                    pass
