"""The lumen of a vein per station, from the contrast column across the centreline, and its reference.

Per station (core.analysis.vessel stations), on a peak-opacity image:
- the cross-section profile, minus a background line through the median of a band just outside each edge
  (a band per side, so a parallel vein in one band moves its median little, and never the other side's);
- the two edges of the column, sub-pixel: where the profile crosses half its height. A projected circular
  lumen ``k 2 sqrt(R^2 - d^2)`` is half its height at ``d = R sqrt(3) / 2``, so the diameter is the
  half-height width / (sqrt(3) / 2); the half-height crossing sits where the chord changes slowly, so the
  blur of the detector and of the sampling moves it little (the zero crossing would move a lot);
- the integral across the column (edges plus a margin): proportional to the contrast-filled area;
- a neighbouring column (a paired vein, a tributary alongside) ends the column's edge search, its background
  band and its integral window at the valley between the two (core/analysis/neighbours.py); where the two
  columns overlap the station is left out (NaN, and ``Lumen.crowded``), never read as a narrower or fainter
  lumen;
- hence the local contrast density ``k = integral / (pi / 4 * width^2)``: the profile's shape tells a
  narrower column (smaller width, same k) from fainter contrast (same width, smaller k).

The reference of one run (``run_reference``) follows the vein as it tapers and steps: thrombus only ever
narrows a lumen, so the reference is an upper envelope of the smoothed widths (a morphological closing fills
every dip shorter than the closing length and keeps tapers and steps), the stations near it are the patent
ones, and the reference is the running mean of the patent widths, bridged linearly across the narrowed part.
A mean, not the envelope itself: noise must not inflate a maximum, so a clean vein reads (near) zero.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.analysis.along_vessel import closing, interp_valid, quiet, running_mean, running_median
from core.analysis.neighbours import smooth_across, valleys, window
from core.analysis.vessel import Stations, sample_profiles

__all__ = ["Lumen", "measure_lumen", "run_reference", "running_mean", "running_median", "HALF_WIDTH_FACTOR"]

ACROSS_STEP_PX = 0.5
HALF_WIDTH_FACTOR = math.sqrt(3.0) / 2.0     # half-height width / diameter of a projected circle
# Pixel-area averaging and bilinear sampling blur the profile (variance ~1/12 + 1/6 px^2, plus the strip along
# a curving vessel): the half-height crossings of a blurred circle move in by ~10 var / D (second order in the
# blur, from the chord's curvature there); added back so an operator's diameter compares with the measured one.
BLUR_VAR_PX2 = 0.33
PEAK_CORE = 0.4                              # the height is the mean over the middle +-0.4 R, / its circle mean
_CORE_MEAN = float(np.mean(np.sqrt(1.0 - np.linspace(-PEAK_CORE, PEAK_CORE, 4001) ** 2)))
CLOSING_LENGTHS = 12.0       # dips shorter than this many reference diameters are bridged
PATENT_SD = 3.0              # a station this many noise sd below the envelope is narrowed
BRANCH_SE = 5.0              # bands this many standard errors apart: the higher one holds contrast
PATENT_FLOOR = 0.04          # ... or this fraction below it, whichever is more
MIN_BAND_PX = 2.0            # a background band cut shorter than this by a neighbour is not used


@dataclass
class Lumen:
    """Per-station measurements of one run (NaN where not measured)."""
    integral: np.ndarray    # (M,) opacity integrated across the column (opacity x px), background removed
    width: np.ndarray       # (M,) lumen diameter from the column's edges (px)
    centre: np.ndarray      # (M,) the column's middle, offset from the station along its normal (px)
    height: np.ndarray      # (M,) the column's peak opacity
    noise: float            # opacity noise sd of one profile sample (background bands)
    beside: np.ndarray | None = None   # (M,) the highest contrast beside the column (another vessel) / its height
    crowded: np.ndarray | None = None  # (M,) another column overlaps this one: not measured
    edge_width: np.ndarray | None = None  # (M,) half-height width / (sqrt(3) / 2), before the blur term

    @property
    def density(self) -> np.ndarray:
        """Local contrast density per unit path length: integral / (pi / 4 * width^2)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.integral / (math.pi / 4.0 * self.width ** 2)

    @property
    def area(self) -> np.ndarray:
        """Cross-section area (px^2) of a circle of the measured width."""
        return math.pi / 4.0 * self.width ** 2

    def patent_density(self, patent: np.ndarray, half: int) -> np.ndarray | None:
        """The contrast density of the patent lumen per station: the running median over +-max(8, 8 * half) of
        the ``patent`` stations, taken in their own order (so each value holds a whole window), interpolated
        between them and held flat beyond. A median over the stations in place, held beyond, held the value of
        the one or two stations at a gap's edge across the whole gap (a long narrowing, a device: read 10% low
        at a catheter's tip, the lumen along it 10% wide). None where no patent station has a density."""
        k = self.density
        idx = np.flatnonzero(patent & np.isfinite(k))
        if idx.size == 0:
            return None
        return np.interp(np.arange(len(k)), idx, running_median(k[idx], max(8, 8 * half)))


def _gap(d: np.ndarray) -> np.ndarray:
    return np.maximum(2.0, 0.3 * d)


def _band(d: np.ndarray) -> np.ndarray:
    return np.maximum(3.0, 0.5 * d)


def _background(prof: np.ndarray, across: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                limits: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Per profile, the line through the medians of the bands [lo - band, lo - gap] and [hi + gap, hi + band]
    (``lo``, ``hi``: the column's edges, (M,)), each at its band's middle. ``limits``: (low, high) where
    neighbouring columns begin (``neighbours.valleys``): a band is cut there, and not used when little of it is left."""
    d = hi - lo
    g, b = _gap(d), _band(d)
    a = across[None, :]
    l0, l1 = lo - g - b, lo - g
    r0, r1 = hi + g, hi + g + b
    if limits is not None:
        l0, r1 = np.maximum(l0, limits[0]), np.minimum(r1, limits[1])
        with np.errstate(invalid="ignore"):
            l0 = np.where(l1 - l0 >= MIN_BAND_PX, l0, np.nan)
            r1 = np.where(r1 - r0 >= MIN_BAND_PX, r1, np.nan)
    vl, nl = _band_median(prof, across, l0, l1)
    vr, nr = _band_median(prof, across, r0, r1)
    # Each band's value at its middle (a band not used takes the other's value: flat, wherever it sits).
    xl = np.where(np.isfinite(l0), 0.5 * (l0 + l1), l1 - b / 2)
    xr = np.where(np.isfinite(r1), 0.5 * (r0 + r1), r0 + b / 2)
    vl = np.where(np.isfinite(vl), vl, vr)
    vr = np.where(np.isfinite(vr), vr, vl)
    # Contrast only adds opacity: a band clearly above the other holds a branch leaving the vein (a collateral's
    # junction) or a neighbouring vein, so the lower band is the background, flat.
    with np.errstate(invalid="ignore"), quiet():
        sd = _sample_sd(prof)
        se = np.sqrt(_median_se(sd, nl) ** 2 + _median_se(sd, nr) ** 2)
        branch = np.abs(vl - vr) > BRANCH_SE * se
    low = np.minimum(vl, vr)
    vl, vr = np.where(branch, low, vl), np.where(branch, low, vr)
    slope = (vr - vl) / np.maximum(xr - xl, 1e-6)
    return vl[:, None] + slope[:, None] * (a - xl[:, None])


def _band_median(prof: np.ndarray, across: np.ndarray, start: np.ndarray, stop: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(median, count) of each profile's finite samples with start <= across <= stop: ``np.nanmedian`` of the
    band (NaN where it holds none), on the band's samples alone (``across`` ascends, so a band is a slice):
    the whole width went through NumPy's per-row fallback, the dearest step of a long centreline."""
    m, k = prof.shape
    ok = np.isfinite(start) & np.isfinite(stop)
    i0 = np.where(ok, np.searchsorted(across, start, side="left"), 0)
    i1 = np.where(ok, np.searchsorted(across, stop, side="right"), 0)
    span = int(max(int((i1 - i0).max(initial=0)), 0))
    if span == 0:
        return np.full(m, np.nan, dtype=prof.dtype), np.zeros(m, dtype=np.intp)
    idx = i0[:, None] + np.arange(span)[None, :]
    vals = prof[np.arange(m)[:, None], np.minimum(idx, k - 1)]
    keep = (idx < i1[:, None]) & np.isfinite(vals)
    vals = np.sort(np.where(keep, vals, np.inf), axis=1)      # the band's finite samples first, in order
    n = keep.sum(axis=1)
    rows = np.arange(m)
    low = vals[rows, np.maximum(n - 1, 0) // 2]
    high = vals[rows, np.minimum(n // 2, span - 1)]
    with np.errstate(invalid="ignore"):
        mid = (low + high) / prof.dtype.type(2)
    return np.where(n > 0, mid, np.nan).astype(prof.dtype, copy=False), n


def _sample_sd(prof: np.ndarray) -> float:
    """Noise sd of one profile sample (differences of samples 2 px apart, robust to the columns' edges; not a
    band's own spread, which a branch in it inflates), from every 16th profile: plenty of samples, little time."""
    d = prof[::16, 4:] - prof[::16, :-4]
    d = d[np.isfinite(d)]
    return 1.4826 * float(np.median(np.abs(d - np.median(d)))) / math.sqrt(2.0) if d.size else float("nan")


def _median_se(sd: float, count: np.ndarray) -> np.ndarray:
    """Standard error of a band's median per profile from its finite samples' ``count``: 1.25 sd / sqrt(n),
    counted per pixel (samples are half a pixel apart and averaged along)."""
    n = np.maximum(count * ACROSS_STEP_PX, 1.0)
    return 1.25 * sd / np.sqrt(n)


def _top(p: np.ndarray, across: np.ndarray, centre: np.ndarray, search: np.ndarray) -> np.ndarray:
    """Index of the column's top: the profile's maximum within ``search`` of ``centre``."""
    near = np.abs(across[None, :] - centre[:, None]) <= search[:, None]
    return np.argmax(np.where(near, np.nan_to_num(p, nan=-np.inf), -np.inf), axis=1)


def _edges(p: np.ndarray, across: np.ndarray, centre: np.ndarray, search: np.ndarray, height: np.ndarray,
           limits: tuple[np.ndarray, np.ndarray] | None = None):
    """Sub-pixel half-height crossings left and right of the column's top near ``centre`` (NaN if none before
    ``limits``, where neighbouring columns begin)."""
    m, k = p.shape
    idx = np.arange(k)[None, :]
    top = _top(p, across, centre, search)
    level = 0.5 * height
    below = ~(p >= level[:, None])                     # NaN counts as below: the column ends there
    if limits is not None:
        inside = (across[None, :] >= limits[0][:, None]) & (across[None, :] <= limits[1][:, None])
        below &= inside
    jl = np.where(below & (idx < top[:, None]), idx, -1).max(axis=1)
    jr = np.where(below & (idx > top[:, None]), idx, k).min(axis=1)
    ok = (jl >= 0) & (jr < k)
    rows = np.arange(m)
    jl_, jr_ = np.clip(jl, 0, k - 2), np.clip(jr, 1, k - 1)
    p0, p1 = p[rows, jl_], p[rows, jl_ + 1]
    q0, q1 = p[rows, jr_ - 1], p[rows, jr_]
    with np.errstate(invalid="ignore", divide="ignore"):
        fl = np.clip((level - p0) / (p1 - p0), 0.0, 1.0)
        fr = np.clip((q0 - level) / (q0 - q1), 0.0, 1.0)
    step = across[1] - across[0]
    left = across[jl_] + np.nan_to_num(fl, nan=0.5) * step
    right = across[jr_ - 1] + np.nan_to_num(fr, nan=0.5) * step
    ok &= np.isfinite(p0) & np.isfinite(q1) & (height > 0)
    return np.where(ok, left, np.nan), np.where(ok, right, np.nan)


def _height(p: np.ndarray, across: np.ndarray, centre: np.ndarray, half_core: np.ndarray) -> np.ndarray:
    """The column's height: the mean of its middle, over the mean a circle has there (unbiased by noise, unlike
    a maximum)."""
    core = np.abs(across[None, :] - centre[:, None]) <= half_core[:, None]
    with np.errstate(invalid="ignore"), quiet():
        return np.nanmean(np.where(core, p, np.nan), axis=1) / _CORE_MEAN


def measure_lumen(image: np.ndarray, stations: Stations, max_diameter: float, along: np.ndarray | None = None,
                  beside: bool = False) -> Lumen:
    """Integral, width, centre and height of the contrast column at every station of ``image``.

    ``max_diameter`` bounds the widest lumen on the vessel (the profile reaches 1.6 of it each side). The
    column is looked for within a third of that of the station (the centreline is on the vessel). ``beside``:
    also the highest contrast beside the column (``Lumen.beside``).
    """
    d_max = float(max_diameter)
    prof, across = _wide_profiles(image, stations, d_max, along)
    m = prof.shape[0]
    # First pass: background from the outer bands, the column's top within a third of d_max, its edges before
    # any neighbouring column.
    lo0 = np.full(m, -0.6 * d_max)
    p = prof - _background(prof, across, lo0, -lo0)
    centre = np.zeros(m)
    search = np.full(m, max(2.0, d_max / 3.0))
    with np.errstate(invalid="ignore"), quiet():
        sm = np.nanmax(smooth_across(p)[:, np.abs(across) <= search[0]], axis=1)
    sd = _sample_sd(smooth_across(prof[::16]))
    limits, crowded = valleys(p, across, _top(p, across, centre, search), sm, sd)
    left, right = _edges(p, across, centre, search, sm, limits)
    width = (right - left) / HALF_WIDTH_FACTOR
    height = sm
    spacing = float(np.median(np.diff(stations.s))) if len(stations.s) > 1 else 1.0
    # The lumen expected along the vessel from the stations the first pass saw alone (no valley up the column).
    lumen = _expected_lumen(np.where(crowded, np.nan, width), 0.5 * (left + right), max(spacing, 0.1))
    # Two refinements: background beside this column's own edges, an unbiased height, edges again.
    for _ in range(2):
        centre = np.where(np.isfinite(left), 0.5 * (left + right), 0.0)
        w = np.where(np.isfinite(width), width, d_max)
        limits, crowded = valleys(p, across, _top(p, across, centre, np.maximum(1.0, 0.25 * w)), height, sd,
                                   lumen)
        p = prof - _background(prof, across, centre - w / 2, centre + w / 2, limits)
        height = _height(p, across, centre, PEAK_CORE * w / 2)
        left, right = _edges(p, across, centre, np.maximum(1.0, 0.25 * w), height, limits)
        width = (right - left) / HALF_WIDTH_FACTOR
    centre = 0.5 * (left + right)
    ok = np.isfinite(width) & (width > 0) & ~crowded
    edge_width = width
    width = np.where(ok, width + 10.0 * BLUR_VAR_PX2 / np.where(ok, width, 1.0), np.nan)
    g = _gap(np.where(ok, width, 0.0))
    inside = window(across, np.nan_to_num(centre), np.nan_to_num(width) / 2 + g, limits)
    span = np.where(inside, p, 0.0)
    integral = np.where(ok & ~np.any(inside & ~np.isfinite(p), axis=1), span.sum(axis=1) * ACROSS_STEP_PX, np.nan)
    noise = _noise(p, across, centre, width)
    ok &= np.isfinite(integral)
    nan = np.full(m, np.nan)
    near = None
    if beside:
        outside = np.abs(across[None, :] - np.nan_to_num(centre)[:, None]) > (np.nan_to_num(width) / 2 + g + 2)[:, None]
        with np.errstate(invalid="ignore", divide="ignore"), quiet():
            near = np.where(ok, np.nanmax(np.where(outside, smooth_across(p), np.nan), axis=1) / height, nan)
    return Lumen(np.where(ok, integral, nan), np.where(ok, width, nan), np.where(ok, centre, nan),
                 np.where(ok, height, nan), noise, near, crowded, np.where(ok, edge_width, nan))


def _expected_lumen(width: np.ndarray, centre: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """(axis, radius) of the lumen expected at each station from the first pass along the vessel: the running
    median of the columns' middles, and the upper envelope of their widths (a closing over CLOSING_LENGTHS
    diameters, as run_reference: a thrombus dividing the column, or narrowing it, is bridged). With too few
    stations seen alone, radius 0: every valley is a neighbour's (the station left out, never a lumen merged
    with another)."""
    ok = np.isfinite(width) & np.isfinite(centre)
    if ok.sum() < 3:
        return np.zeros(width.shape), np.zeros(width.shape)
    d = float(np.median(width[ok]))
    half = max(1, int(round(d / (2 * spacing))))
    axis = np.nan_to_num(running_median(np.where(ok, centre, np.nan), half), nan=0.0)
    smooth = running_median(np.where(ok, width, np.nan), half)
    env = closing(smooth, max(1, int(round(CLOSING_LENGTHS * d / (2 * spacing)))))
    return axis, np.nan_to_num(env, nan=d) / 2


def _noise(p: np.ndarray, across: np.ndarray, centre: np.ndarray, width: np.ndarray) -> float:
    """Robust sd of one profile sample outside the columns (differences of samples 2 px apart)."""
    far = np.abs(across[None, :] - np.nan_to_num(centre)[:, None]) > (np.nan_to_num(width) + 4.0)[:, None]
    d = p[:, 4:] - p[:, :-4]
    sel = far[:, 4:] & far[:, :-4] & np.isfinite(d)
    if sel.sum() < 16:
        return float("nan")
    v = d[sel]
    return float(1.4826 * np.median(np.abs(v - np.median(v))) / math.sqrt(2.0))


def run_reference(width: np.ndarray, s: np.ndarray, spacing: float, exclude: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(reference diameter per station, patent mask) of one run's widths along the vessel.

    Smoothed over a diameter (median: a notch's edge is not smeared), its upper envelope by a closing over
    ``CLOSING_LENGTHS`` diameters, the stations within noise of the envelope patent, and the reference the
    running mean (over a diameter) of the patent widths, interpolated across the rest. NaN where the run
    measured nothing. ``exclude``: stations known not to show the whole lumen (a thrombus in front of it
    flattens the column's top, so its half-height edges read wide).
    """
    ok = np.isfinite(width)
    if exclude is not None and (ok & ~exclude).sum() >= 3:
        width = np.where(exclude, np.nan, width)
        ok = np.isfinite(width)
    ref = np.full(width.shape, np.nan)
    patent = np.zeros(width.shape, dtype=bool)
    if ok.sum() < 3:
        return ref, patent
    d = float(np.median(width[ok]))
    half = max(1, int(round(d / (2 * spacing))))
    smooth = running_median(width, half)
    envelope = closing(smooth, max(1, int(round(CLOSING_LENGTHS * d / (2 * spacing)))))
    raw_sd = 1.4826 * float(np.median(np.abs(np.diff(width[ok])))) / math.sqrt(2.0) if ok.sum() > 2 else 0.0
    tol = np.maximum(PATENT_SD * raw_sd / math.sqrt(2 * half + 1), PATENT_FLOOR * envelope)
    patent = ok & (smooth >= envelope - tol)
    if patent.sum() < 3:
        patent = ok
    mean = running_mean(width, half, patent)
    ref = interp_valid(s, np.where(patent, mean, np.nan))
    # The run says nothing beyond the stations it measured (an end under an overlay, outside the field).
    first, last = np.flatnonzero(ok)[[0, -1]]
    ref[:first] = np.nan
    ref[last + 1:] = np.nan
    return ref, patent


def integral_at(image: np.ndarray, stations: Stations, centre: np.ndarray, width: np.ndarray,
                along: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(integrated opacity over the window a lumen of ``width`` centred at ``centre`` would fill (plus the margin),
    background beside it: where a run shows no column at all (an occlusion), what fills the reference lumen;
    the stations where another vessel's column overlaps that lumen, NaN in the first)."""
    if len(stations.s) == 0:
        return np.zeros(0), np.zeros(0, dtype=bool)
    d_max = float(np.nanmax(width)) if np.isfinite(width).any() else 1.0
    prof, across = _wide_profiles(image, stations, d_max, along)
    w = np.nan_to_num(width, nan=d_max)
    p = prof - _background(prof, across, centre - w / 2, centre + w / 2)
    # Neighbouring columns found from the lumen's middle outwards (a run with no column there: from wherever the
    # profile is highest near it), then the background and the window kept off them.
    with np.errstate(invalid="ignore"), quiet():
        top = _top(p, across, centre, np.maximum(1.0, 0.25 * w))
        height = _height(p, across, centre, PEAK_CORE * w / 2)
    limits, crowded = valleys(p, across, top, height, _sample_sd(smooth_across(prof[::16])), (centre, w / 2))
    p = prof - _background(prof, across, centre - w / 2, centre + w / 2, limits)
    inside = window(across, centre, w / 2 + _gap(w), limits)
    # ... and where a neighbour begins within the lumen's own edges, the lumen is not all there to integrate.
    r = HALF_WIDTH_FACTOR * w / 2
    crowded |= (limits[0] > centre - r) | (limits[1] < centre + r)
    bad = np.any(inside & ~np.isfinite(p), axis=1) | crowded
    return np.where(bad, np.nan, np.where(inside, p, 0.0).sum(axis=1) * ACROSS_STEP_PX), crowded


def _wide_profiles(image: np.ndarray, stations, d_max: float, along) -> tuple[np.ndarray, np.ndarray]:
    """Cross-section profiles wide enough for the widest lumen (1.6 of it each side, plus the background bands),
    and their positions across the vessel."""
    n = int(math.ceil((1.6 * d_max + 6.0) / ACROSS_STEP_PX))
    across = np.arange(-n, n + 1) * ACROSS_STEP_PX
    if along is None:
        along = np.array([-0.75, -0.25, 0.25, 0.75])
    return sample_profiles(image, stations, across, along), across
