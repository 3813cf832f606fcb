"""The recorder's files on disk (core.store.recorder): a run's .npy whose fixed-length header is written once its
pulse count is known, blanked in place when the field became known after its first pulses; its .json sidecar
written atomically; a failed run's partial files removed; the directory's size for the retention budget.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

__all__ = ["NPY_HEADER_LEN", "blank_leading", "discard", "npy_header", "write_json", "dir_size"]

NPY_HEADER_LEN = 128                  # fixed, so the shape can be written once the pulse count is known


def blank_leading(part: Path, dtype: str, shape: tuple, count: int, keep: np.ndarray) -> None:
    """Blank the first ``count`` pulses of a run file in place (those written before the field was known)."""
    frames = np.memmap(part, dtype=np.dtype(dtype), mode="r+", offset=NPY_HEADER_LEN, shape=(count, *shape))
    try:
        frames[:, ~keep] = 0
        frames.flush()
    finally:
        del frames


def discard(fh, part: Path) -> None:
    """Close ``fh`` (if open) and remove the run's partial .npy and its sidecar, whatever the disk says."""
    if fh is not None:
        try:
            fh.close()
        except OSError:
            pass   # its buffered tail cannot be written either; the file goes anyway
    try:
        part.unlink(missing_ok=True)
        part.with_suffix(".json").unlink(missing_ok=True)
    except OSError:
        pass


def npy_header(dtype_str: str, shape: tuple[int, ...]) -> bytes:
    """A version 1.0 .npy header padded to a fixed length (the format allows trailing spaces)."""
    text = repr({"descr": dtype_str, "fortran_order": False, "shape": tuple(int(s) for s in shape)})
    body_len = NPY_HEADER_LEN - 10
    if len(text) + 1 > body_len:
        raise ValueError(f"shape {shape} does not fit the .npy header")
    body = text.ljust(body_len - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", body_len) + body.encode("latin1")


def write_json(path: Path, obj: dict) -> None:
    """``obj`` as JSON at ``path``, atomically: a temporary file, fsync, rename."""
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def dir_size(directory: Path) -> int:
    """The bytes of the files directly in ``directory`` (0 when it cannot be listed)."""
    total = 0
    try:
        entries = list(directory.iterdir())
    except OSError:
        return 0
    for p in entries:
        try:
            total += p.stat().st_size
        except FileNotFoundError:
            pass
    return total
