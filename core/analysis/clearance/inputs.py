"""The inputs of a clearance measurement checked before any work: peak-opacity images, the operator's
reference diameter and centreline (bounded, so that one request cannot hold the analysis worker)."""
from __future__ import annotations

import math
import numbers

import numpy as np

from core.analysis.vessel import check_centerline

# An operator's centreline: a venogram's vein is drawn with a few dozen clicks (one every few centimetres, more
# along a bend); 256 leaves ample room. It crosses the field once, so it is at most twice the image's
# perimeter half (w + h) long; a longer one zigzags, and its analysis time grows with its length (a 4,096-point
# scribble held the analysis worker for 10-50 s).
MAX_CENTERLINE_POINTS = 256
MAX_CENTERLINE_LENGTH_FACTOR = 2.0   # times (width + height) of the image


def _check_diameter(diameter_px, shape) -> float | None:
    if diameter_px is None:
        return None
    if not (isinstance(diameter_px, numbers.Real) and math.isfinite(diameter_px)
            and 1.0 <= diameter_px <= min(shape) / 2):
        raise ValueError(f"diameter must be a number of pixels between 1 and {min(shape) / 2:g}, "
                         f"got {diameter_px!r}")
    return float(diameter_px)


def check_operator_centerline(points, shape: tuple[int, int]) -> np.ndarray:
    """An operator's centreline (``--centerline``, ``PUT /api/centerline``) checked for the image ``shape``:
    at most ``MAX_CENTERLINE_POINTS`` points and ``MAX_CENTERLINE_LENGTH_FACTOR * (w + h)`` px long, so one
    request cannot hold the analysis worker."""
    arr = np.asarray(points, dtype=float)
    if arr.ndim >= 1 and len(arr) > MAX_CENTERLINE_POINTS:
        raise ValueError(f"a centreline has at most {MAX_CENTERLINE_POINTS} points (a vein needs a few dozen), "
                         f"got {len(arr)}")
    line = check_centerline(arr, shape)
    h, w = shape
    limit = MAX_CENTERLINE_LENGTH_FACTOR * (w + h)
    length = float(np.hypot(*np.diff(line, axis=0).T).sum())
    if length > limit:
        raise ValueError(f"the centreline is {length:.0f} px long, more than {limit:.0f} px "
                         f"({MAX_CENTERLINE_LENGTH_FACTOR:g} x (width + height)): a vein crosses the image once")
    return line


def check_peak_image(img, name: str) -> np.ndarray:
    """A peak-opacity image as float32, or ValueError naming what is wrong with it."""
    arr = np.asarray(img)
    if arr.ndim != 2 or min(arr.shape) < 16:
        raise ValueError(f"the {name} peak-opacity image must be 2-D and at least 16x16, got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"the {name} peak-opacity image must be numeric, got {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).any():
        raise ValueError(f"the {name} peak-opacity image has no measured pixels")
    return arr
