"""The exact half-height relation of a blurred projected circle (core.analysis.blurred_circle) against a
brute-force one: the blurred profile integrated over the disk directly (erf across each row), the crossing
found by bisection, the height taken as lumen.py takes it."""
from __future__ import annotations

import math

import numpy as np
import pytest

from core.analysis.blurred_circle import measured_diameter, measured_ratio, true_diameter
from core.analysis.lumen import BLUR_VAR_PX2, HALF_WIDTH_FACTOR, PEAK_CORE

_erf = np.vectorize(math.erf)


def _brute_profile(x: np.ndarray, r: float, sigma: float) -> np.ndarray:
    """A disk of radius r (unit density) projected on x and blurred by a Gaussian of sd sigma: for each row y
    of the disk, the blurred segment [-a, a] is Phi((x + a) / sigma) - Phi((x - a) / sigma)."""
    y = (np.arange(1500) + 0.5) / 1500 * 2 * r - r
    a = np.sqrt(r * r - y * y)[None, :]
    xx = np.asarray(x, dtype=float)[:, None]
    s = sigma * math.sqrt(2.0)
    return 0.5 * (_erf((xx + a) / s) - _erf((xx - a) / s)).sum(axis=1) * (2 * r / 1500)


def _brute_measured(d: float, sigma: float) -> float:
    r = d / 2
    width = d
    for _ in range(4):
        half_core = PEAK_CORE * HALF_WIDTH_FACTOR * width / 2
        xc = np.linspace(-half_core, half_core, 41)
        circle = 2 * np.sqrt(r * r - xc ** 2)
        level = 0.5 * float(_brute_profile(xc, r, sigma).mean()) / float(circle.mean()) * 2 * r
        lo, hi = 0.0, r + 6 * sigma
        for _ in range(30):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if _brute_profile(np.array([mid]), r, sigma)[0] > level else (lo, mid)
        width = 2 * 0.5 * (lo + hi) / HALF_WIDTH_FACTOR
    return width


@pytest.mark.parametrize("d,s", [(6.0, 0.0), (8.0, 1.5), (12.0, 1.0), (16.0, 0.5), (20.0, 1.5)])
def test_the_table_matches_a_brute_force_blurred_circle(d, s):
    sigma = math.sqrt(BLUR_VAR_PX2 + s * s)
    brute = _brute_measured(d, sigma)
    assert measured_diameter(d, sigma) == pytest.approx(brute, rel=1e-3)     # 0.01 px on 10 px
    assert d * float(measured_ratio(sigma / d)) == pytest.approx(brute, rel=1e-3)
    # and the inversion gives the circle back
    assert float(true_diameter(brute, sigma)) == pytest.approx(d, rel=1.5e-3)


def test_the_inversion_over_the_table():
    for d in (4.0, 7.0, 10.0, 15.0, 25.0, 40.0):
        for s in (0.0, 0.4, 0.8, 1.2, 1.6):
            sigma = math.sqrt(BLUR_VAR_PX2 + s * s)
            assert float(true_diameter(measured_diameter(d, sigma, 1 / 8000), sigma)) == pytest.approx(d, rel=3e-4)
    assert np.isnan(true_diameter(np.array([1.0]), 2.0)).all()      # a blob under ~2 sd: not invertible


def test_small_blur_reproduces_the_second_order_term():
    """At lumen.py's own blur (no detector PSF) the exact relation is its ``w + 10 var / w``, closely, on the
    widths the edges size (>= 10 px; narrower columns are blended into densitometry)."""
    sigma = math.sqrt(BLUR_VAR_PX2)
    for d in (10.0, 14.0, 20.0, 30.0):
        w = measured_diameter(d, sigma)
        today = w + 10.0 * BLUR_VAR_PX2 / w
        assert float(true_diameter(w, sigma)) == pytest.approx(today, rel=0.004)
    # beside a detector PSF of 1.5 px the second-order term is 3% short on a 15 px lumen
    sigma = math.sqrt(BLUR_VAR_PX2 + 1.5 ** 2)
    w = measured_diameter(15.0, sigma)
    assert (w + 10.0 * BLUR_VAR_PX2 / w) / 15.0 < 0.975
    assert float(true_diameter(w, sigma)) == pytest.approx(15.0, rel=1e-3)


def test_a_doubtful_blur_keeps_todays_widths():
    from core.analysis.sizing_blur import MAX_BLUR_SPREAD_PX, trusted_blur
    assert trusted_blur(None) is None
    assert trusted_blur((0.9, 1.0, 1.1)) == 1.0
    assert trusted_blur((0.8, 1.0, 0.8 + MAX_BLUR_SPREAD_PX + 0.01)) is None    # the pieces disagree


def _brute_light_measured(d: float, sigma: float, height: float) -> float:
    """The detector blurs the light: a column of peak opacity ``height`` (ln units) is exp(-height chord / d),
    blurred by direct summation over a fine grid, its opacity the log again; measured as lumen.py measures."""
    r = d / 2
    u = (np.arange(4000) + 0.5) / 4000 * 2 * r - r
    du = 2 * r / 4000
    light = np.expm1(-height * np.sqrt(r * r - u * u) / r)

    def profile(x):
        z = (np.asarray(x, float)[:, None] - u[None, :]) / sigma
        k = np.exp(-0.5 * z * z) / (sigma * math.sqrt(2 * math.pi))
        return -np.log1p((k * light[None, :]).sum(axis=1) * du) / height

    width = d
    for _ in range(4):
        half_core = PEAK_CORE * HALF_WIDTH_FACTOR * width / 2
        xc = np.linspace(-half_core, half_core, 41)
        circle = np.sqrt(1 - (xc / r) ** 2)
        level = 0.5 * float(profile(xc).mean()) / float(circle.mean())
        lo, hi = 0.0, r + 6 * sigma
        for _ in range(30):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if profile(np.array([mid]))[0] > level else (lo, mid)
        width = 2 * 0.5 * (lo + hi) / HALF_WIDTH_FACTOR
    return width


@pytest.mark.parametrize("d,s,h", [(10.4, 1.2, 0.55), (8.0, 1.5, 0.75), (16.0, 1.0, 1.2), (12.0, 0.5, 2.5)])
def test_the_blur_of_the_light_narrows_a_dense_column_further(d, s, h):
    """Against direct summation; and the inversion at the column's height gives the circle back (between the
    table's rows, interpolated), where the blur taken on the opacity leaves it narrow."""
    sigma = math.sqrt(BLUR_VAR_PX2 + s * s)
    brute = _brute_light_measured(d, sigma, h)
    assert measured_diameter(d, sigma, height=h) == pytest.approx(brute, rel=1e-3)
    assert float(true_diameter(np.array([brute]), sigma, h)[0]) == pytest.approx(d, rel=2e-3)
    assert brute < measured_diameter(d, sigma)
    assert float(true_diameter(np.array([brute]), sigma)[0]) < 0.995 * d


def test_heights_per_width_and_none():
    """One height per width, interpolated between rows; None, and a height of 0, is the blur on the opacity."""
    sigma = 1.2
    w = np.array([measured_diameter(10.0, sigma, height=0.3), measured_diameter(20.0, sigma, height=1.7),
                  np.nan])
    out = true_diameter(w, sigma, np.array([0.3, 1.7, 0.5]))
    assert out[:2] == pytest.approx([10.0, 20.0], rel=2e-3)
    assert np.isnan(out[2])
    plain = measured_diameter(10.0, sigma)
    assert float(true_diameter(np.array([plain]), sigma, 0.0)[0]) == pytest.approx(
        float(true_diameter(np.array([plain]), sigma)[0]), rel=1e-12)


def test_the_images_unit_in_ln_units():
    from core.analysis.sizing_blur import ln_per_unit
    assert ln_per_unit(True, None) == 1.0 and ln_per_unit(True, 70.0) == 1.0     # linear: ln(mask) - ln(frame)
    assert ln_per_unit(False, 70.0) == pytest.approx(1 / 70.0)                     # display levels per ln unit
    assert ln_per_unit(False, None) is None and ln_per_unit(False, 0.0) is None    # not estimated: unknown


def test_the_stored_table_is_the_computed_one():
    """The rows a sizing reads are stored (computing them cost a one-shot command 1.2 s); they must be what the
    computation gives for the module's present parameters. On a change: ``python -m core.analysis.blurred_circle``."""
    from core.analysis import blurred_circle, blurred_circle_table

    assert blurred_circle_table.KEY == blurred_circle.table_key(), "stale stored table: rewrite it"
    assert len(blurred_circle_table.ROWS) == len(blurred_circle.HEIGHTS)
    for row in range(len(blurred_circle.HEIGHTS)):
        stored = np.array(blurred_circle_table.ROWS[row])
        np.testing.assert_allclose(stored, blurred_circle.computed_row(row), rtol=1e-12, atol=0.0)
        np.testing.assert_array_equal(blurred_circle._table(row)[1], stored)      # and it is what is read
