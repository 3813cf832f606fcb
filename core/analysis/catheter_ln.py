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
    exact), half the grid or less: twice as fast."""

    def __init__(self, fine: np.ndarray, post: np.ndarray, pixel: np.ndarray, kernel, chord, fine_px: float,
                 reach: float):
        read = np.flatnonzero(np.any(post != 0, axis=0))
        keep = (np.arange(len(fine)) >= read[0]) & (np.arange(len(fine)) <= read[-1]) | (np.abs(fine) <= reach)
        lo, hi = int(np.flatnonzero(keep)[0]), int(np.flatnonzero(keep)[-1]) + 1
        self.fine, self.post, self.pixel = fine[lo:hi], np.ascontiguousarray(post[:, lo:hi]), pixel
        self.kernel, self.chord, self.fine_px = kernel, chord, fine_px
        self._fft: dict[float, tuple[np.ndarray, int, int]] = {}
        self._last = (0.0, 0.0)     # the previous attenuations: the searches move in small steps, a warm start

    def _kernel_fft(self, sd: float) -> tuple[np.ndarray, int, int]:
        key = round(float(sd), 9)
        hit = self._fft.get(key)
        if hit is None:
            s = sd / self.fine_px
            k = self.pixel if s < 0.5 else np.convolve(self.kernel(round(float(s), 9)), self.pixel)
            r = len(k) // 2
            size = 1 << int(math.ceil(math.log2(len(self.fine) + len(k))))
            if len(self._fft) >= MAX_CACHED:
                self._fft.clear()
            hit = self._fft[key] = (np.fft.rfft(k, size), r, size)
        return hit

    def _blurred(self, rows: np.ndarray, sd: float) -> np.ndarray:
        """Each row convolved with the blur and the pixel (rows zero near the grid's ends: room for the blur)."""
        kf, r, size = self._kernel_fft(sd)
        return np.fft.irfft(np.fft.rfft(rows, size, axis=1) * kf[None, :], size, axis=1)[:, r:r + len(self.fine)]

    def misfit(self, R: float, q: float, sd: float, target: tuple) -> float:
        return self.fit(R, q, sd, target)[0]

    def fit(self, R: float, q: float, sd: float, target: tuple) -> tuple[float, float, float]:
        """(misfit, wall attenuation, lumen attenuation) per px of chord; ``target`` as catheter_fit._target."""
        pc, _, basis, lumen_max = target
        outer = self.chord(self.fine, R)
        inner = self.chord(self.fine, q * R) if q > 0 else np.zeros_like(outer)
        wall = outer - inner

        def model(a: float, c: float):
            t = np.exp(-(a * wall + c * inner))
            conv = self._blurred(np.stack([t - 1.0, wall * t, inner * t]), sd)
            den = np.maximum(1.0 + conv[0], 1e-12)     # the blur sums to one: 1 + K*(t - 1) = K*t
            s = self.post @ np.stack([-np.log(den), conv[1] / den, conv[2] / den]).T     # (N, 3): model, d/da, d/dc
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
