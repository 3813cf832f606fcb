"""The automatic centreline for sizing: one vessel, never two joined through the background.

find_vessel bridges gaps of up to GAP_BRIDGE_PX so that an occlusion does not split a thrombosed vein (clearance
relies on that). Beside a paired vein or a collateral its longest path may run along one column, cross the
background sideways and carry on along the other: sized as it stands, the crossing reads as a lumen of 0, a
"100% stenosis" that is not there. A crossing is told from an occlusion (or a tight narrowing) by its geometry:
a vessel's lumen, even where no contrast gets through, carries on along the line of the vessel either side of
it; a crossing to another vessel leaves that line sideways by more than a diameter (two columns with background
between them are at least that far apart) and ends on a line of its own.

At such a crossing the path is cut, the more opacified piece kept (the contrast per unit length: the wider or
better filled vessel; find_vessel's promise is the most opacified vessel), the vessel(s) of the other pieces
blanked, and the path found again on what is left, so the kept vessel is followed over its whole length.
Near an end of the path the piece beyond the crossing may be a short stub of the other vessel (shorter than the
bend into the crossing): the crossing is then judged on the long piece's line alone. Where no line can be had on
either side, or a crossing is left after the refinds, no lumen is read there: sizing refuses when its lesion falls
in such a stretch (``untrusted_gap``).

The path need not cross at all: where two vessels of about the same length lie side by side, the longest path
runs along either one as the blur, the noise or a few px of length tip it. Beside a whole other vessel the
same rule chooses: the followed vessel is blanked (its coarse pieces, or its column alone where those hold both
vessels), the other one found, and the more opacified of the two kept (``vessel_beside``, ``more_opacified``:
judged where each is fullest, since a long narrowing lowers the treated vein's median), so which vessel is sized
does not hang on which one's path is a little longer, nor on which piece a crossing kept.
"""
from __future__ import annotations

import numpy as np

from core.analysis.along_vessel import runs
from core.analysis.lumen import Lumen
from core.analysis.vessel import Stations
from core.analysis.vessel_find import find_vessel, opacified_pieces

EMPTY_SHARE = 0.25         # a station whose column integrates below this share of the median holds no column ...
OBLIQUE_FAINT = 0.6        # ... nor one whose contrast density reads below this share of the median (the profile
#                            runs along a column: read wider by 1 / sin of the angle, the integral by the same)
NO_COLUMN_SNR = 5.0        # ... and, at the path's ends, one standing less than this many noise sd high: background
MERGE_DIAMETERS = 1.0      # empty stretches closer than this are one gap
PIECE_DIAMETERS = 2.0      # each piece's line from this many diameters beside the gap (a shorter piece: none)
HOP_OFFSET_DIAMETERS = 1.0  # the far piece this far off the near piece's line (and the other way): a crossing
MIN_PIECE_DIAMETERS = 4.0  # a piece shorter than this is not chosen while a longer one is there
MAX_REFINDS = 2
COLUMN_BLANK_RADII = 1.0   # a followed column blanked out to its widest half width (plus the margin)
BLANK_BLOCK = 128          # stations whose discs are blanked at once
OPACIFIED_PERCENTILE = 90  # a vessel's contrast per unit length where it is fullest
JUMP_DIAMETERS = 0.75      # the column's middle moving this far between stations: it switched vessel
BESIDE_MIN_LENGTH = 0.5    # a vessel beside is a rival when at least this share of the followed one's length
BESIDE_CHOICE_WARNING = ("the automatic centreline first followed a less opacified vessel beside this one (a paired "
                         "vein or a collateral): the more opacified one is sized; draw the centreline to choose")

HOP, OCCLUSION, UNJUDGED = "hop", "occlusion", "unjudged"
HOP_WARNING = ("the automatic centreline crossed the background from one vessel to another beside it (a paired "
               "vein or a collateral): the more opacified one is sized alone; draw the centreline to choose")


def side_hops(stations: Stations, lumen: Lumen) -> list[tuple[int, int]]:
    """Station ranges [a, b) where the path leaves one vessel sideways for another (not an occlusion)."""
    return [(a, b) for a, b, kind in path_gaps(stations, lumen) if kind == HOP]


def background_ends(stations: Stations, lumen: Lumen) -> tuple[int, int]:
    """[lo, hi) of the path without the stations at either end that hold no column (not measured, or an integral
    below EMPTY_SHARE of the median from a column under NO_COLUMN_SNR noise sd high), when any of them was read.
    A column's path never ends in the background (find_vessel trims a diameter off each end of it): it does so
    only after crossing to another vessel whose stub that trim took off, and read there it is a lumen of 0."""
    m = len(stations.s)
    ok = np.isfinite(lumen.integral) & np.isfinite(lumen.width)
    if ok.sum() < 8 or not lumen.noise > 0:
        return 0, m
    med = float(np.median(lumen.integral[ok]))
    with np.errstate(invalid="ignore"):
        none = ~ok | ((lumen.integral < EMPTY_SHARE * med) & (lumen.height < NO_COLUMN_SNR * lumen.noise))
    lo, hi = 0, m
    while lo < m and none[lo]:
        lo += 1
    while hi > lo and none[hi - 1]:
        hi -= 1
    read = ok[:lo].any() or ok[hi:].any()
    return (lo, hi) if read and lo < hi else (0, m)


def untrusted_gap(stations: Stations, lumen: Lumen, k: int) -> tuple[int, int] | None:
    """The stretch [a, b) without a column between two pieces of the path that holds station ``k`` and is not
    judged an occlusion (a crossing left, or one that cannot be judged): no lumen may be read there."""
    for a, b, kind in path_gaps(stations, lumen):
        if a <= k < b and kind != OCCLUSION:
            return a, b
    return None


def path_gaps(stations: Stations, lumen: Lumen) -> list[tuple[int, int, str]]:
    """(a, b, kind) of each stretch [a, b) without a contrast column between two pieces of the path: HOP (it
    leaves one vessel's line sideways), OCCLUSION (it carries on along the line) or UNJUDGED (no piece beside
    it long enough to give a line). Stretches at the path's ends are not listed (the vessel leaves the field)."""
    width, integral, density = lumen.width, lumen.integral, lumen.density
    ok = np.isfinite(integral) & np.isfinite(width)
    m = len(stations.s)
    if ok.sum() < 8:
        return []
    d = float(np.median(width[ok]))
    med = float(np.median(integral[ok]))
    # Oblique reads by the density, not by a width against the median: a path along two vessels of different
    # size (a 10 px paired vein, a 20-26 px treated one) reads the wider one >1.6 times the median all along.
    k_med = float(np.median(density[ok]))
    with np.errstate(invalid="ignore"):
        empty = ~ok | (integral < EMPTY_SHARE * med) | (density < OBLIQUE_FAINT * k_med)
    spacing = float(np.median(np.diff(stations.s))) if m > 1 else 1.0
    gaps = _stretches(empty, max(1, int(round(MERGE_DIAMETERS * d / spacing))))
    reach = max(3, int(round(PIECE_DIAMETERS * d / spacing)))
    out = []
    xy = stations.xy
    for a, b in gaps:
        if a == 0 or b == m:
            continue
        # A piece shorter than ``reach`` gives no line: the path bends into a crossing over about a diameter, so
        # a short stub beyond it (another vessel's end; find_vessel trims a diameter off each end) points along
        # the crossing itself. The gap is judged on the whole piece's line alone then.
        lines = []
        if a >= reach:
            lines.append(_unit(xy[a - 1] - xy[a - reach]))
        if b + reach <= m:
            lines.append(_unit(xy[b + reach - 1] - xy[b]))
        if not lines:
            out.append((a, b, UNJUDGED))
            continue
        chord = xy[b] - xy[a - 1]
        off = min(abs(_cross(chord, t)) for t in lines)
        out.append((a, b, HOP if off > HOP_OFFSET_DIAMETERS * d else OCCLUSION))
    return out


def one_vessel(img: np.ndarray, stations: Stations, lumen: Lumen, hops: list[tuple[int, int]]
               ) -> tuple[np.ndarray, float | None, np.ndarray]:
    """(centreline, diameter guess or None, the image the path was found on) of the vessel kept at ``hops``:
    the most opacified piece's vessel, the other pieces' vessels blanked (NaN) and the path found again; the kept
    piece itself when that fails."""
    pieces = _pieces(len(stations.s), hops)
    keep = _most_opacified(pieces, stations, lumen)
    labels, f = opacified_pieces(img)
    kept = _labels_under(labels, f, stations.xy[slice(*keep)])
    other = set()
    for p in pieces:
        if p != keep:
            other |= _labels_under(labels, f, stations.xy[slice(*p)])
    other -= kept
    fallback = (stations.xy[slice(*keep)], None, img)
    if not other:
        return fallback
    work = _blanked(img, labels, f, other)
    try:
        v = find_vessel(work)
    except ValueError:
        return fallback
    return v.centerline, v.diameter_px, work


def vessel_beside(img: np.ndarray, stations: Stations, lumen: Lumen | None = None
                  ) -> tuple[np.ndarray, float | None] | None:
    """(centreline, diameter guess) of the longest vessel left once the pieces the path runs through are blanked
    (NaN), when it is at least BESIDE_MIN_LENGTH of the path's length; None when there is no such vessel.
    Where the coarse pieces under the path hold the other vessel too (the two columns join somewhere, or the
    blur merges them), the followed column alone is blanked: every pixel within its half width and a margin
    of the path (``lumen``: its widths)."""
    labels, f = opacified_pieces(img)
    followed = _labels_under(labels, f, stations.xy)
    work = None
    if followed and len(set(np.unique(labels).tolist()) - followed - {0}) > 0:
        work = _blanked(img, labels, f, followed)
    elif lumen is not None and np.isfinite(lumen.width).any():
        work = _column_blanked(img, stations, lumen)
    if work is None:
        return None
    try:
        v = find_vessel(work)
    except ValueError:
        return None
    length = float(np.sum(np.hypot(*np.diff(v.centerline, axis=0).T)))
    if length < BESIDE_MIN_LENGTH * stations.length:
        return None
    return v.centerline, v.diameter_px


def _column_blanked(img: np.ndarray, stations: Stations, lumen: Lumen) -> np.ndarray:
    """``img`` with the followed column set to NaN: within COLUMN_BLANK_RADII of its widest (95th percentile)
    half width, plus a margin, of every station's column middle."""
    w = float(np.nanpercentile(lumen.width, 95))
    r = COLUMN_BLANK_RADII * w / 2 + max(2.0, 0.3 * w)
    centre = np.nan_to_num(lumen.centre)
    xy = stations.xy + centre[:, None] * stations.normal
    h, wd = img.shape
    n = int(np.ceil(r))
    dy, dx = np.mgrid[-n:n + 1, -n:n + 1]
    disc = dx ** 2 + dy ** 2 <= r * r
    # The stations' discs a block at a time: each (station, disc pixel) pair inside the image (blocks bound the
    # memory on a long, wide vein).
    pts = np.round(xy).astype(np.int32)
    oy, ox = dy[disc].astype(np.int32), dx[disc].astype(np.int32)
    blank = np.zeros((h, wd), dtype=bool)
    for i in range(0, len(pts), BLANK_BLOCK):
        ys = (pts[i:i + BLANK_BLOCK, 1:2] + oy[None, :]).ravel()
        xs = (pts[i:i + BLANK_BLOCK, 0:1] + ox[None, :]).ravel()
        inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < wd)
        blank[ys[inside], xs[inside]] = True
    return np.where(blank, np.nan, img).astype(np.float32)


def more_opacified(a: Lumen, b: Lumen) -> bool:
    """``a`` holds more contrast per unit length than ``b`` where each is fullest (the OPACIFIED_PERCENTILE of
    its column integrals: a median falls with a long narrowing, which is what is to be sized)."""
    def full(lumen: Lumen) -> float:
        v = lumen.integral[np.isfinite(lumen.integral)]
        return float(np.percentile(v, OPACIFIED_PERCENTILE)) if v.size else -np.inf
    return full(a) > full(b)


def column_jump(stations: Stations, lumen: Lumen, lo: int, hi: int, d_typ: float) -> int | None:
    """A station of [lo, hi] where the column read jumps sideways: its middle moves by more than JUMP_DIAMETERS of
    the typical diameter ``d_typ`` from the last station holding a column, beyond the distance along. A lumen's
    middle does not move so; a path that runs on where another vessel's column touches this one does (the
    column read switches vessel there). None when it does not."""
    # Only stations holding a column (an occlusion's noise has no middle to follow; across it the column's
    # middle carries on along the vessel's line).
    with np.errstate(invalid="ignore"):
        column = (lumen.integral >= EMPTY_SHARE * np.nanmedian(lumen.integral)) \
            & (lumen.height >= NO_COLUMN_SNR * lumen.noise)
    idx = np.flatnonzero((np.isfinite(lumen.centre) & column)[lo:hi + 1]) + lo
    if idx.size < 2:
        return None
    mid = stations.xy[idx] + lumen.centre[idx, None] * stations.normal[idx]
    moved = np.hypot(*np.diff(mid, axis=0).T) - np.diff(stations.s[idx])
    big = np.flatnonzero(moved > JUMP_DIAMETERS * d_typ)
    return int(idx[big[0] + 1]) if big.size else None


def kept_piece(stations: Stations, lumen: Lumen, hops: list[tuple[int, int]]) -> tuple[int, int]:
    """[a, b) of the most opacified piece between ``hops``."""
    return _most_opacified(_pieces(len(stations.s), hops), stations, lumen)


def _pieces(m: int, hops: list[tuple[int, int]]) -> list[tuple[int, int]]:
    bounds = [0] + [x for ab in hops for x in ab] + [m]
    return [(bounds[i], bounds[i + 1]) for i in range(0, len(bounds), 2) if bounds[i + 1] > bounds[i]]


def _most_opacified(pieces: list[tuple[int, int]], stations: Stations, lumen: Lumen) -> tuple[int, int]:
    """The piece with the most contrast per unit length (median column integral), among the long enough ones."""
    ok = np.isfinite(lumen.width)
    d = float(np.median(lumen.width[ok])) if ok.any() else 1.0
    spacing = float(np.median(np.diff(stations.s))) if len(stations.s) > 1 else 1.0
    long_enough = [p for p in pieces if (p[1] - p[0]) * spacing >= MIN_PIECE_DIAMETERS * d]
    if not long_enough:
        return max(pieces, key=lambda p: p[1] - p[0])

    def score(p: tuple[int, int]) -> float:
        v = lumen.integral[p[0]:p[1]]
        v = v[np.isfinite(v)]
        return float(np.median(v)) if v.size else -np.inf
    return max(long_enough, key=score)


def _labels_under(labels: np.ndarray, f: int, xy: np.ndarray) -> set[int]:
    h, w = labels.shape
    r = np.clip((xy[:, 1] // f).astype(int), 0, h - 1)
    c = np.clip((xy[:, 0] // f).astype(int), 0, w - 1)
    return {int(v) for v in np.unique(labels[r, c]) if v > 0}


def _blanked(img: np.ndarray, labels: np.ndarray, f: int, ids: set[int]) -> np.ndarray:
    """``img`` with the coarse pieces ``ids`` (and their fringe) set to NaN."""
    blank = _grow(np.isin(labels, sorted(ids)))
    full = np.zeros(img.shape, dtype=bool)
    up = np.repeat(np.repeat(blank, f, axis=0), f, axis=1)
    full[:up.shape[0], :up.shape[1]] = up[:img.shape[0], :img.shape[1]]
    return np.where(full, np.nan, img).astype(np.float32)


def _grow(mask: np.ndarray) -> np.ndarray:
    """``mask`` grown by one cell (8-neighbours): the blanked column's fringe goes too."""
    p = np.pad(mask, 1)
    out = np.zeros_like(mask)
    h, w = mask.shape
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            out |= p[dy:dy + h, dx:dx + w]
    return out


def _stretches(flag: np.ndarray, merge: int) -> list[tuple[int, int]]:
    """[a, b) runs of ``flag``, runs closer than ``merge`` stations joined."""
    out: list[tuple[int, int]] = []
    for a, b in runs(flag):
        if out and a - out[-1][1] < merge:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.hypot(v[0], v[1]))
    return v / n if n > 0 else v


def _cross(a: np.ndarray, b: np.ndarray) -> float:
    return float(a[0] * b[1] - a[1] * b[0])
