"""A catheter's outer width from its attenuation profile, whatever the blur: a fit of the projected tube.

A tube of outer radius R and inner radius r = q R projects to the chord ``2 sqrt(R^2 - x^2) - 2 sqrt(r^2 - x^2)``
across it (a lumen holding contrast adds some of the inner chord back: empty to as dense as the wall). The
detector blurs that (one Gaussian of sd ``sigma``), the pixel averages it over its area, and the stations'
profiles sample the pixels bilinearly; ``bilinear_sampler`` gives that last step exactly, station by station (a
catheter along a row of pixels meets the grid at one phase only, so no phase average). R, q, sigma are fitted
to the mean profile of the stations, amplitudes and offset by least squares, on a grid refined by simplex
searches. The outer width is 2 R.

Limit, measured (benchmarks/sweep_catheter.py, docs/catheter-calibration.md): a wall the blur and the pixels do
not resolve shows only its mid-wall ring and its mass, so a thinner wall with more blur (or none) fits as well
and the outer width along that valley is not in the profile: +-10-20% at the noise of a mask for a 6 px tube
with a 1 px wall. Given the noise, the fit takes the least blur the profile allows there (the phantom's
unblurred catheters: within 6% where the best fit wandered to -15%), and ``width_range_px`` says how wide the
valley is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

R_STEPS = np.linspace(0.7, 1.3, 21)      # outer radius tried, relative to the first guess's half width
Q_STEPS = np.linspace(0.0, 0.9, 10)      # inner / outer radius: solid to thin-walled
SIGMA_STEPS = np.linspace(0.0, 2.5, 11)  # detector blur sd (px)
FINE_PX = 0.05                           # the model's grid
REFINE_STARTS = 3                        # simplex searches from the grid's best radii
LUMEN_MAX = 1.0                          # the lumen's attenuation per px at most this many times the wall's
BLUR_STEP = 0.1                          # px: the least-blur scan's step
Z2_BLUR = 1.0                            # misfit rise (noise variances) the least-blur choice may take
Z2 = 4.0                                 # misfit rise (in noise variances) that rules a width out: ~2 sd
SCAN = (0.01, 0.02, 0.03, 0.045, 0.06, 0.08, 0.1, 0.13, 0.16, 0.2, 0.25)   # radius steps of the range scan


@dataclass(frozen=True)
class TubeFit:
    width_px: float           # outer diameter
    inner_fraction: float     # inner / outer radius
    blur_px: float            # detector blur sd (beyond the pixel and the sampling)
    residual: float           # rms misfit / profile amplitude
    width_range_px: tuple[float, float] = (math.nan, math.nan)   # outer widths fitting within the noise


def fit_tube(across: np.ndarray, profile: np.ndarray, width_guess: float,
             normal: tuple[float, float] = (1.0, 0.0), noise_var: float | None = None,
             sampler: tuple[np.ndarray, np.ndarray] | None = None, blur_px: float | None = None,
             with_range: bool = False) -> TubeFit:
    """The tube best matching ``profile`` (attenuation, background removed, sampled at ``across`` offsets
    along ``normal``, symmetric about 0 where the catheter's centre is). The pixel's area is modelled exactly
    (its kernel projected on ``normal``); the rest of the blur is a Gaussian (``blur_px``: fixed, else fitted).
    The wall's and the lumen's attenuations are free (the lumen empty up to as dense as the wall: linear least
    squares on those bounds). Every (radius, wall, blur) on a grid is tried (no local minimum to fall in), then
    simplex searches from the grid's best radii find the bottom.

    ``noise_var``: the variance a smooth one-parameter change of the profile's shape is measured with (the mean
    profile's per-sample variance times its correlation length in samples). Given, the least blur within
    ``Z2_BLUR`` such variances of the best fit is taken (``_least_blur``), and ``with_range`` adds
    ``width_range_px``: every outer width whose best fit (wall and blur free) is within ``Z2`` of them (more
    when the best misfits by more than the noise).

    ``sampler``: (fine grid, (N, F) weights) from ``bilinear_sampler``, the exact map from the tube's
    pixel-averaged profile on the fine grid to the measured samples (any angle, any phase on the pixel grid);
    without it the bilinear sampling is taken as averaged over every phase (a tent)."""
    x = np.asarray(across, dtype=float)
    p = np.asarray(profile, dtype=float)
    p = 0.5 * (p + p[::-1])                      # symmetric about the centre: its small error cancels
    nx, ny = abs(float(normal[0])), abs(float(normal[1]))
    if sampler is None:
        fine = fine_grid(x, width_guess)
        pixel = np.convolve(np.convolve(_box(nx), _box(ny)), np.convolve(_tent(nx), _tent(ny)))
        weights = None
    else:
        fine, weights = sampler
        weights = 0.5 * (weights + weights[::-1])  # as the profile (the model's offset centre then cancels alike)
        pixel = np.convolve(_box(nx), _box(ny))
    sigmas = SIGMA_STEPS if blur_px is None else np.array([float(blur_px)])
    sampling = _sampling(x, fine, weights, sigmas)                 # (S, N, F): blur, then sample
    pc = p - p.mean()
    pp = float(pc @ pc)
    radii = 0.5 * width_guess * R_STEPS
    cost = np.empty(len(radii))
    where = []
    for i, R in enumerate(radii):
        outer = sampling @ _pixel_chord(fine, R, pixel)                                  # (S, N)
        inner = np.einsum("snf,qf->sqn", sampling,
                          np.array([_pixel_chord(fine, q * R, pixel) for q in Q_STEPS]))  # (S, Q, N)
        c = _misfit(outer[:, None, :], inner, pc, pp)
        k = np.unravel_index(int(np.argmin(c)), c.shape)
        cost[i] = c[k]
        where.append((float(Q_STEPS[k[1]]), float(sigmas[k[0]])))

    def fit_cost(v: np.ndarray) -> float:
        R, q, sd = v
        sd = sd if blur_px is None else float(blur_px)
        if not (radii[0] <= R <= radii[-1] and 0.0 <= q <= 0.97 and 0.0 <= sd <= SIGMA_STEPS[-1]):
            return math.inf
        o = _sample(x, fine, weights, _blur(_pixel_chord(fine, R, pixel), sd / FINE_PX))
        n = _sample(x, fine, weights, _blur(_pixel_chord(fine, q * R, pixel), sd / FINE_PX))
        return float(_misfit(o, n, pc, pp))

    # The grid finds the valley; simplex searches from its best points find the bottom (R, wall and blur trade
    # off along a narrow valley the grid's steps cut across).
    order = np.argsort(cost)[:REFINE_STARTS]
    step = np.array([radii[1] - radii[0], 0.05, 0.1])
    f, (R, q, sd) = min((_simplex(fit_cost, np.array([radii[i], *where[i]]), step) for i in order),
                        key=lambda r: r[0])
    amp = float(np.max(p) - np.min(p))
    span = (math.nan, math.nan)
    if noise_var is not None and noise_var > 0:
        # A misfit above the noise (a model a little off the truth) widens the limit in proportion.
        scale = max(1.0, f / (0.5 * len(p) * noise_var))
        limit = f + Z2 * noise_var * scale
        if with_range:
            span = _width_range(fit_cost, float(R), np.array([q, sd]), limit, radii, cost, where)
        if blur_px is None:
            f, (R, q, sd) = _least_blur(fit_cost, f, np.array([R, q, sd]),
                                               f + Z2_BLUR * noise_var * scale, radii[1] - radii[0])
    return TubeFit(2.0 * float(R), float(q), float(sd), math.sqrt(max(f, 0.0) / len(p)) / max(amp, 1e-12), span)


def _least_blur(fit_cost, f: float, best: np.ndarray, limit: float, r_step: float) -> tuple[float, np.ndarray]:
    """The sharpest tube fitting within ``limit``. Where a thin wall under blur and a thicker wall under less
    blur fit alike (a wall the blur does not resolve), the best fit's point on that valley wanders with the
    noise (up to 15% in the width on the phantom's catheters, unblurred): the least blur the profile allows is
    taken. Scanned down from the best fit's blur in BLUR_STEP steps, radius and wall refitted at each."""
    chosen = (f, best)
    point = best.copy()
    sd = float(best[2]) - BLUR_STEP
    while sd >= -1e-9:
        sd = max(sd, 0.0)
        val, rest = _simplex(lambda v: fit_cost(np.array([v[0], v[1], sd])), point[:2],
                             np.array([r_step, 0.05]), iters=150, tol=1e-8)
        # Along the wall/blur valley less blur means a thicker wall around the same mid-wall ring: a wider
        # tube. A narrower one is another valley (a small solid tube read as a thin ring): not this trade.
        if val > limit or rest[0] < point[0] - 1e-3:
            break
        point = np.array([rest[0], rest[1], sd])
        chosen = (val, point)
        sd -= BLUR_STEP
    return chosen


def _width_range(fit_cost, R: float, rest: np.ndarray, limit: float, radii: np.ndarray, cost: np.ndarray,
                 where: list) -> tuple[float, float]:
    """(lowest, highest) outer width whose best fit over wall and blur stays under ``limit``: scanned out from
    the best radius until a step past 3% is ruled out, then any farther grid radius that fits (a second
    valley) widens it to that radius."""
    def profile(r: float, starts) -> tuple[float, np.ndarray]:
        return min((_simplex(lambda v: fit_cost(np.array([r, *v])), np.asarray(s, dtype=float),
                             np.array([0.05, 0.1]), iters=150, tol=1e-8) for s in starts), key=lambda t: t[0])

    lo, hi = R, R
    for sign in (-1.0, 1.0):
        start = np.asarray(rest, dtype=float)
        for frac in SCAN:
            r = R * (1.0 + sign * frac)
            if not radii[0] <= r <= radii[-1]:
                break
            g = int(np.argmin(np.abs(radii - r)))
            val, start = profile(r, [start, where[g]])
            if val <= limit:
                lo, hi = min(lo, r), max(hi, r)
            elif frac > 0.03:
                break
    for r, c, w in zip(radii, cost, where):
        if lo <= r <= hi or c > limit + 4.0 * (limit - min(cost.min(), limit)):
            continue
        if c <= limit or profile(float(r), [w])[0] <= limit:
            lo, hi = min(lo, float(r)), max(hi, float(r))
    return 2.0 * lo, 2.0 * hi


def _pixel_chord(fine: np.ndarray, R: float, pixel: np.ndarray) -> np.ndarray:
    return np.convolve(_bin_chord(fine, R), pixel, mode="same")


def _misfit(outer: np.ndarray, inner: np.ndarray, pc: np.ndarray, pp: float) -> np.ndarray:
    """Sum of squares left by the best ``a outer + b inner + offset`` (broadcast over leading axes; samples on
    the last): the wall's attenuation a >= 0 and the lumen's a + b between 0 (empty) and LUMEN_MAX a (contrast
    denser than the wall). Unconstrained when that holds, else the better of the two edges."""
    o = outer - outer.mean(axis=-1, keepdims=True)
    n = inner - inner.mean(axis=-1, keepdims=True)
    oo, nn, on = (o * o).sum(-1), (n * n).sum(-1), (o * n).sum(-1)
    op, np_ = o @ pc, n @ pc
    det = oo * nn - on * on
    ok = det > 1e-9 * np.maximum(oo * nn, 1e-300)
    safe = np.where(ok, det, 1.0)
    a = (nn * op - on * np_) / safe
    b = (oo * np_ - on * op) / safe
    best = np.where(ok & (a >= 0) & (a + b >= 0) & (a + b <= LUMEN_MAX * a), pp - (a * op + b * np_), np.inf)
    for k in (-1.0, LUMEN_MAX - 1.0):                       # on an edge b = k a: the one column o + k n
        hh = oo + 2 * k * on + k * k * nn
        hp = op + k * np_
        best = np.minimum(best, np.where((hp > 0) & (hh > 0), pp - hp * hp / np.where(hh > 0, hh, 1.0), pp))
    return best


def fine_grid(across: np.ndarray, width_guess: float) -> np.ndarray:
    """The model's grid for a profile sampled at ``across``: room for the widest blur either side."""
    pad = 0.8 * width_guess + 4.0 * SIGMA_STEPS[-1] + 2.0
    return np.arange(across[0] - pad, across[-1] + pad + FINE_PX / 2, FINE_PX)


def bilinear_sampler(fine: np.ndarray, across: np.ndarray, xy: np.ndarray, normal: np.ndarray,
                     tangent: np.ndarray, centres: np.ndarray, along: np.ndarray, grid_across: np.ndarray) -> np.ndarray:
    """(N, F) weights: the mean over stations of the profiles sampled bilinearly at ``xy + a normal + b
    tangent`` (``a`` on ``grid_across``, averaged over ``b`` in ``along``), each then read at ``across +
    centre`` by linear interpolation, as a linear map of a profile g(d) on ``fine`` (d: distance from the
    tube's axis at ``xy + centre normal``), where g holds the pixel-area average. Exact for any angle and any
    phase of the stations on the pixel grid (a catheter along a row meets the grid at one phase only)."""
    W = np.zeros((len(across), len(fine)))
    step = float(grid_across[1] - grid_across[0])
    for p0, n, t, c in zip(xy, normal, tangent, centres):
        pos = (across + c - grid_across[0]) / step                     # where np.interp reads the samples
        j = np.clip(np.floor(pos).astype(int), 0, len(grid_across) - 2)
        u = np.clip(pos - j, 0.0, 1.0)
        rows = np.arange(len(across))
        for jj, wj in ((j, 1.0 - u), (j + 1, u)):
            a = grid_across[jj]
            for b in along:
                px = p0[0] + a * n[0] + b * t[0]
                py = p0[1] + a * n[1] + b * t[1]
                x0, y0 = np.floor(px), np.floor(py)
                fx, fy = px - x0, py - y0
                for dx, dy, wb in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy),
                                   (1, 1, fx * fy)):
                    d = (x0 + dx - p0[0]) * n[0] + (y0 + dy - p0[1]) * n[1] - c
                    k = (d - fine[0]) / FINE_PX
                    k0 = np.clip(np.floor(k).astype(int), 0, len(fine) - 2)
                    fk = np.clip(k - k0, 0.0, 1.0)
                    w = wj * wb / len(along)
                    np.add.at(W, (rows, k0), w * (1.0 - fk))
                    np.add.at(W, (rows, k0 + 1), w * fk)
    return W / len(xy)


def _sample(x: np.ndarray, fine: np.ndarray, weights: np.ndarray | None, g: np.ndarray) -> np.ndarray:
    return np.interp(x, fine, g) if weights is None else weights @ g


def _sampling(x: np.ndarray, fine: np.ndarray, weights: np.ndarray | None, sigmas: np.ndarray) -> np.ndarray:
    """(S, N, F): for each blur of ``sigmas``, the weights of the fine grid in each sample at ``x``."""
    out = np.empty((len(sigmas), len(x), len(fine)))
    if weights is not None:
        for i, sd in enumerate(sigmas):
            # The blur is symmetric: blurring the weights' rows is blurring the profile they read.
            out[i] = weights if sd < FINE_PX else np.array([_blur(row, sd / FINE_PX) for row in weights])
        return out
    d = x[:, None] - fine[None, :]
    for i, sd in enumerate(sigmas):
        if sd < FINE_PX:
            w = np.clip(1.0 - np.abs(d) / FINE_PX, 0.0, None)      # linear interpolation
        else:
            w = np.exp(-0.5 * (d / sd) ** 2)
        out[i] = w / w.sum(axis=1, keepdims=True)
    return out


def _box(width: float) -> np.ndarray:
    """A box ``width`` px wide on the fine grid (unit sum), its end samples partly in: odd length, so centred
    (an even kernel would shift the model by half a sample: 1-2% misfit at a sharp edge)."""
    half = 0.5 * width / FINE_PX
    m = int(math.ceil(half - 0.5)) if half > 0.5 else 0
    k = np.clip(half + 0.5 - np.abs(np.arange(-m, m + 1)), 0.0, 1.0)
    return k / k.sum()


def _tent(half: float) -> np.ndarray:
    n = int(round(half / FINE_PX))
    if n < 1:
        return np.ones(1)
    k = 1.0 - np.abs(np.arange(-n, n + 1)) / n
    return k / k.sum()


def _bin_chord(fine: np.ndarray, R: float) -> np.ndarray:
    """Mean of the chord 2 sqrt(R^2 - x^2) over each fine sample's bin (exact: the singular edge is integrated)."""
    if R <= 0:
        return np.zeros(fine.shape)
    lo, hi = fine - FINE_PX / 2, fine + FINE_PX / 2

    def F(x):
        x = np.clip(x, -R, R)
        return x * np.sqrt(R * R - x * x) + R * R * np.arcsin(x / R)
    return (F(hi) - F(lo)) / (hi - lo)


def _blur(v: np.ndarray, sd_samples: float) -> np.ndarray:
    """Gaussian of sd ``sd_samples`` (in samples), integrated over each sample's bin; the ends continued."""
    if sd_samples < 0.5:
        return v
    r = max(1, int(math.ceil(4 * sd_samples)))
    edges = (np.arange(-r, r + 2) - 0.5) / (sd_samples * math.sqrt(2.0))
    cdf = 0.5 * (1.0 + np.array([math.erf(e) for e in edges]))
    k = np.diff(cdf)
    return np.convolve(np.pad(v, r, mode="edge"), k / k.sum(), mode="valid")


def _simplex(f, x0: np.ndarray, scale: np.ndarray, iters: int = 300, tol: float = 1e-10):
    """Nelder-Mead minimum of ``f`` from ``x0`` (initial steps ``scale``): (value, point)."""
    n = len(x0)
    pts = [np.asarray(x0, dtype=float)] + [x0 + np.eye(n)[i] * scale[i] for i in range(n)]
    vals = [f(p) for p in pts]
    for _ in range(iters):
        order = np.argsort(vals)
        pts, vals = [pts[i] for i in order], [vals[i] for i in order]
        if np.isfinite(vals[-1]) and vals[-1] - vals[0] <= tol * (abs(vals[0]) + 1e-30):
            break
        centre = np.mean(pts[:-1], axis=0)
        xr = centre + (centre - pts[-1])
        fr = f(xr)
        if fr < vals[0]:
            xe = centre + 2.0 * (centre - pts[-1])
            fe = f(xe)
            pts[-1], vals[-1] = (xe, fe) if fe < fr else (xr, fr)
        elif fr < vals[-2]:
            pts[-1], vals[-1] = xr, fr
        else:
            xc = centre + 0.5 * (pts[-1] - centre)
            fc = f(xc)
            if fc < vals[-1]:
                pts[-1], vals[-1] = xc, fc
            else:
                pts = [pts[0]] + [pts[0] + 0.5 * (p - pts[0]) for p in pts[1:]]
                vals = [vals[0]] + [f(p) for p in pts[1:]]
    k = int(np.argmin(vals))
    return vals[k], pts[k]
