"""Vessel sizing on an independently written phantom (tests/independent_vein.py: written from docs/domain.md and
issue 16 alone, not from core/sources/phantom), so that a bias shared by the project's renderer and measurer
shows. The full sweep is benchmarks/independent_sizing.py (docs/vessel-accuracy.md, session 11)."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from api.cli.main import main
from core.analysis.peak import field_only, peak_and_mask
from core.analysis.sizing import measure_sizing
from core.sources.stacks import FrameStack
from tests.independent_vein import _field, make_case, render, truth


def _stack(frames: np.ndarray, fps: float, intensity: str) -> FrameStack:
    return FrameStack(frames, fps, intensity, 16 if intensity == "lin" else 8, np.arange(len(frames)) / fps, "t")


def _sized_linear(case):
    """(truth, the sizing's JSON, the reported lesion's x, y) of ``case``'s linear frames, centreline given."""
    run = render(case)
    peak, mask = peak_and_mask(_stack(run.linear, run.lin_fps, "lin"))
    res = measure_sizing(peak, case.centreline_points(), mask=mask, ln_per_unit=1.0).to_json()
    return truth(case), res, (res["lesion"]["x"], res["lesion"]["y"])


@pytest.mark.parametrize("seed,shape", [(0, "cosine"), (2, "long"), (3, "asymmetric")])
def test_without_noise_or_blur_the_renderers_truth_is_measured(seed, shape):
    """The renderer's analytic check: with no noise and no blur the given centreline measures its truth (what is
    left is the pixels' area and the profiles' sampling)."""
    case = make_case(seed, shape=shape, noise=False, blur_px=0.0, catheter=False)
    tr, res, xy = _sized_linear(case)
    assert res["diameter_stenosis_pct"] == pytest.approx(tr.diameter_stenosis_pct, abs=1.5)
    assert res["mld_px"] == pytest.approx(tr.mld_at(case, xy), rel=0.06)
    assert res["lesion_length_px"] == pytest.approx(tr.lesion_length_px, rel=0.05)
    assert tr.place_error(xy) <= 1.0


def test_the_field_leaves_the_collimators_surround_and_the_text_out():
    """Behind a linear detector's blades a little scatter arrives, noisy and without the anatomy's shadow: it
    changes every pulse, so it is no overlay, and only the collimated field (as live) leaves it out."""
    case = make_case(5)
    run = render(case)
    c, rad = _field(case.size)
    yy, xx = np.mgrid[0:case.size, 0:case.size]
    r = np.hypot(xx - c, yy - c)
    for frames, fps, intensity in ((run.linear, run.lin_fps, "lin"), (run.display, run.display_fps, "log")):
        stack = _stack(frames, fps, intensity)
        peak, mask = peak_and_mask(stack)
        if intensity == "lin":      # (display video's LUT may clip the surround to black: overlay already)
            assert np.isfinite(peak[r > rad + 3]).mean() > 0.9      # the surround alone is not overlay ...
        kept, kept_mask = field_only(stack, peak, mask)
        assert not np.isfinite(kept[r > rad + 1]).any()             # ... the field leaves it out
        assert not np.isfinite(kept_mask[r > rad + 1]).any()
        assert np.isfinite(kept[r < rad - 8]).mean() > 0.97         # the field itself is kept (less the text)
        assert not np.isfinite(kept[8:40, 8:80]).all()


@pytest.mark.parametrize("seed,fmt", [(0, "lin"), (2, "lin"), (21, "disp")])
def test_the_automatic_centreline_stays_in_the_field(tmp_path, capsys, seed, fmt):
    """The command found the vessel along the field's noisy edge before it left the surround out (seed 0: refused,
    "runs through the background"; seed 2: a 43% narrowing read as none, 152 px off; seed 21's display video, its
    surround grey: a lesion of MLD 0, 179 px away)."""
    case = make_case(seed)
    tr = truth(case)
    run = render(case)
    frames, fps = (run.linear, run.lin_fps) if fmt == "lin" else (run.display, run.display_fps)
    np.save(tmp_path / "run.npy", frames)
    capsys.readouterr()
    assert main(["vessel", str(tmp_path / "run.npy"), "--fps", f"{fps:g}", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert tr.place_error((res["lesion"]["x"], res["lesion"]["y"])) <= 8.0
    assert res["lesion_length_px"] > 0
    if seed != 21:      # seed 21 is a 6 px web, shorter than the blur and smoothing resolve (docs/vessel-accuracy.md)
        assert abs(res["diameter_stenosis_pct"] - tr.diameter_stenosis_pct) <= 7.0


def test_display_video_with_under_a_level_of_noise_is_not_overlay():
    """At ten times fluoroscopy's dose 8-bit display video changes by under a level between pulses: 16 probed pulse
    pairs left 9% of the field unchanged in 14 of them, read as burnt-in text, and the vessel's stations there were
    not measured (the lesion length cut by 44%). Every pair probed, the anatomy changes often enough."""
    case = make_case(20, dose=10.0)
    tr = truth(case)
    run = render(case)
    peak, mask = peak_and_mask(_stack(run.display, run.display_fps, "log"))
    c, rad = _field(case.size)
    yy, xx = np.mgrid[0:case.size, 0:case.size]
    inside = np.hypot(xx - c, yy - c) < rad - 8
    inside[:45, :90] = False                                        # the burnt-in text's corner
    assert np.isnan(peak[inside]).mean() < 0.005
    res = measure_sizing(peak, case.centreline_points(), mask=mask).to_json()
    assert res["lesion_length_px"] == pytest.approx(tr.lesion_length_px, rel=0.35)
    assert res["diameter_stenosis_pct"] == pytest.approx(tr.diameter_stenosis_pct, abs=5.0)


@pytest.mark.parametrize("seed,blur", [(0, 1.0), (1, 1.3), (2, 1.5)])
def test_the_detectors_blur_does_not_narrow_the_lumen(seed, blur):
    """A detector PSF of sd 1-1.5 px moves a wide lumen's half-height edges in beyond lumen.py's fixed blur term:
    the reference read 2.9-4.0% low on these (noise-free). Corrected at the blur measured on the vein, on the
    light (sizing_blur): -0.1, -0.1, +1.6% (seed 2's reference is interpolated over a long narrowing on a taper:
    its patent widths read -0.1%, below). The MLD, mostly densitometric on these, is not what this checks."""
    case = make_case(seed, noise=False, blur_px=blur, catheter=False)
    tr, res, xy = _sized_linear(case)
    assert res["reference_diameter_px"] == pytest.approx(tr.reference_px, rel=0.02)
    assert res["mld_px"] == pytest.approx(tr.mld_at(case, xy), rel=0.06)


@pytest.mark.parametrize("seed,blur", [(0, 1.0), (2, 1.5), (17, 1.21)])
def test_the_patent_lumen_is_read_at_the_blur_of_the_light(seed, blur):
    """The renderer blurs the detected quanta, as a detector does, and the opacity is their log: a dense column's
    edges sag further in than a blur of the opacity would move them (blurred_circle). With the image's unit in ln
    units (linear data: 1) the patent widths are within 0.5% (noise-free; measured -0.1 to +0.3%); taken as a
    blur of the opacity they read 0.6-3.0% narrow (seed 17's column is 0.55 ln units high)."""
    case = make_case(seed, noise=False, blur_px=blur, catheter=False)
    run = render(case)
    peak, mask = peak_and_mask(_stack(run.linear, run.lin_fps, "lin"))
    errors = []
    for ln_per_unit in (1.0, None):
        sizing = measure_sizing(peak, case.centreline_points(), mask=mask, ln_per_unit=ln_per_unit)
        s = case.s_in + sizing.stations.s
        patent = case.narrowing(s) < 1e-6
        errors.append(float(np.nanmean(sizing.lumen.width[patent] / case.diameter(s)[patent])) - 1.0)
    assert abs(errors[0]) <= 0.005, errors
    assert errors[1] < errors[0] - 0.004, errors


def _sized_draw(seed: int, draw: int):
    """(case, its sizing, the stations' true arc length) of ``seed``'s linear frames in noise draw ``draw``
    (the benchmark's rng offset), centreline given."""
    case = make_case(seed)
    case = replace(case, rng_state=case.rng_state + 7919 * draw)
    run = render(case)
    peak, mask = peak_and_mask(_stack(run.linear, run.lin_fps, "lin"))
    sizing = measure_sizing(peak, case.centreline_points(), mask=mask, ln_per_unit=1.0)
    s, _ = case.arcs.project(*sizing.stations.xy.T)
    return case, sizing, s


def test_the_lumen_along_a_catheter_is_read_at_the_patent_lumens_density():
    """Along a catheter the lumen is read from areas over the contrast density of the patent lumen. That density
    was the running median in place, held flat beyond the patent stretch: the value held over the catheter's
    270 stations was one or two stations' at its tip, where the tip lowers the column (seed 4, second noise draw:
    the lumen along it read +8 to +13%, and a vein without narrowing read 8.8% stenosed at its far end). Taken
    over the patent stations a diameter from the catheter, the lumen along it reads within 3% (measured -0.3%)."""
    case, sizing, s = _sized_draw(4, 1)
    assert case.shape == "none" and case.catheter_french is not None and not case.upstream_at_start
    along = s > case.catheter_tip_s + 20
    ratio = sizing.diameter[along] / case.diameter(s[along])
    assert abs(float(np.nanmedian(ratio)) - 1.0) < 0.03
    assert sizing.diameter_stenosis_pct < 5.0


def test_a_catheter_fainter_than_a_dense_column_is_found_in_the_lumen():
    """A 6 F catheter (0.11 ln per px of wall) in a dense column (0.78 ln high): its tube scored 0.14 of the
    column's height, under the finder's 0.15, so it went unfound and the lumen along it read from the column's
    edges, 12% wide (its dip lowers the column's height and moves the half-height edges out). Sizing's finder
    takes 0.10, averaged over a quarter diameter each side along the vessel (over one station, noise then scored
    a tube on a faint vein: next test); found, the lumen along it reads within 3% (measured +1.1%)."""
    case, sizing, s = _sized_draw(16, 0)
    along = s > case.catheter_tip_s + 10
    assert not case.upstream_at_start and along.sum() > 100
    assert sizing.device[along].mean() > 0.9
    assert not sizing.device[s < case.catheter_tip_s - 20].any()
    ratio = sizing.diameter[along] / case.diameter(s[along])
    assert abs(float(np.nanmedian(ratio)) - 1.0) < 0.03


@pytest.mark.parametrize("draw", [1, 3])
def test_noise_on_a_faint_vein_is_no_device(draw):
    """Seed 21's vein is faint (its column 0.2-0.3 ln high) and has no catheter. Averaged over one station each
    side, the mask's noise scored a tube above the limit on 14 stations of the fourth draw (on 150-340 at
    sizing's lower share); over a quarter diameter, on none."""
    case, sizing, _ = _sized_draw(21, draw)
    assert case.catheter_french is None
    assert not sizing.device.any()


def test_a_catheter_is_calibrated_at_the_blur_of_a_2px_psf():
    """Seed 10 at a 2 px PSF: half the vein's pieces lie where its background is not a line and read 1.45-1.50
    px; their lower median set the blur, and the 6 F catheter fitted at it read 8.5 px (truth 5.4): mm per px
    37% small, unrefused. The pieces that misfit are now left out: the blur is the PSF's, the catheter within 5%."""
    from core.analysis.calibration import catheter_mm_per_px, run_blur
    case = make_case(10, blur_px=2.0)
    run = render(case)
    stack = _stack(run.linear, run.lin_fps, "lin")
    peak, mask = field_only(stack, *peak_and_mask(stack))
    points = np.asarray(case.catheter_points(), dtype=float)
    blur = run_blur(peak, case.centreline_points(), points, True)
    assert blur is not None and blur[1] == pytest.approx(2.0, abs=0.1)
    mm = catheter_mm_per_px(mask, points, case.catheter_french, opacity=peak, centerline=case.centreline_points(),
                            ln_mask=True)
    assert mm == pytest.approx(case.mm_per_px, rel=0.05)


def test_curved_bottoms_under_a_2px_psf_are_unblurred_along_the_vessel():
    """The PSF blurs the diameter profile along the vessel too and lifts a cosine bottom: these four read +3.0 to
    +4.9% (mean +3.8%) before its quadratic was unblurred at the measured blur (sizing_bottom); now -4.2 to +2.1%
    (mean -0.3%), one noise draw each."""
    errors = []
    for seed in (5, 10, 15, 20):
        case = make_case(seed, blur_px=2.0)
        tr, res, xy = _sized_linear(case)
        errors.append(res["mld_px"] / tr.mld_at(case, xy) - 1.0)
    assert abs(float(np.mean(errors))) < 0.015 and max(map(abs, errors)) < 0.06, errors
