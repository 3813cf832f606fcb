"""Sampled curves (time-density curves and the like): validation, smoothing, noise, level crossings, the
centroid of the samples, downsampling for display. Pure NumPy; what the crossings mean is core.analysis.tdc's.
"""
from __future__ import annotations

import math

import numpy as np


def check_curve(t, y) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(t, dtype=float)
    y = np.asarray(y, dtype=float)
    if t.ndim != 1 or y.shape != t.shape:
        raise ValueError(f"times and values must be 1-D of equal length, got {t.shape} and {y.shape}")
    if len(t) < 3:
        raise ValueError(f"a time-density curve needs at least 3 samples, got {len(t)}")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(y))):
        raise ValueError("time-density curve has non-finite times or values")
    if np.any(np.diff(t) <= 0):
        raise ValueError("time-density curve times must increase strictly")
    return t, y


def smooth(y: np.ndarray) -> np.ndarray:
    """5-point binomial smoothing (symmetric, so it does not shift times); ends use shorter windows."""
    y = np.asarray(y, dtype=float)
    if len(y) < 5:
        return y.copy()
    k = np.array([1.0, 4.0, 6.0, 4.0, 1.0])
    num = np.convolve(y, k, mode="same")
    den = np.convolve(np.ones_like(y), k, mode="same")
    return num / den


def noise_sd(y: np.ndarray) -> float:
    """Sample-to-sample noise: the MAD of second differences, which ignores the smooth curve underneath."""
    y = np.asarray(y, dtype=float)
    if len(y) < 4:
        return 0.0
    d2 = y[2:] - 2 * y[1:-1] + y[:-2]
    return float(1.4826 * np.median(np.abs(d2 - np.median(d2))) / math.sqrt(6.0))


def crossing_up(t: np.ndarray, y: np.ndarray, level: float, stop: int) -> float | None:
    """First time (linear interpolation) y reaches ``level`` at or before index ``stop``."""
    idx = np.nonzero(y[:stop + 1] >= level)[0]
    if idx.size == 0:
        return None
    i = int(idx[0])
    if i == 0:
        return float(t[0])
    y0, y1 = y[i - 1], y[i]
    return float(t[i - 1] + (level - y0) / (y1 - y0) * (t[i] - t[i - 1]))


def crossing_down(t: np.ndarray, y: np.ndarray, level: float, start: int) -> float | None:
    idx = np.nonzero(y[start:] <= level)[0]
    if idx.size == 0:
        return None
    i = start + int(idx[0])
    if i == start:
        return float(t[i])
    y0, y1 = y[i - 1], y[i]
    return float(t[i - 1] + (y0 - level) / (y0 - y1) * (t[i] - t[i - 1]))


def peak_interp(t: np.ndarray, y: np.ndarray, k: int) -> float:
    """Sub-sample peak time: the vertex of the parabola through the three samples around ``k``."""
    if k == 0 or k == len(y) - 1:
        return float(t[k])
    y0, y1, y2 = y[k - 1], y[k], y[k + 1]
    den = y0 - 2 * y1 + y2
    if den >= 0:
        return float(t[k])
    off = 0.5 * (y0 - y2) / den
    dt = t[k + 1] - t[k] if off > 0 else t[k] - t[k - 1]
    return float(t[k] + max(-1.0, min(1.0, off)) * dt)


def rise_crossing(t: np.ndarray, ys: np.ndarray, level: float, k: int) -> float:
    """Where the rise that leads to the peak at ``k`` crosses ``level`` (noise before it can cross
    earlier; for a clean curve this is the first crossing)."""
    below = np.nonzero(ys[:k + 1] < level)[0]
    if below.size == 0:
        return float(t[0])
    i = int(below[-1])
    y0, y1 = ys[i], ys[i + 1]
    return float(t[i] + (level - y0) / (y1 - y0) * (t[i + 1] - t[i]))


def sample_centroid(t: np.ndarray, ys: np.ndarray) -> float | None:
    """First moment of the measured (smoothed, baseline-0) curve, negative noise left out; trapezoid rule, so
    an uneven frame rate weighs each sample by the time it stands for."""
    w = np.clip(ys, 0.0, None)
    area = float(np.trapezoid(w, t))
    return None if area <= 0 else float(np.trapezoid(w * t, t) / area)


def downsample(t, y, max_points: int = 200) -> list[list[float]]:
    """[[t, y], ...] with at most ``max_points`` samples, evenly picked, the last sample always kept."""
    t = np.asarray(t, dtype=float)
    y = np.asarray(y, dtype=float)
    if max_points < 2:
        raise ValueError(f"max_points must be >= 2, got {max_points}")
    n = len(t)
    idx = np.arange(n) if n <= max_points else np.unique(np.linspace(0, n - 1, max_points).round().astype(int))
    return [[round(float(t[i]), 4), round(float(y[i]), 5)] for i in idx]
