"""A catheter beside or over a bone's edge (pelvic brim, pubic ramus, femoral cortex: a step of attenuation in
the mask) is measured within 3% or refused with its reason, never read 10-17% wide in silence: the offset and
the quadratic of the background model could not take a one-sided step out (core/analysis/catheter_background.py
finds it in the stations' antisymmetric part)."""
import numpy as np
import pytest

from core.analysis.calibration import catheter_mm_per_px
from core.analysis.catheter_background import edge_corrections
from tests.test_catheter_vessel_blur import bone_edge

REASONS = ("catheter width ambiguous", "catheter profile does not fit a tube")


@pytest.mark.parametrize("edge", [-9.0, -4.0, 3.5, 6.0, 10.0])
def test_the_edge_is_found_and_its_symmetric_part_known(edge):
    """Stations holding a symmetric catheter-like bump and a 0.6 px logistic step blurred 1 px (edges oblique:
    +-1 px along the stations): one of the two corrections takes the step's symmetric part out to 2% of it."""
    x = np.arange(-14.75, 14.76, 0.25)
    fine = np.arange(-30, 30, 0.05)
    gauss = np.exp(-0.5 * (np.arange(-100, 101) * 0.05) ** 2)
    gauss /= gauss.sum()
    rng = np.random.default_rng(int(10 * edge) + 100)
    bump = 0.3 * np.exp(-0.5 * (x / 2.0) ** 2)
    steps = []
    for e in edge + np.linspace(-1.0, 1.0, 40):
        steps.append(np.interp(x, fine, np.convolve(bone_edge(fine, e, 0.3), gauss, mode="same")))
    steps = np.array(steps)
    stations = bump + steps + rng.normal(0, 0.002, steps.shape)
    found, corrections, _ = edge_corrections(x, stations, 8.8, 0.015, 2.0)
    assert found.all() and len(corrections) == 2
    truth = steps.mean(axis=0)
    truth = 0.5 * (truth + truth[::-1])
    left = [np.ptp((truth + c)[np.abs(x) <= 8.8]) for c in corrections]
    assert min(left) < 0.02 * 0.3, left


def test_a_flat_background_holds_no_edge():
    x = np.arange(-14.75, 14.76, 0.25)
    rng = np.random.default_rng(3)
    stations = 0.3 * np.exp(-0.5 * (x / 2.0) ** 2) + 0.002 * x + rng.normal(0, 0.002, (40, len(x)))
    found, corrections, _ = edge_corrections(x, stations, 8.8, 0.015, 2.0)
    assert not found.any() and corrections == []


# (mask, offset of the edge from the catheter's axis, blur): main read them +13.5%, +17.3%, +12.6% wide
# (benchmarks/sweep_catheter_bone.py; now +1.8, +1.9, -0.3%). Negative offsets: the bone under the catheter.
# Not here: the display mask's edge 6 px on the bone side at 1 px, +17.5% -> +3.5% (+2.2% without the bone).
@pytest.mark.parametrize("kind, offset, blur", [("display", 9.0, 1.0), ("lin", -6.0, 1.0), ("lin", -3.0, 1.0)])
def test_a_catheter_by_a_bone_edge_is_right_or_refused(kind, offset, blur):
    if kind == "lin":
        from tests.test_catheter_intensity_blur import scene
        mask, opacity, points, vein = scene(6.0, 1.2, blur, 0.12, seed=0, angle_deg=10.0, bone=(offset, 0.3))
    else:
        from tests.test_catheter_vessel_blur import scene
        mask, opacity, points, vein = scene(6.0, 1.2, blur, seed=0, angle_deg=10.0, bone=(offset, 0.3))
    try:
        mm = catheter_mm_per_px(mask, points, 6.0, opacity=opacity, centerline=vein, ln_mask=kind == "lin")
    except ValueError as exc:
        assert str(exc).startswith(REASONS), exc
        return
    assert 2.0 / mm == pytest.approx(6.0, rel=0.03)


# A faint catheter (wall 0.12-0.15 ln/px) beside a strong edge (0.6 ln: 2-4 times its height) within 16 px, on a ln
# mask at 1 px blur: main read these +343%, +189%, +124% wide (the straight background through the window's ends
# left the bone's plateau beside the catheter, its step taken for an outer edge: core/analysis/catheter_edges.py).
# (10, 0.12, 5): refused on main; retrying with smaller windows had read it +19% in silence.
@pytest.mark.parametrize("outer, mu, offset", [(4.5, 0.15, -16.0), (4.5, 0.15, -9.0), (10.0, 0.12, -16.0),
                                               (10.0, 0.12, 5.0)])
def test_a_faint_catheter_by_a_strong_edge_is_right_or_refused(outer, mu, offset):
    from tests.test_catheter_intensity_blur import scene
    mask, opacity, points, vein = scene(outer, 1.0, 1.0, mu, seed=0, angle_deg=25.0, bone=(offset, 0.6))
    try:
        mm = catheter_mm_per_px(mask, points, 6.0, opacity=opacity, centerline=vein, ln_mask=True)
    except ValueError as exc:
        assert str(exc).startswith(REASONS + ("catheter points are not on a catheter",)), exc
        return
    assert 2.0 / mm == pytest.approx(outer, rel=0.05)


@pytest.mark.parametrize("offset", [0.0, -6.0])
def test_a_bone_edge_alone_between_the_points_is_refused(offset):
    """No catheter: the step's plateau is no attenuating line, and the refusal says what lies there."""
    from tests.test_catheter_intensity_blur import scene
    mask, opacity, points, vein = scene(6.0, 1.0, 1.0, 0.0, seed=1, angle_deg=70.0, bone=(offset, 0.6))
    with pytest.raises(ValueError, match="not on a catheter: a bone's edge"):
        catheter_mm_per_px(mask, points, 6.0, opacity=opacity, centerline=vein, ln_mask=True)
