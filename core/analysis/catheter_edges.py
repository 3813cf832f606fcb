"""Where the catheter is in each station's profile, for core.analysis.catheter_profile: its steepest-slope outer
edges (a hollow catheter's profile has two wall peaks and a dip between them, so a half-height rule would find
the inner wall), from which the first guess of its width and axis.

The edges are looked for on the profile less a background. A straight line through the window's ends (+-20-26
px) is that background where nothing but the catheter lies between them; a bone's edge within the window leaves
a plateau beside the catheter, whose step was taken for one of its outer edges: a faint catheter (0.12-0.15
ln/px) 7-16 px from a 0.6 ln edge read 2-4.4x wide, and the tube fit's window then held the step. The grey
opening by an element wider than any catheter keeps a step or a slope whole and takes only bumps out: less it
(a top-hat), the catheter alone is left when the step is clear of it. Against or under the catheter the opening
holds part of it (a catheter lower than the plateau beside it reads as a staircase: a 10 px tube by a 0.3 ln
edge at +3 px kept only its far wall), so the top-hat's edges are taken only where they are plainly the
catheter's and the line's are not: the marked line lies in their middle half (a step by the axis leaves the
top-hat half the catheter, the marked line at its edge), the levels just outside them agree
(a catheter is a bump on its background), outside the line's they differ (one of its edges is a step, or the
plateau, tilted by the line, left only one wall standing), and the two find different bumps (width, centre or
height: the tilt can sink the catheter below the line; where they agree, the line's stand), in a quarter of the
stations or more: an edge along the catheter. A few stations
off are left to the axis's outliers, as before (a phantom device's sizing chord: one station whose line's edges
a structure beside it had moved kept by the top-hat's, and the chord's fit read 10% wider).
Elsewhere the line's, as before (a step at the wall: the tube fit takes it out, core.analysis.catheter_background).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.analysis.along_vessel import run_around

__all__ = ["StationEdges", "opening", "station_edges"]

COARSE_HALF = 8             # samples each side (+-2 px at 0.25): a hollow catheter's two walls read as one bump
FINE_HALF = 2               # samples each side of the profile whose slopes are the edges
EDGE_REACH_PX = 2.0         # an edge is looked for this far beyond the bump's 30% level
BUMP_LEVEL = 0.3            # the bump: where the coarse profile is above this fraction of its top
BALANCE = 0.25              # the levels outside a bump's edges agree to this fraction of its height
FOOT_PX = 2.0               # those levels: this far outside the steepest slopes (the blurred foot, 1-1.5 px sd)
DIFFER = 0.25               # and they find another bump: its width, centre (of the width) or height this far off
MARKED_MIDDLE = 0.5         # the marked line lies within the middle half of the catheter's bump (2|centre| <= w/2)
ALONG_FRACTION = 0.25       # a bone's edge along the catheter: in this fraction of the stations or more


@dataclass(frozen=True)
class StationEdges:
    """Each station's outer edges (px along its normal) and the bump's height above the background."""
    left: np.ndarray
    right: np.ndarray
    top: np.ndarray
    hat_top: np.ndarray         # the top-hat's highest bump near the line (a step alone: the noise's)
    by_hat: np.ndarray          # the edges are the top-hat's (a step beside the catheter), else the line's


def station_edges(across: np.ndarray, raw: np.ndarray, prof: np.ndarray, near: np.ndarray, element: int
                  ) -> StationEdges:
    """The outer edges in each row of ``raw`` (the stations' attenuation profiles at ``across``, the marked line
    at 0), the catheter's top looked for within ``near``: on ``prof`` (``raw`` less each row's straight
    background), or on ``raw`` less its opening by ``element`` samples where those are plainly the catheter's
    and the line's are not (the module's docstring)."""
    coarse = _smooth(raw, COARSE_HALF)
    fine = _smooth(raw, FINE_HALF)
    floor = opening(coarse, element)
    by_line = _edges(across, _smooth(prof, FINE_HALF), _smooth(prof, COARSE_HALF), near)
    by_hat = _edges(across, fine - floor, coarse - floor, near)
    # The levels on the raw profile: less the line, a bone's plateau leans by the line's slope.
    w = by_hat[1] - by_hat[0]
    differ = ((np.abs(by_line[1] - by_line[0] - w) > DIFFER * w)
              | (np.abs(by_line[0] + by_line[1] - by_hat[0] - by_hat[1]) > 2.0 * DIFFER * w)
              | (np.abs(by_line[2] - by_hat[2]) > DIFFER * by_hat[2]))
    hat = (differ & (np.abs(by_hat[0] + by_hat[1]) <= MARKED_MIDDLE * w)
           & (_imbalance(across, fine, by_hat) <= BALANCE) & (_imbalance(across, fine, by_line) > BALANCE))
    if hat.mean() < ALONG_FRACTION:
        hat[:] = False
    left, right = (np.where(hat, h, ln) for h, ln in zip(by_hat[:2], by_line[:2]))
    # Its height: the larger reading (the line, tilted by a plateau beside it, can sink the catheter below it).
    return StationEdges(left, right, np.maximum(by_line[2], by_hat[2]), by_hat[2], hat)


def _edges(across: np.ndarray, fine: np.ndarray, coarse: np.ndarray, near: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(left, right, top) per row: the coarse profile's highest point within ``near``, the run above
    BUMP_LEVEL of it round that, and the steepest rise and fall of ``fine`` from there out to EDGE_REACH_PX
    beyond the run."""
    reach = int(round(EDGE_REACH_PX / float(across[1] - across[0])))
    idx = np.arange(len(across))
    g = np.gradient(fine, float(across[1] - across[0]), axis=1)
    out = np.empty((3, len(fine)))
    for k, (gk, pc) in enumerate(zip(g, coarse)):
        c = int(np.argmax(np.where(near, pc, -np.inf)))
        lo, hi = run_around(pc > BUMP_LEVEL * pc[c], c)
        out[0, k] = _peak_at(gk, across, (idx >= lo - reach) & (idx <= c), +1)
        out[1, k] = _peak_at(gk, across, (idx >= c) & (idx <= hi + reach), -1)
        out[2, k] = pc[c]
    return out[0], out[1], out[2]


def _imbalance(across: np.ndarray, fine: np.ndarray, edges) -> np.ndarray:
    """Per row: the levels FOOT_PX outside the two ``edges`` (left, right, top) on ``fine``, their difference
    over the bump's height."""
    left, right, top = edges
    lv = np.array([np.interp(lft - FOOT_PX, across, f) for lft, f in zip(left, fine)])
    rv = np.array([np.interp(r + FOOT_PX, across, f) for r, f in zip(right, fine)])
    return np.abs(lv - rv) / np.maximum(top, 1e-12)


def opening(p: np.ndarray, size: int) -> np.ndarray:
    """Each row's grey opening by a flat element of ``size`` samples: the row with its bumps narrower than the
    element cut off; a step or a slope stays whole. The ends are held a whole element out (the background goes
    on beyond the window): a bone's plateau between the catheter and the window's end is narrower than the
    element and would be cut as a bump."""
    h = size // 2
    pad = np.pad(p, ((0, 0), (2 * h, 2 * h)), mode="edge")
    low = np.lib.stride_tricks.sliding_window_view(pad, 2 * h + 1, axis=1).min(axis=2)
    return np.lib.stride_tricks.sliding_window_view(low, 2 * h + 1, axis=1).max(axis=2)


def _smooth(p: np.ndarray, half: int) -> np.ndarray:
    pad = np.pad(p, ((0, 0), (half, half)), mode="edge")
    return np.lib.stride_tricks.sliding_window_view(pad, 2 * half + 1, axis=1).mean(axis=2)


def _peak_at(g: np.ndarray, across: np.ndarray, sel: np.ndarray, sign: int) -> float:
    """Sub-pixel position (parabola through three samples) of the largest ``sign * g`` within ``sel``."""
    v = np.where(sel, sign * g, -np.inf)
    j = int(np.argmax(v))
    if 0 < j < len(g) - 1 and np.isfinite(v[j - 1]) and np.isfinite(v[j + 1]):
        den = v[j - 1] - 2 * v[j] + v[j + 1]
        off = 0.5 * (v[j - 1] - v[j + 1]) / den if den < 0 else 0.0
        return float(across[j] + np.clip(off, -1.0, 1.0) * (across[1] - across[0]))
    return float(across[j])
