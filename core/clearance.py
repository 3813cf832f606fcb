"""Venographic clearance: densitometric thrombus burden on the baseline and a later run, % clearance, grade.

Method (DOMAIN.md, issue 6):
- Stations every ``STATION_SPACING_PX`` along the analysed centreline (baseline image coordinates); at each,
  the cross-section profile of the peak-opacity image, minus a straight background line fitted beyond
  the lumen on both sides, integrated across the vessel. In projection that integral is proportional to
  the contrast-filled cross-section area, whatever the profile's shape: a side-wall thrombus (a notch)
  and an anterior-wall one (only shorter chords, no hole) both count by their volume.
- Reference: each run is calibrated on its own patent stations (the bolus differs between runs): the
  reference integral is an upper quantile of the station integrals smoothed over one diameter, i.e.
  k * pi/4 * D^2 with k (opacity per unit path) measured, never assumed. Burden per station is then
  ``1 - integral / reference``; per segment and overall, the mean over stations (volume fraction).
- The later run is registered to the baseline (core/registration.py) and sampled at the same anatomical
  stations; only stations measured in both runs count.
- Clearance ``(b_base - b_post) / b_base * 100``; undefined (null, with the reason) when the baseline has
  too little thrombus to divide by. Grade I / II / III at configurable thresholds (SIR 50 / 95 by
  default, CaVenT 50 / 90), and the CLOUT ">= 75% removal" flag.

Assumption to know about: the calibration needs patent stations. If more than ``1 - CALIBRATION_QUANTILE``
of the analysed length is thrombosed the reference comes from thrombosed stations and the burden reads low;
the result says so in ``notes`` when few stations look patent.
"""
from __future__ import annotations

import io
import json
import math
import sys
from dataclasses import dataclass, field

import numpy as np

from core.registration import Registration, register
from core.vessel import (
    Stations, check_centerline, find_vessel, make_stations, parse_centerline, profile_window, sample_profiles,
    subtract_background,
)

__all__ = [
    "ClearanceTracker", "clearance_main", "grade", "measure_clearance", "parse_segments", "render_clearance_png",
    "LABELS",
]

STATION_SPACING_PX = 2.0          # "cross-section profiles every few pixels"
ACROSS_STEP_PX = 0.5              # sample step across the vessel
CALIBRATION_QUANTILE = 0.8        # patent reference: this quantile of the smoothed station integrals
PATENT_NOISE_SD = 3.0             # stations within this many noise sd below the patent level are patent
PATENT_TOLERANCE = 0.1            # ... but never more than 10% below it
MIN_BASELINE_BURDEN_PCT = 5.0     # below this the baseline has too little thrombus for a clearance ratio
REMOVAL_FLAG_PCT = 75.0           # CLOUT end point
DEFECT_BURDEN = 0.25              # a station this occluded (smoothed) is drawn as a defect
MIN_STATIONS = 5
DEFAULT_GRADES = (50.0, 95.0)     # SIR: I < 50, II 50-95, III > 95
LABELS = ("baseline", "intraprocedural", "completion")


# --------------------------------------------------------------------------------------------- parsing

def parse_segments(text: str | None) -> list[tuple[str, float, float]]:
    """``"name:a-b,..."`` (arc fractions 0..1 of the analysed centreline) -> [(name, a, b)]."""
    if text is None:
        return []
    if not isinstance(text, str) or not text.strip():
        raise ValueError("--segments is empty; expected \"name:a-b,...\"")
    out = []
    for item in text.split(","):
        item = item.strip()
        name, sep, rng = item.rpartition(":")
        name = name.strip()
        a_txt, dash, b_txt = rng.partition("-")
        if not sep or not name or not dash:
            raise ValueError(f"--segments item {item!r} is not \"name:a-b\"")
        try:
            a, b = float(a_txt), float(b_txt)
        except ValueError:
            raise ValueError(f"--segments item {item!r}: {rng!r} is not two numbers a-b") from None
        if not (0.0 <= a < b <= 1.0):
            raise ValueError(f"--segments item {item!r}: need 0 <= a < b <= 1 (arc fractions)")
        if any(name == n for n, _, _ in out):
            raise ValueError(f"--segments names segment {name!r} twice")
        out.append((name, a, b))
    return out


def _check_segments(segments) -> list[tuple[str, float, float]]:
    if segments is None:
        return []
    if isinstance(segments, str):
        return parse_segments(segments)
    out = []
    for seg in segments:
        try:
            name, a, b = seg
            a, b = float(a), float(b)
        except (TypeError, ValueError):
            raise ValueError(f"segment {seg!r} is not (name, start, end)") from None
        if not (0.0 <= a < b <= 1.0):
            raise ValueError(f"segment {name!r}: need 0 <= start < end <= 1 (arc fractions), got {a}, {b}")
        out.append((str(name), a, b))
    return out


def _check_thresholds(thresholds) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in thresholds)
    except (TypeError, ValueError):
        raise ValueError(f"grade_thresholds must be two numbers (II from, III above), got {thresholds!r}") from None
    if not (0.0 < lo < hi <= 100.0):
        raise ValueError(f"grade_thresholds need 0 < II < III <= 100, got {thresholds!r}")
    return lo, hi


def grade(clearance_pct: float | None, thresholds=DEFAULT_GRADES) -> str | None:
    """Lysis grade: I below the first threshold, III above the second, II between (inclusive)."""
    if clearance_pct is None:
        return None
    lo, hi = _check_thresholds(thresholds)
    if clearance_pct < lo:
        return "I"
    if clearance_pct > hi:
        return "III"
    return "II"


# --------------------------------------------------------------------------------------------- densitometry

@dataclass
class RunDensity:
    """Per-station densitometry of one run."""
    integral: np.ndarray      # (M,) background-subtracted integrated opacity (nan: not measured)
    reference: float          # patent-lumen integral of this run
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


def densitometry(integral: np.ndarray, diameter_px: float, use: np.ndarray) -> RunDensity:
    """Calibrate one run on its own patent stations (among ``use``) and turn integrals into burden."""
    half = max(1, int(round(diameter_px / (2 * STATION_SPACING_PX))))
    smooth = _smooth_valid(np.where(use, integral, np.nan), half)
    vals = smooth[use & np.isfinite(smooth)]
    if vals.size < MIN_STATIONS:
        raise ValueError(f"only {vals.size} stations measured in both runs (need {MIN_STATIONS}): "
                         "the centreline is outside the field or under an overlay")
    # The upper quantile finds the patent level; the reference is then the mean of every station near it,
    # so a clean vessel (all stations patent) measures zero on average instead of the quantile's offset.
    level = float(np.quantile(vals, CALIBRATION_QUANTILE))
    if not level > 0:
        raise ValueError("no contrast along the centreline (the reference lumen integral is not positive)")
    # "Near" is set by the measurement noise: the station-to-station scatter of the raw integrals (a mild
    # diffuse thrombus a few % deep must not count as patent, noise must).
    raw = integral[use & np.isfinite(integral)]
    noise = 1.4826 * float(np.median(np.abs(np.diff(raw)))) / math.sqrt(2.0) if raw.size > 2 else 0.0
    tol = min(max(PATENT_NOISE_SD * noise / math.sqrt(2 * half + 1), 0.005 * level), PATENT_TOLERANCE * level)
    patent_vals = vals[vals >= level - tol]
    reference = float(np.mean(patent_vals))
    burden = 1.0 - integral / reference
    patent = patent_vals.size / vals.size
    return RunDensity(integral, reference, burden, patent)


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
    base = _check_image(baseline_peak, "baseline")
    post = _check_image(post_peak, "post")
    if base.shape != post.shape:
        raise ValueError(f"baseline and post images differ in size: {base.shape} vs {post.shape}")
    thresholds = _check_thresholds(grade_thresholds)
    segs = _check_segments(segments)
    notes: list[str] = []
    if diameter_px is not None:
        if not (isinstance(diameter_px, (int, float)) and math.isfinite(diameter_px)
                and 1.0 <= diameter_px <= min(base.shape) / 2):
            raise ValueError(f"diameter must be a number of pixels between 1 and {min(base.shape) / 2:g}, "
                             f"got {diameter_px!r}")
        diameter_px = float(diameter_px)
    if centerline is None:
        vessel = find_vessel(base, diameter_px)
        line, diameter_px = vessel.centerline, vessel.diameter_px
        notes.append("centreline found automatically (from the bottom end)")
        if diameter_px is not None:
            pass
    else:
        line = check_centerline(centerline, base.shape)
        if diameter_px is None:
            diameter_px = find_vessel_diameter(base, line)
            notes.append("reference diameter measured automatically")
    reg = registration if registration is not None else register(base, post)
    stations = make_stations(line, STATION_SPACING_PX)
    i0 = station_integrals(base, stations, diameter_px)
    i1 = station_integrals(post, stations.moved(reg.dx, reg.dy), diameter_px)
    use = np.isfinite(i0) & np.isfinite(i1)
    d0 = densitometry(i0, diameter_px, use)
    d1 = densitometry(i1, diameter_px, use)
    for name, d in (("baseline", d0), ("post", d1)):
        if d.patent_fraction < 1.0 - CALIBRATION_QUANTILE:
            notes.append(f"few patent stations on the {name} run ({d.patent_fraction * 100:.0f}%): "
                         "its burden may read low")
    b0 = float(np.mean(d0.burden[use]))
    b1 = float(np.mean(d1.burden[use]))
    clear, why = _clearance(b0, b1)
    if why:
        notes.append(why)
    result = {
        "burden_baseline_pct": _pct(max(b0, 0.0)),
        "burden_post_pct": _pct(max(b1, 0.0)),
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
            sb0 = float(np.mean(d0.burden[inside]))
            sb1 = float(np.mean(d1.burden[inside]))
            sc, swhy = _clearance(sb0, sb1)
            entry.update(burden_baseline_pct=_pct(max(sb0, 0.0)), burden_post_pct=_pct(max(sb1, 0.0)),
                         clearance_pct=None if sc is None else round(sc, 1), grade=grade(sc, thresholds),
                         removal_ge_75=None if sc is None else bool(sc >= REMOVAL_FLAG_PCT))
            if swhy:
                entry["note"] = swhy
        result["segments"].append(entry)
    return result


def find_vessel_diameter(peak: np.ndarray, centerline: np.ndarray) -> float:
    """Reference diameter along a given centreline (cylinder fit of the patent stations)."""
    from core.vessel import _foreground, _measure_diameter

    fg = _foreground(peak)
    st = make_stations(centerline, 1.0)
    # Start from a guess that any venous lumen fits in; the fit window is twice the guess.
    return _measure_diameter(fg, st, max(8.0, min(peak.shape) / 16))


def _check_image(img, name: str) -> np.ndarray:
    arr = np.asarray(img)
    if arr.ndim != 2 or min(arr.shape) < 16:
        raise ValueError(f"the {name} peak-opacity image must be 2-D and at least 16x16, got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"the {name} peak-opacity image must be numeric, got {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).any():
        raise ValueError(f"the {name} peak-opacity image has no measured pixels")
    return arr
