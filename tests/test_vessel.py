"""Vessel geometry (core/analysis/vessel.py, vessel_find.py): stations, profile sampling, cylinder fit, automatic
centreline."""
from __future__ import annotations

import numpy as np
import pytest

from core.analysis.vessel import fit_diameter, make_stations, parse_centerline, sample_profiles, subtract_background
from core.analysis.vessel_find import find_vessel
from tests.test_clearance import synthetic_vessel


def test_stations_are_evenly_spaced_with_unit_normals():
    line = np.array([[10.0, 10.0], [50.0, 10.0], [50.0, 60.0]])
    st = make_stations(line, 2.0)
    assert st.length == pytest.approx(90.0)
    assert np.allclose(np.diff(st.s), 2.0)
    assert np.allclose(np.hypot(*st.normal.T), 1.0) and np.allclose((st.normal * st.tangent).sum(1), 0.0)
    assert st.normal[0] == pytest.approx([0.0, 1.0])         # tangent +x, normal rotated +90 deg
    assert st.frac[0] > 0 and st.frac[-1] <= 1.0


def test_profiles_are_exact_on_a_linear_image_and_nan_where_not_measured():
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)
    img = 2.0 * xx + 0.5 * yy
    st = make_stations(np.array([[32.0, 5.0], [32.0, 60.0]]), 5.0)
    across = np.linspace(-4, 4, 9)
    prof = sample_profiles(img, st, across, np.array([-0.5, 0.5]))
    # normal of a downward line (+y tangent) is -x: a = +1 is one pixel to the left.
    x = st.xy[:, 0, None] - across[None, :]
    expected = 2.0 * x + 0.5 * st.xy[:, 1, None]
    assert np.allclose(prof, expected, atol=1e-4)
    img[30, :] = np.nan
    st = make_stations(np.array([[32.0, 5.0], [32.0, 60.0]]), 1.0)
    prof = sample_profiles(img, st, across, np.array([0.0]))
    bad = ~np.all(np.isfinite(prof), axis=1)
    assert bad.sum() >= 1 and np.all(np.abs(st.xy[bad, 1] - 30) < 1.0)
    far = make_stations(np.array([[1.0, 5.0], [1.0, 60.0]]), 5.0)       # samples fall off the image
    assert not np.all(np.isfinite(sample_profiles(img, far, across, np.array([0.0]))), axis=1).any()


def test_background_line_is_removed():
    across = np.linspace(-10, 10, 41)
    lumen = 2 * np.sqrt(np.clip(16 - across ** 2, 0, None))
    prof = (lumen + 3.0 + 0.2 * across)[None, :]
    net = subtract_background(prof, across, 6.0)
    assert np.allclose(net[0], lumen, atol=1e-9)


@pytest.mark.parametrize("radius", [3.0, 6.5, 10.0])
def test_cylinder_fit_recovers_the_radius(radius):
    across = np.arange(-20, 20.01, 0.5)
    rng = np.random.default_rng(1)
    prof = 0.05 * 2 * np.sqrt(np.clip(radius ** 2 - (across - 0.7) ** 2, 0, None))
    prof = prof[None, :] + rng.normal(0, 0.002, (20, across.size))
    r = fit_diameter(prof, across, 15.0)
    assert np.median(r) == pytest.approx(radius, abs=0.3)


@pytest.mark.parametrize("diameter", [8.0, 12.0, 20.0])
def test_find_vessel_follows_the_centreline_and_measures_the_diameter(diameter):
    img, truth = synthetic_vessel(diameter=diameter, thrombi=[(0.3, 0.5, 0.5, "side")], noise=0.01, seed=2)
    v = find_vessel(img)
    ref = truth["centerline"]
    dense = np.array([np.interp(np.linspace(0, 1, 400), np.linspace(0, 1, len(ref)), ref[:, i]) for i in (0, 1)]).T
    d = np.min(np.hypot(v.centerline[:, None, 0] - dense[None, :, 0], v.centerline[:, None, 1] - dense[None, :, 1]), 1)
    assert np.median(d) < 1.0 and d.max() < 0.5 * diameter
    assert v.diameter_px == pytest.approx(diameter, rel=0.1)
    assert v.centerline[0, 1] > v.centerline[-1, 1]            # from the bottom end
    length = np.hypot(*np.diff(v.centerline, axis=0).T).sum()
    assert length > 0.8 * truth["length"]


def test_find_vessel_rejects_images_without_a_vessel():
    rng = np.random.default_rng(3)
    with pytest.raises(ValueError, match="vessel"):
        find_vessel(rng.normal(0, 0.01, (128, 128)))
    with pytest.raises(ValueError, match="measured"):
        find_vessel(np.full((64, 64), np.nan))
    blob = np.zeros((128, 128))
    blob[60:66, 60:66] = 1.0
    with pytest.raises(ValueError, match="vessel"):
        find_vessel(blob)
    with pytest.raises(ValueError):
        find_vessel(np.zeros(10))


def test_parse_centerline():
    assert parse_centerline("1,2;3.5,4").tolist() == [[1.0, 2.0], [3.5, 4.0]]
    assert parse_centerline(" 1,2 ; 3,4 ;").shape == (2, 2)
    for bad, msg in [("", "empty"), ("1,2", "two"), ("1,2;3", "x,y"), ("1,2;a,b", "x,y"), ("1,2;nan,3", "finite"),
                     ("1,1;1,1.5", "shorter")]:
        with pytest.raises(ValueError, match=msg):
            parse_centerline(bad)
    with pytest.raises(ValueError, match="outside"):
        parse_centerline("1,2;300,4", (100, 100))


@pytest.mark.parametrize("diameter", [8.0, 16.0, 30.0])
def test_diameter_along_a_given_centreline(diameter):
    from core.analysis.vessel_find import diameter_along

    img, truth = synthetic_vessel(diameter=diameter, thrombi=[(0.4, 0.6, 0.6, "side")], noise=0.01, seed=4)
    assert diameter_along(img, truth["centerline"][2:-2]) == pytest.approx(diameter, rel=0.1)
