"""The automatic centreline of a procedure's runs, and when it is in doubt.

The vein is found on every run (core.analysis.vessel_find.find_vessel), later runs' paths moved into baseline pixels
by their registration: a thrombus the baseline's path stopped at, the completion run shows open. Runs whose
paths part (a collateral or a paired vein taken on one of them) make the path doubtful.
"""
from __future__ import annotations

import numpy as np

from core.analysis.vessel_find import find_vessel


def automatic_centerline(base, posts, regs, floor):
    """(centreline in baseline pixels, diameter, warning or None, run it was found on) of the vein found on every
    run: the longest path wins (a thrombus the baseline's path stopped at, the completion run shows open), the
    latest of those about as long; where
    the runs' paths part by more than a diameter over more than two, the path is in doubt (a collateral or a
    paired vein taken on one run): the result is not gradable."""
    h, w = base.shape
    found = []
    for k, (img, reg) in enumerate(zip([base] + list(posts), [None] + list(regs))):
        try:
            # Later runs take the baseline's diameter: the same vein, and its measurement is half the search.
            v = find_vessel(img, floor if k == 0 or not found else found[0][2])
        except ValueError:
            if k == 0:
                raise
            continue
        line = v.centerline if reg is None else v.centerline - [reg.dx, reg.dy]
        inside = (line[:, 0] >= 0) & (line[:, 0] <= w - 1) & (line[:, 1] >= 0) & (line[:, 1] <= h - 1)
        if inside.sum() >= 2:
            idx = np.flatnonzero(inside)
            found.append((k, line[idx[0]:idx[-1] + 1][inside[idx[0]:idx[-1] + 1]], v.diameter_px))
    lengths = np.array([float(np.hypot(*np.diff(ln, axis=0).T).sum()) for _, ln, _ in found])
    # Within 5% of the longest, the latest run's path: after treatment it shows the vein's own lumen, not the
    # column beside a thrombus the baseline's path follows.
    best = int(np.flatnonzero(lengths >= 0.95 * lengths.max())[-1])
    k_best, line, d = found[best]
    doubt = None
    for k, other, _ in found:
        if k == k_best:
            continue
        apart = _apart(other, line, max(d, 6.0))
        if apart > 2 * d:
            doubt = (f"the automatic centreline differs between runs over {apart:.0f} px (a collateral or a paired "
                     "vein taken on one run): draw the centreline")
    return line, d, doubt, k_best


def _apart(a: np.ndarray, b: np.ndarray, limit: float) -> float:
    """Length (px) of polyline ``a`` (1 px apart) farther than ``limit`` from every point of ``b``."""
    step = max(1, len(b) // 400)
    bb = b[::step]
    far = 0
    for chunk in np.array_split(a, max(1, len(a) // 256)):
        dist = np.sqrt(((chunk[:, None, :] - bb[None, :, :]) ** 2).sum(axis=2)).min(axis=1)
        far += int((dist > limit + step).sum())
    return float(far)
