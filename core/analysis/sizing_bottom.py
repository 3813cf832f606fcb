"""The MLD at the lesion: a local quadratic over the longest window the diameters allow (LPA-ICI).

A fixed window trades noise against the narrowing's shape: short, one noise lump on a long or gently curved
bottom is the MLD (and the lesion sits where the lumps are deepest, so it reads narrow); long, a web's bottom is
lifted. The intersection-of-confidence-intervals rule (Katkovnik's LPA-ICI) takes, at the lesion, the longest
window whose estimate still agrees with every shorter one's within their noise: long on a flat or gently curved
bottom, short on a web. The noise is the diameters' own, correlated along the vessel (the edges' and the
profiles' background lumps are several stations long): its autocovariance from their residual about a trend.
On a sharp bottom (the window one of the first two) the lesion's place is refined to the deepest estimate within
that window, read from the per-station diameters before the profile's running median (lesion_bottom).

The detector's blur acts along the vessel too: it smooths the diameter profile itself and lifts a curved bottom (a
Gaussian of variance v turns a quadratic c0 + c2 t^2 into one of value c0 + c2 v at its middle: a 22 px cosine
bottom read +5-11% at a 2-2.5 px PSF, independent phantom). The blurred-circle correction works across the vessel
only, so a long window's quadratic is unblurred along it (``along_var``), where its curvature is measured (2 sd
above the diameters' noise: at the deepest station the noise's own curvature leans positive). Not on a sharp
bottom, nor on a window shorter than twice the blur: a web is no quadratic at the blur's scale, and its
curvature overcorrects it (-21%).
"""
from __future__ import annotations

import math

import numpy as np

from core.analysis.along_vessel import local_quadratic, quadratic_centre_weights, quadratic_curvature_weights

__all__ = ["bottom_diameter", "lesion_bottom", "ICI_GAMMA"]

UNBLUR_WINDOW_SD = 2.0       # the bottom's quadratic is unblurred along the vessel from a half window of this many
#                              blur sd (unblurred from any window, noise-free webs read -21%, a 3 px bottom -37%)
CURVATURE_SD = 2.0           # ... where its curvature stands this many sd above the diameters' noise
ICI_GAMMA = 1.0              # the confidence intervals' half-width, in the estimates' sd (independent phantom,
#                              four noise draws: 1.0 met all tolerances in 343 of 384, 0.75 in 338, 1.5 in fewer)
MAX_WINDOW_DIAMETERS = 1.5   # the longest half window, in typical diameters
TREND_DIAMETERS = 1.0        # the noise: the residual about a local quadratic over +-this many diameters
GROWTH = 1.4                 # each window this much longer than the last


def lesion_bottom(x: np.ndarray, reference: np.ndarray, k: int, d_typ: float, h_min: int = 1,
                  raw: np.ndarray | None = None, along_var: float = 0.0) -> tuple[int, float]:
    """(station, MLD) at the lesion ``k``: bottom_diameter there, its quadratic unblurred along the vessel where
    the window is long (``along_var``: the blur's variance along the vessel, in stations^2; 0: as read).

    Where the window is one of the first two (a sharp bottom: a web), the deepest estimate (against ``reference``)
    within that window is taken instead: the lesion's place is the middle of the stretch near the greatest
    stenosis, and on a 3 px bottom that middle can lie on a shoulder, which a +-3 station quadratic reads 15-25%
    wide (independent phantom, seed 6). Only there: on a longer bottom the deepest of several estimates is the
    deepest noise lump. ``raw``: the per-station diameters before the profile's running median (``x`` is after
    it); there the estimates are the shortest window's quadratic on them, as the running median takes a 3-station
    bottom's second-lowest reading (seed 6's web, noise-free: +9.7% through it, +4.5% without); the estimate at
    ``k`` stays when deeper (a near-occlusion's per-station readings hold outliers the median takes out)."""
    noise = _noise(x, d_typ, h_min)
    mld, h = _bottom(x, k, h_min, *noise)
    if not 0 < h <= _next_window(max(1, h_min)):
        if h > 0 and along_var > 0 and h >= UNBLUR_WINDOW_SD * math.sqrt(along_var):
            mld -= along_var * _curvature(x, k, h, noise[1])
        return k, mld
    best = (mld / reference[k], k, mld)
    for j in range(max(0, k - h), min(len(x), k + h + 1)):
        m = _bottom(x, j, h_min, *noise)[0] if raw is None else _quadratic_at(raw, j, max(1, h_min))
        if math.isfinite(m) and m / reference[j] < best[0]:
            best = (m / reference[j], j, m)
    return best[1], best[2]


def _curvature(x: np.ndarray, k: int, h: int, gam: np.ndarray) -> float:
    """c2 of the quadratic over +-h stations at ``k`` where it is a measured bottom (CURVATURE_SD above its noise),
    else 0: the lesion is the deepest station, where the noise's own curvature leans positive."""
    w = quadratic_curvature_weights(h)
    c2 = float(w @ x[k - h:k + h + 1])
    sd = math.sqrt(max(float(w @ _covariance(gam, h) @ w), 0.0))
    return c2 if c2 > CURVATURE_SD * sd else 0.0


def _covariance(gam: np.ndarray, h: int) -> np.ndarray:
    """The (2h+1)^2 covariance of a window's diameters from their autocovariance ``gam`` (0 beyond its lags)."""
    t = np.arange(-h, h + 1)
    lag = np.abs(np.subtract.outer(t, t))
    return np.where(lag < len(gam), gam[np.minimum(lag, len(gam) - 1)], 0.0)


def _quadratic_at(x: np.ndarray, k: int, h: int) -> float:
    """The local quadratic over +-h stations at ``k``; NaN where that window is not all measured."""
    a, b = k - h, k + h + 1
    if a < 0 or b > len(x) or not np.isfinite(x[a:b]).all():
        return math.nan
    return float(quadratic_centre_weights(h) @ x[a:b])


def bottom_diameter(x: np.ndarray, k: int, d_typ: float, h_min: int = 1) -> float:
    """The diameter at station ``k`` from the unsmoothed per-station diameters ``x`` (px, NaN where none, one
    station per px), by the local quadratic over the ICI's window of at least +-``h_min`` stations; NaN where
    that shortest window is not all measured or too few stations are (the caller keeps its own reading)."""
    return _bottom(x, k, h_min, *_noise(x, d_typ, h_min))[0]


def _noise(x: np.ndarray, d_typ: float, h_min: int) -> tuple[int, np.ndarray | None]:
    """(the longest half window, the diameters' noise autocovariance up to twice that lag, or None)."""
    max_half = max(h_min, int(round(MAX_WINDOW_DIAMETERS * d_typ)))
    return max_half, _noise_autocovariance(x, d_typ, 2 * max_half)


def _bottom(x: np.ndarray, k: int, h_min: int, max_half: int, gam: np.ndarray | None) -> tuple[float, int]:
    """(bottom_diameter, the half window it took: 0 where NaN)."""
    if gam is None or not np.isfinite(x[k]):
        return math.nan, 0
    lo_ci, hi_ci, best, best_h = -np.inf, np.inf, math.nan, 0
    for h in _windows(h_min, max_half):
        a, b = k - h, k + h + 1
        if a < 0 or b > len(x) or not np.isfinite(x[a:b]).all():
            break
        weights = quadratic_centre_weights(h)
        est = float(weights @ x[a:b])
        sd = math.sqrt(max(float(weights @ _covariance(gam, h) @ weights), 0.0))
        lo_ci, hi_ci = max(lo_ci, est - ICI_GAMMA * sd), min(hi_ci, est + ICI_GAMMA * sd)
        if lo_ci > hi_ci:
            break
        best, best_h = est, h
    return best, best_h


def _windows(h_min: int, max_half: int) -> list[int]:
    hs, h = [], max(1, h_min)
    while h <= max_half:
        hs.append(h)
        h = _next_window(h)
    return hs or [max(1, h_min)]


def _next_window(h: int) -> int:
    return max(h + 1, int(round(h * GROWTH)))


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
