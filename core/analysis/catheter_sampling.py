"""The projected tube's model grid and its linear maps, for core.analysis.catheter_fit: the fine grid, the exact
bilinear sampler of the stations' profiles, the pixel's and the blur's kernels on the grid, the bin-averaged
chord of a disc. catheter_linear folds them into one matrix per blur; these are the plain reference.
"""
from __future__ import annotations

import functools
import math

import numpy as np

FINE_PX = 0.05          # the model's grid (px)
MAX_BLUR_SD = 2.5       # the widest detector blur the fits try (sd, px): the grid's room either side


def fine_grid(across: np.ndarray, width_guess: float) -> np.ndarray:
    """The model's grid for a profile sampled at ``across``: room for the widest blur either side."""
    pad = 0.8 * width_guess + 4.0 * MAX_BLUR_SD + 2.0
    return np.arange(across[0] - pad, across[-1] + pad + FINE_PX / 2, FINE_PX)


def bilinear_sampler(fine: np.ndarray, across: np.ndarray, xy: np.ndarray, normal: np.ndarray, tangent: np.ndarray,
                     centres: np.ndarray, along: np.ndarray, grid_across: np.ndarray) -> np.ndarray:
    """(N, F) weights: the mean over stations of the profiles sampled bilinearly at ``xy + a normal + b
    tangent`` (``a`` on ``grid_across``, averaged over ``b`` in ``along``), each then read at ``across +
    centre`` by linear interpolation, as a linear map of a profile g(d) on ``fine`` (d: distance from the
    tube's axis at ``xy + centre normal``), where g holds the pixel-area average. Exact for any angle and any
    phase of the stations on the pixel grid (a catheter along a row meets the grid at one phase only).
    Every (station, read sample, along, pixel corner, fine neighbour) term at once, summed into each weight in
    the order of the loops it replaced (tests/test_catheter_linear.py: the same bits)."""
    xy, normal, tangent = (np.asarray(v, dtype=float) for v in (xy, normal, tangent))
    centres, along = np.asarray(centres, dtype=float), np.asarray(along, dtype=float)
    n_x, F = len(across), len(fine)
    step = float(grid_across[1] - grid_across[0])
    pos = (across[None, :] + centres[:, None] - grid_across[0]) / step                 # (S, N)
    j = np.clip(np.floor(pos).astype(int), 0, len(grid_across) - 2)
    u = np.clip(pos - j, 0.0, 1.0)
    jj = np.stack([j, j + 1], axis=1)                                                   # (S, 2, N)
    wj = np.stack([1.0 - u, u], axis=1)
    a = grid_across[jj][:, :, None, :]                                                  # (S, 2, 1, N)
    b = along[None, None, :, None]                                                      # (1, 1, B, 1)

    def comp(i: int) -> np.ndarray:
        return xy[:, i, None, None, None] + a * normal[:, i, None, None, None] + b * tangent[:, i, None, None, None]
    px, py = comp(0), comp(1)                                                           # (S, 2, B, N)
    x0, y0 = np.floor(px), np.floor(py)
    fx, fy = px - x0, py - y0
    corners = ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy))
    nx, ny = normal[:, 0, None, None, None], normal[:, 1, None, None, None]
    p0x, p0y, c = xy[:, 0, None, None, None], xy[:, 1, None, None, None], centres[:, None, None, None]
    idx, val = [], []
    for dx, dy, wb in corners:
        d = (x0 + dx - p0x) * nx + (y0 + dy - p0y) * ny - c
        k = (d - fine[0]) / FINE_PX
        k0 = np.clip(np.floor(k).astype(int), 0, F - 2)
        fk = np.clip(k - k0, 0.0, 1.0)
        w = wj[:, :, None, :] * wb / len(along)
        idx.append(np.stack([k0, k0 + 1]))
        val.append(np.stack([w * (1.0 - fk), w * fk]))
    # (corner, part, S, 2, B, N) -> the loops' order: station, read sample's neighbour, along, corner, part, row
    idx = np.stack(idx).transpose(2, 3, 4, 0, 1, 5)
    val = np.stack(val).transpose(2, 3, 4, 0, 1, 5)
    flat = (np.arange(n_x) * F + idx).ravel()
    W = np.bincount(flat, weights=val.ravel(), minlength=n_x * F).reshape(n_x, F)
    return W / len(xy)


def sample_at(x: np.ndarray, fine: np.ndarray, weights: np.ndarray | None, g: np.ndarray) -> np.ndarray:
    return np.interp(x, fine, g) if weights is None else weights @ g


def blur_sampling(x: np.ndarray, fine: np.ndarray, weights: np.ndarray | None, sigmas: np.ndarray) -> np.ndarray:
    """(S, N, F): for each blur of ``sigmas``, the weights of the fine grid in each sample at ``x``."""
    out = np.empty((len(sigmas), len(x), len(fine)))
    if weights is not None:
        for i, sd in enumerate(sigmas):
            # The blur is symmetric: blurring the weights' rows is blurring the profile they read.
            out[i] = weights if sd < FINE_PX else blur_rows(weights, sd / FINE_PX)
        return out
    d = x[:, None] - fine[None, :]
    for i, sd in enumerate(sigmas):
        if sd < FINE_PX:
            w = np.clip(1.0 - np.abs(d) / FINE_PX, 0.0, None)      # linear interpolation
        else:
            w = np.exp(-0.5 * (d / sd) ** 2)
        out[i] = w / w.sum(axis=1, keepdims=True)
    return out


def box_kernel(width: float) -> np.ndarray:
    """A box ``width`` px wide on the fine grid (unit sum), its end samples partly in: odd length, so centred
    (an even kernel would shift the model by half a sample: 1-2% misfit at a sharp edge)."""
    half = 0.5 * width / FINE_PX
    m = int(math.ceil(half - 0.5)) if half > 0.5 else 0
    k = np.clip(half + 0.5 - np.abs(np.arange(-m, m + 1)), 0.0, 1.0)
    return k / k.sum()


def tent_kernel(half: float) -> np.ndarray:
    n = int(round(half / FINE_PX))
    if n < 1:
        return np.ones(1)
    k = 1.0 - np.abs(np.arange(-n, n + 1)) / n
    return k / k.sum()


def bin_chord(fine: np.ndarray, R: float) -> np.ndarray:
    """Mean of the chord 2 sqrt(R^2 - x^2) over each fine sample's bin (exact: the singular edge is integrated)."""
    if R <= 0:
        return np.zeros(fine.shape)
    lo, hi = fine - FINE_PX / 2, fine + FINE_PX / 2

    def F(x):
        x = np.clip(x, -R, R)
        return x * np.sqrt(R * R - x * x) + R * R * np.arcsin(x / R)
    return (F(hi) - F(lo)) / (hi - lo)


def bin_chords(fine: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """(len(radii), len(fine)): ``bin_chord`` of each radius at once (the fits' grid of walls)."""
    R = np.asarray(radii, dtype=float)[:, None]
    safe = np.where(R > 0, R, 1.0)
    lo, hi = fine - FINE_PX / 2, fine + FINE_PX / 2

    def F(x):
        x = np.clip(x, -safe, safe)
        return x * np.sqrt(safe * safe - x * x) + safe * safe * np.arcsin(x / safe)
    return np.where(R > 0, (F(hi) - F(lo)) / (hi - lo), 0.0)


@functools.lru_cache(maxsize=512)
def gauss_kernel(sd_samples: float) -> np.ndarray:
    """Gaussian of sd ``sd_samples`` (in samples), integrated over each sample's bin, unit sum."""
    r = max(1, int(math.ceil(4 * sd_samples)))
    edges = (np.arange(-r, r + 2) - 0.5) / (sd_samples * math.sqrt(2.0))
    k = np.diff(0.5 * (1.0 + np.array([math.erf(e) for e in edges])))
    return k / k.sum()


def blur(v: np.ndarray, sd_samples: float) -> np.ndarray:
    """``v`` blurred by ``gauss_kernel(sd_samples)``; the ends continued."""
    if sd_samples < 0.5:
        return v
    k = gauss_kernel(round(float(sd_samples), 9))
    r = len(k) // 2
    return np.convolve(np.pad(v, r, mode="edge"), k, mode="valid")


def blur_rows(w: np.ndarray, sd_samples: float) -> np.ndarray:
    """Every row of ``w`` blurred as ``blur`` does, at once (FFT). The rows are zero near their ends (the
    fine grid has room for the widest blur), so continuing the ends is padding with zeros."""
    if sd_samples < 0.5:
        return w
    k = gauss_kernel(round(float(sd_samples), 9))
    r = len(k) // 2
    n = w.shape[1] + 2 * r
    size = 1 << int(math.ceil(math.log2(n)))
    full = np.fft.irfft(np.fft.rfft(w, size, axis=1) * np.fft.rfft(k, size)[None, :], size, axis=1)
    return full[:, r:r + w.shape[1]]
