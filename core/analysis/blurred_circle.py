"""The half-height width of a projected circular lumen blurred by a Gaussian, exactly, and its inversion.

lumen.py reads a diameter as the half-height width of the column / (sqrt(3) / 2), its height the mean of the
middle +-PEAK_CORE of the half width over the mean a circle has there, and adds ``10 var / D`` back for a fixed
blur variance (pixel area and bilinear sampling, lumen.BLUR_VAR_PX2): the second-order term of the chord
``2 sqrt(R^2 - x^2)``'s curvature at the crossing. A detector PSF of sd 1-1.5 px on a 10-20 px lumen is beyond
that term (the crossings move in by 3-4% of D). Here the same measurement is made on the chord convolved with a
Gaussian of sd ``sigma`` numerically, as a table of measured / true diameter against sigma / D
(``measured_ratio``); ``true_diameter`` inverts it for a measured width and the blur's total sd.

The detector blurs the light, and the opacity is its log: ``-ln(G * exp(-h chord))``, not ``G * (h chord)``.
Where the column is dense (its peak opacity h in ln units) the log of the blurred light sags at the edges more
than the middle, and the half-height crossings move further in: at h 0.55 and a 1.2 px PSF a 10 px lumen reads
7.6% narrow, not 5.2% (the independent phantom's patent veins read -2.5% after the opacity-blur correction).
So the table has a row per peak opacity (HEIGHTS). Each row takes ~0.2 s to compute, and a sizing needs two or
three (a one-shot ``cathlab-edge vessel`` spent 1.2 of its 2.8 s here), so the rows are stored in
core/analysis/blurred_circle_table.py, written by ``python -m core.analysis.blurred_circle`` from the
computation here (tests/test_blurred_circle.py checks that they are its result). Should this module's parameters
change without the stored rows being rewritten, the rows are computed again when first needed.
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["measured_diameter", "measured_ratio", "true_diameter", "MAX_SIGMA_RATIO", "HEIGHTS"]

HALF_WIDTH_FACTOR = math.sqrt(3.0) / 2.0
PEAK_CORE = 0.4              # lumen.PEAK_CORE (the height's middle, as a share of the measured half width)
MAX_SIGMA_RATIO = 0.6        # blur sd / D tabled (beyond it the column is a blob: densitometry sizes it)
HEIGHTS = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0)   # the column's peak opacity (ln units) of each row of the table
_STEP = 1.0 / 2000           # the numeric grid, in diameters
_TABLE_POINTS = 161
_BATCH = 32                  # blurs per FFT batch in a row's build


def _grid(t_max: float, step: float) -> tuple[np.ndarray, np.ndarray]:
    """(x, chord) of a unit-diameter circle on a grid padded far beyond a blur of ``t_max`` diameters."""
    half = 0.5 + 6.0 * t_max + 0.25
    n = int(2 ** math.ceil(math.log2(2 * half / step)))
    x = (np.arange(n) - n // 2) * step
    return x, 2.0 * np.sqrt(np.clip(0.25 - x * x, 0.0, None))


def _blurred(x: np.ndarray, chord: np.ndarray, ts: np.ndarray, height: float, step: float) -> np.ndarray:
    """(len(ts), n) profiles of the column blurred by sd ``ts`` (diameters), per unit of peak opacity: the
    blurred chord, or where ``height`` > 0 the log of the blurred light over ``height``."""
    freq = np.fft.fftfreq(len(x), step)
    signal = chord if height <= 0 else np.expm1(-height * chord)      # the light's change: 0 off the column
    spectrum = np.fft.fft(np.fft.ifftshift(signal))
    gauss = np.exp(-2.0 * (math.pi * np.asarray(ts, dtype=float)[:, None] * freq[None, :]) ** 2)
    prof = np.fft.fftshift(np.fft.ifft(spectrum[None, :] * gauss, axis=1).real, axes=1)
    return prof if height <= 0 else -np.log1p(np.maximum(prof, -1.0 + 1e-300)) / height


def _measured_width(x: np.ndarray, prof: np.ndarray, step: float) -> float:
    """lumen.py's half-height diameter of one profile (in diameters)."""
    m = len(x) // 2
    width = 1.0
    for _ in range(4):        # the height's middle is a share of the measured width: a fixed point
        core = np.abs(x) <= PEAK_CORE * HALF_WIDTH_FACTOR * width / 2
        circle = np.sqrt(np.clip(1.0 - (2 * x[core]) ** 2, 0.0, None))
        level = 0.5 * float(prof[core].mean()) / float(circle.mean())
        j = m + int(np.argmax(prof[m:] < level))          # first sample right of the middle below the level
        right = x[j - 1] + (prof[j - 1] - level) / (prof[j - 1] - prof[j]) * step
        width = 2.0 * right / HALF_WIDTH_FACTOR
    return width


def measured_diameter(diameter: float, sigma: float, step: float = _STEP, height: float = 0.0) -> float:
    """The diameter lumen.py reads (before its own blur term) from a circle of ``diameter`` blurred by a
    Gaussian of sd ``sigma`` (both px), its peak opacity ``height`` ln units (0: the blur acting on the opacity):
    half-height width / (sqrt(3) / 2), the height from the profile's middle as lumen._height takes it. Numeric:
    the chord on a grid of ``step`` diameters, blurred through its Fourier transform (padded far beyond the
    blur: no wrap-around), the crossing interpolated linearly."""
    d = float(diameter)
    t = float(sigma) / d
    x, chord = _grid(t, step)
    return _measured_width(x, _blurred(x, chord, np.array([t]), float(height), step)[0], step) * d


@lru_cache(maxsize=len(HEIGHTS))
def _table(row: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(sigma / D, measured / D) from 0 to MAX_SIGMA_RATIO, at peak opacity HEIGHTS[row]: the stored row
    (blurred_circle_table) where it was written for these parameters, else computed."""
    from core.analysis import blurred_circle_table as stored

    t = np.linspace(0.0, MAX_SIGMA_RATIO, _TABLE_POINTS)
    if stored.KEY == table_key():
        return t, np.array(stored.ROWS[row], dtype=float)
    return t, computed_row(row)


def table_key() -> tuple:
    """The parameters the table's rows depend on (the stored rows are used only where they were written with
    these)."""
    return (HEIGHTS, MAX_SIGMA_RATIO, _TABLE_POINTS, _STEP, PEAK_CORE, HALF_WIDTH_FACTOR)


def computed_row(row: int) -> np.ndarray:
    """measured / D at the table's sigma / D, at peak opacity HEIGHTS[row], computed (~0.2 s)."""
    t = np.linspace(0.0, MAX_SIGMA_RATIO, _TABLE_POINTS)
    x, chord = _grid(MAX_SIGMA_RATIO, _STEP)
    f = np.empty_like(t)
    for a in range(0, len(t), _BATCH):
        profs = _blurred(x, chord, t[a:a + _BATCH], HEIGHTS[row], _STEP)
        f[a:a + _BATCH] = [_measured_width(x, p, _STEP) for p in profs]
    return f


def write_table(path: Path = Path(__file__).with_name("blurred_circle_table.py")) -> None:
    """Write every row, computed, to ``path`` (the stored table), exactly (each float's shortest repr)."""
    rows = [computed_row(r) for r in range(len(HEIGHTS))]
    lines = ['"""The measured / true diameter rows of core.analysis.blurred_circle\'s table, one per HEIGHTS',
             '(generated by ``python -m core.analysis.blurred_circle``: do not edit; tests/test_blurred_circle.py',
             'checks them)."""',
             "", f"KEY = {table_key()!r}", "", "ROWS = ("]
    for f in rows:
        lines.append("    (")
        values = [repr(float(v)) for v in f]
        for i in range(0, len(values), 5):
            lines.append("        " + ", ".join(values[i:i + 5]) + ",")
        lines.append("    ),")
    lines.append(")")
    path.write_text("\n".join(lines) + "\n")


def measured_ratio(sigma_ratio: np.ndarray | float, row: int = 0) -> np.ndarray:
    """Measured / true diameter of a blurred circle, for blur sd / diameter (tabled, interpolated)."""
    t, f = _table(row)
    return np.interp(sigma_ratio, t, f)


def _invert(w: np.ndarray, sigma: float, row: int) -> np.ndarray:
    t, f = _table(row)
    q = 1.0 / t[:0:-1]                     # ascending D / sigma
    v = q * f[:0:-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = w / sigma
        inside = sigma * np.interp(ratio, v, q, left=np.nan)
        # Beyond the table's least blur (sd under 1/400 of D) one step of D = w / f(sigma / w) is exact enough.
        return np.where(ratio > v[-1], w / measured_ratio(sigma / w, row), inside)


def true_diameter(measured: np.ndarray, sigma: float, height: np.ndarray | float | None = None) -> np.ndarray:
    """The circle's diameter whose blurred column (total blur sd ``sigma`` px) reads ``measured`` (px, lumen.py's
    half-height diameter before its own blur term); ``height``: the column's peak opacity in ln units (per
    width, or one for all; None: the blur taken as acting on the opacity, the rows between heights interpolated
    linearly, beyond the last the last). In q = D / sigma the measured width / sigma, q f(1 / q), rises with q and
    is nearly a straight line, so it is inverted by linear interpolation; NaN below the table (a column under ~2
    blur sd: a blob, which the edges cannot size)."""
    w = np.asarray(measured, dtype=float)
    if not sigma > 0:
        return w.copy()
    if height is None:
        out = _invert(w, sigma, 0)
    else:
        h = np.clip(np.nan_to_num(np.broadcast_to(np.asarray(height, dtype=float), w.shape), nan=0.0),
                    0.0, HEIGHTS[-1])
        pos = np.interp(h, HEIGHTS, np.arange(len(HEIGHTS)))          # fractional row per width
        lo = np.minimum(np.floor(pos).astype(int), len(HEIGHTS) - 2)
        out = np.full(w.shape, np.nan)
        for row in np.unique(lo):
            at = lo == row
            a, b = _invert(w[at], sigma, int(row)), _invert(w[at], sigma, int(row) + 1)
            out[at] = a + (b - a) * (pos[at] - row)
    return np.where(np.isfinite(w) & (w > 0), out, np.nan)


if __name__ == "__main__":
    write_table()
