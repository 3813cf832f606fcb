"""The wall/blur valley of a tube fit (core.analysis.catheter_fit): the best tube at each blur, the one chosen
on it, and how far the outer width runs along it and, the blur held, with the noise.

``cost_at(blur)`` gives the misfit of (R, q) at that blur: these functions know nothing of the model.
"""
from __future__ import annotations

import numpy as np

from core.analysis.simplex import simplex

BLUR_STEP = 0.1                          # px: the blur scan's step
SPAN_STEPS = (0.01, 0.02, 0.035, 0.05, 0.07, 0.1, 0.14, 0.2, 0.3)   # radius steps of the width's span


def blur_scan(cost_at, R: float, q: float, sd: float, limit: float, r_step: float, sigma_max: float
              ) -> list[tuple[float, float, float, float]]:
    """[(blur, misfit, R, q)] sorted by blur: the best tube at each blur on a BLUR_STEP grid, walked out from
    the best fit's blur both ways (each fit started from its neighbour's) until the misfit passes ``limit``."""
    out = []
    k0 = int(round(sd / BLUR_STEP))
    for direction in (-1, 1):
        point, prev = np.array([R, q]), None
        k = k0 if direction < 0 else k0 + 1
        while 0 <= k * BLUR_STEP <= sigma_max + 1e-9:
            s = k * BLUR_STEP
            cost = cost_at(s)
            # From the neighbour's fit, and from the valley's line continued (radius and wall trade along it):
            # a start the narrow valley has left behind finds a worse valley's bottom.
            starts = [point] + ([2 * point - prev] if prev is not None else [])
            val, found = min((simplex(cost, st, np.array([r_step, 0.05]), iters=150, tol=1e-8) for st in starts),
                             key=lambda t: t[0])
            out.append((s, float(val), float(found[0]), float(found[1])))
            if val > limit:
                break
            prev, point = point, found
            k += direction
    return sorted(out)


def choose(scan, limit: float, limit_blur: float, cost_at):
    """(misfit, (R, q, blur), (lowest, highest) outer width, (lowest, highest) along the valley only) from the
    blur scan, the blur measured nowhere else.

    The choice: the least blur within ``limit_blur`` (where a thin wall under blur and a thicker wall under
    less blur fit alike, the best fit's point on that valley wanders with the noise: up to 15% in the width on
    the phantom's unblurred catheters); walking down the blurs, a narrower tube ends it (along the wall/blur
    valley less blur means a thicker wall around the same mid-wall ring, a wider tube; a narrower one is
    another valley: a small solid tube read as a thin ring). The range: the outer widths along the whole
    valley (misfit under ``limit``, its ends interpolated between the scan's blurs), widened by the width's
    own noise at the chosen blur and at the valley's ends."""
    sds, costs, rs, qs = (np.array(v) for v in zip(*scan))
    k = int(np.argmin(costs))
    lo_k, hi_k = k, k
    while lo_k > 0 and costs[lo_k - 1] <= limit:
        lo_k -= 1
    while hi_k < len(sds) - 1 and costs[hi_k + 1] <= limit:
        hi_k += 1
    j = k
    while j - 1 >= lo_k and costs[j - 1] <= limit_blur and rs[j - 1] >= rs[j] - 1e-3:
        j -= 1
    lo_v, hi_v = _crossing(sds, costs, lo_k, lo_k - 1, limit), _crossing(sds, costs, hi_k, hi_k + 1, limit)
    widths = 2.0 * _extrap(np.linspace(lo_v, hi_v, 5), sds[lo_k:hi_k + 1], rs[lo_k:hi_k + 1])
    widths = np.concatenate([widths, 2.0 * rs[lo_k:hi_k + 1]])
    spans = [width_span(cost_at(float(sds[i])), float(rs[i]), float(qs[i]), limit) for i in sorted({j, lo_k, hi_k})]
    lo, hi = min(float(widths.min()), 2.0 * min(t[0] for t in spans)), max(float(widths.max()),
                                                                           2.0 * max(t[1] for t in spans))
    return float(costs[j]), (float(rs[j]), float(qs[j]), float(sds[j])), (lo, hi), \
        (float(widths.min()), float(widths.max()))


def _crossing(sds: np.ndarray, costs: np.ndarray, inside: int, outside: int, limit: float) -> float:
    """The blur between scan points ``inside`` (under ``limit``) and ``outside`` where the misfit reaches it."""
    if not 0 <= outside < len(sds) or costs[outside] <= costs[inside]:
        return float(sds[inside])
    t = (limit - costs[inside]) / (costs[outside] - costs[inside])
    return float(sds[inside] + np.clip(t, 0.0, 1.0) * (sds[outside] - sds[inside]))


def _extrap(at: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Linear interpolation, continued linearly past the ends (the valley's ends lie between scan points)."""
    if len(xs) < 2:
        return np.full(len(at), float(ys[0]))
    out = np.interp(at, xs, ys)
    lo, hi = at < xs[0], at > xs[-1]
    out[lo] = ys[0] + (at[lo] - xs[0]) * (ys[1] - ys[0]) / (xs[1] - xs[0])
    out[hi] = ys[-1] + (at[hi] - xs[-1]) * (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
    return out


def width_span(cost, R: float, q, limit: float, steps=SPAN_STEPS, step: float = 0.05, iters: int = 60,
               tol: float = 1e-8) -> tuple[float, float]:
    """(lowest, highest) radius whose best wall, the blur held, fits under ``limit``: walked out from ``R``
    in growing ``steps``, the crossing interpolated between the last step in and the first out. ``q``: the
    other parameters searched at each radius (the wall; an array: several, ``cost([r, *q])``), from ``step``."""
    rest = np.atleast_1d(np.asarray(q, dtype=float))
    out = []
    for sign in (-1.0, 1.0):
        prev_r, prev_v, start, edge = R, cost(np.array([R, *rest])), rest, R
        for frac in steps:
            r = R * (1.0 + sign * frac)
            val, v = simplex(lambda w: cost(np.array([r, *w])), start, np.full(len(rest), step), iters=iters,
                              tol=tol)
            if val > limit:
                t = (limit - prev_v) / (val - prev_v) if val > prev_v else 0.0
                edge = prev_r + float(np.clip(t, 0.0, 1.0)) * (r - prev_r)
                break
            prev_r, prev_v, start, edge = r, val, v, r
        out.append(edge)
    return out[0], out[1]
