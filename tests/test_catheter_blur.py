"""Catheter calibration at several blur levels, against analytic truth: a hollow tube of known outer width and
wall, projected exactly (chords on a sub-pixel grid), blurred by a Gaussian detector PSF, integrated over each
pixel, with noise (log units, as the mask). The width must hold at every blur, not only the phantom's."""
import math

import numpy as np
import pytest

from core.analysis.catheter_profile import catheter_fit, catheter_width_px
from core.sources.phantom.psf import blur_axis as _gauss  # one blur for tests, sweeps and the phantom

SUB = 5


def tube_mask(outer_px: float, wall_px: float, angle_deg: float, blur_px: float, seed: int, size: int = 96,
              fill: float = 0.0, noise: float = 0.002, sub: int = SUB):
    """(mask, two points along the tube): lower = more attenuating, ``noise`` sd, a gentle background slope;
    ``fill``: the lumen's attenuation per px relative to the wall's (0: empty; 1: looks solid)."""
    rng = np.random.default_rng(seed)
    R, r = outer_px / 2, outer_px / 2 - wall_px
    f = (np.arange(size * sub) + 0.5) / sub - 0.5
    xs, ys = np.meshgrid(f, f)
    c = (size - 1) / 2 + rng.uniform(-0.5, 0.5, 2)
    t = math.radians(angle_deg)
    d = (xs - c[0]) * -math.sin(t) + (ys - c[1]) * math.cos(t)
    chord = 2 * np.sqrt(np.clip(R * R - d * d, 0, None)) - (1 - fill) * 2 * np.sqrt(np.clip(r * r - d * d, 0, None))
    if blur_px > 0:
        chord = _gauss(_gauss(chord, blur_px * sub, 0), blur_px * sub, 1)
    chord = chord.reshape(size, sub, size, sub).mean(axis=(1, 3))
    img = 5.0 - 0.08 * chord + 0.001 * np.arange(size)[None, :] + rng.normal(0, noise, (size, size))
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


# Along a row or a column every station meets the pixel grid at the same phase, so the mean profile is the
# bilinear interpolant of one set of pixel samples, not their phase average: a tent model of the sampling read
# these 5-10% off (-9.2%, -9.9%, +5.2%); the model now samples the tube exactly as the stations did.
@pytest.mark.parametrize("outer, wall, blur, angle", [(8.0, 1.5, 0.5, 0.0), (8.0, 1.0, 0.0, 0.0),
                                                      (8.0, 1.5, 0.5, 90.0), (12.0, 2.0, 0.5, 180.0)])
def test_a_catheter_along_a_row_or_a_column(outer, wall, blur, angle):
    mask, points = tube_mask(outer, wall, angle, blur, seed=7, noise=0.005, sub=9)
    assert catheter_width_px(mask, points) == pytest.approx(outer, rel=0.03)


def test_the_model_samples_the_tube_as_the_image_does():
    """Noise-free tubes at angles off the pixel rows: the fitted model leaves almost nothing (the tent model
    left 0.5% of the profile's height at most angles: an even-length pixel kernel shifted it half a fine
    sample). Along a row the edges' centre errs alike at every station: 0.1% left there, the width within 2%."""
    for angle in (10.0, 30.0, 100.0, 147.0):
        mask, points = tube_mask(8.0, 1.5, angle, 0.5, seed=3, noise=0.0, sub=9)
        fit = catheter_fit(mask, points)
        assert fit.residual < 1e-3, (angle, fit)
        assert fit.width_px == pytest.approx(8.0, rel=0.01), (angle, fit)


@pytest.mark.parametrize("fill", [0.5, 1.0])
def test_a_lumen_holding_contrast(fill):
    """A catheter filled with contrast, partly (+4.2% before: the model had only empty lumens) or as dense as
    its wall (looks solid)."""
    mask, points = tube_mask(6.0, 1.5, 30.0, 0.5, seed=7, fill=fill, noise=0.005, sub=9)
    assert catheter_width_px(mask, points) == pytest.approx(6.0, rel=0.03)


def test_the_width_range_says_when_the_wall_is_not_resolved():
    """A wall of half the radius pins the outer width; a 1 px wall under 0.5 px blur does not (its profile is
    that of a ring: thinner wall + more blur fits as well), and the range says so rather than the width."""
    mask, points = tube_mask(8.0, 2.0, 37.0, 0.5, seed=5, noise=0.01)
    fit = catheter_fit(mask, points)
    lo, hi = fit.width_range_px
    assert lo <= 8.0 * 1.01 and hi >= 8.0 * 0.99 and hi - lo < 0.06 * 8.0, fit
    mask, points = tube_mask(6.0, 1.0, 37.0, 0.5, seed=5, noise=0.01)
    fit = catheter_fit(mask, points)
    lo, hi = fit.width_range_px
    # (Wider than 10% while the noise was measured with each block's background offset in it: not seen by
    # the fit, ten times the rest on the phantom.)
    assert lo <= 6.0 <= hi and hi - lo > 0.05 * 6.0, fit
