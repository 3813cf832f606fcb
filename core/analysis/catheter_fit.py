"""A catheter's outer width from its attenuation profile, whatever the blur: a fit of the projected tube.

A tube of outer radius R and inner radius r = q R projects to the chord ``2 sqrt(R^2 - x^2) - 2 sqrt(r^2 - x^2)``
across it (a lumen holding contrast adds some of the inner chord back: empty to as dense as the wall, or twice
that when the profile asks for it). The detector blurs that (one Gaussian of sd ``sigma``), the pixel averages
it over its area, and the stations' profiles sample the pixels bilinearly; ``bilinear_sampler`` gives that last
step exactly, station by station (a catheter along a row of pixels meets the grid at one phase only, so no
phase average). R, q, sigma are fitted to the mean profile of the stations, amplitudes and background by least
squares, on a grid refined by simplex searches. The outer width is 2 R. On a ln mask (12/16-bit linear
video) the blur acts on the intensity before the log: ``ln_profile`` (core.analysis.catheter_ln).

Limit, measured (benchmarks/sweep_catheter.py, docs/catheter-calibration.md): a wall the blur and the pixels do
not resolve shows only its mid-wall ring and its mass, so a thinner wall with more blur (or none) fits as well
and the outer width along that valley is not in the profile (a 6 px tube with a 1 px wall at 0.5-1 px blur read
10-37% wide). So the blur is best measured elsewhere (``blur_bounds``: the vein's, core.analysis.calibration.
vessel_blur) and the catheter fitted at it; without it the least blur the profile allows is taken (the
phantom's unblurred catheters), ``ambiguous_px`` says how far the width runs along that valley and
``width_range_px`` adds the width's own noise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.analysis.catheter_background import background_basis
from core.analysis.catheter_linear import LinearTube
from core.analysis.catheter_ln import LnTube
from core.analysis.catheter_sampling import (
    FINE_PX,
    MAX_BLUR_SD,
    bin_chord,
    bin_chords,
    blur,
    blur_sampling,
    box_kernel,
    fine_grid,
    gauss_kernel,
    sample_at,
    tent_kernel,
)
from core.analysis.catheter_valley import blur_scan, choose, width_span
from core.analysis.simplex import simplex

R_STEPS = np.linspace(0.7, 1.5, 27)      # outer radius tried, relative to the first guess's half width
Q_STEPS = np.linspace(0.0, 0.9, 10)      # inner / outer radius: solid to thin-walled
MAX_INNER = 0.97                         # the thinnest wall the searches go to (inner / outer radius)
WALL_AT_LIMIT = MAX_INNER - 0.02         # a fit this thin-walled ran to that limit: not a tube there
SIGMA_STEPS = np.linspace(0.0, MAX_BLUR_SD, 11)  # detector blur sd (px)
REFINE_STARTS = 3                        # simplex searches from the grid's best radii
SOLID_REFINE_STARTS = 1                  # a solid column's radius at a held blur: its best grid point
SOLID_START_BLUR = 0.75                  # px: a solid column's free-blur search starts here, no grid
LUMEN_MAX = 1.0                          # the lumen's attenuation per px at most this many times the wall's,
DENSE_LUMEN_MAX = 2.0                    # or this many when that fits much better (contrast-filled)
CONTRADICTS = 4.0                        # misfit ratio at which a blur measured elsewhere is not used
Z2_BLUR = 1.0                            # misfit rise (noise variances) the least-blur choice may take
BACKGROUND_RESIDUAL = 0.01               # rms misfit / height above which a quadratic background is tried
Z2 = 4.0                                 # misfit rise (in noise variances) that rules a width out: ~2 sd


@dataclass(frozen=True)
class TubeFit:
    width_px: float           # outer diameter
    inner_fraction: float     # inner / outer radius
    blur_px: float            # detector blur sd (beyond the pixel and the sampling)
    residual: float           # rms misfit / profile amplitude
    width_range_px: tuple[float, float] = (math.nan, math.nan)   # outer widths fitting within the noise
    ambiguous_px: tuple[float, float] = (math.nan, math.nan)     # widths the profile cannot tell apart (_ambiguous)
    linear_inner_fraction: float = math.nan   # ln profile at a blur measured elsewhere: the linear model's q


def fit_tube(across: np.ndarray, profile: np.ndarray, width_guess: float,
             normal: tuple[float, float] = (1.0, 0.0), noise_var=None,
             sampler: tuple[np.ndarray, np.ndarray] | None = None, blur_px: float | None = None,
             blur_bounds: tuple[float, float, float] | None = None, solid: bool = False,
             ln_profile: bool = False, edges: tuple = ()) -> TubeFit:
    """The tube best matching ``profile`` (attenuation, background removed, sampled at ``across`` offsets
    along ``normal``, symmetric about 0 where the catheter's centre is). The pixel's area is modelled exactly
    (its kernel projected on ``normal``); the rest of the blur is a Gaussian (``blur_px``: fixed, else fitted).
    The wall's and the lumen's attenuations are free (the lumen empty up to as dense as the wall, or twice
    that when it fits much better: linear least squares on those bounds), and the background under the
    catheter (an offset, less a bone's edge (``edges``), and a quadratic when it fits much better). Every
    (radius, wall, blur) on a grid is tried (no local minimum to fall in), then simplex searches from the
    grid's best radii find the bottom.
    ``solid``: no lumen (a vein's contrast column: its blur is what is wanted; the best fit only).

    ``noise_var`` (a number, or a function of the background's basis giving it): the variance a smooth
    one-parameter change of the profile's shape is measured with (the mean profile's per-sample variance
    times its correlation length in samples). Given, ``width_range_px`` holds the outer widths fitting within
    ``Z2`` such variances of the best fit (more when the best misfits by more than the noise) and
    ``ambiguous_px`` those along the wall/blur valley and within the pixels' own noise (``noise_var``'s
    function gives both variances). ``blur_bounds`` (lowest, measured, highest blur,
    measured elsewhere): the tube at the measured blur, the valley within the bounds; else (or when the
    catheter's profile rules those blurs out) the least blur within ``Z2_BLUR`` variances
    (core.analysis.catheter_valley.choose).

    ``sampler``: (fine grid, (N, F) weights) from ``bilinear_sampler``, the exact map from the tube's
    pixel-averaged profile on the fine grid to the measured samples (any angle, any phase on the pixel grid);
    without it the bilinear sampling is taken as averaged over every phase (a tent).

    ``edges``: corrections (symmetric, on ``across``) that would take a bone's edge out of the profile
    (core.analysis.catheter_background.edge_corrections), tried as the background is.

    ``ln_profile``: the profile is ln of linear counts (12/16-bit linear video), so the blur and the pixel
    act on the transmitted intensity before the log (core.analysis.catheter_ln); the grid stays linear (its
    best points start the searches), the searches and the valley fit the exact model."""
    x = np.asarray(across, dtype=float)
    p = np.asarray(profile, dtype=float)
    p = 0.5 * (p + p[::-1])                      # symmetric about the centre: its small error cancels
    nx, ny = abs(float(normal[0])), abs(float(normal[1]))
    if sampler is None:
        fine = fine_grid(x, width_guess)
        pixel = np.convolve(np.convolve(box_kernel(nx), box_kernel(ny)), np.convolve(tent_kernel(nx), tent_kernel(ny)))
        weights = None
    else:
        fine, weights = sampler
        weights = 0.5 * (weights + weights[::-1])  # as the profile (the model's offset centre then cancels alike)
        pixel = np.convolve(box_kernel(nx), box_kernel(ny))
    radii = 0.5 * width_guess * R_STEPS
    ln = _ln_model(x, fine, weights, nx, ny, 1.5 * radii[-1]) if ln_profile else None
    # The linear model's operators folded once for all the fits below (core.analysis.catheter_linear).
    lin = None if weights is None else LinearTube(fine, weights, pixel, gauss_kernel, bin_chord, FINE_PX)
    r_step = float(radii[1] - radii[0])
    amp = float(np.max(p) - np.min(p))

    def done(f: float, R: float, q: float, sd: float, **kw) -> TubeFit:
        return TubeFit(2.0 * R, q, sd, math.sqrt(max(f, 0.0) / len(p)) / max(amp, 1e-12), **kw)

    fitted: list = []     # (blur, target, result): a fit repeated at the same blur and target is not redone

    def fit_at(sd_fixed: float | None, tgt: tuple | None = None) -> tuple[float, float, float, float]:
        tgt = target if tgt is None else tgt
        for s, t, res in fitted:
            if s == sd_fixed and t is tgt:
                return res
        res = _grid_fit(x, fine, weights, pixel, tgt, radii, solid, sd_fixed, ln, lin)
        if ln is None:       # the ln model's searches start from its last point: not memoised (as before)
            fitted.append((sd_fixed, tgt, res))
        return res

    # The background under the catheter: an offset, less a bone's edge found in the stations (``edges``: not
    # free, only its sign) when that fits better, and a quadratic too when the catheter's model still misfits
    # by more than BACKGROUND_RESIDUAL and that halves its rms (something wider than the catheter lies under it:
    # a vein holding a little contrast in the mask read a phantom catheter 6% wide). Not always: free, it takes
    # up the flanks of a thin wall under blur (worst 4% -> 12% at 1.5 px). Over bone (an edge found) it is
    # tried whatever the misfit: the background there is not flat (the phantom's catheters over its pubic ramus
    # read 3-4% wide at 0.1-0.2% misfit). Chosen at the blur measured elsewhere when there is one.
    bg_blur = blur_px if blur_px is not None or blur_bounds is None or solid else blur_bounds[1]
    target = _target(p, background_basis(x, quadratic=False))
    f, R, q, sd = fit_at(bg_blur)
    for c in edges:
        t = _target(p + c, target[2])
        fc = fit_at(bg_blur, t)
        if fc[0] < f:
            p, target, (f, R, q, sd) = p + c, t, fc
    if math.sqrt(max(f, 0.0) / len(p)) > BACKGROUND_RESIDUAL * amp or len(edges):
        plain = (target, (f, R, q, sd))
        target = _target(p, background_basis(x, quadratic=True))
        f, R, q, sd = fit_at(bg_blur)
        if f > 0.25 * plain[1][0]:
            target, (f, R, q, sd) = plain
    if solid:       # a vein's column: its best blur is what is measured (vein_blur agrees the pieces' blurs)
        return done(f, R, 0.0, sd, width_range_px=(2.0 * R, 2.0 * R))
    pixel_var = None
    if callable(noise_var):
        noise_var, pixel_var = noise_var(target[2])
    # A lumen denser than the wall (a catheter filled with contrast) only when the profile asks for it: its
    # misfit halves and falls by more than Z2 noise variances. Always allowed, a solid-looking tube under blur
    # also fits as a wider, fainter wall round a dense core (+19% on a 4 px solid tube at 1 px blur).
    if not solid and noise_var is not None and noise_var > 0:
        dense = _target(p, target[2], DENSE_LUMEN_MAX)
        fd = _grid_fit(x, fine, weights, pixel, dense, radii, solid, blur_px, ln, lin)
        if fd[0] < 0.5 * f and f - fd[0] > Z2 * noise_var:
            target, (f, R, q, sd) = dense, fd
    if noise_var is None or noise_var <= 0 or blur_px is not None:
        return done(f, R, q, sd)

    def cost_at(blur: float):
        return _fixed_blur_cost(x, fine, weights, pixel, target, blur, solid, ln, lin)

    # A misfit above the noise (a model a little off the truth) widens the limits in proportion.
    unit = noise_var * max(1.0, f / (0.5 * len(p) * noise_var))
    if blur_bounds is not None and not solid:
        lo_s, mid_s, hi_s = blur_bounds
        fits = {s: fit_at(s) for s in sorted({lo_s, mid_s, hi_s})}
        # Trusted unless the catheter's own profile flatly contradicts it (twice the rms misfit of its best):
        # at a mask's low noise a thin ring under a little more blur can fit a few noise variances better
        # than the truth (the model's small errors), and read a 1.5 px wall 17% narrow.
        if min(v[0] for v in fits.values()) <= max(f + Z2 * unit, CONTRADICTS * f):
            fm, Rm, qm, _ = fits[mid_s]
            limit = min(v[0] for v in fits.values()) + Z2 * unit
            widths = [2.0 * v[1] for v in fits.values() if v[0] <= limit] + [2.0 * Rm]
            lo, hi = width_span(cost_at(mid_s), Rm, qm, fm + Z2 * unit)
            return done(fm, Rm, qm, mid_s, width_range_px=(min(widths + [2.0 * lo]), max(widths + [2.0 * hi])),
                        ambiguous_px=_ambiguous(widths, cost_at(mid_s), Rm, qm, fm, pixel_var, len(p)),
                        linear_inner_fraction=math.nan if ln is None else
                        _grid_fit(x, fine, weights, pixel, target, radii, solid, mid_s, lin=lin)[2])
        # The blur measured elsewhere does not fit this catheter's profile: the profile alone decides.
    scan = blur_scan(cost_at, R, q, sd, f + Z2 * unit, r_step, SIGMA_STEPS[-1])
    f, (R, q, sd), span, valley = choose(scan, f + Z2 * unit, f + Z2_BLUR * unit, cost_at)
    return done(f, R, q, sd, width_range_px=span,
                ambiguous_px=_ambiguous(list(valley), cost_at(sd), R, q, f, pixel_var, len(p)))


def _ambiguous(widths: list, cost, R: float, q: float, f: float, pixel_var: float | None, n: int
               ) -> tuple[float, float]:
    """The outer widths along the wall/blur valley (``widths``) and, the blur held, within the pixels' own
    noise (``pixel_var``; its misfit scaled up to the fit's): what the profile cannot tell apart however well
    the background under it were known. The range for refusing: width_range_px also counts the background's
    changes along the catheter as noise (a bony ring under the phantom's catheter: +-15%)."""
    if pixel_var is None or pixel_var <= 0:
        return min(widths), max(widths)
    unit = pixel_var * max(1.0, f / (0.5 * n * pixel_var))
    lo, hi = width_span(cost, R, q, f + Z2 * unit)
    return min(widths + [2.0 * lo]), max(widths + [2.0 * hi])


def _grid_fit(x, fine, weights, pixel, target, radii: np.ndarray, solid: bool, sd_fixed: float | None,
              ln: LnTube | None = None, lin: LinearTube | None = None) -> tuple[float, float, float, float]:
    """(misfit, R, q, blur) of the best tube: every (radius, wall, blur) on a grid (no local minimum to fall
    in), then simplex searches from the grid's best radii (R, wall and blur trade off along a narrow valley
    the grid's steps cut across). ``sd_fixed``: the blur held there. ``ln``: the searches fit that model.
    ``lin``: the linear model with its operators folded (the sampler's path, fast; the same numbers)."""
    sigmas = SIGMA_STEPS if sd_fixed is None else np.array([float(sd_fixed)])
    q_steps = Q_STEPS[:1] if solid else Q_STEPS
    # A solid column's (radius, blur) valley has one bottom: searched from the first guess's radius and
    # SOLID_START_BLUR, no grid.
    grid = not (solid and sd_fixed is None)
    cost = np.empty(len(radii) if grid else 0)
    where = []
    if grid and lin is None:
        sampling = blur_sampling(x, fine, weights, sigmas)             # (S, N, F): blur, then sample
    elif grid:  # (S, N, F'): the pixel folded in as well, over the columns the widest tube reaches
        sampling, first = lin.grid_sampling(sigmas, float(np.max(radii)))
    for i, R in enumerate(radii if grid else ()):
        if lin is None:
            outer = sampling @ _pixel_chord(fine, R, pixel)                              # (S, N)
            walls = lambda rs: np.array([_pixel_chord(fine, r, pixel) for r in rs])     # noqa: E731
            sub = sampling
        else:                   # only where the widest chord is not zero
            lo, hi = lin.support(R)
            sub = sampling[:, :, lo - first:hi - first]
            walls = lambda rs, g=fine[lo:hi]: bin_chords(g, rs)     # noqa: E731
            outer = sub @ bin_chord(fine[lo:hi], R)
        if solid:
            inner = np.zeros((len(sigmas), 1, len(x)))
        else:
            inner = np.einsum("snf,qf->sqn", sub, walls(q_steps * R))  # (S, Q, N)
        c = _misfit(outer[:, None, :], inner, target)
        k = np.unravel_index(int(np.argmin(c)), c.shape)
        cost[i] = c[k]
        where.append((float(q_steps[k[1]]), float(sigmas[k[0]])))

    # Only the free parameters are searched: (R, q, blur), (R, q) at a fixed blur, (R, blur) when solid.
    free = [0] + ([] if solid else [1]) + ([2] if sd_fixed is None else [])
    fixed_m = None if sd_fixed is None else (sampling[0] if lin is None else lin.sampling(float(sd_fixed)))
    if grid:
        del sampling

    def fit_cost(v: np.ndarray) -> float:
        full = np.array([0.0, 0.0, 0.0 if sd_fixed is None else float(sd_fixed)])
        full[free] = v
        R, q, sd = full
        if not (radii[0] <= R <= radii[-1] and 0.0 <= q <= MAX_INNER and 0.0 <= sd <= SIGMA_STEPS[-1]):
            return math.inf
        if ln is not None:
            return ln.misfit(R, q, sd, target)
        if fixed_m is not None and lin is not None:
            return lin.misfit(fixed_m, R, q * R, target)
        if fixed_m is not None:
            return float(_misfit(fixed_m @ _pixel_chord(fine, R, pixel), fixed_m @ _pixel_chord(fine, q * R, pixel),
                                 target))
        if lin is not None:
            f = lin.misfit_blurred(R, q * R, sd, target)
            if f is not None:
                return f
        o = sample_at(x, fine, weights, blur(_pixel_chord(fine, R, pixel), sd / FINE_PX))
        n = sample_at(x, fine, weights, blur(_pixel_chord(fine, q * R, pixel), sd / FINE_PX))
        return float(_misfit(o, n, target))

    order = np.argsort(cost)[:SOLID_REFINE_STARTS if solid else REFINE_STARTS]
    starts = [np.array([radii[i], *where[i]])[free] for i in order] if grid else \
        [np.array([radii[0] / R_STEPS[0], SOLID_START_BLUR])]
    step = np.array([radii[1] - radii[0], 0.05, 0.1])[free]
    f, v = min((simplex(fit_cost, start, step) for start in starts), key=lambda r: r[0])
    full = np.array([0.0, 0.0, 0.0 if sd_fixed is None else float(sd_fixed)])
    full[free] = v
    return float(f), float(full[0]), float(full[1]), float(full[2])


def _ln_model(x: np.ndarray, fine: np.ndarray, weights: np.ndarray | None, nx: float, ny: float, reach: float
              ) -> LnTube:
    """The ln-profile model: the pixel's box before the log, the sampling after it (the sampler's weights, or
    linear interpolation after the phase-averaged tent)."""
    if weights is None:
        tent = np.convolve(tent_kernel(nx), tent_kernel(ny))
        post = np.array([np.convolve(row, tent, mode="same") for row in blur_sampling(x, fine, None, np.zeros(1))[0]])
    else:
        post = weights
    return LnTube(fine, post, np.convolve(box_kernel(nx), box_kernel(ny)), gauss_kernel, bin_chord, FINE_PX, reach)


def _target(p: np.ndarray, basis: np.ndarray, lumen_max: float = LUMEN_MAX) -> tuple:
    """(profile without its background, its sum of squares, the background's basis, the lumen's densest):
    what _misfit fits."""
    pc = p - basis @ (basis.T @ p)
    return pc, float(pc @ pc), basis, lumen_max


def _fixed_blur_cost(x, fine, weights, pixel, target, sd: float, solid: bool = False, ln: LnTube | None = None,
                     lin: LinearTube | None = None):
    """The misfit of (R, q) at blur ``sd``, the blur folded into the sampling once (fast); ``ln``: that model's;
    ``lin``: the linear model's folded operators (the pixel folded in too)."""
    if ln is None and lin is not None:
        mp = lin.sampling(sd)

        def cost_lin(v: np.ndarray) -> float:
            R, q = float(v[0]), (0.0 if solid else float(v[1]))
            if not (0.0 < R and 0.0 <= q <= MAX_INNER):
                return math.inf
            return lin.misfit(mp, R, q * R, target)
        return cost_lin
    m = None if ln is not None else blur_sampling(x, fine, weights, np.array([sd]))[0]

    def cost(v: np.ndarray) -> float:
        R, q = float(v[0]), (0.0 if solid else float(v[1]))
        if not (0.0 < R and 0.0 <= q <= MAX_INNER):
            return math.inf
        if ln is not None:
            return ln.misfit(R, q, sd, target)
        return float(_misfit(m @ _pixel_chord(fine, R, pixel), m @ _pixel_chord(fine, q * R, pixel), target))
    return cost


def _pixel_chord(fine: np.ndarray, R: float, pixel: np.ndarray) -> np.ndarray:
    return np.convolve(bin_chord(fine, R), pixel, mode="same")


def _misfit(outer: np.ndarray, inner: np.ndarray, target: tuple) -> np.ndarray:
    """Sum of squares left by the best ``a outer + b inner + background`` (broadcast over leading axes; samples
    on the last; ``target``: the profile and its sum of squares, both without the background, and the
    background's orthonormal basis, the lumen's densest): the wall's attenuation a >= 0 and the lumen's a + b
    between 0 (empty) and lumen_max a (contrast denser than the wall). Unconstrained when that holds, else the
    better of the two edges."""
    pc, pp, basis, lumen_max = target
    o = outer - (outer @ basis) @ basis.T
    n = inner - (inner @ basis) @ basis.T
    oo, nn, on = (o * o).sum(-1), (n * n).sum(-1), (o * n).sum(-1)
    op, np_ = o @ pc, n @ pc
    det = oo * nn - on * on
    ok = det > 1e-9 * np.maximum(oo * nn, 1e-300)
    safe = np.where(ok, det, 1.0)
    a = (nn * op - on * np_) / safe
    b = (oo * np_ - on * op) / safe
    best = np.where(ok & (a >= 0) & (a + b >= 0) & (a + b <= lumen_max * a), pp - (a * op + b * np_), np.inf)
    for k in (-1.0, lumen_max - 1.0):                       # on an edge b = k a: the one column o + k n
        hh = oo + 2 * k * on + k * k * nn
        hp = op + k * np_
        best = np.minimum(best, np.where((hp > 0) & (hh > 0), pp - hp * hp / np.where(hh > 0, hh, 1.0), pp))
    return best
