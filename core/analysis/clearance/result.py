"""The result of a clearance measurement as shown: percentages, clearance and its verdict (grade, progression),
defects along the centreline, per-segment burden and clearance."""
from __future__ import annotations

import numpy as np

from core.analysis.clearance import density as dens
from core.analysis.clearance.grading import grade
from core.analysis.clearance.runs import STATION_SPACING_PX
from core.analysis.lumen import running_mean
from core.analysis.vessel import Stations

MIN_BASELINE_BURDEN_PCT = 5.0     # below this the baseline has too little thrombus for a clearance ratio
PROGRESSION_PCT = -5.0            # a clearance below this is progression, not a grade
REMOVAL_FLAG_PCT = 75.0           # CLOUT end point
DEFECT_BURDEN = 0.25              # a station this occluded (smoothed) is drawn as a defect


def _pct(v: float | None, nd: int = 1) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v) * 100.0, nd)


def _clearance(b0: float, b1: float) -> tuple[float | None, str | None]:
    if not np.isfinite(b0) or not np.isfinite(b1):
        return None, "not measured"
    if b0 * 100.0 < MIN_BASELINE_BURDEN_PCT:
        return None, (f"baseline burden {b0 * 100:.1f}% is below {MIN_BASELINE_BURDEN_PCT:g}%: "
                      "too little thrombus to measure clearance against")
    return (b0 - b1) / b0 * 100.0, None


def verdict(clear: float | None, gradable: bool, thresholds) -> dict:
    """clearance_pct, grade, progression, removal_ge_75 from a clearance, graded as displayed (one decimal)."""
    shown = None if clear is None else round(float(clear), 1) + 0.0
    progression = shown is not None and shown < PROGRESSION_PCT
    return {"clearance_pct": shown,
            "grade": grade(shown, thresholds) if gradable and not progression else None,
            "progression": bool(progression),
            "removal_ge_75": None if shown is None else bool(shown >= REMOVAL_FLAG_PCT)}


def _defects(burden: np.ndarray, stations: Stations, diameter_px: float, shift=(0.0, 0.0),
             where: bool = False) -> list[dict]:
    """Stretches of the centreline whose (smoothed) burden exceeds DEFECT_BURDEN; with ``where`` also x, y of
    the worst station (in the coordinates of the run, i.e. moved by ``shift``)."""
    half = max(1, int(round(diameter_px / (2 * STATION_SPACING_PX))))
    sm = running_mean(burden, half)
    hot = np.nan_to_num(sm, nan=0.0) > DEFECT_BURDEN
    edges = np.diff(np.concatenate([[0], hot.astype(int), [0]]))
    out = []
    for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
        seg = burden[a:b]
        has = np.isfinite(seg).any()
        d = {"start_frac": round(float(stations.frac[a]), 4), "end_frac": round(float(stations.frac[b - 1]), 4),
             "peak_burden_pct": _pct(float(np.nanmax(seg)) if has else None),
             "mean_burden_pct": _pct(float(np.nanmean(seg)) if has else None)}
        if where:
            k = a + int(np.nanargmax(np.nan_to_num(sm[a:b], nan=-1.0)))
            d["x"] = round(float(stations.xy[k, 0] + shift[0]), 1)
            d["y"] = round(float(stations.xy[k, 1] + shift[1]), 1)
        out.append(d)
    return out


def _segments(segs, stations, used, fill0, fill1, ref_area, gradable, thresholds) -> list[dict]:
    out = []
    for name, a, b in segs:
        inside = used & (stations.frac >= a) & (stations.frac <= b)
        entry = {"name": name, "start": a, "end": b, "stations": int(inside.sum())}
        if inside.sum() == 0:
            entry.update(burden_baseline_pct=None, burden_post_pct=None, clearance_pct=None, grade=None,
                         removal_ge_75=None, progression=False, note="no station measured in this segment")
        else:
            sb0 = dens.burden(fill0, ref_area, inside)
            sb1 = dens.burden(fill1, ref_area, inside)
            sc, swhy = _clearance(sb0, sb1)
            entry.update(burden_baseline_pct=_pct(sb0), burden_post_pct=_pct(sb1), **verdict(sc, gradable, thresholds))
            if swhy:
                entry["note"] = swhy
        out.append(entry)
    return out
