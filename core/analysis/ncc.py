"""Masked normalised cross-correlation of two images at many translations: the arithmetic of registration.

Two ways to the same numbers (NCC over the pixels both images measure, NaN = not measured):
- ``masked_ncc``: every shift at once, with FFTs (Padfield's masked FFT registration) - for a wide search
  on small (reduced-resolution) images;
- ``window_ncc``: a few shifts around a guess, each as six dot products of flat views - for refining on
  large images, where an FFT of the whole image would cost more than the handful of shifts it needs.

Convention: ``b`` (moving) is ``a`` (fixed) moved by (+dx, +dy), i.e. b[y + dy, x + dx] == a[y, x].
"""
from __future__ import annotations

import numpy as np

__all__ = ["MIN_OVERLAP", "FlatPair", "masked_ncc", "window_ncc", "quadratic_peak", "fast_len"]

MIN_OVERLAP = 0.3   # shifts whose common field is smaller than this share of the smaller field are not considered


def fast_len(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n: pocketfft is fastest there."""
    best = 1 << int(np.ceil(np.log2(n)))
    f5 = 1
    while f5 < best:
        f3 = f5
        while f3 < best:
            f2 = f3
            while f2 < n:
                f2 *= 2
            best = min(best, f2)
            f3 *= 3
        f5 *= 5
    return best


def quadratic_peak(patch: np.ndarray) -> tuple[float, float]:
    """Offset (fx, fy) from the centre of a (2r+1)^2 patch of the maximum of a fitted 2-D quadratic.

    The xy term matters: a vessel's correlation peak is an oblique ridge, and on it separate 1-D parabolas
    are off by up to a pixel.
    """
    r = patch.shape[0] // 2
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    x, y = x.ravel().astype(float), y.ravel().astype(float)
    vals = patch.ravel().astype(float)
    ok = np.isfinite(vals)
    if ok.sum() < 6:
        return 0.0, 0.0
    A = np.column_stack([np.ones(x.size), x, y, x * x, x * y, y * y])[ok]
    c = np.linalg.lstsq(A, vals[ok], rcond=None)[0]
    H = np.array([[2 * c[3], c[4]], [c[4], 2 * c[5]]])
    if np.linalg.det(H) <= 0 or H[0, 0] >= 0:    # not a maximum: keep the integer peak
        return 0.0, 0.0
    fx, fy = np.linalg.solve(H, [-c[1], -c[2]])
    return float(np.clip(fx, -1.0, 1.0)), float(np.clip(fy, -1.0, 1.0))


def _ncc_from_sums(n, sa, sb, saa, sbb, sab, enough):
    n = np.where(enough, n, 1.0)
    num = sab - sa * sb / n
    den = (saa - sa * sa / n) * (sbb - sb * sb / n)
    ok = enough & (den > 1e-12 * max(float(np.max(den)), 1e-300))
    out = np.full(np.shape(n), -1.0)
    out[ok] = num[ok] / np.sqrt(den[ok])
    return out


def masked_ncc(a: np.ndarray, b: np.ndarray, ph: int, pw: int) -> np.ndarray:
    """(ph, pw) NCC of ``a`` (fixed) and ``b`` (moving) at every cyclic shift (row dy, column dx), over the
    pixels measured (not NaN) in both; -1 where that overlap is under MIN_OVERLAP of the smaller field.

    Padfield (2012), "Masked object registration in the Fourier domain": every sum over the overlap is a
    correlation of the masked images and masks, so all shifts cost six transforms and six inverses.
    """
    ma = np.isfinite(a)
    mb = np.isfinite(b)
    a = np.where(ma, a, 0.0).astype(np.float64)
    b = np.where(mb, b, 0.0).astype(np.float64)

    def spec(x):
        return np.fft.rfft2(x, s=(ph, pw))

    def corr(sx, sy):   # sum_x X(x) Y(x + shift)
        return np.fft.irfft2(np.conj(sx) * sy, s=(ph, pw))

    A, B, FA, FB = spec(ma.astype(np.float64)), spec(mb.astype(np.float64)), spec(a), spec(b)
    n = np.maximum(corr(A, B), 0.0)
    sa, sb = corr(FA, B), corr(A, FB)
    saa, sbb = corr(spec(a * a), B), corr(A, spec(b * b))
    sab = corr(FA, FB)
    enough = n >= max(MIN_OVERLAP * min(ma.sum(), mb.sum()), 1.0)
    return _ncc_from_sums(n, sa, sb, saa, sbb, sab, enough)


class FlatPair:
    """Two same-shape images laid out flat with ``pad`` zero columns after every row, so that a translation
    (dy, dx) with |dx| <= pad is one offset into both flat arrays: the sums over the overlap at that shift are
    dot products of two contiguous slices (BLAS), without copying shifted images. Each shift's NCC is kept:
    a search that walks uphill asks for the same shifts again."""

    def __init__(self, a: np.ndarray, b: np.ndarray, pad: int):
        self.h, self.w = a.shape
        self.pad = int(pad)
        self.stride = self.w + self.pad
        ma, mb = np.isfinite(a), np.isfinite(b)
        self.min_count = max(MIN_OVERLAP * float(min(ma.sum(), mb.sum())), 1.0)
        self._seen: dict[tuple[int, int], float] = {}

        def flat(x):
            out = np.zeros((self.h, self.stride), dtype=np.float32)
            out[:, : self.w] = x
            return out.ravel()

        # Centred on their means: the sums then carry no large common offset to cancel (and float32 dot
        # products, twice as fast, keep the precision an NCC needs).
        a0 = np.where(ma, a - (float(np.mean(a[ma])) if ma.any() else 0.0), 0.0)
        b0 = np.where(mb, b - (float(np.mean(b[mb])) if mb.any() else 0.0), 0.0)
        self.ma, self.mb = flat(ma), flat(mb)
        self.a, self.b = flat(a0), flat(b0)
        self.aa, self.bb = flat(a0 * a0), flat(b0 * b0)

    def ncc(self, dy: int, dx: int) -> float:
        """NCC at the integer shift (dy, dx); -1 where the overlap is under MIN_OVERLAP of the smaller field."""
        key = (dy, dx)
        if key not in self._seen:
            self._seen[key] = self._ncc(dy, dx)
        return self._seen[key]

    def _ncc(self, dy: int, dx: int) -> float:
        off = dy * self.stride + dx
        size = self.a.size
        i0, i1 = max(0, -off), size - max(0, off)
        if i1 <= i0 or abs(dx) > self.pad or abs(dy) >= self.h:
            return -1.0
        fa, fb = slice(i0, i1), slice(i0 + off, i1 + off)
        ma, mb = self.ma[fa], self.mb[fb]
        n = float(ma @ mb)
        if n < self.min_count:
            return -1.0
        sa, sb = float(self.a[fa] @ mb), float(ma @ self.b[fb])
        saa, sbb = float(self.aa[fa] @ mb), float(ma @ self.bb[fb])
        den = (saa - sa * sa / n) * (sbb - sb * sb / n)
        if not den > 1e-12 * saa * sbb or den <= 0:
            return -1.0
        return (float(self.a[fa] @ self.b[fb]) - sa * sb / n) / float(np.sqrt(den))


def window_ncc(pair: FlatPair, cy: int, cx: int, r: int, lim: int | None = None) -> np.ndarray:
    """(2r+1, 2r+1) NCC at the integer shifts (cy + i, cx + j), i, j in -r..r; -1 where the overlap is too
    small (as ``masked_ncc``) or a shift component exceeds ``lim``."""
    k = 2 * r + 1
    out = np.full((k, k), -1.0)
    for i in range(k):
        for j in range(k):
            dy, dx = cy + i - r, cx + j - r
            if lim is None or (abs(dy) <= lim and abs(dx) <= lim):
                out[i, j] = pair.ncc(dy, dx)
    return out
