"""The diameter profile of a sizing result, made small enough for the status page to draw live: a few hundred
numbers instead of one row per pixel, in millimetres when calibrated, with the lesion's place and stretch.

Computed from the result's JSON alone (not the image), so a result rebuilt from the event log draws the same.
"""
from __future__ import annotations

import math

import numpy as np

from core.analysis.along_vessel import run_around
from core.analysis.sizing import LESION_FRACTION

MAX_POINTS = 120     # a 1080p panel is a few hundred px wide: more points draw nothing more


def profile_plot(result: dict, max_points: int = MAX_POINTS) -> dict | None:
    """``{"unit", "s", "diameter", "reference", "lesion_s", "lesion_from_s", "lesion_to_s"}`` (None without
    a profile). Stations are thinned by keeping, in each of ``max_points`` bins, the one most narrowed against
    its reference: a short narrowing is never thinned away, and the lesion's station is always kept."""
    rows = result.get("profile") or []
    s = np.array([_f(r.get("s_px")) for r in rows])
    length = float(np.nanmax(s)) if np.isfinite(s).any() else math.nan     # the last station's arc length
    d = np.array([_f(r.get("diameter_px")) for r in rows])
    ref = np.array([_f(r.get("reference_px")) for r in rows])
    ok = np.isfinite(s) & np.isfinite(d) & np.isfinite(ref) & (ref > 0)
    if ok.sum() < 2:
        return None
    s, d, ref = s[ok], d[ok], ref[ok]
    ratio = d / ref
    lesion = _lesion_index(result, s, ratio, length)
    below = ratio < LESION_FRACTION
    lo, hi = run_around(below, lesion) if below[lesion] else (lesion, lesion)
    keep = {lesion, 0, len(s) - 1}
    for part in np.array_split(np.arange(len(s)), min(max_points, len(s))):
        keep.add(int(part[np.argmin(ratio[part])]))
    idx = np.array(sorted(keep))
    mm = result.get("mm_per_px") if result.get("calibration") is not None else None
    f = float(mm) if mm else 1.0

    def scaled(v: np.ndarray) -> list[float]:
        return [round(float(x) * f, 2) for x in v]
    return {"unit": "mm" if mm else "px", "s": scaled(s[idx]), "diameter": scaled(d[idx]),
            "reference": scaled(ref[idx]), "lesion_s": round(float(s[lesion]) * f, 2),
            "lesion_from_s": round(float(s[lo]) * f, 2) if below[lesion] else None,
            "lesion_to_s": round(float(s[hi]) * f, 2) if below[lesion] else None}


def _lesion_index(result: dict, s: np.ndarray, ratio: np.ndarray, length: float) -> int:
    """The station sizing reported as the lesion (its arc fraction: on a flat bottom the middle of the stretch
    within the noise of the greatest stenosis, core.analysis.sizing); the greatest stenosis without one."""
    frac = _f((result.get("lesion") or {}).get("frac"))
    if math.isfinite(frac) and math.isfinite(length):
        return int(np.argmin(np.abs(s - frac * length)))
    return int(np.argmin(ratio))


def _f(v) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else math.nan
