"""The cross-run reference of a clearance measurement: the widest lumen any run shows per station, the vein's
axis, the round columns that tell a run's contrast density, and each run's density line normalised between runs
(clearance/density.py)."""
from __future__ import annotations

import numpy as np

from core.analysis.clearance import density as dens
from core.analysis.clearance import noise, normalise
from core.analysis.clearance.runs import STATION_SPACING_PX, _half, _Run
from core.analysis.lumen import running_median

ROUND_OFFSET = 0.04               # a column's middle this share of its width off its track: one side is cut


def _shared_reference(runs: list[_Run]) -> tuple[np.ndarray, np.ndarray]:
    """(widest reference any run shows per station, the runs within noise of it averaged (clearance/noise.py),
    stations some run shows patent)."""
    refs = np.vstack([r.ref for r in runs])
    sds = np.array([noise.smoothed_sd(r.lumen.width, _half(r)) for r in runs])
    return noise.shared_width(refs, sds), np.any(np.vstack([r.patent for r in runs]), axis=0)


def _track(centre: np.ndarray, width: np.ndarray) -> np.ndarray:
    ok = np.isfinite(centre) & np.isfinite(width)
    if ok.sum() < 3:
        return np.full(centre.shape, np.nan)
    d = float(np.median(width[ok]))
    return running_median(np.where(ok, centre, np.nan), max(2, int(round(2 * d / STATION_SPACING_PX))))


def _axis(runs: list[_Run]) -> np.ndarray:
    """The vein's axis per station (offset along the normal): the smoothed column middle of the run that shows
    the widest lumen there, i.e. a whole column, not one cut on a side."""
    refs = np.vstack([np.nan_to_num(r.ref, nan=-1.0) for r in runs])
    tracks = np.vstack([_track(r.lumen.centre, r.lumen.width) for r in runs])
    best = np.argmax(refs, axis=0)
    return tracks[best, np.arange(refs.shape[1])]


def round_column(centre: np.ndarray, width: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Stations whose column sits symmetric on the vein's axis: a round lumen (whole, or lined evenly by
    thrombus), the only kind whose shape tells its contrast density. A thrombus beside the lumen cuts one side
    of the column, moves its middle off the axis, and reads too dense."""
    ok = np.isfinite(centre) & np.isfinite(width) & np.isfinite(axis)
    with np.errstate(invalid="ignore"):
        return ok & (np.abs(centre - axis) <= np.maximum(0.5, ROUND_OFFSET * width))


def _densities(runs: list[_Run], pool: bool = True) -> None:
    """Each run's density line from its own patent columns, pooled with the baseline's where the two show the same
    lumen (clearance/normalise.py); a run with too few takes another run's line scaled by the integrals' ratio on
    the stations patent in both (normalised between runs)."""
    s = runs[0].stations.s
    for r in runs:
        r.line = dens.density_line(s, r.lumen.density, r.full)
    if pool:
        normalise.pool(s, runs, [_half(r) for r in runs])
    for r in runs:
        if r.line is not None:
            continue
        for o in runs:
            if o.line is None:
                continue
            q = dens.contrast_ratio(r.integral, o.integral, r.full & o.full)
            if q is not None and q > 0:
                r.line = (o.line[0] * q, o.line[1] * q)
                break
        if r.line is None:
            # Nothing round to read: the first readable run's line, unscaled; said in the warnings.
            r.line = next((o.line for o in runs if o.line is not None and o.line is not r.line), None)
            r.borrowed = True
        if r.line is None:
            raise ValueError("no patent contrast column to read the contrast density from (no usable contrast)")
        if not np.all(dens.line_at(r.line, s) > 0):
            raise ValueError("the contrast density falls to zero along the vessel: no usable contrast")
