"""Frame stacks from files: ``.npy`` arrays and DICOM multi-frame (XA, XRF, secondary capture).

Everything that reads a recorded run goes through ``load_stack``, so the CLI, replay and tests agree on frame
rate, intensity encoding and what counts as a usable file. Unusable files raise ``ValueError`` with a reason.
A file is named by its content hash (core.identity.content_label), never its name: names of exported studies
carry the patient (``DOE^JOHN_MRN00412345_XA.dcm``), and messages and ``source`` end up in logs and events.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.identity import content_label
from core.sources.frames import shape_problem

# Frame rates a recording may have: DSA-style venograms go down to 0.5 frames/s, video lines up to 60 and
# high-speed cine to 240 (the ``video_fps`` setting's bound). Outside this the file or the flag is wrong.
MIN_FPS = 0.1
MAX_FPS = 240.0
# One frame to the next: a variable-rate (Frame Time Vector) run may pause, but not for minutes.
MAX_FRAME_STEP_S = 60.0
MIN_FRAME_STEP_S = 0.5 / MAX_FPS    # half a period at the fastest rate: jitter allowed, duplicates not


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
        if (problem := shape_problem(self.frames.shape[1:])) is not None:
            raise ValueError(f"{self.source}: {problem}")
        if self.frames.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"{self.source}: pixel type {self.frames.dtype} is not uint8 or uint16")
        if not (np.isfinite(self.fps) and MIN_FPS <= self.fps <= MAX_FPS):
            raise ValueError(f"{self.source}: frame rate {self.fps:g} frames/s is outside "
                             f"[{MIN_FPS:g}, {MAX_FPS:g}]")
        if self.intensity not in ("lin", "log"):
            raise ValueError(f"{self.source}: intensity must be lin or log, got {self.intensity!r}")
        times = np.asarray(self.frame_times_s, dtype=float)
        if times.shape != (self.frames.shape[0],) or not np.all(np.isfinite(times)):
            raise ValueError(f"{self.source}: need one finite frame time per frame")
        steps = np.diff(times)
        if steps.min() < MIN_FRAME_STEP_S or steps.max() > MAX_FRAME_STEP_S:
            raise ValueError(f"{self.source}: frame times must advance by {MIN_FRAME_STEP_S * 1000:g} ms to "
                             f"{MAX_FRAME_STEP_S:g} s per frame, got {steps.min() * 1000:g} ms to "
                             f"{steps.max():g} s")


def load_stack(path: str | Path, fps: float | None = None, intensity: str | None = None) -> FrameStack:
    """Load a run. ``fps`` and ``intensity`` override what the file says (``fps`` is required for ``.npy``)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError("a directory, not a recording (give one .npy or DICOM file; its name is not repeated: "
                         "file names may carry patient identity)")
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
    _check_npy_header(path, name)
    try:
        frames = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError, OverflowError) as exc:
        raise ValueError(f"{name}: not a readable .npy array ({_reason(exc, path)})") from None
    bits = 16 if frames.dtype == np.uint16 else 8
    intensity = intensity or _default_intensity(frames.dtype)
    times = np.arange(frames.shape[0]) / fps if frames.ndim == 3 else np.zeros(0)
    return FrameStack(frames, float(fps), intensity, bits, times, name)


def _check_npy_header(path: Path, name: str) -> None:
    """The header's promise checked against the file before it is mapped: numpy trusts a declared shape, so a
    negative or oversized one would fail deep inside mmap (or map garbage)."""
    fmt = np.lib.format
    try:
        with open(path, "rb") as fh:
            version = fmt.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = fmt.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = fmt.read_array_header_2_0(fh)
            else:   # 3.0 only for structured arrays with non-Latin-1 field names: never frames
                raise ValueError(f"format version {version[0]}.{version[1]} is not used for frame stacks")
            offset = fh.tell()
    except (OSError, ValueError, EOFError, SyntaxError, TypeError) as exc:
        text = _reason(exc, path).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{name}: not a readable .npy array ({text})") from None
    if any(not isinstance(n, int) or n < 0 for n in shape):
        raise ValueError(f"{name}: the .npy header declares an impossible shape {shape} (a negative or non-integer "
                         "dimension)")
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    have = path.stat().st_size - offset
    if need > have:
        raise ValueError(f"{name}: truncated .npy file: its header declares {need} bytes of frames "
                         f"{shape}, the file holds {have}")


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
    if frames_n < 2 or pixels.ndim == 2:
        raise ValueError(f"{name}: a single frame is not a run (need a multi-frame file)")
    bits = int(ds.get("BitsStored", 8 * pixels.dtype.itemsize))
    pixels = _to_unsigned(pixels, bits, name)
    if _fewer_photons_brighter(ds, name):
        pixels = ((1 << bits) - 1) - pixels   # flip to our convention: brighter = more photons
    times = _frame_times(ds, frames_n, fps, name)
    rate = fps if fps is not None else _rate_from_times(times, name)
    if intensity is None:
        intensity = _intensity(ds, pixels.dtype)
    return FrameStack(np.ascontiguousarray(pixels), float(rate), intensity, bits, times, name)


def _fewer_photons_brighter(ds, name: str) -> bool:
    """Whether higher stored values mean less X-ray (contrast shows bright). Pixel Intensity Relationship Sign
    (0028,1041) says so for the X-ray intensity itself (-1: higher value, lower intensity); without it,
    MONOCHROME1 (a display convention) is the only hint."""
    sign = ds.get("PixelIntensityRelationshipSign")
    if sign is not None and str(sign).strip() != "":
        try:
            value = int(sign)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: Pixel Intensity Relationship Sign {sign!r} is not +1 or -1") from None
        if value not in (1, -1):
            raise ValueError(f"{name}: Pixel Intensity Relationship Sign {value} is not +1 or -1")
        return value == -1
    return ds.get("PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1"


def _intensity(ds, dtype: np.dtype) -> str:
    """Pixel Intensity Relationship (0028,1040): LIN is linear in the X-ray intensity; LOG is its logarithm,
    which is what the display-video path ("log") differences; DISP is display-ready grey levels (the modality's
    display curve, monotone, roughly logarithmic like the grabber's video): "log" too, differenced as is. Taking
    ln() of display values would compress the contrast a second time; at a venogram's small contrast a curve
    that is not exactly logarithmic mostly scales the curve's height, not its times. Anything else: by the
    pixel type (docs/domain.md)."""
    relationship = str(ds.get("PixelIntensityRelationship", "")).strip().upper()
    if relationship == "LIN":
        return "lin"
    if relationship in ("LOG", "DISP"):
        return "log"
    return _default_intensity(dtype)


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
        if not np.all(np.isfinite(increments[1:]) & (increments[1:] > 0)):
            raise ValueError(f"{name}: the Frame Time Vector has a step that is not a positive number of ms; "
                             "give --fps")
        return np.cumsum(increments) - increments[0]
    frame_time = ds.get("FrameTime")
    if frame_time:
        ms = float(frame_time)
        if not (math.isfinite(ms) and ms > 0):
            raise ValueError(f"{name}: Frame Time {ms:g} ms is not a positive number; give --fps")
        return np.arange(frames_n) * ms / 1000.0
    for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
        rate = ds.get(keyword)
        if rate:
            if not (math.isfinite(float(rate)) and float(rate) > 0):
                raise ValueError(f"{name}: {keyword} {float(rate):g} is not a positive frame rate; give --fps")
            return np.arange(frames_n) / float(rate)
    raise ValueError(f"{name}: no Frame Time, Frame Time Vector or Cine Rate; give --fps")


def _rate_from_times(times: np.ndarray, name: str) -> float:
    steps = np.diff(times)
    steps = steps[steps > 0]
    if steps.size == 0:
        raise ValueError(f"{name}: frame times do not advance; give --fps")
    return float(1.0 / np.median(steps))
