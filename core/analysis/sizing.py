"""Vessel sizing on one run's peak-opacity image: lumen diameter along the vein, its reference, the lesion.

- Diameter per station: the half-height edges of the background-subtracted contrast column (core.analysis.lumen,
  the same code as clearance) at the blur measured on the run's vein (sizing_blur), smoothed along the vessel
  as QCA smooths its edges: a short running median
  (outliers), then a local quadratic over +-0.2 diameters (the edges' noise comes in lumps a few stations long,
  which a median keeps; a quadratic leaves a short narrowing's curved bottom where it is).
  Where no edge is found (blurred, faint), the densitometric diameter stands in: the column's integral over the
  local contrast density of the patent lumen (``d = sqrt(integral / (pi / 4 * k))``).
- Reference per station (sizing_reference): a robust fit of diameter along the vessel that leaves the narrowed
  part and branches' junctions out, following a step at a confluence.
- Lesion: the station of greatest % diameter stenosis against that reference (on a tapering vein the
  narrowest station is the thin end, not a lesion); on a flat-bottomed narrowing, where along the bottom the
  greatest reading falls is the noise's choice, so the lesion is the middle of the contiguous stretch around it
  whose stenosis is within the noise of the greatest (_lesion_station). MLD and % stenosis are the values at
  that station, the MLD from a local quadratic over the longest window the diameters there allow
  (sizing_bottom: long on a flat bottom, where one noise lump would otherwise be the MLD; short on a web).
  Lesion length: the contiguous length around it below 80% of the reference, from the interpolated crossings.
- Compression seen edge-on looks wider and fainter: a stretch read wider than the reference with a clearly
  lower contrast density is said in ``warnings``; so is a line ending where the diameter still changes steeply,
  inside a narrowing's shoulder (sizing_warnings).
- Beside and inside the vein: an automatic path crossing the background to another vessel is cut and the more
  opacified vessel followed alone, its ends in the background taken off, and the sizing refused where its lesion
  would fall in a stretch of background it cannot judge: never a lumen of 0 between two vessels (sizing_path).
  With the run's mask, a device in the lumen is found and the lumen there read from areas (sizing_device). Both
  are said in ``warnings``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from core.analysis.along_vessel import local_quadratic, run_around
from core.analysis.clearance.safeguards import vessel_beside_warning
from core.analysis.lumen import BLUR_VAR_PX2, Lumen, measure_lumen, running_median
from core.analysis.sizing_blur import lumen_at_blur, trusted_blur
from core.analysis.sizing_bottom import bottom_diameter, lesion_bottom
from core.analysis.sizing_device import area_diameter, device_width, find_device, vein_blur
from core.analysis.sizing_path import (
    BESIDE_CHOICE_WARNING,
    HOP_WARNING,
    MAX_REFINDS,
    background_ends,
    column_jump,
    kept_piece,
    more_opacified,
    one_vessel,
    side_hops,
    untrusted_gap,
    vessel_beside,
)
from core.analysis.sizing_reference import follow_steps, reference_fit
from core.analysis.sizing_warnings import edge_on_warnings, end_warnings
from core.analysis.vessel import Stations, check_centerline, make_stations
from core.analysis.vessel_find import diameter_along, find_vessel

__all__ = ["Sizing", "measure_sizing", "LESION_FRACTION", "STENT_THRESHOLD_PCT"]

SPACING_PX = 1.0
SMOOTH_DIAMETERS = 0.05      # half window of the along-vessel running median, in diameters (at least 1 station)
QUAD_SMOOTH_DIAMETERS = 0.2  # ... then a local quadratic over +-this many diameters (lifts the bottom of a 70%
#                              cosine narrowing 1.2 diameters long by under 1%)
AREA_SMOOTH_DIAMETERS = 0.4  # ... and of the diameter read from areas beside a device (a local quadratic over it
#                              leaves the bottom of the shortest cosine narrowing, 2 diameters, within 1%)
LESION_FRACTION = 0.8        # a station below this fraction of its reference is part of the lesion
STENT_THRESHOLD_PCT = 50.0   # residual stenosis at which a stent is commonly considered (informs only)
BOTTOM_NOISE_SD = 4.0        # the lesion's stretch: stenosis within this many noise sd of the greatest (the
#                              greatest of a flat bottom's readings lies ~2 sd above their mean, its lowest ~2 below)
TREND_DIAMETERS = 1.0        # the noise: the stenosis' spread about a local quadratic over +-this many diameters
LOCAL_NOISE_DIAMETERS = 2.0  # ... the whole vessel's, or that within +-this many diameters of the greatest if larger
DEVICE_SMOOTH_DIAMETERS = 0.25  # the device finder's half window along the vessel, in diameters: its tube
#   score is averaged over it (over one station the mask's noise on a faint vein scored a tube) and its place
#   steady over it (a device filling a narrowing wanders a pixel across: a radius was too long for that); a
#   stretch shorter than four of it (a diameter) is not a device
CENTRE_SMOOTH_DIAMETERS = 0.5  # the lesion's place across the vessel: the column's middle, median over +-this
MIN_STATIONS = 8
GUESS_STATIONS = 60          # stations sampled for the first diameter guess
MIN_SNR = 5.0                # the contrast column's height over the noise of one profile sample
DENS_FULL_PX = 6.0           # a column this narrow is sized by densitometry alone ...
DENS_BLEND_PX = 4.0          # ... blending into its edges over this many px more


@dataclass
class Sizing:
    """One run's sizing, per station and summarised; ``to_json`` is the command's and the API's result."""
    stations: Stations
    lumen: Lumen
    diameter: np.ndarray           # (M,) smoothed diameter (px), densitometric where the edges were not found
    reference: np.ndarray          # (M,) reference diameter (px)
    stenosis: np.ndarray           # (M,) % diameter stenosis per station
    lesion: int                    # station index of the lesion
    lesion_span: tuple[float, float] | None   # arc-length range below LESION_FRACTION of the reference
    mm_per_px: float | None = None
    calibration: str | None = None
    warnings: list[str] = field(default_factory=list)
    device: np.ndarray | None = None   # (M,) stations where a device lies in the lumen (read from areas)

    @property
    def reference_px(self) -> float:
        return float(self.reference[self.lesion])

    @property
    def mld_px(self) -> float:
        return float(self.diameter[self.lesion])

    @property
    def diameter_stenosis_pct(self) -> float:
        return max(0.0, 100.0 * (1.0 - self.mld_px / self.reference_px))

    @property
    def area_stenosis_pct(self) -> float:
        return max(0.0, 100.0 * (1.0 - (self.mld_px / self.reference_px) ** 2))

    @property
    def lesion_length_px(self) -> float:
        return 0.0 if self.lesion_span is None else float(self.lesion_span[1] - self.lesion_span[0])

    @property
    def lesion_offset_px(self) -> float:
        """The middle of the column at the lesion, across the centreline (which may run a little off it): the
        median over +-CENTRE_SMOOTH_DIAMETERS. One station's middle can be far off where a device splits the
        column into strips (a catheter filling a narrowing: 7 px on the sweep's seed 23)."""
        ok = np.isfinite(self.lumen.width)
        half = max(1, int(round(CENTRE_SMOOTH_DIAMETERS * float(np.median(self.lumen.width[ok])) / SPACING_PX))) \
            if ok.any() else 1
        lo, hi = max(0, self.lesion - half), self.lesion + half + 1
        c = self.lumen.centre[lo:hi]
        c = c[np.isfinite(c)]
        return float(np.median(c)) if c.size else 0.0

    def to_json(self) -> dict:
        mm = self.mm_per_px
        k = self.lesion
        st = self.stations
        off = self.lesion_offset_px
        xy = st.xy[k] + off * st.normal[k]
        return {
            "calibration": self.calibration,
            "mm_per_px": _r(mm, 5),
            "reference_diameter_px": _r(self.reference_px, 2),
            "reference_diameter_mm": _mm(self.reference_px, mm),
            "mld_px": _r(self.mld_px, 2),
            "mld_mm": _mm(self.mld_px, mm),
            "diameter_stenosis_pct": _r(self.diameter_stenosis_pct, 1),
            "area_stenosis_pct": _r(self.area_stenosis_pct, 1),
            "lesion_length_px": _r(self.lesion_length_px, 1),
            "lesion_length_mm": _mm(self.lesion_length_px, mm),
            "lesion": {"x": _r(xy[0], 1), "y": _r(xy[1], 1), "frac": _r(st.frac[k], 4)},
            "residual_stenosis_ge_50": bool(round(self.diameter_stenosis_pct, 1) >= STENT_THRESHOLD_PCT),
            "profile": [{"s_px": _r(s, 1), "diameter_px": _r(d, 2), "reference_px": _r(r, 2)}
                        for s, d, r in zip(st.s, self.diameter, self.reference)],
            "warnings": list(self.warnings),
        }


def _r(v, nd: int):
    return None if v is None or not math.isfinite(float(v)) else round(float(v), nd)


def _mm(px: float, mm: float | None):
    return None if mm is None else _r(px * mm, 2)


def measure_sizing(peak: np.ndarray, centerline: np.ndarray | None = None, *, mm_per_px: float | None = None,
                   calibration: str | None = None, mask: np.ndarray | None = None,
                   ln_per_unit: float | None = None) -> Sizing:
    """Size the vein of ``peak`` along ``centerline`` (x, y points; None: found automatically). ``mask``: the
    run's contrast-free image (peak_and_mask), where a device in the lumen shows (sizing_device).
    ``ln_per_unit``: ln units of light per unit of ``peak`` (1 for linear data, 1 / gain for display video;
    None when unknown): the detector's blur then acts on the light (sizing_blur).

    ValueError with a one-line reason when there is no vessel or too little of it is measured.
    """
    img = np.asarray(peak, dtype=np.float32)
    if img.ndim != 2 or min(img.shape) < 16:
        raise ValueError(f"need a 2-D peak-opacity image of at least 16x16, got shape {img.shape}")
    if not np.isfinite(img).any():
        raise ValueError("the peak-opacity image has no measured pixels")
    auto = centerline is None
    notes: list[str] = []
    if auto:
        stations, lumen, notes = _automatic_path(img)
    else:
        stations, lumen = _stations_and_lumen(img, check_centerline(centerline, img.shape), None, False)
    ok = np.isfinite(lumen.width)
    if ok.sum() < MIN_STATIONS:
        raise ValueError(f"no vessel lumen measured along the centreline ({int(ok.sum())} of {len(ok)} stations)")
    snr = float(np.median(lumen.height[ok])) / lumen.noise if lumen.noise > 0 else math.inf
    if not snr >= MIN_SNR:
        raise ValueError(f"no opacified vessel along the centreline (its column is {snr:.1f} noise sd high)")
    d_typ, half, used, raw, unsmoothed, diameter = _diameters(stations, lumen)
    device, d_device = np.zeros(len(diameter), dtype=bool), math.nan
    on_device, coarse = None, math.nan
    if mask is not None and np.shape(mask) == img.shape:
        # A device displaces the contrast of its cross-section: there the lumen is read from areas.
        ref0, _ = reference_fit(stations.s, diameter, d_typ)
        device, on_device, coarse = find_device(mask, stations, lumen, ref0, used,
                                                max(1, int(round(DEVICE_SMOOTH_DIAMETERS * d_typ / SPACING_PX))))
    # The blur on the vein's patent stretches away from a device, measured once: the device's fit and the
    # widths' correction (sizing_blur) both take it.
    blur = vein_blur(img, stations, lumen, used, device)
    blur_sd = trusted_blur(blur)
    if blur_sd is not None:
        lumen = lumen_at_blur(lumen, blur_sd, ln_per_unit)
        d_typ, half, used, raw, unsmoothed, diameter = _diameters(stations, lumen)
    half_quad = _quad_half(d_typ)
    half_area = half_quad
    if device.any():
        ref0, _ = reference_fit(stations.s, diameter, d_typ)
        d_device = device_width(mask, stations, on_device, device, coarse, blur)
        by_area = area_diameter(img, stations, lumen, ref0, used, device, d_device, half)
        # Read from areas, the thin contrast around a device is noisy station to station (its window is the
        # reference lumen's): the least of that noise would be the MLD, so it is smoothed over a longer window,
        # by a local quadratic (a running median that long lifts the bottom of a curved narrowing).
        half_area = max(half, int(round(AREA_SMOOTH_DIAMETERS * d_typ / SPACING_PX)))
        diameter = np.where(np.isfinite(by_area), local_quadratic(by_area, half_area), diameter)
        unsmoothed = np.where(np.isfinite(by_area), by_area, unsmoothed)
        raw = np.where(np.isfinite(by_area), by_area, raw)
    fit, used = reference_fit(stations.s, diameter, d_typ)
    reference = follow_steps(fit, diameter, stations.s, d_typ, SPACING_PX)
    with np.errstate(invalid="ignore", divide="ignore"):
        stenosis = 100.0 * (1.0 - diameter / reference)
    valid = np.isfinite(stenosis)
    if valid.sum() < MIN_STATIONS:
        raise ValueError("no vessel lumen measured along the centreline")
    lesion = _lesion_station(stenosis, d_typ)
    # The MLD over the longest window the diameters there allow (sizing_bottom), never shorter than the profile's
    # own: the running median before it flattens a web's sharp bottom, which the profile's quadratic reaches into.
    # On a sharp bottom the place moves to its deepest point, read without the running median (lesion_bottom);
    # not beside a device, whose area readings' window is long by design.
    if device[lesion]:
        mld = bottom_diameter(unsmoothed, lesion, d_typ, half_area)
    else:
        along_var = (BLUR_VAR_PX2 + (blur_sd or 0.0) ** 2) / SPACING_PX ** 2     # in stations^2
        lesion, mld = lesion_bottom(unsmoothed, reference, lesion, d_typ, half_quad, raw, along_var)
    if math.isfinite(mld):
        diameter, stenosis = diameter.copy(), stenosis.copy()
        diameter[lesion] = max(0.0, mld)
        stenosis[lesion] = 100.0 * (1.0 - diameter[lesion] / reference[lesion])
    gap = untrusted_gap(stations, lumen, lesion) if auto else None
    if gap is not None:
        x, y = stations.xy[lesion]
        raise ValueError(f"the automatic centreline runs through the background at its narrowest point ({x:.0f}, "
                         f"{y:.0f}), where a crossing to another vessel cannot be told from an occlusion: draw the "
                         "centreline")
    span = _lesion_span(stations.s, diameter, reference, lesion)
    jump = None
    if auto:
        # The lesion's stretch (below LESION_FRACTION of the reference), widened by a diameter.
        with np.errstate(invalid="ignore"):
            lo, hi = run_around(np.isfinite(diameter) & (diameter < LESION_FRACTION * reference), lesion)
        pad = int(round(d_typ / SPACING_PX))
        jump = column_jump(stations, lumen, max(0, lo - pad), min(len(diameter) - 1, hi + pad), d_typ)
    if jump is not None:
        x, y = stations.xy[jump]
        raise ValueError(f"the contrast column along the automatic centreline jumps sideways at ({x:.0f}, {y:.0f}), "
                         "beside its narrowest point: two vessels' columns touch there and the path may run from one "
                         "to the other; draw the centreline")
    sizing = Sizing(stations, lumen, diameter, reference, stenosis, lesion, span, mm_per_px, calibration,
                    device=device)
    sizing.warnings.extend(notes)
    if device[lesion]:
        sizing.warnings.append(
            f"a device lies in the lumen at the narrowest point ({stations.xy[lesion, 0]:.0f}, "
            f"{stations.xy[lesion, 1]:.0f}): the lumen there is read as the contrast around it plus the device's "
            f"own {d_device:.1f} px, and the MLD is less certain than where the lumen is free")
    if auto:
        beside = vessel_beside_warning(lumen.beside, ok)
        if beside and not notes:
            sizing.warnings.append(beside)
    sizing.warnings.extend(edge_on_warnings(stations, lumen, diameter, fit, used, d_typ, SPACING_PX))
    sizing.warnings.extend(end_warnings(stations, diameter, d_typ))
    return sizing


def _diameters(stations: Stations, lumen: Lumen
               ) -> tuple[float, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(typical diameter, the running median's half window, stations the reference fit used, the diameter per
    station before the running median, after it, and after the local quadratic) of ``lumen``'s widths."""
    ok = np.isfinite(lumen.width)
    d_typ = float(np.median(lumen.width[ok]))
    half = max(1, int(round(SMOOTH_DIAMETERS * d_typ / SPACING_PX)))
    width = np.where(ok, running_median(lumen.width, half), np.nan)
    _, used = reference_fit(stations.s, width, d_typ)
    # A running median takes out single stations' outliers; a local quadratic over a longer window then smooths
    # the edges' noise as QCA does, leaving a curved narrowing's bottom where it is (never below 0: it overshoots
    # beside an occlusion's sharp ends).
    half_quad = _quad_half(d_typ)
    raw = _with_densitometric(lumen, used, half)
    unsmoothed = running_median(raw, half)
    diameter = np.where(np.isfinite(unsmoothed), np.maximum(local_quadratic(unsmoothed, half_quad), 0.0), np.nan)
    return d_typ, half, used, raw, unsmoothed, diameter


def _quad_half(d_typ: float) -> int:
    return max(2, int(round(QUAD_SMOOTH_DIAMETERS * d_typ / SPACING_PX)))


def _automatic_path(img: np.ndarray) -> tuple[Stations, Lumen, list[str]]:
    """Stations, lumen and notes along the automatic centreline: one vessel, the more opacified of two."""
    v = find_vessel(img)
    stations, lumen, notes = _one_vessel(img, v.centerline, v.diameter_px)
    if not vessel_beside_warning(lumen.beside, np.isfinite(lumen.width)):
        return stations, lumen, notes
    # A whole vessel beside: the path ran along one of two as their lengths tipped it (or, cut at a crossing,
    # kept the piece a long narrowing left fainter); the more opacified one is kept, as at a crossing
    # (sizing_path).
    other = vessel_beside(img, stations, lumen)
    if other is None:
        return stations, lumen, notes
    st2, lu2, notes2 = _one_vessel(img, *other)
    if not more_opacified(lu2, lumen):
        return stations, lumen, notes
    return st2, lu2, [BESIDE_CHOICE_WARNING] + [n for n in notes + notes2 if n != HOP_WARNING]


def _one_vessel(img: np.ndarray, line: np.ndarray, d_guess: float | None) -> tuple[Stations, Lumen, list[str]]:
    """One vessel, never two joined through the background (sizing_path): the path is cut at a sideways
    crossing and the kept vessel followed again."""
    notes: list[str] = []
    stations, lumen = _path_on_columns(img, line, d_guess)
    for attempt in range(MAX_REFINDS + 1):
        hops = side_hops(stations, lumen)
        if not hops:
            break
        if HOP_WARNING not in notes:
            notes.append(HOP_WARNING)
        if attempt < MAX_REFINDS:
            line, d_guess, _ = one_vessel(img, stations, lumen, hops)
        else:
            line, d_guess = stations.xy[slice(*kept_piece(stations, lumen, hops))], None
        stations, lumen = _path_on_columns(img, line, d_guess)
    return stations, lumen, notes


def _path_on_columns(img: np.ndarray, line: np.ndarray, d_guess: float | None) -> tuple[Stations, Lumen]:
    """Stations and lumen along an automatic path, its ends in the background taken off (sizing_path)."""
    stations, lumen = _stations_and_lumen(img, line, d_guess, True)
    lo, hi = background_ends(stations, lumen)
    if (lo, hi) != (0, len(stations.s)) and hi - lo >= MIN_STATIONS:
        stations, lumen = _stations_and_lumen(img, stations.xy[lo:hi], d_guess, True)
    return stations, lumen


def _stations_and_lumen(img: np.ndarray, line: np.ndarray, d_guess: float | None, beside: bool
                        ) -> tuple[Stations, Lumen]:
    stations = make_stations(line, SPACING_PX)
    if len(stations.s) < MIN_STATIONS:
        raise ValueError(f"the centreline is too short to size a vessel ({stations.length:.0f} px)")
    if d_guess is None:
        d_guess = _diameter_guess(img, stations)
    # The profile window must hold the widest lumen anywhere along the vessel (a taper, a confluence).
    max_d = 1.5 * d_guess
    lumen = measure_lumen(img, stations, max_d, beside=beside)
    if np.isfinite(lumen.width).sum() >= MIN_STATIONS:
        wide = float(np.nanpercentile(lumen.width, 95))
        if wide > 0.8 * max_d:
            max_d = 1.3 * wide
            lumen = measure_lumen(img, stations, max_d, beside=beside)
    return stations, lumen


def _diameter_guess(img: np.ndarray, stations: Stations) -> float:
    """The lumen's typical diameter along a given centreline, cheaply: its half-height widths at every few
    stations within a window any venous lumen of the image fits in (the cylinder fit costs ~10x more)."""
    step = max(1, len(stations.s) // GUESS_STATIONS)
    sub = Stations(stations.xy[::step], stations.normal[::step], stations.tangent[::step], stations.s[::step],
                   stations.length)
    width = measure_lumen(img, sub, max(16.0, min(img.shape) / 16)).width
    if np.isfinite(width).sum() < 3:
        return diameter_along(img, stations.xy)
    return float(np.nanmedian(width))


def _with_densitometric(lumen: Lumen, patent: np.ndarray, half: int) -> np.ndarray:
    """The edge diameter, blended into the densitometric one ``sqrt(integral / (pi / 4 k))`` (k: the contrast
    density of the nearby patent lumen) where the column is narrow enough for the blur to move its edges
    (a thin column's height drops, its half-height edges move out), and that alone where no edge is found."""
    width = lumen.width
    k_ref = lumen.patent_density(patent, half)
    if k_ref is None:
        return width
    with np.errstate(invalid="ignore", divide="ignore"):
        dens = np.sqrt(np.clip(lumen.integral, 0.0, None) / (math.pi / 4.0 * k_ref))
    a = np.clip((DENS_FULL_PX + DENS_BLEND_PX - width) / DENS_BLEND_PX, 0.0, 1.0)
    blend = np.where(np.isfinite(dens), (1.0 - a) * width + a * dens, width)
    return np.where(np.isfinite(width), blend, dens)


def _lesion_station(stenosis: np.ndarray, d_typ: float) -> int:
    """The middle of the contiguous stretch around the greatest stenosis whose stenosis is within
    BOTTOM_NOISE_SD noise sd of it: on a narrowing's flat bottom the greatest reading is wherever the noise puts
    it; on a curved bottom the stretch is short and symmetric about it. The noise sd is the stenosis' robust
    spread about its local quadratic trend over +-TREND_DIAMETERS, the whole vessel's or that near the greatest
    reading when larger (read from areas beside a device the bottom is noisier than the edges elsewhere):
    station-to-station differences would miss its lumps, several stations long (the edges, the profiles'
    background)."""
    valid = np.isfinite(stenosis)
    k0 = int(np.argmax(np.where(valid, stenosis, -np.inf)))
    half = max(2, int(round(TREND_DIAMETERS * d_typ / SPACING_PX)))
    resid = np.where(valid, stenosis - local_quadratic(stenosis, half), np.nan)
    sd = _robust_sd(resid)
    # The noise is not the same all along: read from areas beside a device (or on a thin column) the bottom's lumps
    # are several times the edges' elsewhere, and a stretch cut by them ends on one lump (a catheter through a long
    # narrowing: 8-12 px off). So the noise near the greatest reading, when it is larger.
    w = max(half, int(round(LOCAL_NOISE_DIAMETERS * d_typ / SPACING_PX)))
    sd = max(sd, _robust_sd(resid[max(0, k0 - w):k0 + w + 1]))
    lo, hi = run_around(valid & (stenosis >= stenosis[k0] - BOTTOM_NOISE_SD * sd), k0)
    return (lo + hi) // 2


def _robust_sd(r: np.ndarray) -> float:
    r = r[np.isfinite(r)]
    return 1.4826 * float(np.median(np.abs(r - np.median(r)))) if r.size else 0.0


def _lesion_span(s: np.ndarray, d: np.ndarray, ref: np.ndarray, k: int) -> tuple[float, float] | None:
    """Arc-length range around station ``k`` where d < LESION_FRACTION * ref, crossings interpolated."""
    g = d - LESION_FRACTION * ref          # negative inside the lesion
    if not (np.isfinite(g[k]) and g[k] < 0):
        return None
    lo, hi = run_around(np.isfinite(g) & (g < 0), k)
    a = s[lo] if lo == 0 or not np.isfinite(g[lo - 1]) else _cross(s[lo - 1], s[lo], g[lo - 1], g[lo])
    b = s[hi] if hi == len(g) - 1 or not np.isfinite(g[hi + 1]) else _cross(s[hi], s[hi + 1], g[hi], g[hi + 1])
    return float(a), float(b)


def _cross(s0: float, s1: float, g0: float, g1: float) -> float:
    return s0 + (s1 - s0) * g0 / (g0 - g1) if g0 != g1 else 0.5 * (s0 + s1)
