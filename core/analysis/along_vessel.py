"""Statistics along a vessel's stations: running means and medians over finite values, a local quadratic (smooths
without lifting a narrowing's bottom), a grey closing (the upper envelope that bridges dips), a flag widened along
the stations, the run of flagged stations around one, interpolation across gaps; NaN where nothing was measured."""
from __future__ import annotations

import numpy as np

__all__ = ["closing", "dilate", "interp_valid", "local_quadratic", "quadratic_centre_weights",
           "quadratic_curvature_weights", "quiet", "run_around", "running_mean", "running_median", "runs"]


class quiet:
    """numpy's all-NaN-slice warnings off (a band entirely outside the field is expected, and handled)."""
    def __enter__(self):
        import warnings
        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def running_mean(v: np.ndarray, half: int, use: np.ndarray | None = None) -> np.ndarray:
    """Mean of the finite (and ``use``) values within +-half stations; NaN where there are none."""
    ok = np.isfinite(v) if use is None else (np.isfinite(v) & use)
    c = np.concatenate([[0.0], np.cumsum(np.where(ok, v, 0.0))])
    n = np.concatenate([[0], np.cumsum(ok)])
    i = np.arange(len(v))
    lo, hi = np.maximum(i - half, 0), np.minimum(i + half + 1, len(v))
    cnt = n[hi] - n[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, (c[hi] - c[lo]) / cnt, np.nan)


def running_median(v: np.ndarray, half: int) -> np.ndarray:
    """Median of the finite values within +-half stations (NaN where none)."""
    m = len(v)
    pad = np.concatenate([np.full(half, np.nan), v, np.full(half, np.nan)])
    win = np.lib.stride_tricks.sliding_window_view(pad, 2 * half + 1)[:m]
    with quiet():
        return np.nanmedian(win, axis=1)


def closing(v: np.ndarray, half: int) -> np.ndarray:
    """Grey closing (running max, then running min) over +-half stations, NaN gaps interpolated.

    The ends are continued flat for twice the window, so the closing is as anti-extensive at an end as
    inside (a taper's narrow end is not lifted to the width a window further on)."""
    m = len(v)
    if half <= 0 or m < 3:
        return v.copy()
    ok = np.isfinite(v)
    x = np.interp(np.arange(m), np.flatnonzero(ok), v[ok]) if ok.any() else np.zeros(m)
    x = np.concatenate([np.full(2 * half, x[0]), x, np.full(2 * half, x[-1])])
    dil = np.lib.stride_tricks.sliding_window_view(x, 2 * half + 1).max(axis=1)       # centred on 2h .. end-2h
    ero = np.lib.stride_tricks.sliding_window_view(dil, 2 * half + 1).min(axis=1)     # centred on the m stations
    return np.where(ok, ero, np.nan)


def interp_valid(s: np.ndarray, v: np.ndarray) -> np.ndarray:
    ok = np.isfinite(v)
    if ok.sum() == 0:
        return v.copy()
    if ok.sum() == 1:
        return np.full_like(v, v[ok][0])
    return np.interp(s, s[ok], v[ok])


def dilate(mask: np.ndarray, half: int) -> np.ndarray:
    """``mask`` widened by ``half`` stations each side."""
    c = np.concatenate([[0], np.cumsum(mask)])
    i = np.arange(len(mask))
    return (c[np.minimum(i + half + 1, len(mask))] - c[np.maximum(i - half, 0)]) > 0


def run_around(flags: np.ndarray, k: int) -> tuple[int, int]:
    """(first, last) index of the contiguous run of true ``flags`` either side of ``k`` (``k`` itself counted
    whatever its flag)."""
    lo = hi = int(k)
    while lo > 0 and flags[lo - 1]:
        lo -= 1
    while hi < len(flags) - 1 and flags[hi + 1]:
        hi += 1
    return lo, hi


def runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each contiguous run of true ``flags``, in order."""
    edges = np.diff(np.concatenate([[0], np.asarray(flags).astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def quadratic_centre_weights(half: int) -> np.ndarray:
    """(2 half + 1,) weights giving a least-squares quadratic's value at the middle of a full window."""
    return np.linalg.pinv(np.vander(np.arange(-half, half + 1, dtype=float), 3))[-1]


def quadratic_curvature_weights(half: int) -> np.ndarray:
    """(2 half + 1,) weights giving a least-squares quadratic's c2 (of c0 + c1 t + c2 t^2) over a full window."""
    return np.linalg.pinv(np.vander(np.arange(-half, half + 1, dtype=float), 3))[0]


def local_quadratic(v: np.ndarray, half: int) -> np.ndarray:
    """Per station, the value of a quadratic fitted to the finite values within +-half stations (their running
    median over half that where they lie mostly on one side): smooths noise without lifting the bottom of a
    curved narrowing, as a running median that long does."""
    out = running_median(v, max(1, half // 2))
    ok = np.isfinite(v)
    m = len(v)
    # A whole window of finite values: the fit's value at its middle is a fixed weighting (Savitzky-Golay).
    weights = quadratic_centre_weights(half)
    full = np.zeros(m, dtype=bool)
    if m >= 2 * half + 1:
        win_ok = np.lib.stride_tricks.sliding_window_view(ok, 2 * half + 1).all(axis=1)
        full[half:m - half] = win_ok
        vals = np.lib.stride_tricks.sliding_window_view(np.where(ok, v, 0.0), 2 * half + 1)
        out[half:m - half] = np.where(win_ok, vals @ weights, out[half:m - half])
    for i in np.flatnonzero(ok & ~full):
        lo, hi = max(0, i - half), min(m, i + half + 1)
        x = np.arange(lo, hi)[ok[lo:hi]] - i
        # One-sided near the ends of the stretch a quadratic extrapolates wildly: the running median stands.
        if x.size >= 5 and x.min() <= -half // 2 and x.max() >= half // 2:
            out[i] = np.polyfit(x.astype(float), v[lo:hi][ok[lo:hi]], 2)[-1]
    return out
