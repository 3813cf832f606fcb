"""Synthetic fluoroscopy sequences for the kernel benchmarks.

Random uniform pixels would flatter nothing and hurt the histogram unrealistically; these frames look like
the real inputs: smooth anatomy, a vessel that fills with contrast and washes out, and quantum noise, so
the histogram, the LUT and the running peak see realistic value and update patterns.
"""
from __future__ import annotations

import numpy as np

N_FRAMES = 24  # distinct frames per sequence, cycled as one run each


def synthetic_run(shape, dtype, n_frames=N_FRAMES, seed=0):
    """(mask float32 (H, W), frames (n, H, W)) for "lin" uint16 (12 bit) or "log" uint8 display video."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy /= h
    xx /= w
    # Attenuation: smooth anatomy plus a bright collimator-free centre.
    mu = (0.8 + 0.6 * np.sin(3.0 * xx) * np.cos(2.0 * yy) + 0.5 * (xx - 0.5) ** 2).astype(np.float32)
    vessel = np.exp(-(((xx - 0.5 - 0.1 * np.sin(6 * yy)) / 0.04) ** 2)).astype(np.float32)
    t = np.linspace(0.0, 1.0, n_frames, dtype=np.float32)
    iodine = 1.2 * (t / 0.3) ** 2 * np.exp(2 * (1 - t / 0.3))  # gamma-variate-like, peak at t=0.3
    iodine /= iodine.max()
    frames = np.empty((n_frames, h, w), dtype)
    if np.dtype(dtype) == np.uint16:
        i0 = 3000.0
        mask = (i0 * np.exp(-mu)).astype(np.float32)
        for k in range(n_frames):
            clean = i0 * np.exp(-(mu + 0.8 * iodine[k] * vessel))
            noisy = clean + rng.standard_normal((h, w), dtype=np.float32) * np.sqrt(clean)
            frames[k] = np.clip(noisy, 0, 4095)
    else:
        mask = (230.0 - 60.0 * mu).astype(np.float32)
        for k in range(n_frames):
            clean = mask - 70.0 * iodine[k] * vessel
            frames[k] = np.clip(clean + rng.standard_normal((h, w), dtype=np.float32) * 3.0, 0, 255)
    return mask, frames
