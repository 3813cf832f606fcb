"""The imaging chain's blur: a Gaussian point-spread function, separable, the image's edges extended.

The phantom applies it to the detected quanta (after their noise, before the log of display video), as a
detector's scintillator spreads the light of each absorbed photon; the sweeps and tests blur with the same
function.
"""
from __future__ import annotations

import math

import numpy as np

MAX_PSF_PX = 5.0     # sd; more is no imaging chain's


def blur_axis(img: np.ndarray, sd: float, axis: int) -> np.ndarray:
    """``img`` convolved along ``axis`` with a normalised Gaussian of sd ``sd`` px (truncated at 4 sd)."""
    r = int(math.ceil(4 * sd))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sd) ** 2)
    k /= k.sum()
    pad = [(0, 0)] * img.ndim
    pad[axis] = (r, r)
    padded = np.pad(img, pad, mode="edge")
    n = img.shape[axis]
    out = np.zeros(img.shape, dtype=np.result_type(img.dtype, np.float32))
    for i, w in enumerate(k):
        out += w * np.take(padded, np.arange(i, i + n), axis=axis)
    return out


def blur(img: np.ndarray, sd: float) -> np.ndarray:
    """``img`` (2-D) blurred by an isotropic Gaussian PSF of sd ``sd`` px; a copy as it is when ``sd`` is 0."""
    if sd <= 0:
        return np.array(img, dtype=np.result_type(img.dtype, np.float32))
    return blur_axis(blur_axis(img, sd, 0), sd, 1)
