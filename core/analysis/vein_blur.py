"""The imaging system's blur measured on the vein (core.analysis.calibration's catheter calibration): its lumen
is wide compared with the blur and lies at the catheter's depth, so the same focal-spot and detector blur.

Pieces of the vein (two diameters long, end to end along it: 6-12) are fitted with a blurred solid cylinder
(core.analysis.catheter_profile.catheter_fit_width, solid). Anything in a piece but a steady, straight, round
column smears the mean profile's edges, which the fit reads as blur: at blur 0 the phantom's pieces at a bend
read 0.1-0.3 px, at a junction or a lesion's shoulder up to 0.5 px (sweep seed 13's vein read 0.21 px from
six straight pieces' median, and its catheter was refused), and a taper too (a straight vertical vein widening
12 -> 24 px over 330 px: 0.17 px at blur 0, 1.016 at 1 px). So:
- each piece is crossed square to the parabola through its centreline (a straight chord across a bend meets
  the vein obliquely, more at its ends than its middle: a 16 px vein swinging 8 px read 0.15 px at blur 0);
- the blur is that of the pieces agreeing with the lower half's median: a smear adds blur, never removes it,
  so with most pieces smeared the clean ones still give it.
Not done: a taper taken out by sampling each station at its width's scale (tried: on that tapered vein the
pieces still read 0.01-0.19 px at blur 0, half of them as before, likely because the bilinear sampler,
catheter_sampling.bilinear_sampler, then models the samples where they were not: on a vein along the pixel grid
the phase matters); it needs the sampler to take each station's scale.
"""
from __future__ import annotations

import math

import numpy as np

from core.analysis.catheter_fit import TubeFit
from core.analysis.catheter_profile import ACROSS_STEP_PX, ALONG_PX, catheter_fit_width
from core.analysis.vessel import Stations, resample_polyline, sample_profiles

__all__ = ["vessel_blur", "piece_fits", "blur_of_pieces"]

BLUR_PIECES = 6                   # pieces of the vein measured at least, spread along it
PIECE_DIAMETERS = 2.0             # each piece this many diameters long (straight enough)
MIN_PIECE_PX, MAX_PIECE_PX = 20.0, 60.0
BLUR_MAX_RESIDUAL = 0.02          # rms misfit / the column's height: a round lumen
MISFIT_RATIO = 3.0                # ... and at most this many times the better half's (their median)
BLUR_MIN_PIECES = 2
BLUR_FLOOR_PX = 0.02              # the blur measured on the vein is given no closer than this
MAX_TAPER = 0.15                  # a piece whose width changes by more along it is not a steady lumen
BACKGROUND_PX = 6.0               # the outer band of each profile its background line is fitted to
MIN_STATIONS = 8
AGREE_SDS = 3.0                   # a piece this many spreads from the lower half's median is not the system's
MAX_PIECES = 12                   # on a long vein: pieces end to end, up to this many


def vessel_blur(opacity: np.ndarray, centerline: np.ndarray, diameter_px: float,
                avoid: np.ndarray | None = None, ln_opacity: bool = False) -> tuple[float, float, float] | None:
    """(lowest, measured, highest) blur sd (px) from the vein of ``opacity`` (higher = more contrast) along
    ``centerline``: the pieces' fits (piece_fits) that fit a round lumen and agree with the lower half's median;
    None when fewer than BLUR_MIN_PIECES do. ``avoid``: points (a catheter's) whose neighbourhood (a diameter) is
    left out; ``ln_opacity``: the opacity is ln of linear counts (the blur acts on the intensity)."""
    return blur_of_pieces(piece_fits(opacity, centerline, diameter_px, avoid, ln_opacity))


def blur_of_pieces(fits: list[TubeFit]) -> tuple[float, float, float] | None:
    """(lowest, measured, highest) blur sd (px) from pieces' solid-column fits (piece_fits, on one stretch of
    the vein or several): those fitting a round lumen about as well as the better half do and agreeing with the
    lower half's median; None when fewer than BLUR_MIN_PIECES do."""
    found = [f for f in fits if f.residual <= BLUR_MAX_RESIDUAL and math.isfinite(f.blur_px)]
    # A piece misfitting several times more than the better half (something under the column besides the vein:
    # a bone's edge in its background) can read less blur, not only more: at a 2 px PSF four of seed 10's eight
    # pieces read 1.45-1.50 px at a tenth of the others' fit, the lower half's median took them, and its 6 F
    # catheter, fitted at that blur, calibrated 59% wide without a refusal.
    if len(found) > BLUR_MIN_PIECES:
        res = np.sort([f.residual for f in found])
        typical = float(np.median(res[:max(BLUR_MIN_PIECES, (len(res) + 1) // 2)]))
        found = [f for f in found if f.residual <= MISFIT_RATIO * typical]
    # Anything in a piece but a steady round lumen (a bend, a junction, a lesion's shoulder, a taper) smears its
    # edges: it reads more blur, never less (the phantom: 0.1-0.5 px on pieces at blur 0). So the pieces agreeing
    # with the lower half's median: with most pieces smeared, still the clean ones.
    b = np.sort([f.blur_px for f in found])
    if len(b) < BLUR_MIN_PIECES:
        return None
    low = b[:max(BLUR_MIN_PIECES, (len(b) + 1) // 2)]
    m0 = float(np.median(low))
    spread = max(BLUR_FLOOR_PX, 1.4826 * float(np.median(np.abs(low - m0))))
    agree = b[np.abs(b - m0) <= AGREE_SDS * spread]
    if len(agree) < BLUR_MIN_PIECES:
        return None
    # Their mean (the agreement took the smeared out), give or take twice its standard error from their scatter
    # (at least BLUR_FLOOR_PX): a 0.05 px error moves a thin wall's width 3-6%. Few pieces (a catheter and a
    # lesion take out most of a short vein): their median moved 0.01 px with one piece, 1-2% of a 6 F width.
    mid = float(np.mean(agree))
    half = max(2.0 * float(np.std(agree, ddof=1)) / math.sqrt(len(agree)), BLUR_FLOOR_PX)
    return max(0.0, mid - half), mid, mid + half


def piece_fits(opacity: np.ndarray, centerline: np.ndarray, diameter_px: float, avoid: np.ndarray | None = None,
               ln_opacity: bool = False, max_pieces: int = MAX_PIECES) -> list[TubeFit]:
    """The solid-column fits of pieces along the vein, end to end (BLUR_PIECES to ``max_pieces`` of them;
    overlapping when the vein is short; spread along it when long): those away from ``avoid``, on a column, not
    tapering by more than MAX_TAPER."""
    line, s = resample_polyline(np.asarray(centerline, dtype=float), 1.0)
    d = float(diameter_px)
    piece = float(np.clip(PIECE_DIAMETERS * d, MIN_PIECE_PX, MAX_PIECE_PX))
    if s[-1] < piece + 2 or not np.isfinite(d) or d <= 2:
        return []
    img = np.asarray(opacity, dtype=np.float32)
    out = []
    n = int(np.clip(s[-1] // piece, min(BLUR_PIECES, max_pieces), max_pieces))
    for c in np.linspace(0.5 * piece, s[-1] - 0.5 * piece, n):
        on = line[(s >= c - piece / 2) & (s <= c + piece / 2)]
        if avoid is not None and _near(on, np.asarray(avoid, dtype=float), d):
            continue
        fit = _piece_fit(img, on, d, ln_opacity)
        if fit is not None:
            out.append(fit)
    return out


def _piece_fit(img: np.ndarray, on: np.ndarray, d: float, ln_opacity: bool) -> TubeFit | None:
    """A blurred solid column fitted to the piece of centreline ``on`` (1 px apart), crossed square to its
    parabola; None when it is not a column (or its width changes along it by more than MAX_TAPER)."""
    h, w = img.shape
    if len(on) < MIN_STATIONS or np.any(on < 0) or np.any(on[:, 0] > w - 1) or np.any(on[:, 1] > h - 1):
        return None
    st = _curve_stations(on)
    half = 0.8 * d + BACKGROUND_PX
    across = np.arange(-half, half + 1e-9, ACROSS_STEP_PX)
    prof = _detrended(sample_profiles(img, st, across, ALONG_PX), across, half)
    ok = np.all(np.isfinite(prof), axis=1)
    if ok.sum() < MIN_STATIONS:
        return None
    st, prof = st.picked(ok), prof[ok]
    widths, centres = _half_height(prof, across)
    good = np.isfinite(widths)
    if good.sum() < MIN_STATIONS:
        return None
    # The width's trend along the piece (a few stations off: a noise spike), and the centre's parabola: the
    # stations moved onto the vein's axis.
    wid = np.polyval(_robust_line(st.s[good], widths[good]), st.s)
    mean_w = float(wid.mean())
    if not (2.0 < mean_w < 1.6 * d + 4) or float(np.ptp(wid)) > MAX_TAPER * mean_w:
        return None
    shift = np.polyval(_robust_line(st.s[good], centres[good], 2), st.s)
    moved = Stations(st.xy + shift[:, None] * st.normal, st.normal, st.tangent, st.s, st.length)
    prof = _detrended(sample_profiles(img, moved, across, ALONG_PX), across, half)
    ok = np.all(np.isfinite(prof), axis=1)
    if ok.sum() < MIN_STATIONS:
        return None
    # The half-height width of a blurred chord is sqrt(3) / 2 of its outer width (the blur barely moves it).
    try:
        return catheter_fit_width(across, prof[ok], np.zeros(int(ok.sum())), mean_w / (0.5 * math.sqrt(3.0)),
                                  moved.picked(ok), solid=True, ln_mask=ln_opacity, on_axis=True)
    except ValueError:
        return None


def _curve_stations(points: np.ndarray) -> Stations:
    """Stations every px along the parabola fitted to ``points`` (a piece of the centreline, 1 px apart), their
    normals square to it: a piece round a bend crossed square (a found centreline's wiggles smoothed)."""
    t = np.arange(len(points), dtype=float)
    cx, cy = np.polyfit(t, points[:, 0], 2), np.polyfit(t, points[:, 1], 2)
    at = np.arange(0.5, len(points) - 1, 1.0)
    xy = np.column_stack([np.polyval(cx, at), np.polyval(cy, at)])
    tan = np.column_stack([np.polyval(np.polyder(cx), at), np.polyval(np.polyder(cy), at)])
    tan /= np.hypot(tan[:, 0], tan[:, 1])[:, None]
    s = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(xy, axis=0).T))]) + 0.5
    return Stations(xy, np.column_stack([-tan[:, 1], tan[:, 0]]), tan, s, float(s[-1] + 0.5))


def _detrended(prof: np.ndarray, across: np.ndarray, half: float) -> np.ndarray:
    """Profiles less the straight line through their outer BACKGROUND_PX on each side."""
    outer = np.abs(across) >= half - BACKGROUND_PX
    A = np.column_stack([np.ones(outer.sum()), across[outer]])
    coef, *_ = np.linalg.lstsq(A, np.nan_to_num(prof[:, outer]).T, rcond=None)
    return prof - (coef[0][:, None] + coef[1][:, None] * across[None, :])


def _half_height(prof: np.ndarray, across: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each profile's (width, centre) between its half-height crossings either side of its (smoothed) top,
    NaN where it has none."""
    k = 4
    pad = np.pad(prof, ((0, 0), (k, k)), mode="edge")
    sm = np.lib.stride_tricks.sliding_window_view(pad, 2 * k + 1, axis=1).mean(axis=2)
    widths, centres = np.full(len(prof), np.nan), np.full(len(prof), np.nan)
    mid = len(across) // 2
    for i, (p, q) in enumerate(zip(prof, sm)):
        j = int(np.argmax(q[mid // 2: mid + mid // 2])) + mid // 2
        level = 0.5 * q[j]
        if not level > 0:
            continue
        below = np.nonzero(p[:j] < level)[0]
        above = np.nonzero(p[j:] < level)[0]
        if not len(below) or not len(above):
            continue
        a, b = below[-1], j + above[0]
        left = across[a] + (level - p[a]) / (p[a + 1] - p[a]) * (across[a + 1] - across[a])
        right = across[b - 1] + (p[b - 1] - level) / (p[b - 1] - p[b]) * (across[b] - across[b - 1])
        widths[i], centres[i] = right - left, 0.5 * (left + right)
    return widths, centres


def _robust_line(s: np.ndarray, v: np.ndarray, deg: int = 1) -> np.ndarray:
    """Least-squares polynomial of degree ``deg`` through (s, v), refitted without the points beyond 3 robust sds
    of it."""
    coef = np.polyfit(s, v, deg)
    r = v - np.polyval(coef, s)
    keep = np.abs(r) <= 3.0 * max(1.4826 * float(np.median(np.abs(r))), 1e-6)
    return np.polyfit(s[keep], v[keep], deg) if keep.sum() >= 3 else coef


def _near(points: np.ndarray, segment: np.ndarray, reach: float) -> bool:
    """Any of ``points`` within ``reach`` of the segment between the two rows of ``segment``."""
    a, b = segment[0], segment[-1]
    ab = b - a
    t = np.clip(((points - a) @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
    return bool(np.any(np.hypot(*(points - (a + t[:, None] * ab)).T) <= reach))
