"""Millimetres per pixel of a run, first that applies: the operator's number, a catheter of known French size
marked by two points along it, the DICOM file's own spacing; otherwise None (pixels only).

- Catheter: outer diameter F / 3 mm; its width measured in the mask between the two points
  (core.analysis.catheter_profile: a fit of a blurred projected tube, core.analysis.catheter_fit). A thin
  wall under blur does not show its blur (a thinner wall with more blur fits as well): given the run's peak
  opacity image, the blur is measured on the vein (vessel_blur: its lumen is wide compared with the blur, at
  the catheter's depth) and the catheter fitted at it; the calibration is refused when its width still spans
  more than MAX_WIDTH_SPREAD.
- DICOM: Imager Pixel Spacing (0018,1164) is at the detector; divided by the Estimated Radiographic
  Magnification Factor (0018,1114) it is at the patient. Without that factor, Pixel Spacing (0028,0030) when
  the modality calibrated it. Spacings are (row, column): their mean when they differ a little.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from core.analysis.catheter_displaced import displaced_fit
from core.analysis.catheter_fit import WALL_AT_LIMIT
from core.analysis.catheter_profile import catheter_fit
from core.analysis.vein_blur import vessel_blur
from core.analysis.vessel_find import diameter_along, find_vessel

__all__ = ["dicom_mm_per_px", "parse_catheter", "catheter_mm_per_px", "vessel_blur", "run_blur"]

MIN_FRENCH, MAX_FRENCH = 3.0, 30.0
AGREE_BELOW = 0.03          # the displaced contrast's width may lie this far below the mask's range
AGREE_ABOVE = 0.10          # and this far above it (the mask's thin wall reads up to ~10% narrow: its blur)
MAX_WIDTH_SPREAD = 0.1       # refused when the widths the profile allows span more (+-5%: the 0.3 mm)


def parse_catheter(text: str) -> np.ndarray:
    """``"x,y;x,y"`` -> (2, 2) array, or ValueError with a one-line reason."""
    items = [p for p in str(text).strip().strip(";").split(";") if p.strip()]
    if len(items) != 2:
        raise ValueError(f"--catheter needs two points \"x,y;x,y\" along the catheter, got {text!r}")
    pts = []
    for item in items:
        try:
            x, y = (float(v) for v in item.split(","))
        except ValueError:
            raise ValueError(f"--catheter point {item.strip()!r} is not \"x,y\"") from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError(f"--catheter point {item.strip()!r} is not finite")
        pts.append((x, y))
    return np.asarray(pts, dtype=float)


def catheter_mm_per_px(mask: np.ndarray, points: np.ndarray, french: float, opacity: np.ndarray | None = None,
                       centerline: np.ndarray | None = None, ln_mask: bool = False,
                       display_gain: float | None = None) -> float:
    """mm per px from a catheter of ``french`` size between ``points`` on ``mask``. ValueError with a one-line
    reason when refused.

    With the run's peak ``opacity`` image (the command and the appliance give it), the blur is measured on its
    vein (along ``centerline``, else found; vessel_blur) and the catheter fitted at that blur; refused when
    the outer width along the wall/blur trade still spans more than MAX_WIDTH_SPREAD of it (a thin wall under
    a blur the vein does not pin: the issue's 0.3 mm is about +-5% of a vein's MLD). Without it, the least
    blur the catheter's profile allows (catheter_fit(...).width_range_px says how sure that is).

    ``display_gain``: display video's levels per ln unit of the light (core.analysis.display_gain, from the
    run's noise): the mask and opacity in levels are divided by it and fitted with the exact model (the blur on
    the light, as ``ln_mask``); None keeps the linear model (the blur on the levels)."""
    f = float(french)
    if not (math.isfinite(f) and MIN_FRENCH <= f <= MAX_FRENCH):
        raise ValueError(f"--catheter-french must be in [{MIN_FRENCH:g}, {MAX_FRENCH:g}], got {french!r}")
    if display_gain is not None and not ln_mask:
        g = float(display_gain)
        if not (math.isfinite(g) and g > 0):
            raise ValueError(f"display gain must be a positive number, got {display_gain!r}")
        mask = np.asarray(mask, dtype=np.float32) / np.float32(g)
        opacity = None if opacity is None else np.asarray(opacity, dtype=np.float32) / np.float32(g)
        ln_mask = True
    if opacity is None:
        return (f / 3.0) / catheter_fit(mask, points, ln_mask=ln_mask).width_px
    bounds = run_blur(opacity, centerline, np.asarray(points, dtype=float), ln_mask)
    fit = catheter_fit(mask, points, bounds, ln_mask=ln_mask)
    shown = None if bounds is None else displaced_fit(opacity, mask, points, bounds)
    if shown is not None and _agrees(shown.width_px, fit.width_range_px):
        return (f / 3.0) / shown.width_px
    lo, hi = fit.ambiguous_px
    if np.isfinite(lo) and hi - lo > MAX_WIDTH_SPREAD * fit.width_px:
        how = "no blur measured on the vein" if bounds is None else "the blur measured on the vein does not pin it"
        raise ValueError(f"catheter width ambiguous: a thin wall under blur fits {lo:.1f} to {hi:.1f} px ({how}); "
                         "mark a catheter with a thicker wall or give mm per px")
    # At the vein's blur the fit ran to the thinnest wall it may take: the profile is not a tube at that blur (a
    # bone edge along the catheter in the mask: the phantom's catheters over its bony ring read 17-21% narrow;
    # a wall the blur hides).
    # On a ln mask the linear model (blur on the ln) is the guard: it reads an intensity-blurred tube a few % narrow
    # but runs to its thinnest wall where the profile is not a tube (the phantom's bony ring: the exact model read
    # those catheters 11-12% narrow, unrefused).
    q = max(fit.inner_fraction, float(np.nan_to_num(fit.linear_inner_fraction)))
    if bounds is not None and q >= WALL_AT_LIMIT:
        raise ValueError(f"catheter profile does not fit a tube at the blur measured on the vein ({bounds[1]:.2f} px:"
                         f" it needs a wall of {0.5 * fit.width_px * (1 - q):.2f} px); something lies"
                         " along it in the mask (a bone edge) or the blur hides its wall: mark the catheter elsewhere"
                         " or give mm per px")
    return (f / 3.0) / fit.width_px


def _agrees(width: float, mask_range: tuple[float, float]) -> bool:
    """The hole's width near the widths the mask's own profile allows: a hole reading narrow (a lumen holding
    some contrast) is the failure to catch, so little room below; more above, where the mask's thin wall under a
    pixel-sampled blur reads 8-10% narrow (sweep_vessel --psf-at detector, seeds 10 and 13 at 0.5 px: the hole
    +0.1 / +0.8%, the mask's range up to -3.5% below it)."""
    lo, hi = mask_range
    return not (math.isfinite(lo) and math.isfinite(hi)) or lo * (1 - AGREE_BELOW) <= width <= hi * (1 + AGREE_ABOVE)


def run_blur(opacity: np.ndarray, centerline: np.ndarray | None, avoid: np.ndarray, ln_opacity: bool = False
             ) -> tuple | None:
    """vessel_blur on the run's vein (``centerline`` or found); None when there is none to measure."""
    try:
        if centerline is None:
            v = find_vessel(np.asarray(opacity, dtype=np.float32))
            line, d = v.centerline, v.diameter_px
        else:
            line = np.asarray(centerline, dtype=float)
            d = diameter_along(np.asarray(opacity, dtype=np.float32), line)
    except ValueError:
        return None
    return vessel_blur(opacity, line, d, avoid, ln_opacity)


def dicom_mm_per_px(path: str | Path) -> float | None:
    """mm per pixel at the patient from a DICOM file's tags, or None (not DICOM, no usable spacing)."""
    try:
        import pydicom
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception:   # not DICOM (a .npy), unreadable: no calibration from the file
        return None
    ips = _spacing(ds.get("ImagerPixelSpacing"))
    mag = _number(ds.get("EstimatedRadiographicMagnificationFactor"))
    if ips is not None and mag is not None and mag >= 1.0:
        return ips / mag
    ps = _spacing(ds.get("PixelSpacing"))
    if ps is None:
        for seq in ("SharedFunctionalGroupsSequence",):
            for item in ds.get(seq) or []:
                for pm in item.get("PixelMeasuresSequence") or []:
                    ps = ps or _spacing(pm.get("PixelSpacing"))
    return ps


def _spacing(value) -> float | None:
    try:
        vals = [float(v) for v in (value if isinstance(value, (list, tuple)) or hasattr(value, "__iter__")
                                   and not isinstance(value, str) else [value])]
    except (TypeError, ValueError):
        return None
    vals = [v for v in vals if math.isfinite(v) and v > 0]
    if not vals or max(vals) > 1.05 * min(vals):   # strongly anisotropic: no single mm per pixel
        return None
    return float(np.mean(vals))


def _number(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None
