"""Venographic clearance: densitometric thrombus burden on the baseline and a later run, % clearance, grade.

Method (DOMAIN.md, issue 6):
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

import io
import json
import math
import numbers
import sys
from dataclasses import dataclass, field

import numpy as np

from core.analysis.registration import Registration, register
from core.analysis.vessel import (
    Stations,
    check_centerline,
    diameter_along,
    find_vessel,
    make_stations,
    parse_centerline,
    profile_window,
    sample_profiles,
    subtract_background,
)
from core.identity import check_text
from core.vocab import RUN_LABELS

__all__ = [
    "ClearanceTracker", "check_operator_centerline", "clearance_main", "grade", "measure_clearance",
    "parse_segments", "render_clearance_png", "MAX_CENTERLINE_POINTS",
]

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
DEFAULT_GRADES = (50.0, 95.0)     # SIR: I < 50, II 50-95, III > 95
# An operator's centreline: a venogram's vein is drawn with a few dozen clicks (one every few centimetres, more
# along a bend); 256 leaves ample room. It crosses the field once, so it is at most twice the image's
# perimeter half (w + h) long; a longer one zigzags, and its analysis time grows with its length (a 4,096-point
# scribble held the analysis worker for 10-50 s).
MAX_CENTERLINE_POINTS = 256
MAX_CENTERLINE_LENGTH_FACTOR = 2.0   # times (width + height) of the image


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
        check_text(name, "--segments name")     # names land in the output and the image: no identity
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
    base = _check_image(baseline_peak, "baseline")
    post = _check_image(post_peak, "post")
    if base.shape != post.shape:
        raise ValueError(f"baseline and post images differ in size: {base.shape} vs {post.shape}")
    thresholds = _check_thresholds(grade_thresholds)
    segs = _check_segments(segments)
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


# --------------------------------------------------------------------------------------------- picture

def render_clearance_png(baseline_peak: np.ndarray, post_peak: np.ndarray, result: dict, *,
                         titles: tuple[str, str] = ("Baseline", "Post")) -> bytes:
    """Both peak-opacity images side by side (contrast dark, as a venogram reads) with the findings.

    Beside the vessel, right of the direction of the centreline: a strip coloured by station burden and the
    defects (red, with their mean burden); left: the named segments (blue, with their burden). Titles carry
    each run's burden, the banner the clearance, grade and the >= 75% flag: the picture a physician reads.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    base = _check_image(baseline_peak, "baseline")
    post = _check_image(post_peak, "post")
    h, w = base.shape
    fig = Figure(figsize=(12.5, 6.8), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    fig.subplots_adjust(left=0.01, right=0.9, top=0.88, bottom=0.02, wspace=0.03)
    dx, dy = result.get("shift_px") or (0.0, 0.0)
    stations = result.get("stations") or []
    xy = np.array([[st["x"], st["y"]] for st in stations], dtype=float).reshape(-1, 2)
    frac = np.array([st["frac"] for st in stations], dtype=float)
    normal = _normals(xy)
    off = 0.5 * float(result.get("diameter_px") or 8.0) + max(4.0, 0.01 * max(h, w))
    sc = None
    for k, (ax, img, key, shift) in enumerate(zip(
            axes, (base, post), ("burden_baseline_pct", "burden_post_pct"), ((0.0, 0.0), (dx, dy)))):
        finite = img[np.isfinite(img)]
        lo = float(np.percentile(finite, 5.0)) if finite.size else 0.0
        hi = float(np.percentile(finite, 99.7)) if finite.size else 1.0
        ax.imshow(np.where(np.isfinite(img), img, lo), cmap="gray_r", vmin=lo, vmax=max(hi, lo + 1e-6),
                  interpolation="antialiased")
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_axis_off()
        p = xy + np.asarray(shift)
        if len(p):
            vals = np.array([np.nan if st[key] is None else st[key] for st in stations], dtype=float)
            strip = p + off * normal
            sc = ax.scatter(strip[:, 0], strip[:, 1], c=np.clip(np.nan_to_num(vals, nan=0.0), 0, 100), s=7,
                            cmap="RdYlGn_r", vmin=0, vmax=100, linewidths=0)
            miss = ~np.isfinite(vals)
            ax.scatter(strip[miss, 0], strip[miss, 1], s=7, c="#999999", linewidths=0)
            if k == 0:
                for d in result.get("defects", []):
                    _mark_span(ax, p, normal, frac, d["start_frac"], d["end_frac"], off + max(6.0, 0.5 * off),
                               _fmt_pct(d["mean_burden_pct"]), "#d62728", w)
            for seg in result.get("segments", []):
                _mark_span(ax, p, normal, frac, seg["start"], seg["end"], -off,
                           f"{seg['name']} {_fmt_pct(seg.get(key))}", "#1f77b4", w)
        title = f"{titles[k]}: burden {_fmt_pct(result.get(key))}"
        if k == 1:
            title += f"   (moved {dx:+.1f}, {dy:+.1f} px)"
        ax.set_title(title, fontsize=11)
    if sc is not None:
        cax = fig.add_axes([0.915, 0.2, 0.015, 0.55])
        fig.colorbar(sc, cax=cax, label="station burden %")
    clear = result.get("clearance_pct")
    if clear is None:
        why = next((n for n in result.get("notes", []) if "burden" in n), "baseline burden too low")
        head = f"Clearance not measurable: {why}"
        size = 11
    else:
        head = (f"Clearance {clear:.0f}%   grade {result.get('grade')}   "
                f">=75% removal: {'yes' if result.get('removal_ge_75') else 'no'}")
        size = 14
    fig.suptitle(head, fontsize=size, fontweight="bold")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _normals(xy: np.ndarray) -> np.ndarray:
    if len(xy) < 2:
        return np.zeros_like(xy)
    t = np.gradient(xy, axis=0)
    t /= np.maximum(np.hypot(t[:, 0], t[:, 1]), 1e-9)[:, None]
    return np.column_stack([-t[:, 1], t[:, 0]])


def _fmt_pct(v) -> str:
    return "n/a" if v is None else f"{v:.0f}%"


def _mark_span(ax, p, normal, frac, a, b, off, text, color, width):
    """A bracket beside the stations with arc fraction in [a, b], ``off`` px along the normal, and its label
    further out on the same side (a few % of the image width, so it stays readable at any size)."""
    sel = (frac >= a) & (frac <= b)
    if sel.sum() < 2:
        return
    q = p[sel] + off * normal[sel]
    ax.plot(q[:, 0], q[:, 1], color=color, lw=2.5, alpha=0.8, solid_capstyle="butt")
    mid = len(q) // 2
    label = q[mid] + np.sign(off) * 0.035 * width * normal[sel][mid]
    ax.annotate(text, xy=q[mid], xytext=label, color=color, fontsize=8, fontweight="bold",
                ha="left" if label[0] >= q[mid][0] else "right", va="center",
                arrowprops=dict(arrowstyle="-", color=color, lw=0.8),
                bbox=dict(boxstyle="round,pad=0.15", fc="white", ec=color, alpha=0.85, lw=0.6))


# --------------------------------------------------------------------------------------------- CLI body

def _fail(err, message: str) -> int:
    err.write(f"cathlab-edge clearance: {message}\n")
    return 2


def _opt_float(value, name: str, positive: bool = True) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} {value!r} is not a number") from None
    if not math.isfinite(v) or (positive and v <= 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return v


def summary_text(result: dict) -> str:
    """The readable (non-JSON) report."""
    lines = []
    clear = result["clearance_pct"]
    lines.append(f"thrombus burden   baseline {_fmt1(result['burden_baseline_pct'])}   "
                 f"post {_fmt1(result['burden_post_pct'])}")
    if clear is None:
        lines.append("clearance         not measurable")
    else:
        lines.append(f"clearance         {clear:.1f}%   grade {result['grade']} "
                     f"(II from {result['grade_thresholds'][0]:g}%, III above {result['grade_thresholds'][1]:g}%)   "
                     f">=75% removal: {'yes' if result['removal_ge_75'] else 'no'}")
    dx, dy = result["shift_px"]
    lines.append(f"registration      post = baseline moved by ({dx:+.1f}, {dy:+.1f}) px, "
                 f"match {result['registration_score']:.2f}")
    lines.append(f"vessel            {len(result['stations'])} stations ({result['stations_measured']} measured), "
                 f"reference diameter {result['diameter_px']:.1f} px")
    for seg in result["segments"]:
        c = seg["clearance_pct"]
        lines.append(f"segment {seg['name']:<10} {seg['start']:.2f}-{seg['end']:.2f}  burden "
                     f"{_fmt1(seg['burden_baseline_pct'])} -> {_fmt1(seg['burden_post_pct'])}   clearance "
                     + ("n/a" if c is None else f"{c:.1f}% grade {seg['grade']}"))
    for d in result["defects"]:
        lines.append(f"defect            arc {d['start_frac']:.2f}-{d['end_frac']:.2f}, baseline burden "
                     f"mean {_fmt1(d['mean_burden_pct'])}, peak {_fmt1(d['peak_burden_pct'])}")
    for note in result["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines) + "\n"


def _fmt1(v) -> str:
    return "n/a" if v is None else f"{v:.1f}%"


def clearance_main(baseline: str, post: str, fps: float | None, intensity: str | None, centerline: str | None,
                   diameter: float | None, segments: str | None, as_json: bool, image: str | None,
                   out=sys.stdout, err=sys.stderr) -> int:
    """``cathlab-edge clearance``: 0 on success, 2 with one line on ``err`` for bad input."""
    from core.analysis.peak import peak_opacity
    from core.sources.stacks import load_stack

    try:
        fps_v = _opt_float(fps, "--fps")
        diameter_v = _opt_float(diameter, "--diameter")
        if intensity is not None and intensity not in ("lin", "log"):
            raise ValueError(f"--intensity must be lin or log, got {intensity!r}")
        line = parse_centerline(centerline) if centerline is not None else None
        if line is not None and len(line) > MAX_CENTERLINE_POINTS:
            check_operator_centerline(line, (1 << 30, 1 << 30))   # too many points: said before the long load
        segs = parse_segments(segments)
        stacks = [load_stack(path, fps=fps_v, intensity=intensity) for path in (baseline, post)]
        if stacks[0].frames.shape[1:] != stacks[1].frames.shape[1:]:
            raise ValueError(f"baseline frames are {stacks[0].frames.shape[2]}x{stacks[0].frames.shape[1]} but "
                             f"post frames are {stacks[1].frames.shape[2]}x{stacks[1].frames.shape[1]}")
        peaks = [peak_opacity(st) for st in stacks]
        if line is not None:
            line = check_operator_centerline(line, peaks[0].shape)
        result = measure_clearance(peaks[0], peaks[1], centerline=line, diameter_px=diameter_v, segments=segs)
    except ValueError as exc:
        return _fail(err, str(exc).splitlines()[0] if str(exc) else "invalid input")
    if image is not None:
        try:
            png = render_clearance_png(peaks[0], peaks[1], result)
            with open(image, "wb") as fh:
                fh.write(png)
        except OSError as exc:
            return _fail(err, f"cannot write --image {image}: {exc.strerror or exc}")
    if as_json:
        out.write(json.dumps(result, allow_nan=False) + "\n")
    else:
        out.write(summary_text(result))
    return 0


# --------------------------------------------------------------------------------------------- live

@dataclass
class _Run:
    run_id: str
    peak: np.ndarray
    label: str | None


@dataclass
class ClearanceTracker:
    """Live clearance over a procedure: pure state, no I/O, no threads (the appliance serialises calls).

    Every baseline stands for one anatomy (one vein segment under the C-arm). A new run is registered to
    each baseline and belongs to the best match if its score reaches ``min_score``.
    Labels: "baseline" makes the run the baseline of its anatomy (replacing the one it matches, if any);
    "intraprocedural" / "completion" are measured against the matching baseline, or not paired if none
    matches; None (automatic) is measured like them, except that a run with an opacified vessel that
    matches no baseline is the first run of a new anatomy, so it becomes that anatomy's baseline.
    ``add_run`` returns the result against the baseline (the ``measure_clearance`` dict plus ``run_id``,
    ``baseline_run_id``, ``label``), or None for a baseline or an unpaired run. Relabelling replays the
    runs in order with their labels, so the state is always what those labels imply.
    """
    min_score: float = 0.35
    grade_thresholds: tuple[float, float] = DEFAULT_GRADES
    max_runs: int = 32
    unpaired: int = field(default=0, init=False)     # runs that matched no baseline
    _runs: dict[str, _Run] = field(default_factory=dict, init=False, repr=False)
    _order: list[str] = field(default_factory=list, init=False, repr=False)
    _baselines: list[str] = field(default_factory=list, init=False)
    _results: dict[str, dict] = field(default_factory=dict, init=False, repr=False)
    _registrations: dict[tuple[str, str], Registration] = field(default_factory=dict, init=False, repr=False)
    _vessels: dict[str, tuple[np.ndarray, float] | None] = field(default_factory=dict, init=False, repr=False)
    _centerlines: dict[str, tuple[np.ndarray, float | None]] = field(default_factory=dict, init=False, repr=False)
    _latest: dict | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.grade_thresholds = _check_thresholds(self.grade_thresholds)
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score must be in [0, 1], got {self.min_score}")
        if not (isinstance(self.max_runs, int) and self.max_runs >= 2):
            raise ValueError(f"max_runs must be an integer >= 2, got {self.max_runs!r}")

    # -- inputs
    def add_run(self, run_id: str, peak_opacity: np.ndarray, label: str | None = None) -> dict | None:
        """A finished contrast run: its clearance against its anatomy's baseline, or None."""
        run_id = self._check_id(run_id)
        if run_id in self._runs:
            raise ValueError(f"run {run_id!r} was already added")
        _check_label(label)
        peak = _check_image(peak_opacity, f"run {run_id}").copy()
        self._runs[run_id] = _Run(run_id, peak, label)
        self._order.append(run_id)
        self._forget_old()
        return self._place(run_id)

    def set_centerline(self, points, diameter_px: float | None) -> dict | None:
        """Operator's centreline and reference diameter for the current anatomy, in the image coordinates of
        its baseline (``baseline_id``); None clears them (automatic again). Other anatomies are unaffected;
        a new baseline for this anatomy starts automatic again. Returns the new latest result."""
        base = self.baseline_id
        if base is None:
            if points is None:
                return self._latest     # nothing drawn, nothing to clear
            raise ValueError("no baseline yet: a centreline is drawn on the baseline image")
        if points is None:
            self._centerlines.pop(base, None)
        else:
            line = check_operator_centerline(points, self._runs[base].peak.shape).copy()
            if diameter_px is not None and not (isinstance(diameter_px, numbers.Real) and
                                                math.isfinite(diameter_px) and diameter_px >= 1):
                raise ValueError(f"diameter_px must be a number >= 1, got {diameter_px!r}")
            self._centerlines[base] = (line, None if diameter_px is None else float(diameter_px))
        self._replay()
        return self._latest

    def relabel(self, run_id: str, label: str | None) -> dict | None:
        """Change a run's label and replay the procedure; returns the new latest result."""
        run_id = self._check_id(run_id)
        if run_id not in self._runs:
            raise ValueError(f"unknown run {run_id!r}")
        _check_label(label)
        self._runs[run_id].label = label
        self._replay()
        return self._latest

    # -- outputs
    def latest(self) -> dict | None:
        return self._latest

    def result(self, run_id: str) -> dict | None:
        """The result of a run against its baseline (None for a baseline or an unpaired run)."""
        return self._results.get(run_id)

    @property
    def baseline_id(self) -> str | None:
        """The baseline of the latest result, else the most recent baseline."""
        if self._latest is not None:
            return self._latest["baseline_run_id"]
        return self._baselines[-1] if self._baselines else None

    @property
    def baselines(self) -> tuple[str, ...]:
        return tuple(self._baselines)

    def render_png(self, result: dict | None = None) -> bytes:
        """Side-by-side PNG of a result's two runs (default: the latest result)."""
        result = result if result is not None else self._latest
        if result is None:
            raise ValueError("no clearance result to draw yet")
        try:
            b = self._runs[result["baseline_run_id"]].peak
            p = self._runs[result["run_id"]].peak
        except KeyError:
            raise ValueError("the runs of this result are no longer kept") from None
        label = (result.get("label") or "run").capitalize()
        return render_clearance_png(b, p, result, titles=(f"Baseline {result['baseline_run_id']}",
                                                          f"{label} {result['run_id']}"))

    # -- internals
    @staticmethod
    def _check_id(run_id) -> str:
        if not isinstance(run_id, str) or not run_id:
            raise ValueError(f"run_id must be a non-empty string, got {run_id!r}")
        return run_id

    def _vessel(self, run_id: str) -> tuple[np.ndarray, float] | None:
        if run_id not in self._vessels:
            try:
                v = find_vessel(self._runs[run_id].peak)
                self._vessels[run_id] = (v.centerline, v.diameter_px)
            except ValueError:
                self._vessels[run_id] = None
        return self._vessels[run_id]

    def _registration(self, base_id: str, run_id: str) -> Registration | None:
        key = (base_id, run_id)
        if key not in self._registrations:
            a, b = self._runs[base_id].peak, self._runs[run_id].peak
            self._registrations[key] = register(a, b) if a.shape == b.shape else None
        return self._registrations[key]

    def _best_baseline(self, run_id: str) -> tuple[str, Registration] | None:
        best = None
        for base_id in self._baselines:
            reg = self._registration(base_id, run_id)
            if reg is not None and reg.score >= self.min_score and (best is None or reg.score > best[1].score):
                best = (base_id, reg)
        return best

    def _place(self, run_id: str) -> dict | None:
        run = self._runs[run_id]
        match = self._best_baseline(run_id)
        if run.label == "baseline":
            if match is not None:
                self._baselines.remove(match[0])      # the operator restarts this anatomy's reference
            self._baselines.append(run_id)
            return None
        if match is None:
            if run.label is None and self._vessel(run_id) is not None:
                self._baselines.append(run_id)          # first contrast run of a new anatomy
            else:
                self.unpaired += 1
            return None
        base_id, reg = match
        if base_id in self._centerlines:
            line, diameter = self._centerlines[base_id]
        else:
            found = self._vessel(base_id)
            if found is None:
                return None
            line, diameter = found
        try:
            result = measure_clearance(self._runs[base_id].peak, run.peak, centerline=line, diameter_px=diameter,
                                       grade_thresholds=self.grade_thresholds, registration=reg)
        except ValueError:
            self.unpaired += 1
            return None
        result.update(run_id=run_id, baseline_run_id=base_id, label=run.label)
        self._results[run_id] = result
        self._latest = result
        return result

    def _replay(self) -> None:
        self._baselines, self._results, self._latest, self.unpaired = [], {}, None, 0
        for run_id in self._order:
            self._place(run_id)

    def _forget_old(self) -> None:
        # Bounded memory over a long procedure: drop the oldest runs that are not a baseline.
        while len(self._order) > self.max_runs:
            victim = next((r for r in self._order if r not in self._baselines), self._order[0])
            self._order.remove(victim)
            del self._runs[victim]
            self._results.pop(victim, None)
            self._vessels.pop(victim, None)
            self._centerlines.pop(victim, None)
            if victim in self._baselines:
                self._baselines.remove(victim)
            self._registrations = {k: v for k, v in self._registrations.items() if victim not in k}


def _check_label(label) -> None:
    if label is not None and label not in RUN_LABELS:
        raise ValueError(f"label must be one of {', '.join(RUN_LABELS)} or None, got {label!r}")
