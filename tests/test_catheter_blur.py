"""Catheter calibration at several blur levels, against analytic truth: a hollow tube of known outer width and
wall, projected exactly (chords on a sub-pixel grid), blurred by a Gaussian detector PSF, integrated over each
pixel, with noise (log units, as the mask). The width must hold at every blur, not only the phantom's."""
import math

import numpy as np
import pytest

from core.analysis.calibration import catheter_width_px

SUB = 5


def _gauss(img: np.ndarray, sd: float, axis: int) -> np.ndarray:
    r = int(math.ceil(4 * sd))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sd) ** 2)
    pad = [(0, 0), (0, 0)]
    pad[axis] = (r, r)
    return np.apply_along_axis(lambda v: np.convolve(v, k / k.sum(), mode="valid"), axis,
                               np.pad(img, pad, mode="edge"))


def tube_mask(outer_px: float, wall_px: float, angle_deg: float, blur_px: float, seed: int, size: int = 96):
    """(mask, two points along the tube): lower = more attenuating, 0.002 noise, a gentle background slope."""
    rng = np.random.default_rng(seed)
    R, r = outer_px / 2, outer_px / 2 - wall_px
    f = (np.arange(size * SUB) + 0.5) / SUB - 0.5
    xs, ys = np.meshgrid(f, f)
    c = (size - 1) / 2 + rng.uniform(-0.5, 0.5, 2)
    t = math.radians(angle_deg)
    d = (xs - c[0]) * -math.sin(t) + (ys - c[1]) * math.cos(t)
    chord = 2 * np.sqrt(np.clip(R * R - d * d, 0, None)) - 2 * np.sqrt(np.clip(r * r - d * d, 0, None))
    if blur_px > 0:
        chord = _gauss(_gauss(chord, blur_px * SUB, 0), blur_px * SUB, 1)
    chord = chord.reshape(size, SUB, size, SUB).mean(axis=(1, 3))
    img = 5.0 - 0.08 * chord + 0.001 * np.arange(size)[None, :] + rng.normal(0, 0.002, (size, size))
    along = np.array([math.cos(t), math.sin(t)])
    return img.astype(np.float32), np.array([c - 30 * along, c + 30 * along])


# Outer width, wall, blur sd (px), angle: thick and thin-ish walls, sharp to blurred. The steepest-slope rule
# with the fixed +0.35 px it replaces read these 2-10% narrow (-7.5% on the 6 px tube with a 2 px wall even
# unblurred, -10% on the solid 4 px one). Thin walls (wall < a quarter of the width) under 0.5 px blur or more
# are outside what the profile determines (docs in core/analysis/catheter_fit.py): not claimed here.
CASES = [(6.0, 1.5, 0.0, 3.0), (6.0, 1.5, 0.5, 74.0), (6.0, 2.0, 0.0, 37.0), (6.0, 2.0, 0.5, 3.0),
         (6.0, 2.0, 1.0, 74.0), (9.0, 1.5, 0.0, 37.0), (9.0, 1.5, 0.5, 3.0), (9.0, 3.0, 1.0, 37.0),
         (9.0, 3.0, 1.5, 3.0), (4.0, 2.0, 0.5, 37.0), (4.0, 2.0, 1.0, 74.0), (6.0, 1.0, 0.0, 37.0)]


@pytest.mark.parametrize("outer, wall, blur, angle", CASES)
def test_the_catheter_width_holds_at_every_blur(outer, wall, blur, angle):
    mask, points = tube_mask(outer, wall, angle, blur, seed=int(angle + 10 * blur + outer))
    assert catheter_width_px(mask, points) == pytest.approx(outer, rel=0.03)
