"""The catheter calibration with the imaging blur measured on the vein (core/analysis/calibration.py:
vessel_blur, catheter_mm_per_px with the run's opacity), against analytic truth: a hollow catheter in the mask
and a contrast-filled vein beside it in the opacity image, both projected exactly (chords on a sub-pixel grid),
blurred by one Gaussian PSF, integrated over each pixel, with noise.

A thin wall under blur is not in the catheter's own profile (a thinner wall with more blur fits as well): the
least-blur fit read a 6 px tube with a 1 px wall 10-37% wide at 0.5-1 px blur. With the blur pinned by the
vein it must hold within 5%; where nothing pins it, the calibration is refused with its reason."""
import math

import numpy as np
import pytest

from core.analysis.calibration import catheter_mm_per_px, vessel_blur
from core.analysis.catheter_profile import catheter_fit
from tests.test_catheter_blur import _gauss

SUB = 5
MU_WALL = 0.12          # ln attenuation per px of wall (the phantom's)
MU_IODINE = 0.05        # opacity per px of contrast-filled lumen


def layout(seed: int, angle_deg: float, size: int):
    """(rng, catheter centre, its normal, its direction, each sub-pixel's signed distance from its axis): the
    catheter through the middle (a little above it) at ``angle_deg``, on a SUB x SUB sub-pixel grid."""
    rng = np.random.default_rng(seed)
    f = (np.arange(size * SUB) + 0.5) / SUB - 0.5
    xs, ys = np.meshgrid(f, f)
    c = (size - 1) / 2 + rng.uniform(-0.5, 0.5, 2) - np.array([0.0, 15.0])
    t = math.radians(angle_deg)
    normal, along = np.array([-math.sin(t), math.cos(t)]), np.array([math.cos(t), math.sin(t)])
    return rng, c, normal, along, (xs - c[0]) * normal[0] + (ys - c[1]) * normal[1]


def bone_edge(d: np.ndarray, edge_px: float, mu: float) -> np.ndarray:
    """A bone's attenuation where the signed distance ``d`` > ``edge_px``: a cortical edge, a step as sharp as
    the phantom's (a 0.6 px logistic, core/sources/phantom/background.py)."""
    return mu / (1.0 + np.exp(np.clip(-(d - edge_px) / 0.6, -50, 50)))


def scene(outer_px: float, wall_px: float, blur_px: float, seed: int, angle_deg: float = 30.0,
          vein_px: float | None = 16.0, size: int = 150, noise: float = 0.01,
          bone: tuple[float, float] | None = None):
    """(mask, opacity, catheter points, vein centreline): the catheter through the middle at ``angle_deg``, the
    vein (``vein_px`` wide; None: no vein) parallel to it 40 px aside; one PSF of sd ``blur_px`` for both.
    ``bone``: (edge offset e, attenuation), a bone's edge parallel to the catheter, the bone where d > e."""
    rng, c, normal, along, d = layout(seed, angle_deg, size)
    R, r = outer_px / 2, outer_px / 2 - wall_px
    maps = [2 * np.sqrt(np.clip(R * R - d * d, 0, None)) - 2 * np.sqrt(np.clip(r * r - d * d, 0, None))]
    if bone is not None:
        maps[0] = maps[0] + bone_edge(d, *bone) / MU_WALL
    if vein_px is not None:
        dv = d - 40.0
        maps.append(2 * np.sqrt(np.clip((vein_px / 2) ** 2 - dv * dv, 0, None)))
    out = []
    for m in maps:
        if blur_px > 0:
            m = _gauss(_gauss(m, blur_px * SUB, 0), blur_px * SUB, 1)
        out.append(m.reshape(size, SUB, size, SUB).mean(axis=(1, 3)))
    mask = 5.0 - MU_WALL * out[0] + 0.001 * np.arange(size)[None, :] + rng.normal(0, noise, (size, size))
    vein = out[1] if vein_px is not None else np.zeros((size, size))
    opacity = MU_IODINE * vein + rng.normal(0, noise, (size, size))
    vein_c = c + 40.0 * normal
    return (mask.astype(np.float32), opacity.astype(np.float32), np.array([c - 30 * along, c + 30 * along]),
            np.array([vein_c - 60 * along, vein_c + 60 * along]))


def width_from(mm_per_px: float, french: float = 6.0) -> float:
    return (french / 3.0) / mm_per_px


# Thin walls (0.6-1.5 px) under 0.5-1.5 px blur, 5-14 px wide, several angles: what the least-blur fit read
# +10 to +37% wide (docs/catheter-calibration.md, "empty" table).
THIN = [(6.0, 1.0, 0.5, 30.0), (6.0, 1.0, 1.0, 75.0), (8.0, 0.75, 1.0, 10.0), (12.0, 1.0, 0.75, 45.0),
        (5.0, 1.0, 0.5, 160.0), (14.0, 1.5, 1.25, 60.0)]


@pytest.mark.parametrize("outer, wall, blur, angle", THIN)
def test_a_thin_wall_under_blur_is_sized_with_the_blur_of_the_vein(outer, wall, blur, angle):
    mask, opacity, points, vein = scene(outer, wall, blur, seed=int(10 * outer + 7 * blur), angle_deg=angle)
    mm = catheter_mm_per_px(mask, points, 6.0, opacity=opacity, centerline=vein)
    assert width_from(mm) == pytest.approx(outer, rel=0.05)


# At 1.5 px blur a wall of 1 px or less is at the edge: a 0.02 px error in the vein's blur moves the width 3-5%,
# and at the blur held the wall and the radius still trade within the noise. Refused (as ambiguous, or as not a
# tube when the fit runs to its thinnest wall at the vein's blur: 10 px / 1 px read 1.519 px there, -8% at
# q 0.97), or right (least-blur: +21%, -16%).
@pytest.mark.parametrize("outer, wall, blur, angle", [(10.0, 1.0, 1.5, 120.0), (8.0, 0.75, 1.5, 100.0),
                                                      (5.0, 1.0, 1.5, 20.0)])
def test_a_thin_wall_under_much_blur_is_refused_or_right(outer, wall, blur, angle):
    mask, opacity, points, vein = scene(outer, wall, blur, seed=int(10 * outer + 7 * blur), angle_deg=angle)
    try:
        mm = catheter_mm_per_px(mask, points, 6.0, opacity=opacity, centerline=vein)
    except ValueError as exc:
        assert str(exc).startswith(("catheter width ambiguous", "catheter profile does not fit a tube")), exc
        return
    assert width_from(mm) == pytest.approx(outer, rel=0.06)


@pytest.mark.parametrize("blur", [0.0, 0.5, 1.0, 1.5])
def test_the_vein_measures_the_blur(blur):
    _, opacity, points, vein = scene(6.0, 1.0, blur, seed=3, vein_px=14.0)
    lo, mid, hi = vessel_blur(opacity, vein, 14.0, avoid=points)
    assert abs(mid - blur) <= 0.15 and lo - 0.05 <= blur <= hi + 0.05, (lo, mid, hi)


def test_a_thin_wall_with_no_vein_to_measure_the_blur_is_refused():
    """(The least-blur fit reads this one +23%: 9.8 px.)"""
    mask, opacity, points, _ = scene(8.0, 0.75, 1.5, seed=5, vein_px=None)
    with pytest.raises(ValueError, match=r"^catheter width ambiguous: a thin wall under blur fits .* px \(no blur"):
        catheter_mm_per_px(mask, points, 6.0, opacity=opacity)
    # Without the run's image (a library call): the least blur, as before, with the range saying how unsure.
    lo, hi = catheter_fit(mask, points).width_range_px
    assert hi - lo > 0.1 * 8.0 and lo <= 8.0 <= hi


def test_a_thick_wall_needs_no_vein():
    mask, opacity, points, _ = scene(8.0, 2.0, 1.0, seed=6, vein_px=None)
    assert width_from(catheter_mm_per_px(mask, points, 6.0, opacity=opacity)) == pytest.approx(8.0, rel=0.03)
