"""The lumen's widths corrected for the blur measured on the run's own vein (vessel sizing only).

lumen.py adds back a fixed blur (pixel area and bilinear sampling, BLUR_VAR_PX2) to second order; a detector PSF
of sd s is not in it and a wide lumen's half-height edges move in (the independent phantom: the reference -1.6%
at s 0.5-0.85 px, -3.3% at 0.85-1.2, -4.1% at 1.2-1.5, the MLD with it). Here each station's half-height
diameter is corrected by the exact relation of a blurred circle (core.analysis.blurred_circle) at the total blur
``sqrt(BLUR_VAR_PX2 + s^2)``, s measured on the vein as catheter calibration and the device's fit measure it
(core.analysis.vein_blur). Where the blur is not measured or its pieces scatter, the widths stay as lumen.py
gives them. Clearance keeps lumen.py's widths.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from core.analysis.blurred_circle import true_diameter
from core.analysis.lumen import BLUR_VAR_PX2, Lumen

__all__ = ["lumen_at_blur", "trusted_blur", "MAX_BLUR_SPREAD_PX", "MAX_BLUR_PX"]

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


def lumen_at_blur(lumen: Lumen, blur_sd: float) -> Lumen:
    """``lumen`` with each station's width from its half-height diameter at the total blur sd
    ``sqrt(BLUR_VAR_PX2 + blur_sd^2)`` (lumen.py's own width where that cannot be inverted)."""
    if lumen.edge_width is None:
        return lumen
    exact = true_diameter(lumen.edge_width, math.sqrt(BLUR_VAR_PX2 + blur_sd ** 2))
    width = np.where(np.isfinite(exact), exact, lumen.width)
    return dataclasses.replace(lumen, width=np.where(np.isfinite(lumen.width), width, np.nan))
