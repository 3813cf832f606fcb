"""Venographic clearance: densitometric thrombus burden on the baseline and a later run, % clearance, grade.

Method (DOMAIN.md):
- Stations every ``STATION_SPACING_PX`` along the analysed centreline (baseline image coordinates); at each,
  the cross-section profile of the peak-opacity image, minus a straight background line fitted beyond
  the lumen on both sides, integrated across the vessel. In projection that integral is proportional to
  the contrast-filled cross-section area, whatever the profile's shape: a side-wall thrombus (a notch)
  and an anterior-wall one (only shorter chords, no hole) both count by their volume.
- Reference: each run is calibrated on its own patent stations (the bolus differs between runs): the
  patent level is found as an upper quantile of the station integrals (smoothed over one diameter), the
  stations within measurement noise of it are the patent ones, and the reference is fitted to them: a
  straight line along the vessel, since contrast dilutes downstream. That is k * pi/4 * D^2 with k
  (opacity per unit path) measured, never assumed. Burden per station is ``1 - integral / reference``;
  per segment and overall, the mean over stations (the volume fraction).
- The later run is registered to the baseline (core/analysis/registration.py) and sampled at the same anatomical
  stations; only stations measured in both runs count.
- Clearance ``(b_base - b_post) / b_base * 100``; undefined (null, with the reason) when the baseline has
  too little thrombus to divide by. Grade I / II / III at configurable thresholds (SIR 50 / 95 by
  default, CaVenT 50 / 90), and the CLOUT ">= 75% removal" flag.

Assumption to know about: the calibration needs patent stations. If more than ``1 - CALIBRATION_QUANTILE``
of the analysed length is thrombosed the reference comes from thrombosed stations and the burden reads low;
the result says so in ``notes`` when few stations look patent.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from core.analysis.clearance.grading import DEFAULT_GRADES, check_segments, check_thresholds, grade
from core.analysis.registration import Registration, register
from core.analysis.vessel import (
    Stations,
    check_centerline,
    diameter_along,
    find_vessel,
    make_stations,
    profile_window,
    sample_profiles,
    subtract_background,
)

STATION_SPACING_PX = 2.0          # "cross-section profiles every few pixels"
ACROSS_STEP_PX = 0.5              # sample step across the vessel
CALIBRATION_QUANTILE = 0.8        # patent reference: this quantile of the smoothed station integrals
PATENT_NOISE_SD = 3.0             # stations within this many noise sd below the patent level are patent
PATENT_TOLERANCE = 0.1            # ... but never more than 10% below it
QUARTER_OUTLIER = 0.03            # a quarter this far below the others' patent line is thrombus, not dilution
MIN_TREND_SPAN = 0.5              # patent stations must span half the vessel to fit a drifting reference
MIN_BASELINE_BURDEN_PCT = 5.0     # below this the baseline has too little thrombus for a clearance ratio
REMOVAL_FLAG_PCT = 75.0           # CLOUT end point
DEFECT_BURDEN = 0.25              # a station this occluded (smoothed) is drawn as a defect
MIN_STATIONS = 5
# An operator's centreline: a venogram's vein is drawn with a few dozen clicks (one every few centimetres, more
# along a bend); 256 leaves ample room. It crosses the field once, so it is at most twice the image's
# perimeter half (w + h) long; a longer one zigzags, and its analysis time grows with its length (a 4,096-point
# scribble held the analysis worker for 10-50 s).
MAX_CENTERLINE_POINTS = 256
MAX_CENTERLINE_LENGTH_FACTOR = 2.0   # times (width + height) of the image


# --------------------------------------------------------------------------------------------- densitometry

@dataclass
class RunDensity:
    """Per-station densitometry of one run."""
    integral: np.ndarray      # (M,) background-subtracted integrated opacity (nan: not measured)
    reference: float          # patent-lumen integral of this run (at the middle of the vessel)
    burden: np.ndarray        # (M,) 1 - integral / reference (nan: not measured)
    patent_fraction: float    # share of measured stations counted as patent


def _across(diameter_px: float) -> tuple[np.ndarray, float]:
    inner, half = profile_window(diameter_px)
    n = int(math.ceil(half / ACROSS_STEP_PX))
    return np.arange(-n, n + 1) * ACROSS_STEP_PX, inner


def station_integrals(peak: np.ndarray, stations: Stations, diameter_px: float) -> np.ndarray:
    """Integrated opacity across the vessel at every station (nan where any sample is not measured)."""
    across, inner = _across(diameter_px)
    along = (np.arange(4) - 1.5) * (STATION_SPACING_PX / 4)    # the station's strip along the vessel
    prof = sample_profiles(peak, stations, across, along)
    ok = np.all(np.isfinite(prof), axis=1)
    out = np.full(len(prof), np.nan)
    if ok.any():
        net = subtract_background(prof[ok], across, inner)
        win = np.abs(across) <= inner
        out[ok] = net[:, win].sum(axis=1) * ACROSS_STEP_PX
    return out


def _smooth_valid(v: np.ndarray, half: int) -> np.ndarray:
    """Moving mean over +-half stations, of the measured ones only."""
    ok = np.isfinite(v)
    c = np.concatenate([[0.0], np.cumsum(np.where(ok, v, 0.0))])
    n = np.concatenate([[0], np.cumsum(ok)])
    i = np.arange(len(v))
    lo, hi = np.maximum(i - half, 0), np.minimum(i + half + 1, len(v))
    cnt = n[hi] - n[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, (c[hi] - c[lo]) / cnt, np.nan)


def densitometry(integral: np.ndarray, diameter_px: float, use: np.ndarray, s: np.ndarray | None = None) -> RunDensity:
    """Calibrate one run on its own patent stations (among ``use``) and turn integrals into burden.

    The patent reference may drift linearly along the vessel (contrast dilutes downstream, the field is
    not uniform): it is a straight line in arc length ``s`` through the patent stations, found robustly
    (upper quantile per quarter of the vessel, Theil-Sen through the four), then refitted by least squares
    on every station near it. Without ``s``, or when the patent stations do not span the vessel, a constant.
    """
    half = max(1, int(round(diameter_px / (2 * STATION_SPACING_PX))))
    smooth = _smooth_valid(np.where(use, integral, np.nan), half)
    good = use & np.isfinite(smooth)
    vals = smooth[good]
    if vals.size < MIN_STATIONS:
        raise ValueError(f"only {vals.size} stations measured in both runs (need {MIN_STATIONS}): "
                         "the centreline is outside the field or under an overlay")
    pos = np.asarray(s, dtype=float)[good] if s is not None else np.zeros(vals.size)
    # The upper quantile finds the patent level; the reference is then fitted to every station near it,
    # so a clean vessel (all stations patent) measures zero on average instead of the quantile's offset.
    level = float(np.quantile(vals, CALIBRATION_QUANTILE))
    if not level > 0:
        raise ValueError("no contrast along the centreline (the reference lumen integral is not positive)")
    centre = float(np.mean(pos))
    line_level, slope = _envelope(pos, vals, centre) if s is not None else (level, 0.0)
    line = line_level + slope * (pos - centre)
    # "Near" is set by the measurement noise: the station-to-station scatter of the raw integrals (a mild
    # diffuse thrombus a few % deep must not count as patent, noise must).
    raw = integral[good]
    noise = 1.4826 * float(np.median(np.abs(np.diff(raw)))) / math.sqrt(2.0) if raw.size > 2 else 0.0
    tol = min(max(PATENT_NOISE_SD * noise / math.sqrt(2 * half + 1), 0.005 * level), PATENT_TOLERANCE * level)
    patent = vals >= line - tol
    if not patent.any():           # cannot happen with a sane envelope; keep the constant reference then
        slope, patent = 0.0, vals >= level - tol
    p_pos, p_vals = pos[patent], vals[patent]
    span = np.ptp(p_pos) / max(np.ptp(pos), 1e-9) if p_pos.size > 1 else 0.0
    if s is not None and span >= MIN_TREND_SPAN and abs(slope) > 0:
        A = np.column_stack([np.ones(p_pos.size), p_pos - centre])
        (c0, c1), *_ = np.linalg.lstsq(A, p_vals, rcond=None)
    else:
        c0, c1 = float(np.mean(p_vals)), 0.0
    at = np.asarray(s, dtype=float) if s is not None else np.zeros(integral.shape)
    reference = c0 + c1 * (at - centre)
    if not np.all(reference[good] > 0):
        raise ValueError("the patent reference falls to zero along the vessel: no usable contrast")
    burden = 1.0 - integral / reference
    return RunDensity(integral, float(c0), burden, patent.sum() / vals.size)


def _envelope(pos: np.ndarray, vals: np.ndarray, centre: float) -> tuple[float, float]:
    """(level at ``centre``, slope) of the patent level along the vessel.

    The upper quantile of each quarter of the vessel is its patent level unless the quarter is mostly
    thrombus. A straight line through the four; a quarter far below it (thrombus) is dropped and the
    line refitted, as long as three quarters agree; otherwise the level is flat (the global quantile).
    Twice, the second time on values with the first slope removed (a trend inside a quarter inflates its
    quantile).
    """
    flat = (float(np.quantile(vals, CALIBRATION_QUANTILE)), 0.0)
    if np.ptp(pos) <= 0 or vals.size < 4 * MIN_STATIONS:
        return flat
    edges = np.quantile(pos, [0.0, 0.25, 0.5, 0.75, 1.0])
    quarters = [(pos >= lo) & (pos <= hi) for lo, hi in zip(edges[:-1], edges[1:])]
    quarters = [q for q in quarters if q.sum() >= MIN_STATIONS]
    if len(quarters) < 3:
        return flat
    xs = np.array([float(np.mean(pos[q])) for q in quarters]) - centre
    slope, level = 0.0, flat[0]
    for _ in range(2):
        resid = vals - slope * (pos - centre)
        ys = np.array([float(np.quantile(resid[q], CALIBRATION_QUANTILE)) for q in quarters]) + slope * xs
        keep = np.ones(len(ys), dtype=bool)
        while keep.sum() >= 3:
            # Each quarter against the line through the others (a thrombosed quarter would pull a line
            # through all of them towards itself and hide).
            loo = np.full(len(ys), np.inf)
            for i in np.flatnonzero(keep):
                others = keep.copy()
                others[i] = False
                b1, b0 = np.polyfit(xs[others], ys[others], 1)
                loo[i] = (ys[i] - (b0 + b1 * xs[i])) / max(abs(b0), 1e-12)
            worst = int(np.argmin(loo))
            if loo[worst] >= -QUARTER_OUTLIER:
                break
            keep[worst] = False
        if keep.sum() < 3:
            return flat
        c1, c0 = np.polyfit(xs[keep], ys[keep], 1)
        slope, level = float(c1), float(c0)
    return level, slope


def _pct(v: float | None, nd: int = 1) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v) * 100.0, nd)


def _clearance(b0: float, b1: float) -> tuple[float | None, str | None]:
    if not np.isfinite(b0) or not np.isfinite(b1):
        return None, "not measured"
    if b0 * 100.0 < MIN_BASELINE_BURDEN_PCT:
        return None, (f"baseline burden {b0 * 100:.1f}% is below {MIN_BASELINE_BURDEN_PCT:g}%: "
                      "too little thrombus to measure clearance against")
    return (b0 - b1) / b0 * 100.0, None


def _defects(burden: np.ndarray, stations: Stations, diameter_px: float) -> list[dict]:
    """Stretches of the centreline whose (smoothed) burden exceeds DEFECT_BURDEN."""
    half = max(1, int(round(diameter_px / (2 * STATION_SPACING_PX))))
    sm = _smooth_valid(burden, half)
    hot = np.nan_to_num(sm, nan=0.0) > DEFECT_BURDEN
    edges = np.diff(np.concatenate([[0], hot.astype(int), [0]]))
    out = []
    for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
        seg = burden[a:b]
        out.append({"start_frac": round(float(stations.frac[a]), 4), "end_frac": round(float(stations.frac[b - 1]), 4),
                    "peak_burden_pct": _pct(float(np.nanmax(seg)) if np.isfinite(seg).any() else None),
                    "mean_burden_pct": _pct(float(np.nanmean(seg)) if np.isfinite(seg).any() else None)})
    return out


def measure_clearance(baseline_peak: np.ndarray, post_peak: np.ndarray, *, centerline=None, diameter_px=None,
                      segments=None, grade_thresholds=DEFAULT_GRADES, registration: Registration | None = None,
                      ) -> dict:
    """Burden of both runs, clearance, grade, per-station and per-segment results (the ``--json`` object).

    ``centerline`` (N, 2) x, y in baseline pixels (its ends bound the analysed part) and ``diameter_px``
    (reference lumen) are found automatically when None. ``segments`` are (name, start, end) arc fractions
    or the ``"name:a-b,..."`` string. ``registration`` skips the search when the shift is already known.
    """
    base = check_peak_image(baseline_peak, "baseline")
    post = check_peak_image(post_peak, "post")
    if base.shape != post.shape:
        raise ValueError(f"baseline and post images differ in size: {base.shape} vs {post.shape}")
    thresholds = check_thresholds(grade_thresholds)
    segs = check_segments(segments)
    notes: list[str] = []
    if diameter_px is not None:
        if not (isinstance(diameter_px, numbers.Real) and math.isfinite(diameter_px)
                and 1.0 <= diameter_px <= min(base.shape) / 2):
            raise ValueError(f"diameter must be a number of pixels between 1 and {min(base.shape) / 2:g}, "
                             f"got {diameter_px!r}")
        diameter_px = float(diameter_px)
    if centerline is None:
        vessel = find_vessel(base, diameter_px)
        line, diameter_px = vessel.centerline, vessel.diameter_px
        notes.append("centreline found automatically (from the bottom end)")
    else:
        line = check_centerline(centerline, base.shape)
        if diameter_px is None:
            diameter_px = diameter_along(base, line)
            notes.append("reference diameter measured automatically")
    reg = registration if registration is not None else register(base, post)
    stations = make_stations(line, STATION_SPACING_PX)
    i0 = station_integrals(base, stations, diameter_px)
    i1 = station_integrals(post, stations.moved(reg.dx, reg.dy), diameter_px)
    use = np.isfinite(i0) & np.isfinite(i1)
    d0 = densitometry(i0, diameter_px, use, stations.s)
    d1 = densitometry(i1, diameter_px, use, stations.s)
    for name, d in (("baseline", d0), ("post", d1)):
        if d.patent_fraction < 1.0 - CALIBRATION_QUANTILE:
            notes.append(f"few patent stations on the {name} run ({d.patent_fraction * 100:.0f}%): "
                         "its burden may read low")
    # A volume fraction lies in [0, 1]; noise can push a clean vessel's mean a little below 0.
    b0 = float(np.clip(np.mean(d0.burden[use]), 0.0, 1.0))
    b1 = float(np.clip(np.mean(d1.burden[use]), 0.0, 1.0))
    clear, why = _clearance(b0, b1)
    if why:
        notes.append(why)
    result = {
        "burden_baseline_pct": _pct(b0),
        "burden_post_pct": _pct(b1),
        "clearance_pct": None if clear is None else round(clear, 1),
        "grade": grade(clear, thresholds),
        "removal_ge_75": None if clear is None else bool(clear >= REMOVAL_FLAG_PCT),
        "shift_px": [round(reg.dx, 1) + 0.0, round(reg.dy, 1) + 0.0],
        "registration_score": round(reg.score, 3),
        "diameter_px": round(float(diameter_px), 2),
        "grade_thresholds": list(thresholds),
        "centerline": [[round(float(x), 2), round(float(y), 2)] for x, y in line],
        "stations": [
            {"s_px": round(float(s), 1), "frac": round(float(f), 4), "x": round(float(x), 1), "y": round(float(y), 1),
             "burden_baseline_pct": _pct(d0.burden[k]) if use[k] else None,
             "burden_post_pct": _pct(d1.burden[k]) if use[k] else None}
            for k, (s, f, (x, y)) in enumerate(zip(stations.s, stations.frac, stations.xy))],
        "segments": [],
        "defects": _defects(np.where(use, d0.burden, np.nan), stations, diameter_px),
        "stations_measured": int(use.sum()),
        "notes": notes,
    }
    for name, a, b in segs:
        inside = use & (stations.frac >= a) & (stations.frac <= b)
        entry = {"name": name, "start": a, "end": b, "stations": int(inside.sum())}
        if inside.sum() == 0:
            entry.update(burden_baseline_pct=None, burden_post_pct=None, clearance_pct=None, grade=None,
                         removal_ge_75=None, note="no station measured in this segment")
        else:
            sb0 = float(np.clip(np.mean(d0.burden[inside]), 0.0, 1.0))
            sb1 = float(np.clip(np.mean(d1.burden[inside]), 0.0, 1.0))
            sc, swhy = _clearance(sb0, sb1)
            entry.update(burden_baseline_pct=_pct(sb0), burden_post_pct=_pct(sb1),
                         clearance_pct=None if sc is None else round(sc, 1), grade=grade(sc, thresholds),
                         removal_ge_75=None if sc is None else bool(sc >= REMOVAL_FLAG_PCT))
            if swhy:
                entry["note"] = swhy
        result["segments"].append(entry)
    return result


def check_operator_centerline(points, shape: tuple[int, int]) -> np.ndarray:
    """An operator's centreline (``--centerline``, ``PUT /api/centerline``) checked for the image ``shape``:
    at most ``MAX_CENTERLINE_POINTS`` points and ``MAX_CENTERLINE_LENGTH_FACTOR * (w + h)`` px long, so one
    request cannot hold the analysis worker."""
    arr = np.asarray(points, dtype=float)
    if arr.ndim >= 1 and len(arr) > MAX_CENTERLINE_POINTS:
        raise ValueError(f"a centreline has at most {MAX_CENTERLINE_POINTS} points (a vein needs a few dozen), "
                         f"got {len(arr)}")
    line = check_centerline(arr, shape)
    h, w = shape
    limit = MAX_CENTERLINE_LENGTH_FACTOR * (w + h)
    length = float(np.hypot(*np.diff(line, axis=0).T).sum())
    if length > limit:
        raise ValueError(f"the centreline is {length:.0f} px long, more than {limit:.0f} px "
                         f"({MAX_CENTERLINE_LENGTH_FACTOR:g} x (width + height)): a vein crosses the image once")
    return line


def check_peak_image(img, name: str) -> np.ndarray:
    """A peak-opacity image as float32, or ValueError naming what is wrong with it."""
    arr = np.asarray(img)
    if arr.ndim != 2 or min(arr.shape) < 16:
        raise ValueError(f"the {name} peak-opacity image must be 2-D and at least 16x16, got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"the {name} peak-opacity image must be numeric, got {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).any():
        raise ValueError(f"the {name} peak-opacity image has no measured pixels")
    return arr
