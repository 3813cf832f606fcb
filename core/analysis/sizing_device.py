"""A catheter or sheath lying in the sized lumen, from the run's contrast-free mask (clearance's device finder).

A device is radiopaque and static, so the peak-opacity image does not show it, yet it displaces the contrast of
its outer cross-section: through a narrowing it fills, little or no contrast is left and the column's edges read
a lumen far too narrow (down to 0); beside it, the dip it leaves in the column's middle lowers the column's
height and moves its half-height edges out. Where the mask shows a device along the lumen the diameter is read
from areas instead: the contrast around the device (its integral over the reference lumen's window, over the
contrast density of the patent lumen without a device) plus the device's own cross-section,
``d = sqrt(4 / pi * integral / k + d_device^2)``: never below the device, which the lumen holds. The device's
width is calibration's catheter fit on three chords along its stretch, their median (the tube finder's coarse
radii when every fit refuses or runs to its thinnest wall). A thin wall trades against the blur, so each chord is
fitted at the blur measured on the vein's patent stretches away from the device, as catheter calibration pins it;
where none is measured (the device and the lesion take the whole vein), the middle of the widths the chord's
profile cannot tell apart: right under blur, 5-8% narrow without it.
"""
from __future__ import annotations

import math

import numpy as np

from core.analysis.along_vessel import dilate, runs
from core.analysis.catheter_fit import WALL_AT_LIMIT
from core.analysis.catheter_profile import catheter_fit
from core.analysis.clearance.device import (
    mask_profiles,
    nearest_filled,
    tube,
    tube_stations,
)
from core.analysis.lumen import Lumen, integral_at, running_mean
from core.analysis.vein_blur import BLUR_PIECES, blur_of_pieces, piece_fits
from core.analysis.vessel import Stations

FIT_CHORD_PX = 30      # the catheter fit's chord along the device (straight enough on a vein's curve)
MIN_CHORD_PX = 12
FIT_CHORDS = 3         # chords fitted along the device's longest stretch
MIN_BLUR_STRETCH_DIAMETERS = 3.0   # a patent stretch this long gives pieces for the vein's blur (pieces: 2)
BLUR_DEVICE_PIECES = 6         # pieces fitted at most for the vein's blur beside a device
# A tube's score as a share of the column's height, below clearance's: a catheter's wall is often fainter than
# a dense column (0.14 of it: unfound, the lumen along it read 12% wide from the column's edges).
SIZING_TUBE_SHARE = 0.10
WEAK_SHARE = 0.5       # between two stretches of a device, its tube scores at least this share of the finder's limit


def find_device(mask: np.ndarray, stations: Stations, lumen: Lumen, reference: np.ndarray, patent: np.ndarray,
                half: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(stations where the mask holds a device along the lumen, the device's axis across each station, the tube
    finder's coarse outer width or NaN). ``half``: the finder's half window in stations (its score averaged and
    its place steady over it)."""
    none = np.zeros(len(stations.s), dtype=bool)
    d_ref = nearest_filled(np.asarray(reference, dtype=float))
    axis = nearest_filled(lumen.centre.copy())
    axis = np.where(np.isfinite(axis), axis, 0.0)
    across, prof = mask_profiles(mask, stations, d_ref)
    have = patent & np.isfinite(lumen.height)
    height = float(np.median(lumen.height[have])) if have.any() else math.nan
    score, off, size = scored = tube(across, prof, axis, d_ref)
    where = tube_stations(across, prof, axis, d_ref, height, half, scored, share=SIZING_TUBE_SHARE)
    if not where.any():
        return none, axis, math.nan
    # A device does not stop for a few stations: where its tube is missed (the narrowest point, where the
    # lumen hugs it) between two stretches, it is still there.
    where = _bridged(where, 4 * half)
    # Through a narrowing it fills, its walls' steps read weaker (blur, the lumen hugging it): a gap however long
    # between two stretches is still the device where its tube scores all along it, if weakly (hysteresis).
    where = _followed_through(where, running_mean(score, half), WEAK_SHARE * SIZING_TUBE_SHARE * height)
    found = where & np.isfinite(size)
    coarse = 2.0 * float(np.median(size[found])) if found.any() else math.nan
    return where, axis + np.nan_to_num(off), coarse


def device_width(mask: np.ndarray, stations: Stations, on_device: np.ndarray, where: np.ndarray, coarse: float,
                 blur: tuple[float, float, float] | None) -> float:
    """The device's outer diameter (px) found by find_device, fitted at the vein's ``blur`` (_vein_blur)."""
    return _fitted_width(mask, stations, on_device, where, coarse, blur)


def vein_blur(opacity: np.ndarray, stations: Stations, lumen: Lumen, patent: np.ndarray, device: np.ndarray
              ) -> tuple[float, float, float] | None:
    """The blur measured on the vein's patent stretches away from ``device`` (_vein_blur): one measurement per
    sizing, for the device's fit and the lumen's widths (sizing_blur). Without a device, on BLUR_PIECES pieces
    spread along the vein (each piece costs ~25 ms: a long vein's 12 would double a sizing's time)."""
    return _vein_blur(opacity, stations, lumen, patent, device, None if device.any() else BLUR_PIECES)


def _vein_blur(opacity: np.ndarray, stations: Stations, lumen: Lumen, patent: np.ndarray, device: np.ndarray,
               max_pieces: int | None = None) -> tuple[float, float, float] | None:
    """The blur measured on the vein (core.analysis.vein_blur, as catheter calibration measures it) along its
    patent stretches a diameter or more from the device: a device in the column is not a round lumen, and a
    narrowing's shoulders or a junction smear the edges. None when too few pieces fit."""
    ok = patent & np.isfinite(lumen.width)
    if not ok.any():
        return None
    d = float(np.median(lumen.width[ok]))
    free = ok & ~dilate(device, int(math.ceil(d)))
    stretches = sorted(((a, b) for a, b in runs(free) if b - a >= MIN_BLUR_STRETCH_DIAMETERS * d),
                       key=lambda r: r[0] - r[1])
    if max_pieces is not None:
        # Pieces on the longest patent stretch alone (a lesion splits the vein in two; each would take 6).
        return blur_of_pieces(piece_fits(opacity, stations.xy[stretches[0][0]:stretches[0][1]], d,
                                         max_pieces=max_pieces) if stretches else [])
    # Beside a device, BLUR_DEVICE_PIECES fitted at most, the longest stretches first (each piece ~25 ms).
    fits: list = []
    for a, b in stretches:
        left = BLUR_DEVICE_PIECES - len(fits)
        if left <= 0:
            break
        fits += piece_fits(opacity, stations.xy[a:b], d, max_pieces=left)
    return blur_of_pieces(fits)


def _fitted_width(mask: np.ndarray, stations: Stations, on_device: np.ndarray, where: np.ndarray,
                  coarse: float, blur: tuple[float, float, float] | None = None) -> float:
    """The device's outer width from the catheter fit (calibration's) on FIT_CHORDS straight chords spread along
    its longest stretch: per chord the fit at the vein's ``blur`` (a 1 px wall under blur trades against the
    blur: the fit alone takes the least blur, reading up to 12-18% wide at 1 px), else the middle of the widths
    its profile cannot tell apart (_chord_width), chords where the fit ran to its thinnest wall left out (not a
    tube there: a bone edge along it, read 15-25% narrow), the median of the rest; ``coarse`` (the tube finder's
    radii step by 0.5-1 px) when none is left. Where the device fills a narrowing its width is the MLD: one
    chord's misfit was the MLD's."""
    a, b = max(runs(where), key=lambda r: r[1] - r[0])
    n = min(FIT_CHORD_PX, b - a - 1)
    if n < MIN_CHORD_PX:
        return coarse
    widths = []
    for i0 in np.unique(np.linspace(a, b - 1 - n, FIT_CHORDS).astype(int)):
        i1 = i0 + n
        pts = stations.xy[[i0, i1]] + on_device[[i0, i1], None] * stations.normal[[i0, i1]]
        try:
            width = _chord_width(mask, pts, blur)
        except ValueError:
            continue
        if math.isfinite(width):
            widths.append(width)
    if not widths:
        return coarse
    width = float(np.median(widths))
    # The fit's width is trusted near the tube finder's (a wall or bone beside it can mislead either).
    if math.isfinite(coarse) and abs(width - coarse) > 0.3 * coarse:
        return coarse
    return width


def _chord_width(mask: np.ndarray, pts: np.ndarray, blur: tuple[float, float, float] | None) -> float:
    """One chord's width: the catheter fit at the vein's ``blur`` (the wall/blur trade pinned); without it, or
    where that fit runs to its thinnest wall, the middle of the widths the profile cannot tell apart; NaN where
    that too runs to its thinnest wall (not a tube there)."""
    if blur is not None:
        fit = catheter_fit(mask, pts, blur_px=blur[1])
        if fit.inner_fraction < WALL_AT_LIMIT:
            return fit.width_px
    fit = catheter_fit(mask, pts)
    if fit.inner_fraction >= WALL_AT_LIMIT:
        return math.nan
    lo, hi = fit.ambiguous_px
    return 0.5 * (lo + hi) if math.isfinite(lo) and math.isfinite(hi) else fit.width_px


def area_diameter(img: np.ndarray, stations: Stations, lumen: Lumen, reference: np.ndarray, patent: np.ndarray,
                  device: np.ndarray, d_device: float, half: int) -> np.ndarray:
    """Per station, ``sqrt(4 / pi * integral / k + d_device^2)`` where ``device`` (NaN elsewhere, and where the
    contrast density of the patent lumen without a device is not known)."""
    out = np.full(len(stations.s), np.nan)
    if not (device.any() and math.isfinite(d_device) and d_device > 0):
        return out
    k_ref = _patent_density(lumen, patent, device, reference, half)
    if k_ref is None:
        return out
    idx = np.flatnonzero(device & np.isfinite(reference))
    if idx.size == 0:
        return out
    sub = stations.picked(idx)
    centre = nearest_filled(lumen.centre.copy())[idx]
    integral, _ = integral_at(img, sub, np.where(np.isfinite(centre), centre, 0.0), reference[idx])
    with np.errstate(invalid="ignore"):
        area = np.clip(integral, 0.0, None) / k_ref[idx]
    out[idx] = np.sqrt(4.0 / math.pi * area + d_device ** 2)
    return out


def _patent_density(lumen: Lumen, patent: np.ndarray, device: np.ndarray, reference: np.ndarray,
                    half: int) -> np.ndarray | None:
    """The patent lumen's contrast density (Lumen.patent_density) over its stations a diameter or more from a
    device (at a device's end its tip, not yet found, lowers the column), or next to it where none is."""
    ok = np.isfinite(reference)
    pad = int(math.ceil(float(np.median(reference[ok])))) if ok.any() else 0
    k_ref = lumen.patent_density(patent & ~dilate(device, pad), half)
    return k_ref if k_ref is not None else lumen.patent_density(patent & ~device, half)


def _bridged(flag: np.ndarray, gap: int) -> np.ndarray:
    """``flag`` with its runs of False shorter than ``gap`` stations between two True runs set."""
    out = flag.copy()
    idx = np.flatnonzero(flag)
    for a, b in zip(idx[:-1], idx[1:]):
        if 1 < b - a <= gap:
            out[a:b] = True
    return out


def _followed_through(flag: np.ndarray, score: np.ndarray, weak: float) -> np.ndarray:
    """``flag`` with each run of False between two True runs set where ``score`` exceeds ``weak`` all along it."""
    out = flag.copy()
    idx = np.flatnonzero(flag)
    if not (math.isfinite(weak) and weak > 0):
        return out
    with np.errstate(invalid="ignore"):
        above = np.isfinite(score) & (score > weak)
    for a, b in zip(idx[:-1], idx[1:]):
        if b - a > 1 and above[a + 1:b].all():
            out[a + 1:b] = True
    return out
