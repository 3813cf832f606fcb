"""A catheter's outer width from the contrast it displaces (core.analysis.catheter_displaced): where its thin wall
under blur leaves the mask's width ambiguous, the solid hole it leaves in the vein's column pins it.

Analytic images here (chords area-averaged over the pixel, a continuous Gaussian blur), and the independent
phantom's thin-walled catheters (tests/independent_vein.py) through the command."""
from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest

from core.analysis.catheter_displaced import displaced_fit

SUB = 6


def _chord(d: np.ndarray, r: float) -> np.ndarray:
    return 2.0 * np.sqrt(np.clip(r * r - d * d, 0.0, None))


def _blur(img: np.ndarray, sd: float) -> np.ndarray:
    fy = np.fft.fftfreq(img.shape[0])[:, None]
    fx = np.fft.fftfreq(img.shape[1])[None, :]
    return np.real(np.fft.ifft2(np.fft.fft2(img) * np.exp(-2 * math.pi ** 2 * sd ** 2 * (fx ** 2 + fy ** 2))))


def render(angle_deg: float, vein_px: float, cath_px: float, inner: float, offset_px: float, blur_px: float,
           noise: float, seed: int, lumen_density: float = 0.0, in_vein: bool = True, n: int = 128, displaces: bool = True):
    """(opacity, mask, two points along the catheter): a straight vein holding contrast (density 0.05 per px of
    chord) with a catheter ``offset_px`` off its axis displacing its outer cross-section (its lumen holding
    ``lumen_density`` of the vein's contrast), the catheter's wall (0.12 per px) in the mask."""
    rng = np.random.default_rng(seed)
    t = math.radians(angle_deg)
    tangent, normal = np.array([math.cos(t), math.sin(t)]), np.array([-math.sin(t), math.cos(t)])
    off = (np.arange(SUB) + 0.5) / SUB - 0.5
    yy, xx = np.mgrid[0:n, 0:n].astype(float)
    c = (n - 1) / 2.0
    vein_c = c if in_vein else c + 30.0        # a vein elsewhere: the catheter lies outside it
    lumen = np.zeros((n, n))
    wall = np.zeros((n, n))
    ro, ri = cath_px / 2, inner * cath_px / 2
    for oy in off:
        for ox in off:
            d = (xx + ox - c) * normal[0] + (yy + oy - c) * normal[1]
            dv = (xx + ox - c) * normal[0] + (yy + oy - vein_c) * normal[1]
            dc = d - offset_px
            outer, inner_chord = _chord(dc, ro), _chord(dc, ri)
            if in_vein:
                lumen += np.clip(_chord(dv, vein_px / 2) - (outer if displaces else 0.0), 0.0, None) \
                    + (lumen_density * inner_chord if displaces else 0.0)
            else:
                lumen += _chord(dv, vein_px / 2)
            wall += outer - inner_chord
    lumen /= SUB * SUB
    wall /= SUB * SUB
    opacity = _blur(0.05 * lumen, blur_px) + rng.normal(0, noise, (n, n))
    mask = _blur(1.0 - 0.12 * wall, blur_px) + rng.normal(0, noise, (n, n))
    centre = np.array([c, c]) + offset_px * normal
    return opacity.astype(np.float32), mask.astype(np.float32), np.stack([centre - 25 * tangent,
                                                                          centre + 25 * tangent])


@pytest.mark.parametrize("angle, vein, cath, inner, offset, blur, seed", [
    (0.0, 14.0, 4.5, 0.72, 1.0, 1.0, 0),
    (17.0, 12.0, 3.5, 0.8, -0.8, 1.2, 1),
    (63.0, 16.0, 5.5, 0.7, 2.0, 0.7, 2),
    (90.0, 10.0, 5.0, 0.85, 0.0, 0.9, 3),
    (141.0, 18.0, 6.0, 0.6, -2.5, 1.4, 4),
])
def test_the_hole_gives_a_thin_walled_catheters_width(angle, vein, cath, inner, offset, blur, seed):
    opacity, mask, pts = render(angle, vein, cath, inner, offset, blur, noise=0.002, seed=seed)
    fit = displaced_fit(opacity, mask, pts, (blur - 0.03, blur, blur + 0.03))
    assert fit is not None
    assert fit.width_px == pytest.approx(cath, rel=0.03)
    assert fit.vein_px == pytest.approx(vein, rel=0.05)
    assert fit.span_px[0] <= fit.width_px <= fit.span_px[1]


def test_noise_free_the_hole_is_exact():
    opacity, mask, pts = render(25.0, 13.0, 4.0, 0.75, 0.7, 1.1, noise=0.0, seed=5)
    fit = displaced_fit(opacity, mask, pts, (1.1, 1.1, 1.1))
    assert fit is not None and fit.width_px == pytest.approx(4.0, rel=0.01)


def test_a_catheter_outside_the_vein_has_no_hole():
    opacity, mask, pts = render(30.0, 12.0, 4.5, 0.7, 0.0, 1.0, noise=0.002, seed=6, in_vein=False)
    assert displaced_fit(opacity, mask, pts, (0.97, 1.0, 1.03)) is None


@pytest.mark.parametrize("lumen_density", [0.5, 1.0, 3.0])
def test_a_lumen_holding_contrast_is_not_read_as_a_narrow_hole(lumen_density):
    # Contrast injected through the catheter: its lumen holds some or more than the vein's. The hole is shallower
    # or a bump; a solid disc's fit would read it 20-80% narrow.
    opacity, mask, pts = render(0.0, 14.0, 4.5, 0.72, 1.0, 1.0, noise=0.002, seed=0, lumen_density=lumen_density)
    assert displaced_fit(opacity, mask, pts, (0.97, 1.0, 1.03)) is None


def test_a_catheter_not_displacing_the_contrast_gives_no_width():
    opacity, mask, pts = render(63.0, 16.0, 5.5, 0.7, 2.0, 0.7, noise=0.002, seed=2, displaces=False)
    assert displaced_fit(opacity, mask, pts, (0.67, 0.7, 0.73)) is None


def test_a_blur_the_vein_does_not_pin_leaves_the_width_to_the_mask():
    # A small solid hole's width trades against the blur: bounds 0.6-1.4 px do not pin it.
    opacity, mask, pts = render(10.0, 12.0, 4.0, 0.7, 0.5, 1.0, noise=0.002, seed=7)
    assert displaced_fit(opacity, mask, pts, (0.6, 1.0, 1.4)) is None


def test_points_off_any_catheter_are_refused_as_the_mask_fit_refuses():
    opacity, mask, pts = render(0.0, 14.0, 4.5, 0.7, 0.0, 1.0, noise=0.002, seed=8)
    with pytest.raises(ValueError, match="not on a catheter"):
        displaced_fit(opacity, mask, pts + np.array([0.0, 40.0]), (0.97, 1.0, 1.03))


@pytest.mark.parametrize("seed", [1, 7, 40])
def test_the_independent_phantoms_thin_walls_calibrate(seed, tmp_path):
    """These catheters (q 0.72, 3.7-4.7 px, blur 1.05-1.18 px) were refused as ambiguous from the mask alone."""
    from api.cli.vessel import vessel_main
    from tests.independent_vein import make_case
    from tests.independent_vein import render as render_case

    case = make_case(seed)
    rendered = render_case(case)
    path = tmp_path / "linear.npy"
    np.save(path, rendered.linear)
    pts = ";".join(f"{x:.1f},{y:.1f}" for x, y in case.catheter_points())
    line = ";".join(f"{x:.1f},{y:.1f}" for x, y in case.centreline_points())
    out, err = io.StringIO(), io.StringIO()
    code = vessel_main(str(path), rendered.lin_fps, None, line, None, pts, case.catheter_french, True, None,
                       out=out, err=err)
    assert code == 0, err.getvalue()
    result = json.loads(out.getvalue())
    assert result["calibration"] == "catheter"
    assert result["mm_per_px"] == pytest.approx(case.mm_per_px, rel=0.05)
