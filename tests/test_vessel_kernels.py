"""Vessel kernels (ext/_vessel.pyx) against their NumPy reference (core/analysis/vessel_ref.py), and the band
median of the lumen's background against ``np.nanmedian``. The kernels compute the same operations in the same
order and precision, so the answers must agree to the bit. Seeded data only."""
from __future__ import annotations

import importlib.machinery

import numpy as np
import pytest

import ext._vessel
from core.analysis import vessel, vessel_ref
from core.analysis.lumen import _band_median
from core.analysis.vessel import Stations, make_stations, sample_profiles


def test_compiled_module_is_the_one_in_use():
    assert ext._vessel.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    assert vessel._vessel is ext._vessel


def _random_stations(rng, m, h, w, margin=8.0):
    """Stations scattered over and around an (h, w) image: some samples fall outside, some on its last row."""
    xy = np.column_stack([rng.uniform(-margin, w - 1 + margin, m), rng.uniform(-margin, h - 1 + margin, m)])
    xy[: m // 4] = np.round(xy[: m // 4])                 # on pixel centres and the image's edges
    ang = rng.uniform(0, 2 * np.pi, m)
    t = np.column_stack([np.cos(ang), np.sin(ang)])
    return Stations(xy, np.column_stack([-t[:, 1], t[:, 0]]), t, np.arange(m, dtype=float), float(m))


def _both_profiles(img, st, across, along):
    ref = np.empty((len(st.xy), len(across)), dtype=np.float32)
    vessel_ref.sample_profiles(np.ascontiguousarray(img, dtype=np.float32), st.xy, st.normal, st.tangent,
                               np.asarray(across, float), np.asarray(along, float), ref)
    return sample_profiles(img, st, across, along), ref


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (6, 1), (2, 2), (13, 29), (64, 48)])
@pytest.mark.parametrize("along", [[0.0], [-0.5, 0.5], [-0.75, -0.25, 0.25, 0.75], [-1.0, 0.0, 0.3]])
def test_profiles_compiled_equal_reference(shape, along):
    rng = np.random.default_rng(hash((shape, len(along))) % 2**32)
    img = (rng.standard_normal(shape) * 100).astype(np.float32)
    if img.size > 4:
        img[rng.random(shape) < 0.05] = np.nan               # not measured (overlay)
    st = _random_stations(rng, 57, *shape, margin=3.0)
    across = np.arange(-9, 10) * 0.5
    got, ref = _both_profiles(img, st, across, along)
    assert got.dtype == np.float32 and got.shape == (57, 19)
    np.testing.assert_array_equal(got, ref)                 # to the bit, NaN where the reference is NaN
    if min(shape) > 8:                                      # else nearly every 9 px profile leaves the image
        assert np.isnan(got).any() and np.isfinite(got).any()


def test_profiles_compiled_equal_reference_on_views_and_other_dtypes():
    rng = np.random.default_rng(5)
    big = rng.random((90, 120)) * 1000.0                       # float64, read as float32 like the reference
    img = big[::2, 1::3]                                       # a non-contiguous view
    st = make_stations(np.array([[3.0, 40.0], [35.0, 3.0], [38.0, 40.0]]), 1.5)
    across = np.linspace(-6.0, 6.0, 25)
    got, ref = _both_profiles(img, st, across, [-0.5, 0.5])
    np.testing.assert_array_equal(got, ref)
    # a wide window of a long line (the zigzag centreline's case), values of a real opacity range
    img = (rng.random((200, 180)) * 0.8).astype(np.float32)
    st = make_stations(np.column_stack([np.tile([20.0, 160.0], 8), np.linspace(5, 195, 16)]), 2.0)
    got, ref = _both_profiles(img, st, np.arange(-120, 121) * 0.5, [-0.75, -0.25, 0.25, 0.75])
    np.testing.assert_array_equal(got, ref)


def test_profiles_reject_what_the_kernel_cannot_read():
    st = make_stations(np.array([[1.0, 1.0], [5.0, 5.0]]), 1.0)
    with pytest.raises(ValueError):
        sample_profiles(np.zeros((4, 4, 2)), st, np.zeros(3), np.zeros(1))
    with pytest.raises(ValueError):
        sample_profiles(np.zeros((8, 8)), st, np.zeros(3), np.zeros(0))


def _both_geodesic(mask, cost, start):
    h, w = mask.shape
    out = []
    for kernel in (ext._vessel.geodesic, vessel_ref.geodesic):
        dist, prev = np.full(h * w, np.inf), np.full(h * w, -1, dtype=np.int64)
        kernel(np.ascontiguousarray(mask, dtype=np.uint8), cost, start[0] * w + start[1], dist, prev)
        out.append((dist, prev))
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, seed", [((1, 1), 0), ((1, 9), 1), ((17, 23), 2), ((40, 40), 3)])
def test_geodesic_compiled_equals_reference(dtype, shape, seed):
    rng = np.random.default_rng(seed)
    mask = rng.random(shape) < 0.8
    start = tuple(int(v) for v in np.argwhere(mask)[0]) if mask.any() else (0, 0)
    mask[start] = True
    # Costs on a coarse lattice make equal distances (ties) common: the order between them must match too.
    cost = (1.0 + rng.integers(0, 3, shape) * 0.5).astype(dtype)
    (d_c, p_c), (d_r, p_r) = _both_geodesic(mask, cost, start)
    np.testing.assert_array_equal(d_c, d_r)
    np.testing.assert_array_equal(p_c, p_r)
    if min(shape) > 8:
        assert np.isfinite(d_c).sum() > mask.sum() / 2


def test_geodesic_on_smooth_costs_matches_and_follows_the_cheap_path():
    rng = np.random.default_rng(11)
    g = rng.random((60, 70)).astype(np.float32)
    g[30, 5:65] = 2.0                                     # a bright horizontal vessel
    cost = 1.0 / (np.clip(g / 2.0, 0.0, 1.0) + 0.1) ** 2   # float32, as the path search builds it
    mask = np.ones(g.shape, dtype=bool)
    (d_c, p_c), (d_r, p_r) = _both_geodesic(mask, cost, (30, 5))
    np.testing.assert_array_equal(d_c, d_r)
    np.testing.assert_array_equal(p_c, p_r)
    node, rows = 30 * 70 + 64, []
    while node >= 0:
        rows.append(node // 70)
        node = p_c[node]
    assert set(rows) == {30}


@pytest.mark.parametrize("k", [41, 257, 729])           # numpy's nanmedian takes another path from 600 wide
def test_band_median_is_nanmedian_of_the_band(k):
    rng = np.random.default_rng(k)
    m = 300
    prof = rng.standard_normal((m, k)).astype(np.float32)
    prof[rng.random((m, k)) < 0.2] = np.nan
    prof[:3] = np.nan                                     # rows with nothing finite
    across = (np.arange(k) - k // 2) * 0.5
    start = rng.uniform(across[0] - 5, across[-1], m)
    stop = start + rng.uniform(-1.0, 40.0, m)             # some empty, some past the end
    start[5], stop[6] = np.nan, np.nan
    got, n = _band_median(prof, across, start, stop)
    sel = (across[None, :] >= start[:, None]) & (across[None, :] <= stop[:, None])
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
        want = np.nanmedian(np.where(sel, prof, np.nan), axis=1)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(n, (sel & np.isfinite(prof)).sum(axis=1))


def _both_rises(ps, top, rise):
    m = ps.shape[0]
    outs = []
    for kernel in (ext._vessel.rise_outwards, vessel_ref.rise_outwards):
        start, end = np.empty(m, dtype=np.intp), np.empty(m, dtype=np.intp)
        floor = np.empty(m, dtype=ps.dtype)
        kernel(ps, top, rise, start, floor, end)
        outs.append((start, floor, end))
    return outs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rise_outwards_compiled_equal_reference(dtype):
    """Two columns side by side, one alone, flat gaps, noise, NaN samples, tops at and beyond the ends."""
    rng = np.random.default_rng(11)
    m, k = 400, 97
    x = np.arange(k)[None, :]
    c1, c2 = rng.uniform(10, 50, (m, 1)), rng.uniform(40, 90, (m, 1))
    h2 = rng.uniform(0.0, 1.2, (m, 1))
    ps = np.exp(-0.5 * ((x - c1) / rng.uniform(2, 8, (m, 1))) ** 2) \
        + h2 * np.exp(-0.5 * ((x - c2) / rng.uniform(2, 8, (m, 1))) ** 2)
    ps += rng.normal(0.0, rng.uniform(0.0, 0.1, (m, 1)), (m, k))
    ps[rng.random((m, k)) < 0.03] = np.nan
    ps[: m // 8, 40:60] = np.round(ps[: m // 8, 40:60], 1)                  # flat gaps, equal samples
    ps = ps.astype(dtype)
    top = np.round(c1[:, 0]).astype(np.intp)
    top[:5] = [-3, 0, k - 1, k, k + 7]
    rise = rng.uniform(0.0, 0.4, m)
    got, ref = _both_rises(ps, top, rise)
    for g, r in zip(got, ref):
        assert g.dtype == r.dtype
        np.testing.assert_array_equal(g, r)
    assert (ref[0] < k).sum() > m // 4 and (ref[0] == k).sum() > m // 10     # both outcomes are exercised
    assert np.isfinite(ref[1]).any() and np.isnan(ref[1]).any() and (ref[2] < k).any()
    # the reversed search, as valleys makes it (a view, copied contiguous)
    rev = np.ascontiguousarray(ps[:, ::-1])
    got, ref = _both_rises(rev, k - 1 - top, rise)
    for g, r in zip(got, ref):
        np.testing.assert_array_equal(g, r)


def test_valleys_uses_the_compiled_search():
    from core.analysis import neighbours
    rng = np.random.default_rng(3)
    ps = (rng.random((30, 41)) * 2.0).astype(np.float32)
    top, rise = rng.integers(0, 41, 30), rng.uniform(0.1, 0.5, 30)
    start, floor, end = neighbours._rise_outwards(ps[:, ::-1], top, rise)        # a reversed view
    ref = _both_rises(np.ascontiguousarray(ps[:, ::-1]), top.astype(np.intp), rise)[1]
    for g, r in zip((start, floor, end), ref):
        np.testing.assert_array_equal(g, r)
