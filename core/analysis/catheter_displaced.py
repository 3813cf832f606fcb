"""A catheter's outer width from the contrast it displaces in the run's peak-opacity image (for
core.analysis.calibration).

A catheter lying in the opacified vein displaces the contrast of its whole outer cross-section (its lumen holds
blood or saline, not the vein's mixture), so across it the peak opacity is the vein's column less a solid disc:
``k (chord(x - xv; Rv) - chord(x; Rc))``, one contrast density ``k`` for both, blurred as the vein is. In the
mask a thin wall under blur trades against that blur (a thinner wall under more blur fits alike:
core.analysis.catheter_fit), so there the outer width is ambiguous; a solid disc has no wall to trade, and the
density the vein's column shows ties the hole's depth to its width. At the vein's measured blur the hole gives
the outer width the mask cannot (the independent phantom's thin-walled catheters: docs/catheter-calibration.md).

The stations and the catheter's axis are the mask's (core.analysis.catheter_profile); the model samples the
profile exactly as the stations did (catheter_sampling.bilinear_sampler). Used only where it applies: a column
around the catheter, a round vein with a hole fitting within the noise, the hole inside the vein, the width
pinned within MAX_SPREAD by the noise and the blur's bounds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.analysis.catheter_profile import (
    ACROSS_STEP_PX,
    ALONG_PX,
    catheter_axis,
    catheter_stations,
    pixel_noise,
    shifted,
)
from core.analysis.catheter_sampling import bilinear_sampler, bin_chord, blur_sampling, box_kernel, fine_grid
from core.analysis.catheter_valley import width_span
from core.analysis.simplex import simplex
from core.analysis.vessel import sample_profiles

__all__ = ["DisplacedFit", "displaced_fit"]

MAX_VEIN_PX = 40.0          # the widest vein looked for around the catheter
MARGIN_PX = 5.0             # background beyond the vein's edges on each side of the fitted window
COLUMN_SHARE = 0.3          # the column: where the mean profile stands above this share of its top
MIN_COLUMN_SNR = 10.0       # the column's height over the mean profile's noise sd
MAX_RESIDUAL = 0.03         # rms misfit / the column's height: a round vein with a round hole
MAX_EXCESS = 30.0           # the best misfit over the noise's (0.5 per sample of noise variance) at most
MIN_HOLE_PX = 1.0           # the narrowest hole fitted
MIN_WALL_GAP_PX = 0.5       # the hole lies inside the vein by this much at least
MAX_SPREAD = 0.1            # the widths the noise and the blur's bounds allow span at most this share
Z2 = 4.0                    # misfit rise (noise variances) ruling a width out (as catheter_fit's)
SPAN_STEPS = (0.01, 0.02, 0.035, 0.05, 0.07, 0.1, 0.14)


@dataclass(frozen=True)
class DisplacedFit:
    width_px: float                      # the catheter's outer diameter at the measured blur
    span_px: tuple[float, float]         # the widths the noise and the blur's bounds allow
    vein_px: float                       # the vein's diameter around it
    residual: float                      # rms misfit / the column's height


def displaced_fit(opacity: np.ndarray, mask: np.ndarray, points: np.ndarray,
                  blur_bounds: tuple[float, float, float]) -> DisplacedFit | None:
    """The catheter's outer width from the hole it leaves in the vein's column of ``opacity`` (higher = more
    contrast, the mask's units) between ``points``, at the vein's blur (``blur_bounds``: lowest, measured,
    highest); None where that does not apply (no column round it, the profile is not a vein with a round hole,
    the width not pinned). ValueError as catheter_fit's when the points are not on a catheter in ``mask``."""
    cs = catheter_stations(mask, points)
    line, keep = catheter_axis(cs.across, cs.prof, cs.centres, cs.width)
    st = cs.stations
    xy, normal, tangent, line = st.xy[keep], st.normal[keep], st.tangent[keep], line[keep]
    if len(xy) < 8:
        return None
    half = MAX_VEIN_PX / 2 + MARGIN_PX
    grid = np.arange(-half, half + 1e-9, ACROSS_STEP_PX)
    raw = sample_profiles(np.asarray(opacity, dtype=np.float32), st.picked(keep), grid, ALONG_PX)
    if not np.all(np.isfinite(raw)):
        return None
    aligned = shifted(grid, raw, grid[None, :] + line[:, None])
    mean = aligned.mean(axis=0)
    edges = _column(grid, mean)
    if edges is None:
        return None
    left, right = edges
    window = (grid >= left - MARGIN_PX) & (grid <= right + MARGIN_PX)
    x, p = grid[window], mean[window]
    basis = np.linalg.qr(np.column_stack([np.ones_like(x), x]))[0]   # the background: an offset and a slope
    noise_var = pixel_noise(aligned[:, window], basis)
    fine = fine_grid(x, cs.width)
    W = bilinear_sampler(fine, x, xy, normal, tangent, line, ALONG_PX, grid)
    nx, ny = abs(float(normal[0, 0])), abs(float(normal[0, 1]))
    pixel = np.convolve(box_kernel(nx), box_kernel(ny))
    pc = p - basis @ (basis.T @ p)
    pp = float(pc @ pc)
    lo_s, mid_s, hi_s = (float(v) for v in blur_bounds)
    models = {s: blur_sampling(x, fine, W, np.array([s]))[0] for s in sorted({lo_s, mid_s, hi_s})}

    def misfit(M: np.ndarray, v: np.ndarray) -> float:
        Rv, xv, Rc = (float(t) for t in v)
        if not (MIN_HOLE_PX / 2 < Rc and Rc + abs(xv) + MIN_WALL_GAP_PX < Rv < half):
            return math.inf
        m = M @ np.convolve(bin_chord(fine - xv, Rv) - bin_chord(fine, Rc), pixel, mode="same")
        m = m - basis @ (basis.T @ m)
        mm, mp = float(m @ m), float(m @ pc)
        if mm <= 0 or mp <= 0:          # the column's density is positive
            return math.inf
        return pp - mp * mp / mm

    rv0, xv0 = 0.5 * (right - left), 0.5 * (right + left)
    starts = [np.array([rv0, xv0, rc]) for rc in (0.35 * cs.width, 0.5 * cs.width, 0.7 * cs.width)]
    step = np.array([0.5, 0.5, 0.25])
    f, v = min((simplex(lambda t: misfit(models[mid_s], t), s0, step, iters=400, tol=1e-12) for s0 in starts),
               key=lambda r: r[0])
    if not math.isfinite(f):
        return None
    height = float(np.max(p) - np.min(p))
    residual = math.sqrt(max(f, 0.0) / len(p)) / max(height, 1e-12)
    if residual > MAX_RESIDUAL or not (noise_var > 0 and height > MIN_COLUMN_SNR * math.sqrt(noise_var)):
        return None
    # The misfit within the noise (a round vein less a solid disc): a lumen holding some of the contrast (a
    # catheter it was injected through) leaves a shallower hole that reads narrow; none (a phantom's catheter not
    # displacing the contrast) drives the hole to its smallest.
    excess = f / (0.5 * len(p) * noise_var)
    if excess > MAX_EXCESS or float(v[2]) <= MIN_HOLE_PX / 2 + 0.05:
        return None
    unit = noise_var * max(1.0, excess)
    widths = [2.0 * float(v[2])]
    for s, M in models.items():          # the blur's bounds
        if s != mid_s:
            _, vs = simplex(lambda t: misfit(M, t), v, step, iters=400, tol=1e-12)
            widths.append(2.0 * float(vs[2]))
    # The hole's radius walked out, the vein (radius, offset) searched at each (the wall's span of catheter_fit).
    lo, hi = width_span(lambda t: misfit(models[mid_s], np.array([t[1], t[2], t[0]])), float(v[2]), v[:2],
                        f + Z2 * unit, steps=SPAN_STEPS, step=0.3, iters=200, tol=1e-12)
    span = (min(widths + [2.0 * lo]), max(widths + [2.0 * hi]))
    width = 2.0 * float(v[2])
    if span[1] - span[0] > MAX_SPREAD * width:
        return None
    return DisplacedFit(width, span, 2.0 * float(v[0]), residual)


def _column(x: np.ndarray, mean: np.ndarray) -> tuple[float, float] | None:
    """(left, right) edges of the contrast column around the catheter's axis (0): the outermost samples above
    COLUMN_SHARE of the profile's top within the run holding the axis (the hole may dip below it); None when
    the axis is not in a column."""
    top = float(np.max(mean))
    base = float(np.median(np.concatenate([mean[:8], mean[-8:]])))
    if not top > base:
        return None
    above = mean - base > COLUMN_SHARE * (top - base)
    c = int(np.argmin(np.abs(x)))
    gap = int(round(MAX_VEIN_PX / 2 / ACROSS_STEP_PX))
    idx = np.flatnonzero(above)
    near = idx[np.abs(idx - c) <= gap]
    if near.size == 0 or not (near.min() < c < near.max()):
        return None
    return float(x[near.min()]), float(x[near.max()])
