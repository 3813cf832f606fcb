"""The reference diameter along a vein for vessel sizing (core/analysis/sizing.py): the diameter the vein would
have without its lesion.

A robust fit of diameter against arc length (quadratic on a long vessel, else linear: veins taper), iterated
with the stations clearly below it left out (a narrowing only lowers the diameter) and the ones clearly above
(a branch's junction), so the narrowed part does not pull it down. A quadratic that sags inside the vessel
below its ends, or spans a long gap of left-out stations, is a long lesion's shape: then a taper (linear)
started from the diameters' upper side (asymmetric least squares), riding over the lesion's shoulders just below
the vein. Where the vein steps (a confluence) the upper envelope takes over, except in a dip that regains the
fit's level on both sides (that is a lesion longer than the envelope bridges) and a branch's junction.
"""
from __future__ import annotations

import math

import numpy as np

from core.analysis.along_vessel import closing, dilate, interp_valid, running_median, runs
from core.analysis.lumen import CLOSING_LENGTHS

FIT_LOW = 0.07               # a station this fraction (or 2.5 sd) below the fit is narrowed: left out
FIT_HIGH = 0.15              # ... this far above it, a branch or an overlap: left out too
ASYMMETRY = 0.01             # weight of a station below the upper prefit (a narrowing) against one above
GAP_LINEAR_DIAMETERS = 4.0   # ... unless it would bridge a gap in its stations longer than this
QUADRATIC_DIAMETERS = 12.0   # a vessel this many diameters long is fitted with a quadratic
STEP_GAP = 0.03             # the fit and the envelope reference agreeing this closely: the fit
STEP_BLEND = 0.04           # ... the envelope taking over fully this much further apart
JUNCTION_DIAMETERS = 2.0    # a widening that far above the fit, shorter than this inside the vessel: a branch's
#                             junction, left out of the envelope (its closing held the junction's width for
#                             diameters downstream: a false stenosis of 12% beside a collateral)


def reference_fit(s: np.ndarray, width: np.ndarray, d_typ: float, deg: int | None = None,
                  upper: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(reference per station, stations the fit used): a robust polynomial of width vs arc length (``deg``:
    None, quadratic on a long vessel, linear on a short one or across a long lesion; ``upper``: started from
    the upper side of the diameters, for a lesion longer than the healthy vein around it)."""
    ok = np.isfinite(width)
    use = ok.copy()
    span = float(s[ok][-1] - s[ok][0]) if ok.any() else 0.0
    if deg is None:
        deg = 2 if span >= QUADRATIC_DIAMETERS * d_typ else 1
    mid, scale = float(np.mean(s[ok])), max(span / 2.0, 1.0)
    x = (s - mid) / scale
    if upper:
        # A lesion longer than the healthy vein around it pulls a symmetric first fit down so far that it is
        # never left out (a narrowing only lowers d): start from the upper side instead.
        use = ok & (width >= _upper_prefit(x, width, ok, deg) * (1.0 - FIT_LOW))
        if use.sum() < deg + 3:
            use = ok.copy()
    fit = np.full(s.shape, np.nan)
    below = np.zeros(s.shape, dtype=bool)    # upper: kept, but ridden over (weight ASYMMETRY)
    for _ in range(12):
        if use.sum() < deg + 3:
            use, below = ok.copy(), np.zeros(s.shape, dtype=bool)
        on = use | below
        coef = np.polyfit(x[on], width[on], deg, w=np.where(below[on], math.sqrt(ASYMMETRY), 1.0) if upper else None)
        fit = np.polyval(coef, x)
        r = width - fit
        sd = 1.4826 * float(np.median(np.abs(r[use] - np.median(r[use]))))
        low = np.maximum(2.5 * sd, FIT_LOW * fit)
        high = np.maximum(3.0 * sd, FIT_HIGH * fit)
        new = ok & (r > -low) & (r < high)
        new_below = np.zeros(s.shape, dtype=bool)
        if upper:
            # A long lesion's shoulders lie just below the vein, within FIT_LOW: fitted as equals they pulled the
            # taper 8-30% low where the line ends inside the lesion. Below the noise, they are ridden over.
            new_below = new & (r < -2.5 * sd)
            new = new & ~new_below
        if np.array_equal(new, use) and np.array_equal(new_below, below):
            break
        use, below = new, new_below
    if deg == 2 and (_sags(fit[ok]) or _longest_gap(s, use) > GAP_LINEAR_DIAMETERS * float(np.median(width[use]))):
        # A curve sagging inside the vessel below both its ends is a long lesion's shape, not a vein's (veins
        # taper); nor do the stations left either side of a long lesion hold a curve up across it: a taper does.
        return reference_fit(s, width, d_typ, deg=1, upper=True)
    # A fit says nothing past the measured stations; a reference is never below a few pixels.
    first, last = np.flatnonzero(ok)[[0, -1]]
    fit[:first] = np.nan
    fit[last + 1:] = np.nan
    # Ridden over or not, a station within FIT_LOW of the vein is patent for what follows (the lumen's density,
    # the vein's blur beside a device).
    return np.maximum(fit, 1.0), use | below


def _sags(fit: np.ndarray) -> bool:
    """Whether the curve dips inside by more than FIT_LOW below the straight line between its ends."""
    chord = np.linspace(fit[0], fit[-1], len(fit))
    return bool(np.any(fit < (1.0 - FIT_LOW) * chord))


def _longest_gap(s: np.ndarray, use: np.ndarray) -> float:
    """The longest arc between two consecutive stations the fit used."""
    at = s[use]
    return float(np.max(np.diff(at))) if len(at) > 1 else math.inf


def _upper_prefit(x: np.ndarray, width: np.ndarray, ok: np.ndarray, deg: int) -> np.ndarray:
    """A polynomial riding the upper side of the diameters: least squares with stations below it weighted
    ASYMMETRY times less than those above (asymmetric least squares, as spectra's baselines are fitted)."""
    w = np.ones(int(ok.sum()))
    xs, ys = x[ok], width[ok]
    fit = np.zeros(len(xs))
    for _ in range(30):
        coef = np.polyfit(xs, ys, deg, w=np.sqrt(w))
        fit = np.polyval(coef, xs)
        new = np.where(ys >= fit, 1.0, ASYMMETRY)
        if np.array_equal(new, w):
            break
        w = new
    return np.polyval(coef, x)


def follow_steps(fit: np.ndarray, diameter: np.ndarray, s: np.ndarray, d_typ: float, spacing: float) -> np.ndarray:
    """The fit, except where the vein steps (a confluence) and a polynomial cannot follow it: there the upper
    envelope of the diameters (a grey closing over CLOSING_LENGTHS diameters of their running median, as
    clearance's reference: dips shorter than that are bridged, steps and tapers kept), blended in smoothly where
    the two differ by more than a few percent."""
    half = max(1, int(round(d_typ / (2 * spacing))))
    env = closing(running_median(_junctions_out(fit, diameter, s, d_typ, half), half),
                  max(1, int(round(CLOSING_LENGTHS * d_typ / (2 * spacing)))))
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = np.abs(fit - env) / env
    a = np.clip((gap - STEP_GAP) / STEP_BLEND, 0.0, 1.0)
    a = np.where(np.isfinite(a), a, 0.0)
    # The envelope below the fit, returning to the fit's level (not crossing it) on both sides, is a lesion
    # longer than the closing bridges, not a step (a step's narrow side runs on to the vessel's end, or its
    # wide side crosses above the fit): the fit stays there.
    measured = np.flatnonzero(np.isfinite(env) & np.isfinite(fit))
    if measured.size:
        below = np.zeros(len(fit), dtype=bool)
        # Below by more than the blend's dead zone: a fit riding the diameters' upper side lies a hair above
        # them at the vessel's end, which made a long lesion's dip run to the end and the envelope take it.
        below[measured] = env[measured] < (1.0 - STEP_GAP) * fit[measured]
        reach = max(2, 2 * half)
        for lo, hi in runs(below):
            if lo <= measured[0] or hi - 1 >= measured[-1]:
                continue
            beside = np.r_[gap[max(0, lo - reach):lo], gap[hi:hi + reach]]
            above = np.r_[env[max(0, lo - reach):lo], env[hi:hi + reach]] > np.r_[fit[max(0, lo - reach):lo],
                                                                                    fit[hi:hi + reach]]
            if not np.any(above & (beside > STEP_GAP + STEP_BLEND)):
                a[lo:hi] = 0.0
    return np.where(np.isfinite(env), (1.0 - a) * fit + a * env, fit)


def _junctions_out(fit: np.ndarray, diameter: np.ndarray, s: np.ndarray, d_typ: float, margin: int) -> np.ndarray:
    """The diameters without branches' junctions: stretches above the fit by more than the envelope's full
    take-over, shorter than JUNCTION_DIAMETERS and inside the vessel, with ``margin`` stations either side (their
    flanks). A confluence's step runs on to the vessel's end, or longer: it stays."""
    ok = np.isfinite(diameter)
    if ok.sum() < 2:
        return diameter
    with np.errstate(invalid="ignore"):
        above = interp_valid(s, diameter) > (1.0 + STEP_GAP + STEP_BLEND) * fit
    first, last = np.flatnonzero(ok)[[0, -1]]
    junction = np.zeros(len(diameter), dtype=bool)
    for lo, hi in runs(above):
        if lo > first and hi - 1 < last and s[hi - 1] - s[lo] < JUNCTION_DIAMETERS * d_typ:
            junction[lo:hi] = True
    return np.where(dilate(junction, margin), np.nan, diameter)
