"""The words every room shares, defined once: the time unit, the run labels, the video words, ROI boxes."""
from __future__ import annotations

NS = 1_000_000_000   # nanoseconds per second: time inside the appliance is time.monotonic_ns()

# What the operator calls a contrast run of the procedure (a label is optional; these are the only words).
RUN_LABELS = ("baseline", "intraprocedural", "completion")

# The two video sources that are words rather than a device or a file: no video at all, the built-in phantom.
VIDEO_NONE, VIDEO_PHANTOM = "none", "phantom"


def check_roi(roi, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x, y, w, h) integers, non-empty, inside a frame of ``shape`` (rows, cols); ValueError otherwise.
    ROIs and boxes are (x, y, w, h) everywhere in the project."""
    try:
        x, y, w, h = (int(v) for v in roi)
        if any(int(v) != v for v in roi):
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"ROI must be four integers x, y, w, h; got {roi!r}") from None
    H, W = shape
    if w < 1 or h < 1:
        raise ValueError(f"ROI {x},{y},{w},{h} must have a width and height of at least 1")
    if x < 0 or y < 0 or x + w > W or y + h > H:
        raise ValueError(f"ROI {x},{y},{w},{h} is not inside the {W}x{H} frame")
    return x, y, w, h


def parse_roi(text: str, shape: tuple[int, int] | None = None) -> tuple[int, int, int, int]:
    """"X,Y,W,H" -> (x, y, w, h) integers, checked against a frame of ``shape`` (rows, cols) when given."""
    return check_roi(roi_syntax(text), shape if shape is not None else (1 << 30, 1 << 30))


def roi_syntax(text: str) -> tuple[int, int, int, int]:
    """"X,Y,W,H" -> four integers, X and Y >= 0, W and H >= 1 (a typo is reported before any file is read)."""
    if not isinstance(text, str):
        raise ValueError(f"ROI must be text X,Y,W,H, got {text!r}")
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 4:
        raise ValueError(f"ROI {text!r} must be X,Y,W,H (four integers)")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"ROI {text!r} must be X,Y,W,H (four integers)") from None
    if any(v < 0 for v in values) or values[2] < 1 or values[3] < 1:
        raise ValueError(f"ROI {text!r}: X and Y must be >= 0, W and H >= 1")
    return values
