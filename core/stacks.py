"""Frame stacks from files: ``.npy`` arrays and DICOM multi-frame (XA, XRF, secondary capture).

Everything that reads a recorded run goes through ``load_stack``, so the CLI, replay and tests agree on frame
rate, intensity encoding and what counts as a usable file. Unusable files raise ``ValueError`` with a reason.
A file is named by its content hash (core.identity.content_label), never its name: names of exported studies
carry the patient (``DOE^JOHN_MRN00412345_XA.dcm``), and messages and ``source`` end up in logs and events.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.identity import content_label


@dataclass
class FrameStack:
    frames: np.ndarray              # (T, H, W) uint8 or uint16, brighter = more photons
    fps: float
    intensity: str                  # "lin" (linear in photons) | "log" (log-encoded display video)
    bits_stored: int
    frame_times_s: np.ndarray       # (T,) seconds from the first frame
    source: str                     # the file's content hash, never its name

    def __post_init__(self) -> None:
        if self.frames.ndim != 3:
            raise ValueError(f"{self.source}: expected (frames, rows, columns), got shape {self.frames.shape}")
        if self.frames.shape[0] < 2:
            raise ValueError(f"{self.source}: a single frame is not a run (need at least 2 frames)")
        if 0 in self.frames.shape[1:]:
            raise ValueError(f"{self.source}: empty frames of shape {self.frames.shape[1:]}")
        if self.frames.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"{self.source}: pixel type {self.frames.dtype} is not uint8 or uint16")
        if not (self.fps > 0 and np.isfinite(self.fps)):
            raise ValueError(f"{self.source}: frame rate must be positive, got {self.fps}")
        if self.intensity not in ("lin", "log"):
            raise ValueError(f"{self.source}: intensity must be lin or log, got {self.intensity!r}")


def load_stack(path: str | Path, fps: float | None = None, intensity: str | None = None) -> FrameStack:
    """Load a run. ``fps`` and ``intensity`` override what the file says (``fps`` is required for ``.npy``)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError("no such file (its name is not repeated: file names may carry patient identity)")
    if path.suffix.lower() == ".npy":
        return _load_npy(path, fps, intensity)
    return _load_dicom(path, fps, intensity)


def _reason(exc: BaseException, path: Path) -> str:
    """A library's message without the file's path or name (an OSError quotes it)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).replace(str(path), "<file>").replace(path.name, "<file>")


def _default_intensity(dtype: np.dtype) -> str:
    return "lin" if dtype == np.uint16 else "log"


def _load_npy(path: Path, fps: float | None, intensity: str | None) -> FrameStack:
    name = content_label(path)
    if fps is None:
        raise ValueError(f"{name}: a .npy stack carries no frame rate; give --fps")
    try:
        frames = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"{name}: not a readable .npy array ({_reason(exc, path)})") from None
    bits = 16 if frames.dtype == np.uint16 else 8
    intensity = intensity or _default_intensity(frames.dtype)
    times = np.arange(frames.shape[0]) / fps if frames.ndim == 3 else np.zeros(0)
    return FrameStack(frames, float(fps), intensity, bits, times, name)


def _load_dicom(path: Path, fps: float | None, intensity: str | None) -> FrameStack:
    import pydicom
    from pydicom.errors import InvalidDicomError

    name = content_label(path)
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        raise ValueError(f"{name}: not a DICOM file (and not .npy)") from None
    except Exception as exc:  # pydicom raises many types on damaged files
        raise ValueError(f"{name}: unreadable DICOM ({type(exc).__name__}: {_reason(exc, path)})") from None
    if "PixelData" not in ds:
        raise ValueError(f"{name}: DICOM file without pixel data")
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        raise ValueError(f"{name}: cannot decode pixel data ({type(exc).__name__}: {_reason(exc, path)})") from None
    frames_n = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples == 3:
        pixels = _luma(pixels, frames_n)
    elif samples != 1:
        raise ValueError(f"{name}: {samples} samples per pixel is not a grey or RGB image")
    if frames_n == 1 or pixels.ndim == 2:
        raise ValueError(f"{name}: a single frame is not a run (need a multi-frame file)")
    bits = int(ds.get("BitsStored", 8 * pixels.dtype.itemsize))
    pixels = _to_unsigned(pixels, bits, name)
    if ds.get("PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        pixels = ((1 << bits) - 1) - pixels   # MONOCHROME1: brighter = fewer photons; flip to our convention
    times = _frame_times(ds, frames_n, fps, name)
    rate = fps if fps is not None else _rate_from_times(times, name)
    if intensity is None:
        relationship = str(ds.get("PixelIntensityRelationship", "")).upper()
        intensity = {"LIN": "lin", "LOG": "log", "DISP": "log"}.get(relationship, _default_intensity(pixels.dtype))
    return FrameStack(np.ascontiguousarray(pixels), float(rate), intensity, bits, times, name)


def _luma(pixels: np.ndarray, frames_n: int) -> np.ndarray:
    # Secondary captures of display video come as RGB; the video is grey, so luma loses nothing.
    rgb = pixels.astype(np.float32)
    grey = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    return np.clip(np.rint(grey), 0, 255).astype(np.uint8)


def _to_unsigned(pixels: np.ndarray, bits: int, name: str) -> np.ndarray:
    if pixels.dtype.kind == "i":
        # Signed storage of a detector image: shift to unsigned so ln() and histograms see the same order.
        pixels = pixels.astype(np.int32) + (1 << (bits - 1))
    if bits <= 8:
        return pixels.astype(np.uint8, copy=False)
    if bits <= 16:
        return pixels.astype(np.uint16, copy=False)
    raise ValueError(f"{name}: {bits} bits stored is more than 16")


def _frame_times(ds, frames_n: int, fps: float | None, name: str) -> np.ndarray:
    if fps is not None:
        return np.arange(frames_n) / fps
    vector = ds.get("FrameTimeVector")
    if vector is not None and len(vector) == frames_n:
        increments = np.asarray(vector, dtype=float) / 1000.0   # ms between frames, first is 0
        return np.cumsum(increments) - increments[0]
    frame_time = ds.get("FrameTime")
    if frame_time:
        return np.arange(frames_n) * float(frame_time) / 1000.0
    for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
        rate = ds.get(keyword)
        if rate:
            return np.arange(frames_n) / float(rate)
    raise ValueError(f"{name}: no Frame Time, Frame Time Vector or Cine Rate; give --fps")


def _rate_from_times(times: np.ndarray, name: str) -> float:
    steps = np.diff(times)
    steps = steps[steps > 0]
    if steps.size == 0:
        raise ValueError(f"{name}: frame times do not advance; give --fps")
    return float(1.0 / np.median(steps))
