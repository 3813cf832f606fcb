"""The catheter fit's fast linear model (core/analysis/catheter_linear.py, ext/_tube.pyx) against the plain
path it replaced (core/analysis/catheter_sampling.py's blur_sampling and blur, catheter_fit's _pixel_chord and
_misfit), and the vectorised bilinear sampler against the loops it replaced. Seeded geometry: stations at any
angle and phase, blurs from none to the grid's widest, solid and hollow tubes, an offset or a quadratic background."""
from __future__ import annotations

import importlib.machinery

import numpy as np
import pytest

import ext._tube
from core.analysis import catheter_linear
from core.analysis.catheter_background import background_basis
from core.analysis.catheter_fit import DENSE_LUMEN_MAX, LUMEN_MAX, _misfit, _pixel_chord, _target
from core.analysis.catheter_linear import LinearTube, misfit_one
from core.analysis.catheter_profile import shifted
from core.analysis.catheter_sampling import (
    FINE_PX,
    bilinear_sampler,
    bin_chord,
    bin_chords,
    blur,
    blur_sampling,
    box_kernel,
    fine_grid,
    gauss_kernel,
    sample_at,
)

GRID = np.arange(-26.0, 26.0 + 1e-9, 0.25)      # catheter_profile's profile samples (max_px 40)
ALONG = np.array([-0.25, 0.25])


def _geometry(rng, width=6.0, stations=24):
    """(across, fine, weights, pixel, normal) of a catheter's stations at a seeded angle and phase."""
    ang = rng.uniform(0.0, np.pi)
    t = np.tile([np.cos(ang), np.sin(ang)], (stations, 1))
    n = np.column_stack([-t[:, 1], t[:, 0]])
    xy = rng.uniform(100.0, 101.0, 2) + np.arange(stations)[:, None] * t
    across = GRID[np.abs(GRID) <= 0.8 * width + 4.0]
    fine = fine_grid(across, width)
    weights = bilinear_sampler(fine, across, xy, n, t, rng.normal(0.0, 0.3, stations), ALONG, GRID)
    weights = 0.5 * (weights + weights[::-1])        # as fit_tube symmetrises them
    pixel = np.convolve(box_kernel(abs(n[0, 0])), box_kernel(abs(n[0, 1])))
    return across, fine, weights, pixel


def _loops_sampler(fine, across, xy, normal, tangent, centres, along, grid_across):
    """The sampler as it was written before (station by station, np.add.at): the reference."""
    W = np.zeros((len(across), len(fine)))
    step = float(grid_across[1] - grid_across[0])
    rows = np.arange(len(across))
    for p0, n, t, c in zip(xy, normal, tangent, centres):
        pos = (across + c - grid_across[0]) / step
        j = np.clip(np.floor(pos).astype(int), 0, len(grid_across) - 2)
        u = np.clip(pos - j, 0.0, 1.0)
        for jj, wj in ((j, 1.0 - u), (j + 1, u)):
            a = grid_across[jj]
            for b in along:
                px = p0[0] + a * n[0] + b * t[0]
                py = p0[1] + a * n[1] + b * t[1]
                x0, y0 = np.floor(px), np.floor(py)
                fx, fy = px - x0, py - y0
                for dx, dy, wb in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy),
                                   (1, 1, fx * fy)):
                    d = (x0 + dx - p0[0]) * n[0] + (y0 + dy - p0[1]) * n[1] - c
                    k = (d - fine[0]) / FINE_PX
                    k0 = np.clip(np.floor(k).astype(int), 0, len(fine) - 2)
                    fk = np.clip(k - k0, 0.0, 1.0)
                    w = wj * wb / len(along)
                    np.add.at(W, (rows, k0), w * (1.0 - fk))
                    np.add.at(W, (rows, k0 + 1), w * fk)
    return W / len(xy)


def test_compiled_module_is_the_one_in_use():
    assert ext._tube.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    assert catheter_linear._tube is ext._tube


@pytest.mark.parametrize("seed", range(6))
def test_sampler_equals_the_loops_to_the_bit(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(4, 40))
    ang = rng.uniform(0.0, 2 * np.pi)
    t = np.column_stack([np.cos(ang + rng.normal(0, 0.05, m)), np.sin(ang + rng.normal(0, 0.05, m))])
    t /= np.hypot(t[:, 0], t[:, 1])[:, None]
    n = np.column_stack([-t[:, 1], t[:, 0]])
    xy = rng.uniform(20.0, 30.0, 2) + np.cumsum(t, axis=0)
    across = GRID[np.abs(GRID) <= rng.uniform(5.0, 20.0)]
    fine = fine_grid(across, rng.uniform(3.0, 20.0))
    centres = rng.normal(0.0, 0.5, m)
    np.testing.assert_array_equal(bilinear_sampler(fine, across, xy, n, t, centres, ALONG, GRID),
                                  _loops_sampler(fine, across, xy, n, t, centres, ALONG, GRID))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("sd", [0.0, 0.03, 0.3, 1.0, 2.5])
def test_folded_sampling_reads_as_the_plain_path(seed, sd):
    """sampling(sd) @ chord == weights blurred (no blur under FINE_PX) @ (pixel * chord), and read_blurred ==
    weights @ blur(pixel * chord) (no blur under half a sample), for radii from a tenth of a px to past the
    window."""
    rng = np.random.default_rng(seed)
    across, fine, weights, pixel = _geometry(rng, width=rng.uniform(3.0, 12.0))
    lin = LinearTube(fine, weights, pixel, gauss_kernel, bin_chord, FINE_PX)
    plain = blur_sampling(across, fine, weights, np.array([sd]))[0]
    for R in (0.1, 1.0, rng.uniform(1.5, 6.0), 9.0):
        want = plain @ _pixel_chord(fine, R, pixel)
        got = lin.read(lin.sampling(sd), R)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * np.abs(want).max())
        blurred = lin.read_blurred(R, sd)
        want = sample_at(across, fine, weights, blur(_pixel_chord(fine, R, pixel), sd / FINE_PX))
        np.testing.assert_allclose(blurred, want, rtol=1e-9, atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("quadratic", [False, True])
@pytest.mark.parametrize("lumen_max", [LUMEN_MAX, DENSE_LUMEN_MAX])
def test_compiled_misfit_equals_reference_and_plain(seed, quadratic, lumen_max):
    """ext/_tube.pyx's tube_misfit == LinearTube's NumPy reference == catheter_fit._misfit on the plain
    path's chords, at fixed blurs (folded) and through the blurred reads, solid and hollow, near and far
    from the profile (the bounds' edges taken)."""
    rng = np.random.default_rng(100 + seed)
    across, fine, weights, pixel = _geometry(rng, width=rng.uniform(4.0, 10.0))
    fast = LinearTube(fine, weights, pixel, gauss_kernel, bin_chord, FINE_PX)
    ref = LinearTube(fine, weights, pixel, gauss_kernel, bin_chord, FINE_PX, impl="reference")
    true_r = rng.uniform(2.0, 4.5)
    plain = blur_sampling(across, fine, weights, np.array([0.8]))[0]
    profile = plain @ (0.7 * _pixel_chord(fine, true_r, pixel) - 0.5 * _pixel_chord(fine, 0.7 * true_r, pixel))
    profile = profile + rng.normal(0.0, 0.01, len(profile)) + 0.3 + 0.02 * across
    target = _target(profile, background_basis(across, quadratic), lumen_max)
    checked = 0
    for R, q in [(true_r, 0.7), (0.8 * true_r, 0.0), (1.3 * true_r, 0.9), (true_r, 0.97), (0.3, 0.5)]:
        for sd in (0.0, 0.02, 0.5, 1.7):
            m_fast, m_plain = fast.sampling(sd), blur_sampling(across, fine, weights, np.array([sd]))[0]
            want = float(_misfit(m_plain @ _pixel_chord(fine, R, pixel), m_plain @ _pixel_chord(fine, q * R, pixel),
                                 target))
            for got in (fast.misfit(m_fast, R, q * R, target), ref.misfit(m_fast, R, q * R, target)):
                assert got == pytest.approx(want, rel=1e-8, abs=1e-12 * target[1])
            want_b = float(_misfit(sample_at(across, fine, weights, blur(_pixel_chord(fine, R, pixel), sd / FINE_PX)),
                                   sample_at(across, fine, weights, blur(_pixel_chord(fine, q * R, pixel),
                                                                        sd / FINE_PX)), target))
            for got in (fast.misfit_blurred(R, q * R, sd, target), ref.misfit_blurred(R, q * R, sd, target)):
                assert got == pytest.approx(want_b, rel=1e-8, abs=1e-12 * target[1])
            checked += 1
    assert checked == 20


def test_misfit_one_is_misfit_of_one_tube():
    rng = np.random.default_rng(7)
    x = np.linspace(-8.0, 8.0, 65)
    for quadratic in (False, True):
        target = _target(rng.normal(size=65) + np.exp(-x * x / 8), background_basis(x, quadratic), LUMEN_MAX)
        for _ in range(20):
            o, n = rng.normal(size=65), rng.normal(size=65) * rng.uniform(0, 1)
            assert misfit_one(o, n, target) == pytest.approx(float(_misfit(o, n, target)), rel=1e-10)


def test_blurred_chord_leaving_the_grid_is_refused_not_truncated():
    rng = np.random.default_rng(3)
    across, fine, weights, pixel = _geometry(rng)
    lin = LinearTube(fine, weights, pixel, gauss_kernel, bin_chord, FINE_PX)
    target = _target(np.ones(len(across)), background_basis(across, False))
    assert lin.read_blurred(fine[-1], 2.5) is None
    assert lin.misfit_blurred(fine[-1], 0.0, 2.5, target) is None
    with pytest.raises(ValueError):
        LinearTube(fine, weights[:, :-1], pixel, gauss_kernel, bin_chord, FINE_PX)


@pytest.mark.parametrize("first, then", [(40, 36), (36, 40), (52, 52)])
def test_bone_edge_step_table_read_back_is_the_direct_formula(first, then):
    """The bone-edge search's step table (catheter_background._step_table), kept between catheters whose windows
    differ by a few samples, reads back the numbers the direct formula gives for the edges asked, to the bit (the
    formula with math.erf per element: the compiled erf's reference too)."""
    import math

    from core.analysis import catheter_background as cb
    xs_all = GRID[GRID > 0]
    with cb._tables_lock:
        cb._tables.clear()
    cb._step_table(xs_all[:first], cb.step_places(xs_all[:first]))
    xs = xs_all[:then]
    places = [(h, sd) for h, sd in cb.step_places(xs) if h - 2.5 * sd <= 0.6 * xs[-1]]
    k, a, raw = cb._step_table(xs, places)
    k0 = np.array([1.0 / (math.sqrt(2.0) * sd) for _, sd in places])[:, None]
    a0 = np.array([h for h, _ in places])[:, None]
    raw0 = 0.5 * (cb.erf_ref((xs[None, :] - a0) * k0) - cb.erf_ref((-xs[None, :] - a0) * k0)).astype(float)
    np.testing.assert_array_equal(k, k0)
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(raw, raw0)


def test_compiled_erf_is_math_erf_to_the_bit():
    from core.analysis import catheter_background as cb
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.normal(0.0, 2.0, 5000), rng.uniform(-40, 40, 1002),
                        [0.0, -0.0, 1e-300, -1e-300, 5.9, 6.0, 27.0, -27.0, np.inf, -np.inf, np.nan]])
    got = cb._erf(x.reshape(-1, 7))                          # any shape, as the tables' (edges, samples)
    assert got.dtype == np.float64 and got.shape == (len(x) // 7, 7)
    ref = cb.erf_ref(x).astype(float).reshape(-1, 7)
    np.testing.assert_array_equal(got, ref)
    assert np.array_equal(np.signbit(got), np.signbit(ref))
    with pytest.raises(ValueError):
        ext._tube.erf_into(np.zeros(3), np.zeros(2))


@pytest.mark.parametrize("seed", range(3))
def test_mirrored_rows_are_computed_once_with_the_same_numbers(seed):
    """fit_tube's symmetrised sampler reads the same backwards: LinearTube computes half its rows (the folded
    samplings' FFTs and the kernel's products) and copies the rest, bit for bit what all rows give; a sampler
    that does not read the same backwards is computed whole and still matches the reference."""
    rng = np.random.default_rng(200 + seed)
    across, fine, weights, pixel = _geometry(rng, width=rng.uniform(4.0, 12.0))
    mirrored = LinearTube(fine, weights, pixel, gauss_kernel, bin_chord, FINE_PX)
    assert mirrored._mirror
    target = _target(np.exp(-across ** 2 / 8.0) + rng.normal(0.0, 0.01, len(across)), background_basis(across, False))
    pc, pp, basis, lumen_max = target
    every_row = LinearTube(fine, weights, pixel, gauss_kernel, bin_chord, FINE_PX)
    every_row._mirror = False
    for sd in (0.0, 0.6, 1.9):
        m = mirrored.sampling(sd)
        np.testing.assert_array_equal(m, m[::-1])
        np.testing.assert_array_equal(m, every_row.sampling(sd))
        k = mirrored._blurred_kernel(sd)
        for R, r in ((3.0, 2.1), (5.5, 0.0)):
            args = (fine, FINE_PX, R, r)
            rest = (pc, pp, np.ascontiguousarray(basis), lumen_max)
            assert ext._tube.tube_misfit(m, *args, np.ones(1), *rest, True) == \
                ext._tube.tube_misfit(m, *args, np.ones(1), *rest, False)
            assert ext._tube.tube_misfit(weights, *args, k, *rest, True) == \
                ext._tube.tube_misfit(weights, *args, k, *rest, False)
    lopsided = weights.copy()
    lopsided[0] *= 1.5
    whole = LinearTube(fine, lopsided, pixel, gauss_kernel, bin_chord, FINE_PX)
    ref = LinearTube(fine, lopsided, pixel, gauss_kernel, bin_chord, FINE_PX, impl="reference")
    assert not whole._mirror
    m = whole.sampling(0.9)
    plain = blur_sampling(across, fine, lopsided, np.array([0.9]))[0]
    np.testing.assert_allclose(whole.read(m, 3.0), plain @ _pixel_chord(fine, 3.0, pixel), rtol=1e-9, atol=1e-15)
    assert whole.misfit(m, 3.0, 2.0, target) == pytest.approx(ref.misfit(m, 3.0, 2.0, target), rel=1e-9)
    assert whole.misfit_blurred(3.0, 2.0, 0.9, target) == pytest.approx(ref.misfit_blurred(3.0, 2.0, 0.9, target),
                                                                         rel=1e-9)


def test_chords_of_many_radii_at_once_are_each_radius_chord():
    fine = fine_grid(GRID[np.abs(GRID) <= 12.0], 10.0)
    radii = np.array([0.0, 0.04, 0.5, 2.3, 7.77, 11.0])
    np.testing.assert_array_equal(bin_chords(fine, radii), np.array([bin_chord(fine, r) for r in radii]))


def test_profiles_shifted_at_once_are_np_interp_station_by_station():
    """catheter_profile.shifted (all stations, all shifts in one gather) against np.interp per station."""
    rng = np.random.default_rng(5)
    prof = rng.normal(size=(9, len(GRID)))
    at = GRID[None, None, :] + rng.uniform(-30.0, 30.0, (9, 4, 1))       # some past either end: held there
    want = np.array([[np.interp(a, GRID, p) for a in row] for row, p in zip(at, prof)])
    np.testing.assert_allclose(shifted(GRID, prof, at), want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(shifted(GRID, prof, at[:, 0]), want[:, 0], rtol=0, atol=1e-12)
