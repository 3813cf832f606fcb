"""The linear tube model of core.analysis.catheter_fit, fast, for a profile read through a bilinear sampler.

The model is linear in the tube's chord: ``weights @ blur(pixel * chord)``. Every operator before the chord
is folded into one (N, F) matrix per blur, computed once per fit (the sampler's transform once, each blur's
kernel with the pixel's once), and the chord is computed and multiplied only where it is not zero (a few
radii of the fine grid, a fifth to a tenth of it). The same numbers as catheter_fit's plain path
(catheter_sampling's ``blur_sampling``, ``blur``, catheter_fit's ``_pixel_chord``, kept as the reference) up to rounding: tests/test_catheter_linear.py.
A search's cost, the misfit of one tube, is ext/_tube.pyx's kernel (``impl="compiled"``); ``impl="reference"``
computes it in NumPy (``read``, ``read_blurred``, ``misfit_one``).
"""
from __future__ import annotations

import math

import numpy as np

import ext._tube as _tube

MAX_CACHED = 64       # blurs whose folded matrices are kept


class LinearTube:
    """``fine``: the model's grid (``fine_px`` apart); ``weights``: (N, F) the bilinear sampler; ``pixel``: the
    pixel's kernel on ``fine`` (odd, symmetric); ``kernel(sd_samples)``: the Gaussian on ``fine``;
    ``bin_chord(grid, R)``: the chord of a disc of radius R, bin-averaged."""

    def __init__(self, fine: np.ndarray, weights: np.ndarray, pixel: np.ndarray, kernel, bin_chord,
                 fine_px: float, impl: str = "compiled"):
        if impl not in ("compiled", "reference"):
            raise ValueError(f"impl must be 'compiled' or 'reference', got {impl!r}")
        fine = np.ascontiguousarray(fine, dtype=np.float64)
        weights = np.ascontiguousarray(weights, dtype=np.float64)
        if weights.ndim != 2 or weights.shape[1] != len(fine) or len(fine) < 2:
            raise ValueError(f"weights must be (N, {len(fine)}) for the fine grid, got {weights.shape}")
        self.impl = impl
        self.fine, self.weights, self.pixel = fine, weights, np.ascontiguousarray(pixel, dtype=np.float64)
        self.kernel, self.bin_chord, self.fine_px = kernel, bin_chord, fine_px
        self._f0 = float(fine[0])
        # Rows reading the same backwards (fit_tube symmetrises its sampler): half of every product is computed.
        self._mirror = bool(weights.shape[0] > 1 and np.array_equal(weights, weights[::-1]))
        read = np.flatnonzero(np.any(weights != 0, axis=0))        # the columns the samples read
        self._cols = (int(read[0]), int(read[-1]) + 1) if len(read) else (0, 0)
        self._spectra: dict[int, np.ndarray] = {}
        self._folded: dict[tuple, np.ndarray] = {}
        self._kernels: dict[float, np.ndarray] = {}

    # -- the sampling with the blur and the pixel folded in -------------------------------------------------
    def sampling(self, sd: float) -> np.ndarray:
        """(N, F): what ``weights @ (pixel * chord)`` reads at blur ``sd``, as catheter_sampling.blur_sampling (no blur
        under FINE_PX), the pixel folded in: ``sampling(sd) @ chord``."""
        key = ("grid", round(float(sd), 12))
        hit = self._folded.get(key)
        if hit is None:
            s = sd / self.fine_px
            k = self.pixel if sd < self.fine_px else np.convolve(self.kernel(round(float(s), 9)), self.pixel)
            hit = self._store(key, self._rows_convolved(k))
        return hit

    # -- a search's cost -----------------------------------------------------------------------------------
    def misfit(self, m: np.ndarray, R: float, r_inner: float, target: tuple) -> float:
        """catheter_fit._misfit of the tube (outer radius ``R``, inner ``r_inner``) read through ``m``, a
        folded sampling (``sampling``)."""
        if self.impl == "compiled":
            pc, pp, basis, lumen_max = target
            return _tube.tube_misfit(m, self.fine, self.fine_px, float(R), float(r_inner), _ONE, _c(pc),
                                     float(pp), _c(basis), float(lumen_max), self._mirror)
        return misfit_one(self.read(m, R), self.read(m, r_inner), target)

    def misfit_blurred(self, R: float, r_inner: float, sd: float, target: tuple) -> float | None:
        """As ``misfit``, the chords blurred by ``sd`` here (read_blurred: a search over the blur); None where
        a blurred chord reaches the grid's ends."""
        k = self._blurred_kernel(sd)
        if self.impl == "compiled":
            pc, pp, basis, lumen_max = target
            f = _tube.tube_misfit(self.weights, self.fine, self.fine_px, float(R), float(r_inner), k, _c(pc),
                                  float(pp), _c(basis), float(lumen_max), self._mirror)
            return None if math.isnan(f) else f
        o, n = self.read_blurred(R, sd), self.read_blurred(r_inner, sd)
        return None if o is None or n is None else misfit_one(o, n, target)

    def _store(self, key, value):
        if len(self._folded) >= MAX_CACHED:
            self._folded.clear()
        self._folded[key] = value
        return value

    def _rows_convolved(self, k: np.ndarray) -> np.ndarray:
        """Each row of the weights convolved with the symmetric odd kernel ``k`` (the same length: its ends are
        zero, the fine grid has room for the widest blur). Only the columns the samples read are transformed
        (a third to a half of the grid: the rest is room for the blur), once per transform size."""
        if len(k) == 1:
            return self.weights * k[0]
        r = len(k) // 2
        n, f = self.weights.shape
        rows = (n + 1) // 2 if self._mirror else n
        a, b = self._cols
        out = np.zeros_like(self.weights)
        if b <= a:
            return out
        size = 1 << int(math.ceil(math.log2(b - a + 2 * r)))
        spec = self._spectra.get(size)
        if spec is None:
            spec = self._spectra[size] = np.fft.rfft(self.weights[:rows, a:b], size, axis=1)
        full = np.fft.irfft(spec * np.fft.rfft(k, size)[None, :], size, axis=1)     # column a - r first
        lo, hi = max(0, a - r), min(f, b + r)
        out[:rows, lo:hi] = full[:, lo - (a - r):hi - (a - r)]
        out[rows:] = out[:n - rows][::-1]
        return out

    # -- chords where they are not zero ---------------------------------------------------------------------
    def support(self, R: float) -> tuple[int, int]:
        """Indices [lo, hi) of the fine grid whose bins meet the disc of radius ``R`` (two samples either side:
        the chord is exactly 0 on the rest; the grid is uniform)."""
        reach = R + self.fine_px
        lo = math.floor((-reach - self._f0) / self.fine_px) - 2
        hi = math.ceil((reach - self._f0) / self.fine_px) + 3
        return max(0, lo), min(len(self.fine), hi)

    def grid_sampling(self, sigmas, R_max: float) -> tuple[np.ndarray, int]:
        """((S, N, F') the folded sampling at each of ``sigmas`` over the columns the widest chord (``R_max``)
        reaches, its first column's index)."""
        lo, hi = self.support(R_max)
        out = np.empty((len(sigmas), self.weights.shape[0], hi - lo))
        for i, sd in enumerate(sigmas):
            out[i] = self.sampling(float(sd))[:, lo:hi]
        return out, lo

    def read(self, m: np.ndarray, R: float) -> np.ndarray:
        """``m @ bin_chord(fine, R)`` over the chord's support only."""
        if R <= 0:
            return np.zeros(m.shape[:-1])
        lo, hi = self.support(R)
        return m[..., lo:hi] @ self.bin_chord(self.fine[lo:hi], R)

    def read_blurred(self, R: float, sd: float) -> np.ndarray | None:
        """``weights @ blur(_pixel_chord(R), sd / fine_px)`` (catheter_fit's free-blur search: no blur under
        half a sample), the pixel and the blur convolved with the chord's support only; None where the blurred
        chord would reach the grid's ends (the plain path continues the ends there)."""
        if R <= 0:
            return np.zeros(self.weights.shape[0])
        k = self._blurred_kernel(sd)
        r = len(k) // 2
        lo, hi = self.support(R)
        if lo - r < 0 or hi + r > len(self.fine):
            return None
        v = np.convolve(self.bin_chord(self.fine[lo:hi], R), k)
        return self.weights[:, lo - r:hi + r] @ v

    def _blurred_kernel(self, sd: float) -> np.ndarray:
        """The pixel, and the blur ``sd`` when it is half a sample or more (catheter_sampling.blur's rule)."""
        s = sd / self.fine_px
        key = round(float(s), 9) if s >= 0.5 else 0.0
        k = self._kernels.get(key)
        if k is None:
            k = self.pixel if key == 0.0 else np.convolve(self.kernel(key), self.pixel)
            if len(self._kernels) >= MAX_CACHED:
                self._kernels.clear()
            self._kernels[key] = k
        return k


_ONE = np.ones(1)


def _c(a: np.ndarray) -> np.ndarray:
    return a if a.flags.c_contiguous and a.dtype == np.float64 else np.ascontiguousarray(a, dtype=np.float64)


def misfit_one(outer: np.ndarray, inner: np.ndarray, target: tuple) -> float:
    """catheter_fit._misfit of one tube (1-D ``outer``, ``inner``), in scalars (the NumPy reference of
    ext/_tube.pyx's tube_misfit). The profile ``pc`` is orthogonal to the background: only the chords are
    projected."""
    pc, pp, basis, lumen_max = target
    o = outer - basis @ (outer @ basis)
    n = inner - basis @ (inner @ basis)
    oo, nn, on = float(o @ o), float(n @ n), float(o @ n)
    op, np_ = float(o @ pc), float(n @ pc)
    det = oo * nn - on * on
    best = math.inf
    if det > 1e-9 * max(oo * nn, 1e-300):
        a = (nn * op - on * np_) / det
        b = (oo * np_ - on * op) / det
        if a >= 0 and a + b >= 0 and a + b <= lumen_max * a:
            best = pp - (a * op + b * np_)
    for k in (-1.0, lumen_max - 1.0):                       # on an edge b = k a: the one column o + k n
        hh = oo + 2 * k * on + k * k * nn
        hp = op + k * np_
        best = min(best, pp - hp * hp / hh if (hp > 0 and hh > 0) else pp)
    return best
