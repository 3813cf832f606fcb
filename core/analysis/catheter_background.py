"""The background under a catheter's profile, for core.analysis.catheter_fit: an offset, a quadratic when that
leaves much unexplained (something wider than the catheter under it), and a bone's edge found in the stations.

A bone's edge (pelvic brim, pubic ramus, a femoral cortex) is a step of attenuation beside or under the
catheter, which neither an offset nor a quadratic takes out: a 0.3 ln edge 9 px beside a 6 px catheter at
1 px blur read it 13% wide. The catheter is symmetric about its axis and the step is not: a step at +-a (the
bone beyond the edge, on either side of it) has one antisymmetric part, found station by station (its place,
height and blur; an edge oblique to the catheter crosses the stations at different places), and from that its
symmetric part, what the symmetrised fit sees, up to its sign (the catheter on the bone or off it; the fit
tries both). On a ln mask the bone is additive in ln (it attenuates).
"""
from __future__ import annotations

import math
import threading

import numpy as np

import ext._tube as _tube

STEP_BLURS = np.arange(0.3, 3.01, 0.1)      # the edge's sd (px): cortex, PSF, obliquity
STEP_PX = 0.125           # the edge's places tried
EDGE_CLEAR_PX = 1.5       # an edge this far outside the catheter's radius is told from a shift of its axis
STEP_REACH = 3.0          # an edge beyond the profile's end is seen this many of its sds in

erf_ref = np.frompyfunc(math.erf, 1, 1)      # the reference of _erf: math.erf per element, as objects


def _erf(x: np.ndarray) -> np.ndarray:
    """erf of every element, float64 (compiled: ext/_tube.pyx erf_into; the same bits as ``erf_ref``). The step
    tables' erf per sample in Python was 75 ms of a process's first device sizing."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    out = np.empty_like(x)
    _tube.erf_into(x.reshape(-1), out.reshape(-1))
    return out


def background_basis(across: np.ndarray, quadratic: bool) -> np.ndarray:
    """(N, 1 or 2) orthonormal: the background the fit leaves free under the catheter, an offset and maybe a
    quadratic."""
    x = np.asarray(across, dtype=float)
    cols = [np.ones_like(x)] + ([(x / max(abs(x[0]), abs(x[-1]), 1e-9)) ** 2] if quadratic else [])
    return np.linalg.qr(np.column_stack(cols))[0]


def step_places(across: np.ndarray) -> list[tuple[float, float]]:
    """(place a, sd) of the edges tried: out to where the profile still sees the edge's blurred foot."""
    end = float(np.max(np.abs(across)))
    return [(float(h), float(sd)) for sd in STEP_BLURS for h in np.arange(0.0, end + STEP_REACH * sd + 1e-9, STEP_PX)]


def edge_corrections(across: np.ndarray, aligned: np.ndarray, reach_px: float, min_height: float,
                     radius_px: float) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """(the stations holding a bone's edge, two corrections to add to the mean of all stations that take their
    edges out: the catheter off the bone, on it, none without an edge; each station's axis error, px).

    A station's edge is found in its profile's antisymmetric part (the catheter has none): a Gaussian-blurred
    step at +-a has the same antisymmetric part whichever side the bone lies, fitted beside a tilt; it counts
    when at least ``min_height`` high, three quarters of that part, and its blurred foot within ``reach_px`` of
    the axis. Its symmetric part follows but for its sign (the same for every station while the edge stays on
    one side of the axis). An edge clear of the catheter's wall (EDGE_CLEAR_PX beyond ``radius_px``) moves the
    steepest-slope centres: it is refitted with a shift of the axis (the catheter's own slope) and the shift
    returned; by the wall the two are one (a quarter of the step went into the shift). ``aligned``: (stations,
    samples at ``across``, symmetric about 0, the catheter's axis at 0)."""
    x = np.asarray(across, dtype=float)
    half = x > 0
    xs = x[half]
    anti = 0.5 * (aligned - aligned[:, ::-1])[:, half]                  # (K, M)
    none = np.zeros(len(aligned), dtype=bool), [], np.zeros(len(aligned))
    places = [(h, sd) for h, sd in step_places(xs) if h - 2.5 * sd <= reach_px]
    if not places:
        return none
    k, a, raw = _step_table(xs, places)
    tilt = np.linalg.qr(xs[:, None])[0]
    mean = aligned.mean(axis=0)
    cols = np.column_stack([xs, np.gradient(0.5 * (mean + mean[::-1]), x)[half]])    # a tilt, the axis moved
    slope = np.linalg.qr(cols)[0]
    clear = a[:, 0] >= radius_px + EDGE_CLEAR_PX
    best, g, explained, coef = _steps(anti, raw, tilt, np.ones(len(places), dtype=bool))
    shifted = clear[best]
    if shifted.any():
        b2, g2, e2, c2 = _steps(anti[shifted], raw, slope, clear)
        best[shifted], g[shifted], explained[shifted] = b2, g2, e2
    found = (np.abs(2.0 * g) >= min_height) & (explained >= 0.75)
    if not found.any():
        return none
    shifts = np.zeros(len(aligned))
    sym = np.zeros(len(xs))
    for j in np.flatnonzero(found):
        h, kj = places[best[j]][0], k[best[j]]
        model = g[j] * raw[best[j]]
        if shifted[j]:
            cj = c2[:, int(np.cumsum(shifted)[j]) - 1]
            rest = anti[j] - slope @ cj
            shifts[j] = -float(np.linalg.lstsq(cols, slope @ cj, rcond=None)[0][1])     # the axis moved by it
        else:
            rest = anti[j] - tilt @ coef[:, j]
        # The edge's symmetric part with the bone off the axis, at x > 0: its antisymmetric part as measured (a
        # cortex is not a Gaussian edge), the far side's foot h S(-x - a) from the model; near the axis the far
        # side's shape is in the measured part too, so there the model alone.
        near = float(0.5 * (1.0 + math.erf(-h * kj[0])))
        sym += model + (1.0 - 2.0 * near) * (rest - model) + g[j] * (1.0 + _erf((-xs - h) * kj))
    sym /= len(anti)
    corr = np.interp(np.abs(x), np.concatenate([[0.0], xs]), np.concatenate([[sym[0]], sym]))
    return found, [-corr, corr], shifts


TABLE_EXTRA = 16          # samples a step table is computed beyond its profile's end (the next catheters' windows)
_tables: list = []        # (samples, {(place, sd): row}, 1 / (sqrt 2 sd), places, antisymmetric parts)
_tables_lock = threading.Lock()     # sizing and calibration may run on two workers at once


def _step_table(xs: np.ndarray, places: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(1 / (sqrt 2 sd), place (P, 1) each, the antisymmetric part of each edge at ``xs``, (P, M)) of the edges
    ``places``. Its erf per sample was most of the edge search's time and is the same for the next catheter on
    the same samples (the sizing's chords, a calibration's refits: their windows differ by a sample or two), so
    kept: computed a few samples past ``xs``'s end, for every edge reaching them, and read back (the same
    numbers: each depends only on its edge and its sample)."""
    with _tables_lock:
        kept = list(_tables)
    for full, index, k, a, raw in kept:
        if len(full) >= len(xs) and np.array_equal(full[:len(xs)], xs) and all(p in index for p in places):
            rows = np.array([index[p] for p in places])
            return k[rows], a[rows], raw[rows, :len(xs)]
    step = float(xs[1] - xs[0]) if len(xs) > 1 else STEP_PX
    full = np.concatenate([xs, xs[-1] + step * np.arange(1, TABLE_EXTRA + 1)])
    every = step_places(full)
    k = np.array([1.0 / (math.sqrt(2.0) * sd) for _, sd in every])[:, None]
    a = np.array([h for h, _ in every])[:, None]
    raw = 0.5 * (_erf((full[None, :] - a) * k) - _erf((-full[None, :] - a) * k))     # (P, M)
    index = {p: i for i, p in enumerate(every)}
    with _tables_lock:
        if len(_tables) >= 8:
            _tables.pop(0)
        _tables.append((full, index, k, a, raw))
    rows = np.array([index[p] for p in places])
    return k[rows], a[rows], raw[rows, :len(xs)]


def _steps(anti: np.ndarray, raw: np.ndarray, nuisance: np.ndarray, allowed: np.ndarray):
    """Per station (rows of ``anti``): the best step of ``raw`` (rows where ``allowed``) beside ``nuisance``
    (orthonormal columns): (its index, amplitude, fraction of the antisymmetric part explained, the nuisance's
    coefficients (n, K))."""
    y = anti - (anti @ nuisance) @ nuisance.T
    d = np.where(allowed[:, None], raw - (raw @ nuisance) @ nuisance.T, 0.0)
    dd = np.maximum((d * d).sum(axis=1), 1e-12)
    dy = d @ y.T                                                        # (P, K)
    gain = dy * dy / dd[:, None]
    best = np.argmax(gain, axis=0)
    rows = np.arange(len(y))
    g = dy[best, rows] / dd[best]                                       # the antisymmetric amplitude: half the step
    explained = gain[best, rows] / np.maximum((y * y).sum(axis=1), 1e-300)
    coef = nuisance.T @ (anti - g[:, None] * raw[best]).T
    return best, g, explained, coef
