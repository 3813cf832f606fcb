"""Peak-opacity images as PNG for people: venogram look (contrast dark on a light field), robust window."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image


def opacity_to_grey(opacity: np.ndarray) -> np.ndarray:
    """float opacity -> uint8, 0 opacity white, the 99.5th percentile black; NaN shows as mid grey."""
    values = np.asarray(opacity, dtype=np.float32)
    finite = np.isfinite(values)
    top = float(np.percentile(values[finite], 99.5)) if finite.any() else 0.0
    scale = 255.0 / top if top > 0 else 0.0
    grey = 255.0 - np.clip(np.where(finite, values, top / 2) * scale, 0, 255)
    return grey.astype(np.uint8)


def png_bytes(grey: np.ndarray) -> bytes:
    if grey.ndim != 2 or grey.dtype != np.uint8:
        raise ValueError(f"expected a 2-D uint8 image, got {grey.dtype} {grey.shape}")
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def opacity_png(opacity: np.ndarray) -> bytes:
    return png_bytes(opacity_to_grey(opacity))
