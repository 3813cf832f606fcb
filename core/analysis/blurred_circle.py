"""The half-height width of a projected circular lumen blurred by a Gaussian, exactly, and its inversion.

lumen.py reads a diameter as the half-height width of the column / (sqrt(3) / 2), its height the mean of the
middle +-PEAK_CORE of the half width over the mean a circle has there, and adds ``10 var / D`` back for a fixed
blur variance (pixel area and bilinear sampling, lumen.BLUR_VAR_PX2): the second-order term of the chord
``2 sqrt(R^2 - x^2)``'s curvature at the crossing. A detector PSF of sd 1-1.5 px on a 10-20 px lumen is beyond
that term (the crossings move in by 3-4% of D). Here the same measurement is made on the chord convolved with a
Gaussian of sd ``sigma`` numerically, once, as a table of measured / true diameter against sigma / D
(``measured_ratio``); ``true_diameter`` inverts it for a measured width and the blur's total sd.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

__all__ = ["measured_diameter", "measured_ratio", "true_diameter", "MAX_SIGMA_RATIO"]

HALF_WIDTH_FACTOR = math.sqrt(3.0) / 2.0
PEAK_CORE = 0.4              # lumen.PEAK_CORE (the height's middle, as a share of the measured half width)
MAX_SIGMA_RATIO = 0.6        # blur sd / D tabled (beyond it the column is a blob: densitometry sizes it)
_STEP = 1.0 / 2000           # the numeric grid, in diameters
_TABLE_POINTS = 161


def measured_diameter(diameter: float, sigma: float, step: float = _STEP) -> float:
    """The diameter lumen.py reads (before its own blur term) from a circle of ``diameter`` blurred by a
    Gaussian of sd ``sigma`` (both px): half-height width / (sqrt(3) / 2), the height from the profile's middle
    as lumen._height takes it. Numeric: the chord on a grid of ``step`` diameters, blurred through its Fourier
    transform (padded far beyond the blur: no wrap-around), the crossing interpolated linearly."""
    d = float(diameter)
    t = float(sigma) / d
    half = 0.5 + 6.0 * t + 0.25
    n = int(2 ** math.ceil(math.log2(2 * half / step)))
    x = (np.arange(n) - n // 2) * step
    chord = 2.0 * np.sqrt(np.clip(0.25 - x * x, 0.0, None))
    freq = np.fft.fftfreq(n, step)
    prof = np.fft.ifft(np.fft.fft(np.fft.ifftshift(chord)) * np.exp(-2.0 * (math.pi * t * freq) ** 2)).real
    prof = np.fft.fftshift(prof)
    m = n // 2
    width = 1.0
    for _ in range(4):        # the height's middle is a share of the measured width: a fixed point
        core = np.abs(x) <= PEAK_CORE * HALF_WIDTH_FACTOR * width / 2
        circle = np.sqrt(np.clip(1.0 - (2 * x[core]) ** 2, 0.0, None))
        level = 0.5 * float(prof[core].mean()) / float(circle.mean())
        j = m + int(np.argmax(prof[m:] < level))          # first sample right of the middle below the level
        right = x[j - 1] + (prof[j - 1] - level) / (prof[j - 1] - prof[j]) * step
        width = 2.0 * right / HALF_WIDTH_FACTOR
    return width * d


@lru_cache(maxsize=1)
def _table() -> tuple[np.ndarray, np.ndarray]:
    """(sigma / D, measured / D) from 0 to MAX_SIGMA_RATIO."""
    t = np.linspace(0.0, MAX_SIGMA_RATIO, _TABLE_POINTS)
    return t, np.array([measured_diameter(1.0, v) for v in t])


def measured_ratio(sigma_ratio: np.ndarray | float) -> np.ndarray:
    """Measured / true diameter of a blurred circle, for blur sd / diameter (tabled, interpolated)."""
    t, f = _table()
    return np.interp(sigma_ratio, t, f)


def true_diameter(measured: np.ndarray, sigma: float) -> np.ndarray:
    """The circle's diameter whose blurred column (total blur sd ``sigma`` px) reads ``measured`` (px, lumen.py's
    half-height diameter before its own blur term). In q = D / sigma the measured width / sigma, q f(1 / q), rises
    with q and is nearly a straight line, so it is inverted by linear interpolation; NaN below the table (a column
    under ~2 blur sd: a blob, which the edges cannot size)."""
    w = np.asarray(measured, dtype=float)
    if not sigma > 0:
        return w.copy()
    t, f = _table()
    q = 1.0 / t[:0:-1]                     # ascending D / sigma
    v = q * f[:0:-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = w / sigma
        inside = sigma * np.interp(ratio, v, q, left=np.nan)
        # Beyond the table's least blur (sd under 1/400 of D) one step of D = w / f(sigma / w) is exact enough.
        out = np.where(ratio > v[-1], w / measured_ratio(sigma / w), inside)
    return np.where(np.isfinite(w) & (w > 0), out, np.nan)
