"""Contrast density of a run along the vessel, and the burden it implies against the shared reference lumen.

A run's contrast density (opacity per px of path through iodinated blood) is read from the shape of its own
patent cross-sections: ``integral / (pi / 4 * width^2)`` for a circular lumen. It drifts along the vessel
(dilution downstream, a non-uniform field), so it is a straight line in arc length, fitted robustly to the
patent stations: a thrombus in front of the lumen leaves the width and lowers the integral, so its stations
read low and are dropped (low outliers at 3 robust sd, then a symmetric refit). The filled cross-section of
a station is then ``integral / density``: a fainter bolus and a narrower column are told apart.

Between runs the density is normalised on the stations patent in both: the ratio of their integrals is the
ratio of the densities (same lumen); a run with too few patent stations of its own takes the baseline's line
scaled by that ratio.
"""
from __future__ import annotations

import math

import numpy as np

from core.analysis.along_vessel import dilate
from core.analysis.lumen import running_mean

MIN_PATENT = 8                 # patent stations a run needs to read its own density
OUTLIER_SD = 3.0
HIGH_FRACTION = 0.3            # a station this far above the line: another vessel's contrast over the lumen


def density_line(s: np.ndarray, density: np.ndarray, patent: np.ndarray) -> tuple[float, float] | None:
    """(level at the mean s, slope) of the density along the vessel, robustly, or None with too few stations."""
    use = patent & np.isfinite(density) & (density > 0)
    if use.sum() < MIN_PATENT:
        return None
    x, y = s[use], density[use]
    centre = float(np.mean(x))
    # Noise from the station-to-station scatter (robust to any share of thrombosed stations); the first fit on
    # the upper half, since thrombus only ever lowers a station's density. Another vessel superimposed on the
    # lumen raises it (twice the density where a paired vein lies exactly over it): stations far above the upper
    # half's median, or later the line, are not the lumen's density.
    sd = 1.4826 * float(np.median(np.abs(np.diff(y)))) / math.sqrt(2.0) + 1e-12
    upper = y >= np.median(y)
    top = float(np.median(y[upper]))
    keep = upper & (y - top < max(OUTLIER_SD * sd, HIGH_FRACTION * top))
    c0, c1 = float(np.median(y)), 0.0
    for it in range(5):
        xs, ys = x[keep] - centre, y[keep]
        if np.ptp(xs) > 0 and keep.sum() >= MIN_PATENT:
            c1, c0 = (float(v) for v in np.polyfit(xs, ys, 1))
        else:
            c0, c1 = float(np.mean(ys)), 0.0
        r = y - (c0 + c1 * (x - centre))
        high = max(OUTLIER_SD * sd, HIGH_FRACTION * c0)
        new = ((r > -OUTLIER_SD * sd) & (r < high)) if it < 2 else (np.abs(r) < OUTLIER_SD * sd)
        if new.sum() < MIN_PATENT or np.array_equal(new, keep):
            break
        keep = new
    level = c0 - c1 * centre            # at s = 0
    return level, c1


def low_density(s: np.ndarray, density: np.ndarray, line: tuple[float, float] | None, half: int = 0
                ) -> np.ndarray:
    """Stations whose density reads clearly below the run's line (thrombus in front of the lumen).

    A thrombus in front extends along the vessel and tapers in and out, noise does not: besides the stations
    low on their own, those whose running mean over +-``half`` stations is low (a small front thrombus lowers
    every station by less than one station's noise), and the stations within ``half`` of either (the tapers).
    """
    if line is None:
        return np.zeros(s.shape, dtype=bool)
    ok = np.isfinite(density)
    if ok.sum() < 3:
        return np.zeros(s.shape, dtype=bool)
    sd = 1.4826 * float(np.median(np.abs(np.diff(density[ok])))) / math.sqrt(2.0)
    expect = line_at(line, s)
    with np.errstate(invalid="ignore"):
        low = ok & (density < expect - np.maximum(OUTLIER_SD * sd, 0.04 * expect))
        if half > 0:
            mean = running_mean(np.where(ok, density - expect, np.nan), half)
            n = 2 * half + 1
            low |= ok & (mean < -np.maximum(OUTLIER_SD * sd / math.sqrt(n), 0.04 * expect))
            low = dilate(low, half) & ok
    return low


def line_at(line: tuple[float, float], s: np.ndarray) -> np.ndarray:
    return line[0] + line[1] * s


def contrast_ratio(i_run: np.ndarray, i_base: np.ndarray, common: np.ndarray) -> float | None:
    """Density of a run over the baseline's, from the stations patent in both (same lumen: the integrals'
    ratio), or None with too few of them."""
    use = common & np.isfinite(i_run) & np.isfinite(i_base) & (i_base > 0)
    if use.sum() < MIN_PATENT:
        return None
    return float(np.median(i_run[use] / i_base[use]))


def filled_area(integral: np.ndarray, density: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(density > 0, integral / density, np.nan)


def burden(filled: np.ndarray, ref_area: np.ndarray, use: np.ndarray) -> float:
    """Volume fraction: sum of thrombus cross-section over sum of reference cross-section, in [0, 1]."""
    if not use.any():
        return float("nan")
    total = float(ref_area[use].sum())
    if not total > 0:
        return float("nan")
    return float(np.clip(1.0 - filled[use].sum() / total, 0.0, 1.0))


def reference_area(diameter: np.ndarray) -> np.ndarray:
    return math.pi / 4.0 * diameter ** 2
