"""The lumen's widths corrected for the blur measured on the run's own vein (vessel sizing only).

lumen.py adds back a fixed blur (pixel area and bilinear sampling, BLUR_VAR_PX2) to second order; a detector PSF
of sd s is not in it and a wide lumen's half-height edges move in (the independent phantom: the reference -1.6%
at s 0.5-0.85 px, -3.3% at 0.85-1.2, -4.1% at 1.2-1.5, the MLD with it). Here each station's half-height
diameter is corrected by the exact relation of a blurred circle (core.analysis.blurred_circle) at the total blur
``sqrt(BLUR_VAR_PX2 + s^2)``, s measured on the vein as catheter calibration and the device's fit measure it
(core.analysis.vein_blur), on the light where the image's unit in ln units is known (a dense column's edges
sag further). Where the blur is not measured or its pieces scatter, the widths stay as lumen.py gives them.
Clearance keeps lumen.py's widths.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from core.analysis.blurred_circle import true_diameter
from core.analysis.lumen import BLUR_VAR_PX2, Lumen

__all__ = ["lumen_at_blur", "trusted_blur", "ln_per_unit", "MAX_BLUR_SPREAD_PX", "MAX_BLUR_PX"]

MAX_BLUR_SPREAD_PX = 0.3     # (highest - lowest) of the measured blur beyond this: its pieces disagree, not used
MAX_BLUR_PX = 3.0            # a vein reading more blur than this is no round column: not used


def trusted_blur(blur: tuple[float, float, float] | None) -> float | None:
    """The detector's blur sd (px) from vein_blur's (lowest, measured, highest), or None where it is doubtful."""
    if blur is None:
        return None
    low, mid, high = blur
    if not (math.isfinite(mid) and 0.0 <= mid <= MAX_BLUR_PX and high - low <= MAX_BLUR_SPREAD_PX):
        return None
    return float(mid)


def ln_per_unit(linear: bool, display_gain: float | None) -> float | None:
    """ln units of light per unit of a run's opacity: 1 for linear data (its opacity is ln(mask) - ln(frame)),
    1 / gain for display video whose LUT gain (levels per ln unit) was estimated, else None (unknown)."""
    if linear:
        return 1.0
    return 1.0 / display_gain if display_gain is not None and display_gain > 0 else None


def lumen_at_blur(lumen: Lumen, blur_sd: float, ln_per_unit: float | None = None) -> Lumen:
    """``lumen`` with each station's width from its half-height diameter at the total blur sd
    ``sqrt(BLUR_VAR_PX2 + blur_sd^2)`` (lumen.py's own width where that cannot be inverted). ``ln_per_unit``: ln
    units of light per unit of the image's opacity (1 for linear data, 1 / gain for display video), which puts
    the blur on the light at each station's column height (blurred_circle); None: on the opacity."""
    if lumen.edge_width is None:
        return lumen
    height = None if ln_per_unit is None else lumen.height * ln_per_unit
    exact = true_diameter(lumen.edge_width, math.sqrt(BLUR_VAR_PX2 + blur_sd ** 2), height)
    width = np.where(np.isfinite(exact), exact, lumen.width)
    return dataclasses.replace(lumen, width=np.where(np.isfinite(lumen.width), width, np.nan))
