"""Vessel geometry on a peak-opacity image: stations along a centreline and cross-section profiles (the
automatic centreline when the operator gives none: core/analysis/vessel_find.py).

Stations are points every ``spacing`` px of arc length with their unit normal. A profile is the image
sampled along the normal (bilinear), averaged over a short strip along the tangent so each station sees
the whole stretch of vessel it stands for, not one noisy line. A sample that falls outside the image or
on a NaN pixel (not measured: overlay, collimator surround) is NaN, and its station is not measured.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ext import _vessel

__all__ = [
    "Stations", "make_stations", "sample_profiles", "parse_centerline", "check_centerline", "profile_window",
    "subtract_background", "fit_diameter", "resample_polyline",
]



@dataclass
class Stations:
    xy: np.ndarray        # (M, 2) x, y
    normal: np.ndarray    # (M, 2) unit normals (tangent rotated +90 degrees)
    tangent: np.ndarray   # (M, 2) unit tangents, in the direction of the centreline
    s: np.ndarray         # (M,) arc length from the first centreline point
    length: float         # total centreline length

    @property
    def frac(self) -> np.ndarray:
        return self.s / self.length if self.length > 0 else np.zeros_like(self.s)

    def moved(self, dx: float, dy: float) -> "Stations":
        return Stations(self.xy + [dx, dy], self.normal, self.tangent, self.s, self.length)

    def picked(self, sel: np.ndarray) -> "Stations":
        """The stations ``sel`` (a mask or indices) selects."""
        return Stations(self.xy[sel], self.normal[sel], self.tangent[sel], self.s[sel], self.length)


def resample_polyline(points: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Points every ``step`` px of arc length along a polyline, and their arc lengths."""
    p = np.asarray(points, dtype=float)
    seg = np.hypot(*np.diff(p, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] <= 0:
        raise ValueError("centreline has zero length")
    n = max(int(math.floor(s[-1] / step)), 1)
    s_new = np.linspace(0.0, s[-1], n + 1)
    out = np.column_stack([np.interp(s_new, s, p[:, 0]), np.interp(s_new, s, p[:, 1])])
    return out, s_new


def smooth_1d(v: np.ndarray, half: int) -> np.ndarray:
    """Moving average with shrinking windows at the ends (no edge drift)."""
    if half <= 0 or len(v) < 3:
        return v.copy()
    half = min(half, (len(v) - 1) // 2)
    c = np.concatenate([np.zeros((1,) + v.shape[1:]), np.cumsum(v, axis=0)])
    i = np.arange(len(v))
    lo = np.maximum(i - half, 0)
    hi = np.minimum(i + half + 1, len(v))
    return (c[hi] - c[lo]) / (hi - lo).reshape((-1,) + (1,) * (v.ndim - 1))


def make_stations(centerline: np.ndarray, spacing: float, smooth_px: float = 4.0) -> Stations:
    """Stations every ``spacing`` px along ``centerline`` (N, 2); tangents from a lightly smoothed curve."""
    dense, s_dense = resample_polyline(centerline, 1.0)
    tangent = np.gradient(smooth_1d(dense, int(round(smooth_px))), axis=0)
    norm = np.hypot(tangent[:, 0], tangent[:, 1])
    if np.any(norm == 0):
        raise ValueError("centreline doubles back on itself")
    tangent /= norm[:, None]
    length = float(s_dense[-1])
    n = max(int(math.floor(length / spacing)), 0) + 1
    # Stations centred in their strips: the first half a spacing in from the start.
    s = (np.arange(n) + 0.5) * spacing
    s = s[s <= length] if (s <= length).any() else np.array([0.5 * length])
    xy = np.column_stack([np.interp(s, s_dense, dense[:, 0]), np.interp(s, s_dense, dense[:, 1])])
    t = np.column_stack([np.interp(s, s_dense, tangent[:, 0]), np.interp(s, s_dense, tangent[:, 1])])
    t /= np.hypot(t[:, 0], t[:, 1])[:, None]
    normal = np.column_stack([-t[:, 1], t[:, 0]])
    return Stations(xy, normal, t, s, length)


def sample_profiles(image: np.ndarray, stations: Stations, across: np.ndarray, along: np.ndarray) -> np.ndarray:
    """(M, K) float32 profiles: ``image`` at xy + a * normal + b * tangent, bilinear, averaged over ``along`` b.

    NaN for samples outside the image or touching a NaN pixel; callers drop any profile holding one.
    Compiled (ext/_vessel.pyx; NumPy reference core/analysis/vessel_ref.py): the widest profiles of a long
    centreline are millions of samples.
    """
    img = np.ascontiguousarray(image, dtype=np.float32)
    if img.ndim != 2 or min(img.shape) < 1:
        raise ValueError(f"sample_profiles needs a 2-D image, got shape {img.shape}")
    xy, normal, tangent = (np.ascontiguousarray(np.reshape(v, (-1, 2)), dtype=np.float64)
                           for v in (stations.xy, stations.normal, stations.tangent))
    if not len(xy) == len(normal) == len(tangent):
        raise ValueError("stations' xy, normal and tangent differ in length")
    a = np.ascontiguousarray(np.ravel(across), dtype=np.float64)
    b = np.ascontiguousarray(np.ravel(along), dtype=np.float64)
    if b.size == 0:
        raise ValueError("sample_profiles needs at least one sample along the vessel")
    out = np.empty((len(xy), a.size), dtype=np.float32)
    _vessel.sample_profiles(img, xy, normal, tangent, a, b, out)
    return out


def profile_window(diameter_px: float) -> tuple[float, float]:
    """(half width of the integration window, half width of the whole profile) for a lumen diameter.

    The integration window reaches past the lumen by a margin for blur and centreline error; the background
    band beyond it, on both sides, is what the local background line is fitted to.
    """
    r = diameter_px / 2.0
    gap = max(2.0, 0.3 * diameter_px)
    band = max(3.0, 0.5 * diameter_px)
    return r + gap, r + gap + band


def subtract_background(profiles: np.ndarray, across: np.ndarray, inner: float) -> np.ndarray:
    """Profiles minus a straight line fitted (least squares) to the samples with |a| > inner."""
    bg = np.abs(across) > inner
    A = np.column_stack([np.ones(bg.sum()), across[bg]])
    coef, *_ = np.linalg.lstsq(A, np.nan_to_num(profiles[:, bg]).T, rcond=None)
    line = coef[0][:, None] + coef[1][:, None] * across[None, :]
    return profiles - line


def fit_diameter(profiles: np.ndarray, across: np.ndarray, max_radius: float) -> np.ndarray:
    """Per-profile lumen radius (px) of the best least-squares cylinder projection k * 2 sqrt(R^2 - (a-c)^2).

    ``profiles`` must already have their background removed. A grid search over R and the centre c, with k
    solved in closed form: robust, and cheap for a few hundred stations.
    """
    radii = np.arange(1.0, max(max_radius, 1.5), 0.25)
    centres = np.arange(-3.0, 3.01, 0.5)
    best = np.full(profiles.shape[0], np.inf)
    best_r = np.full(profiles.shape[0], np.nan)
    p = np.nan_to_num(profiles)
    pp = (p * p).sum(axis=1)
    for c in centres:
        d = across - c
        models = 2.0 * np.sqrt(np.clip(radii[:, None] ** 2 - d[None, :] ** 2, 0.0, None))  # (R, K)
        mm = (models * models).sum(axis=1)
        pm = p @ models.T                                                                   # (M, R)
        k = np.clip(pm / mm, 0.0, None)
        resid = pp[:, None] - 2 * k * pm + k * k * mm
        j = np.argmin(resid, axis=1)
        r = resid[np.arange(len(j)), j]
        take = r < best
        best[take] = r[take]
        best_r[take] = radii[j[take]]
    return best_r


def parse_centerline(text: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    """``"x,y;x,y;..."`` -> (N, 2) float array, checked: at least two points, finite, inside ``shape``."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("--centerline is empty; expected \"x,y;x,y;...\"")
    pts = []
    for k, item in enumerate(text.strip().strip(";").split(";")):
        parts = item.split(",")
        try:
            x, y = (float(v) for v in parts)
        except ValueError:
            raise ValueError(f"--centerline point {k + 1} {item.strip()!r} is not \"x,y\"") from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError(f"--centerline point {k + 1} {item.strip()!r} is not finite")
        pts.append((x, y))
    arr = np.asarray(pts, dtype=float)
    check_centerline(arr, shape)
    return arr


def check_centerline(points: np.ndarray, shape: tuple[int, int] | None) -> np.ndarray:
    arr = np.asarray(points, dtype=float)
    if arr.ndim != 2 or arr.shape[1] != 2 or len(arr) < 2:
        raise ValueError(f"a centreline needs at least two (x, y) points, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("centreline points must be finite")
    if shape is not None:
        h, w = shape
        bad = (arr[:, 0] < 0) | (arr[:, 0] > w - 1) | (arr[:, 1] < 0) | (arr[:, 1] > h - 1)
        if bad.any():
            k = int(np.argmax(bad))
            raise ValueError(f"centreline point {k + 1} ({arr[k, 0]:g}, {arr[k, 1]:g}) is outside the "
                             f"{w}x{h} image")
    if np.hypot(*np.diff(arr, axis=0).T).sum() < 2.0:
        raise ValueError("centreline is shorter than 2 px")
    return arr
