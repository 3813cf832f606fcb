"""The MLD at the lesion: a local quadratic over the longest window the diameters allow (LPA-ICI).

A fixed window trades noise against the narrowing's shape: short, one noise lump on a long or gently curved
bottom is the MLD (and the lesion sits where the lumps are deepest, so it reads narrow); long, a web's bottom is
lifted. The intersection-of-confidence-intervals rule (Katkovnik's LPA-ICI) takes, at the lesion, the longest
window whose estimate still agrees with every shorter one's within their noise: long on a flat or gently curved
bottom, short on a web. The noise is the diameters' own, correlated along the vessel (the edges' and the
profiles' background lumps are several stations long): its autocovariance from their residual about a trend.
"""
from __future__ import annotations

import math

import numpy as np

from core.analysis.along_vessel import local_quadratic, quadratic_centre_weights

__all__ = ["bottom_diameter", "ICI_GAMMA"]

ICI_GAMMA = 1.0              # the confidence intervals' half-width, in the estimates' sd (independent phantom,
#                              four noise draws: 1.0 met all tolerances in 343 of 384, 0.75 in 338, 1.5 in fewer)
MAX_WINDOW_DIAMETERS = 1.5   # the longest half window, in typical diameters
TREND_DIAMETERS = 1.0        # the noise: the residual about a local quadratic over +-this many diameters
GROWTH = 1.4                 # each window this much longer than the last


def bottom_diameter(x: np.ndarray, k: int, d_typ: float, h_min: int = 1) -> float:
    """The diameter at station ``k`` from the unsmoothed per-station diameters ``x`` (px, NaN where none, one
    station per px), by the local quadratic over the ICI's window of at least +-``h_min`` stations; NaN where
    that shortest window is not all measured or too few stations are (the caller keeps its own reading)."""
    max_half = max(h_min, int(round(MAX_WINDOW_DIAMETERS * d_typ)))
    gam = _noise_autocovariance(x, d_typ, 2 * max_half) if np.isfinite(x[k]) else None
    if gam is None:
        return math.nan
    lo_ci, hi_ci, best = -np.inf, np.inf, math.nan
    for h in _windows(h_min, max_half):
        a, b = k - h, k + h + 1
        if a < 0 or b > len(x) or not np.isfinite(x[a:b]).all():
            break
        weights = quadratic_centre_weights(h)
        t = np.arange(-h, h + 1, dtype=float)
        est = float(weights @ x[a:b])
        lag = np.abs(np.subtract.outer(t, t)).astype(int)
        sd = float(np.sqrt(max(weights @ np.where(lag < len(gam), gam[np.minimum(lag, len(gam) - 1)], 0.0)
                               @ weights, 0.0)))
        lo_ci, hi_ci = max(lo_ci, est - ICI_GAMMA * sd), min(hi_ci, est + ICI_GAMMA * sd)
        if lo_ci > hi_ci:
            break
        best = est
    return best


def _windows(h_min: int, max_half: int) -> list[int]:
    hs, h = [], max(1, h_min)
    while h <= max_half:
        hs.append(h)
        h = max(h + 1, int(round(h * GROWTH)))
    return hs or [max(1, h_min)]


def _noise_autocovariance(x: np.ndarray, d_typ: float, max_lag: int) -> np.ndarray | None:
    """Autocovariance at lags 0..max_lag of the diameters' residual about their trend, clipped at 4 robust sd
    (branches, the narrowing's shoulders); None when too few stations are measured."""
    r = x - local_quadratic(x, max(2, int(round(TREND_DIAMETERS * d_typ))))
    ok = np.isfinite(r)
    if ok.sum() < 8:
        return None
    med = float(np.median(r[ok]))
    mad = 1.4826 * float(np.median(np.abs(r[ok] - med)))
    r = np.where(ok, np.clip(r - med, -4 * mad, 4 * mad), 0.0)
    gam = np.zeros(max_lag + 1)
    for lag in range(min(max_lag, len(r) - 1) + 1):
        both = ok[lag:] & ok[:len(r) - lag]
        if both.sum() > lag + 4:
            gam[lag] = float(np.sum(r[lag:][both] * r[:len(r) - lag][both]) / both.sum())
    return gam       # all 0 without noise: the shortest window then stands
