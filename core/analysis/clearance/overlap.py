"""Another vessel's column merged with the lumen's: a paired vein or a tributary lying so close to the treated
vein in projection that no valley shows between the two columns (core/analysis/neighbours.py, ``merged_columns``).

Read as one lumen, the merged column is a lumen half again to twice as wide: the shared reference (the widest
lumen any run shows) takes it, and every other run reads a burden of 60-80% there. So its stations are left out
of every run's lumen, like the stations where the two columns overlap, and the notes and warnings say so: which
run, how much of the vessel, where along it.
"""
from __future__ import annotations

import numpy as np

from core.analysis.along_vessel import dilate, quiet, running_median
from core.analysis.clearance.runs import MIN_STATIONS, STATION_SPACING_PX, _half, _Run
from core.analysis.lumen import CLOSING_LENGTHS
from core.analysis.neighbours import merged_columns


def _typical(runs: list[_Run], merged: list[np.ndarray], floor: float | None
             ) -> tuple[np.ndarray, np.ndarray] | None:
    """(lumen width, the vessel's track across) per station from the columns that stand alone (no neighbour's
    valley within a diameter, not merged). The width: the widest any run shows there (thrombus only narrows a
    column), its running median along the vessel (a taper), but no more than the lower quartile of all runs'
    alone columns over the whole vessel: where every run shows the merged column, the stretch says nothing of the
    lumen, and merged stretches can be most of a run; nor than the operator's diameter. The track: the middle of the narrowest of those columns
    (a merged column sits wide and off the vessel's axis), its running median, bridged across the rest. None when
    too few stand alone."""
    alone, middle = [], []
    for r, m in zip(runs, merged):
        out = dilate(r.lumen.crowded, 2 * _half(r)) | m
        alone.append(np.where(out, np.nan, r.lumen.width))
        middle.append(np.where(out, np.nan, r.lumen.centre))
    widths = np.vstack(alone)
    ok = np.isfinite(widths)
    if ok.sum() < MIN_STATIONS:
        if floor is None:
            return None
        return np.full(widths.shape[1], float(floor)), np.zeros(widths.shape[1])
    quartile = float(np.percentile(widths[ok], 25))
    with quiet():
        widest = np.nanmax(widths, axis=0)
    local = running_median(widest, max(1, int(round(CLOSING_LENGTHS * quartile / (4 * STATION_SPACING_PX)))))
    pick = np.argmin(np.where(ok, widths, np.inf), axis=0)
    centre = np.vstack(middle)[pick, np.arange(widths.shape[1])]
    track = running_median(centre, max(1, int(round(quartile / STATION_SPACING_PX))))
    s = np.arange(len(track))
    have = np.isfinite(track)
    track = np.interp(s, s[have], track[have]) if have.any() else np.zeros(len(track))
    typical = np.fmin(np.where(np.isfinite(local), local, quartile), quartile)
    # The operator's diameter, where given, says the lumen is no wider: a merged column is wider still.
    return (typical if floor is None else np.fmin(typical, float(floor))), track


def leave_out_merged(runs: list[_Run], floor: float | None) -> None:
    """Each run's ``merged`` stations found (twice: the first ones leave the typical width) and its lumen left
    unmeasured there, its own reference and patent stations again without them."""
    merged = [np.zeros(len(r.lumen.width), dtype=bool) for r in runs]
    for _ in range(2):
        found = _typical(runs, merged, floor)
        if found is None:
            break
        typical, track = found
        merged = [merged_columns(r.lumen.width, r.lumen.centre, r.lumen.crowded, typical, track, 2 * _half(r))
                  for r in runs]
    for r, m in zip(runs, merged):
        if m.any():
            r.leave_out(m)


def _where(mask: np.ndarray, frac: np.ndarray) -> str:
    at = frac[mask]
    return f"{mask.mean() * 100:.0f}% of the vessel, between {at.min() * 100:.0f}% and {at.max() * 100:.0f}% of its length"


def merged_note(runs: list[_Run], names: list[str], frac: np.ndarray) -> str | None:
    """The note for the stations left out as merged columns (None when there are none)."""
    parts = [f"on the {n} run over {_where(r.merged, frac)}" for r, n in zip(runs, names) if r.merged.any()]
    if not parts:
        return None
    return ("left out where another vessel's contrast column merges with the lumen's, no valley between them "
            "(a paired vein or a tributary overlapping the lumen's edge in projection): " + "; ".join(parts))


def left_out_warning(runs: list[_Run], names: list[str], beyond: np.ndarray, crowded: np.ndarray,
                     frac: np.ndarray, limit: float) -> str | None:
    """Not gradable when more than ``limit`` of the vessel is left out for other vessels' contrast, saying what
    left it out and where: merged columns, overlapping columns, more contrast than the lumen holds."""
    merged = np.any(np.vstack([r.merged for r in runs]), axis=0)
    out = beyond | crowded | merged
    share = float(out.mean()) if out.size else 0.0
    if not share > limit:
        return None
    why = []
    for r, n in zip(runs, names):
        if r.merged.any():
            why.append(f"another vessel's column merges with the lumen's (no valley between them: a paired vein "
                       f"or a tributary overlapping it in projection) on the {n} run over {_where(r.merged, frac)}")
    over = crowded & ~merged
    if over.any():
        why.append(f"another vessel's column overlaps the lumen over {_where(over, frac)}")
    if beyond.any():
        why.append(f"more contrast than the lumen holds (a junction, a tributary beside it) over {_where(beyond, frac)}")
    return (f"{share * 100:.0f}% of the vessel left out for other vessels' contrast, the burden rests on too little "
            "of it: " + "; ".join(why))


def unreadable_reason(runs: list[_Run], limit: float) -> str | None:
    """Why no run shows a round column alone to read its contrast density from, when other vessels' columns over
    more than ``limit`` of the lumen are the reason (None when they are not)."""
    hidden = np.any(np.vstack([r.crowded | r.merged for r in runs]), axis=0)
    share = float(hidden.mean()) if hidden.size else 0.0
    if not share > limit:
        return None
    return (f"another vessel's contrast column overlaps or merges with the lumen over {share * 100:.0f}% of the "
            "vessel (a paired vein or a tributary over it in projection)")
