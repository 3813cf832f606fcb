"""What vessel sizing (core/analysis/sizing.py) says beside its numbers: where one run cannot size the vein as
it reads.

- A compression seen edge-on looks wider and fainter: a stretch read wider than the vein's fit with a clearly
  lower contrast density.
- A centreline ending on a slope: where the diameter still changes steeply over the last diameters of the line
  (a narrowing's shoulder, not a taper), the vein beyond the line is not seen: the line stops inside a narrowing
  longer than it, so the reference there is the lesion's own shoulder and the % stenosis reads low (the
  phantom's 20-diameter narrowings cut by the drawn line: 0.07-0.12 of a diameter per diameter, the reference
  8-29% low), or the narrowing runs on past it. A vein's taper is gentler (the phantom's, steeper than an iliac
  vein's: within 0.03 at either end over 48 seeds, blur 0 and 1, both centrelines).
"""
from __future__ import annotations

import numpy as np

from core.analysis.along_vessel import runs
from core.analysis.lumen import Lumen, running_median
from core.analysis.vessel import Stations

WIDE_FRACTION = 1.12         # edge-on compression: wider than the reference by this ...
FAINT_FRACTION = 0.75        # ... with a contrast density below this fraction of the patent lumen's
EDGE_ON_MIN_DIAMETERS = 0.5  # ... over at least this many diameters
MIN_STATIONS = 8
END_DIAMETERS = 2.0          # a line's end: its last this many diameters of measured stations ...
END_SLOPE = 0.05             # ... whose diameter changes by more than this share of itself per diameter
BUMP_FRACTION = 0.07         # a station this far above its running median: a branch's junction, left out there


def edge_on_warnings(stations: Stations, lumen: Lumen, diameter: np.ndarray, fit: np.ndarray, patent: np.ndarray,
                     d_typ: float, spacing: float) -> list[str]:
    """A stretch wider than the vein's fit with clearly fainter contrast: a compression seen edge-on (the fit,
    not the step-following reference, which follows a widening as it follows a confluence)."""
    k = lumen.density
    k_pat = k[patent & np.isfinite(k)]
    if k_pat.size < MIN_STATIONS:
        return []
    k0 = float(np.median(k_pat))
    half = max(1, int(round(0.25 * d_typ / spacing)))
    k_s = running_median(k, half)
    with np.errstate(invalid="ignore"):
        flag = (diameter > WIDE_FRACTION * fit) & (k_s < FAINT_FRACTION * k0)
    out = []
    for a, b in runs(flag):
        if (b - a) * spacing < EDGE_ON_MIN_DIAMETERS * d_typ:
            continue
        m = (a + b - 1) // 2
        out.append(f"the vein reads wider and fainter at ({stations.xy[m, 0]:.0f}, {stations.xy[m, 1]:.0f}) "
                   f"(arc {stations.frac[a]:.2f}-{stations.frac[b - 1]:.2f}): possibly a compression seen "
                   "edge-on, which one projection cannot size; a second projection would show it")
    return out


def end_warnings(stations: Stations, diameter: np.ndarray, d_typ: float) -> list[str]:
    """Each end of the measured line where the diameter still changes steeply (end_slopes)."""
    out = []
    for k, slope in end_slopes(stations.s, diameter, d_typ):
        where = f"the centreline's {'start' if k == 0 else 'end'} ({stations.xy[k, 0]:.0f}, {stations.xy[k, 1]:.0f})"
        if slope > 0:
            out.append(f"the vein still widens steeply towards {where}: the line may stop inside a narrowing's "
                       "shoulder, where the reference reads low and so does the % stenosis; a centreline drawn a "
                       "few diameters into healthy vein on both sides measures it")
        else:
            out.append(f"the vein still narrows steeply towards {where}: the narrowing may go on past the line, "
                       "unmeasured; a centreline drawn a few diameters into healthy vein on both sides measures it")
    return out


def end_slopes(s: np.ndarray, diameter: np.ndarray, d_typ: float) -> list[tuple[int, float]]:
    """[(station index of the end, slope)] for the ends of the measured stations (finite ``diameter``) whose
    straight-line fit over their last END_DIAMETERS diameters changes by more than END_SLOPE of a diameter per
    diameter of arc; the slope's sign: positive where the vein widens towards the end."""
    ok = np.flatnonzero(np.isfinite(diameter))
    if len(ok) < MIN_STATIONS or not d_typ > 0:
        return []
    # A branch's junction near the end is a bump a diameter or less long (a collateral's read 0.18 as a line's
    # slope): left out, as stations above their running median over +-1 diameter (a narrowing's shoulder is
    # longer, and smooth: it stays).
    spacing = float(np.median(np.diff(s)))
    smooth = running_median(diameter, max(1, int(round(d_typ / spacing))))
    with np.errstate(invalid="ignore"):
        bump = diameter > (1.0 + BUMP_FRACTION) * smooth
    out = []
    for k, sign in ((ok[0], -1.0), (ok[-1], 1.0)):
        near = ok[(np.abs(s[ok] - s[k]) <= END_DIAMETERS * d_typ) & ~bump[ok]]
        if len(near) < MIN_STATIONS:
            continue
        slope = sign * float(np.polyfit(s[near], diameter[near], 1)[0])   # px per px: a share per diameter
        if abs(slope) > END_SLOPE:
            out.append((int(k), slope))
    return out
