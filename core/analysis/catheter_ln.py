"""The tube's profile on a ln mask (12/16-bit linear video: the mask is ln of counts), for core.analysis.catheter_fit.

The detector blurs and each pixel averages the transmitted intensity ``exp(-A)``; the log comes after, so a pixel
reads ``-ln(K * exp(-A))`` (K: the Gaussian blur and the pixel's box), not the blurred attenuation ``K * A`` the
linear model fits. At a catheter's attenuations (0.5-1.5 across its wall) the difference reads its outer width
4-10% narrow at 1 px blur (docs/catheter-calibration.md). The bilinear sampling of the stations reads the ln
image, so it stays a linear map after the log.

The wall's and the lumen's attenuations enter nonlinearly: for each (R, q, blur) they are solved by a few
Gauss-Newton steps (from zero the first step is the linear model's least squares; the searches start each from
the previous point's), each step the linearised
problem under the same bounds as the linear model (wall >= 0, lumen between empty and ``lumen_max`` times the
wall), the background (in ln units, additive) projected out.
"""
from __future__ import annotations

import math

import numpy as np

GN_STEPS = 8          # Gauss-Newton steps at most per (R, q, blur)
GN_TOL = 1e-7         # relative misfit change that ends them
HALVINGS = 4          # a step that raises the misfit is halved this many times at most
MAX_CACHED = 64       # blurs whose kernel transforms are kept


class LnTube:
    """Misfit of a tube (R, q, blur) to a ln profile, the attenuations solved.

    ``fine``: the model's grid (FINE_PX apart); ``post``: (N, F) the linear map from a ln profile on ``fine``
    to the measured samples (the bilinear sampling, after the log); ``pixel``: the pixel's box on ``fine``
    (before the log); ``kernel(sd_samples)``: the Gaussian blur on ``fine``; ``chord(grid, R)``: the chord of a
    disc of radius R across ``grid``, bin-averaged; ``reach``: the widest tube's radius. The model is computed
    only where the samples read it or the tube lies (outside, exp(-A) - 1 is 0: the FFT's zero padding is
    exact), half the grid or less: twice as fast. Each (R, q, blur) then models only where the tube lies and
    reads only where its blur reaches (elsewhere every row is 0 and the model ln 1 = 0): the same numbers to
    rounding (1e-14 relative on seeded tubes), the transforms a half to a quarter as long."""

    def __init__(self, fine: np.ndarray, post: np.ndarray, pixel: np.ndarray, kernel, chord, fine_px: float,
                 reach: float):
        read = np.flatnonzero(np.any(post != 0, axis=0))
        keep = (np.arange(len(fine)) >= read[0]) & (np.arange(len(fine)) <= read[-1]) | (np.abs(fine) <= reach)
        lo, hi = int(np.flatnonzero(keep)[0]), int(np.flatnonzero(keep)[-1]) + 1
        self.fine, self.post, self.pixel = fine[lo:hi], np.ascontiguousarray(post[:, lo:hi]), pixel
        self.kernel, self.chord, self.fine_px = kernel, chord, fine_px
        self._kernels: dict[float, np.ndarray] = {}
        self._fft: dict[tuple[float, int], np.ndarray] = {}
        self._last = (0.0, 0.0)     # the previous attenuations: the searches move in small steps, a warm start

    def _kernel_fft(self, sd: float, width: int) -> tuple[np.ndarray, int, int]:
        """(the blur and pixel's transform for rows ``width`` long, its half length, the transform's size)."""
        key = round(float(sd), 9)
        k = self._kernels.get(key)
        if k is None:
            s = sd / self.fine_px
            k = self.pixel if s < 0.5 else np.convolve(self.kernel(round(float(s), 9)), self.pixel)
            if len(self._kernels) >= MAX_CACHED:
                self._kernels.clear()
                self._fft.clear()
            self._kernels[key] = k
        size = 1 << int(math.ceil(math.log2(width + len(k))))
        hit = self._fft.get((key, size))
        if hit is None:
            hit = self._fft[(key, size)] = np.fft.rfft(k, size)
        return hit, len(k) // 2, size

    def _blurred(self, rows: np.ndarray, sd: float) -> np.ndarray:
        """Each row convolved with the blur and the pixel, in full (``len(k) - 1`` longer: its first sample is
        the rows' first less the kernel's half length)."""
        kf, r, size = self._kernel_fft(sd, rows.shape[1])
        return np.fft.irfft(np.fft.rfft(rows, size, axis=1) * kf[None, :], size, axis=1)[:, :rows.shape[1] + 2 * r]

    def _support(self, R: float) -> tuple[int, int]:
        """Indices [lo, hi) of the grid whose bins meet the disc of radius ``R`` (two samples spare each side)."""
        reach = R + self.fine_px
        lo = math.floor((-reach - float(self.fine[0])) / self.fine_px) - 2
        hi = math.ceil((reach - float(self.fine[0])) / self.fine_px) + 3
        return max(0, lo), max(min(len(self.fine), hi), max(0, lo) + 1)

    def misfit(self, R: float, q: float, sd: float, target: tuple) -> float:
        return self.fit(R, q, sd, target)[0]

    def fit(self, R: float, q: float, sd: float, target: tuple) -> tuple[float, float, float]:
        """(misfit, wall attenuation, lumen attenuation) per px of chord; ``target`` as catheter_fit._target."""
        pc, _, basis, lumen_max = target
        # Only where the tube lies (elsewhere exp(-A) - 1, and so every row, is 0), its blur read where it
        # reaches: outside, the model is ln 1 = 0 and its derivatives 0. The same numbers as over the whole grid.
        lo, hi = self._support(R)
        outer = self.chord(self.fine[lo:hi], R)
        inner = self.chord(self.fine[lo:hi], q * R) if q > 0 else np.zeros_like(outer)
        wall = outer - inner
        r = self._kernel_fft(sd, hi - lo)[1]
        a0, a1 = max(0, lo - r), min(len(self.fine), hi + r)     # the blurred rows' reach on the grid
        post = self.post[:, a0:a1]

        def model(a: float, c: float):
            t = np.exp(-(a * wall + c * inner))
            conv = self._blurred(np.stack([t - 1.0, wall * t, inner * t]), sd)[:, a0 - (lo - r):a1 - (lo - r)]
            den = np.maximum(1.0 + conv[0], 1e-12)     # the blur sums to one: 1 + K*(t - 1) = K*t
            s = post @ np.stack([-np.log(den), conv[1] / den, conv[2] / den]).T     # (N, 3): model, d/da, d/dc
            s = s - basis @ (basis.T @ s)
            res = pc - s[:, 0]
            return float(res @ res), res, s[:, 1], s[:, 2]

        a, c = self._last
        c = min(c, lumen_max * a)
        f, res, ja, jc = model(a, c)
        for _ in range(GN_STEPS):
            na, nc = _bounded_lsq(ja, jc, res + ja * a + jc * c, lumen_max)
            for _ in range(HALVINGS + 1):
                nf, nres, nja, njc = model(na, nc)
                if nf < f:
                    break
                na, nc = 0.5 * (a + na), 0.5 * (c + nc)
            else:
                break
            done = f - nf <= GN_TOL * f
            a, c, f, res, ja, jc = na, nc, nf, nres, nja, njc
            if done:
                break
        self._last = (a, c)
        return f, a, c


def _bounded_lsq(u: np.ndarray, v: np.ndarray, y: np.ndarray, lumen_max: float) -> tuple[float, float]:
    """(a, c) minimising |y - a u - c v| with a >= 0 and 0 <= c <= lumen_max a: unconstrained when that holds,
    else the better of the edges c = 0 and c = lumen_max a."""
    uu, vv, uv, uy, vy = u @ u, v @ v, u @ v, u @ y, v @ y
    det = uu * vv - uv * uv
    if det > 1e-9 * max(uu * vv, 1e-300):
        a, c = (vv * uy - uv * vy) / det, (uu * vy - uv * uy) / det
        if a >= 0 and 0 <= c <= lumen_max * a:
            return float(a), float(c)
    best, out = -math.inf, (0.0, 0.0)
    for k in (0.0, lumen_max):
        ww, wy = uu + 2 * k * uv + k * k * vv, uy + k * vy
        if ww > 0 and wy > 0 and wy * wy / ww > best:       # the misfit falls by wy^2 / ww
            best, out = wy * wy / ww, (float(wy / ww), float(k * wy / ww))
    return out
