"""A vein beside the treated one (a paired vein, a tributary alongside) or over it: its contrast must never be read
as the lumen's, nor its shadow as thrombus. Analytic images (tests/test_clearance.py's synthetic_vessel), truth
over the stations the measurement keeps."""
from __future__ import annotations

import numpy as np
import pytest

from core.analysis.clearance.density import density_line
from core.analysis.clearance.measure import measure_clearance
from core.analysis.lumen import measure_lumen
from core.analysis.vessel import make_stations
from tests.test_clearance import synthetic_vessel

STRAIGHT = np.column_stack([np.full(24, 100.0), np.linspace(240.0, 16.0, 24)])


def _pair(offset: float, share: float, seed: int, both: bool, superimposed: bool = False):
    """Baseline (one 50% front thrombus, 10% burden) and a clean post run; a clean 12 px vein ``offset`` px to the
    right (x) over ``share`` of the image's height from the top, on the post run and (``both``) the baseline."""
    base, truth = synthetic_vessel(thrombi=[(0.1, 0.3, 0.5, "depth")], noise=0.01, seed=seed, background=0.2)
    post, _ = synthetic_vessel(noise=0.01, seed=seed + 1, background=0.2)
    other, _ = synthetic_vessel(shift=(0.0 if superimposed else offset, 0.0))
    rows = np.arange(post.shape[0])[:, None]
    over = (rows >= post.shape[0] * 0.05) & (rows < post.shape[0] * (0.05 + share))
    post = post + np.where(over, other, 0.0).astype(np.float32)
    if both:
        base = base + np.where(over, other, 0.0).astype(np.float32)
    return base, post, truth


def _truth_over_measured(res, truth) -> float:
    fr = np.array([s["frac"] for s in res["stations"] if s["burden_baseline_pct"] is not None])
    return 100.0 * float(np.mean(np.interp(fr * truth["length"], truth["s"], truth["burden_s"])))


def _other_vessel_warning(res) -> bool:
    return any("another vessel" in w or "more contrast than its lumen" in w for w in res["warnings"])


@pytest.mark.parametrize("both", [True, False], ids=["both-runs", "post-only"])
@pytest.mark.parametrize("offset, share, seed", [(15.0, 0.5, 4), (16.0, 0.95, 2), (18.0, 0.5, 1), (20.0, 0.95, 4),
                                                 (20.0, 0.5, 3), (24.0, 0.95, 0)])
def test_a_vein_alongside_is_measured_right_or_not_graded(offset, share, seed, both):
    """Beside the treated vein with a gap of 0-12 px: a gradable result is within the issue's tolerance; two or more
    px apart everywhere (offset >= 20 on this winding vein) it must be gradable."""
    base, post, truth = _pair(offset, share, seed, both)
    res = measure_clearance(base, post, centerline=truth["centerline"], diameter_px=12.0)
    if offset >= 20.0:
        assert res["gradable"], res["warnings"]
    if not res["gradable"]:
        assert _other_vessel_warning(res), res["warnings"]
        return
    assert res["burden_baseline_pct"] == pytest.approx(_truth_over_measured(res, truth), abs=3.0)
    assert res["burden_post_pct"] == pytest.approx(0.0, abs=3.0)
    assert res["clearance_pct"] == pytest.approx(100.0, abs=5.0)


@pytest.mark.parametrize("both", [True, False], ids=["both-runs", "post-only"])
@pytest.mark.parametrize("seed", [0, 3])
def test_a_vein_over_most_of_the_vessel_is_not_graded(seed, both):
    """The paired vein overlapping the lumen along nearly all of the vessel: a result for the record, not graded,
    no exception; on both runs its stations are left out with the reason."""
    base, post, truth = _pair(13.0, 0.95, seed, both=both)
    res = measure_clearance(base, post, centerline=truth["centerline"], diameter_px=12.0)
    assert not res["gradable"] and res["grade"] is None and res["warnings"]
    if both:
        assert _other_vessel_warning(res), res["warnings"]
        assert any("another vessel's contrast column overlaps" in n for n in res["notes"]), res["notes"]


@pytest.mark.parametrize("seed", [4, 7])
def test_a_vein_superimposed_over_part_of_the_post_run_is_no_progression(seed):
    """A vein lying exactly over 15% of the post run doubles the density there: not the run's contrast density
    (which would make the rest of the vein read as thrombus: false progression)."""
    base, post, truth = _pair(0.0, 0.15, seed, both=False, superimposed=True)
    res = measure_clearance(base, post, centerline=truth["centerline"], diameter_px=12.0)
    assert not res["progression"]
    assert res["burden_post_pct"] == pytest.approx(0.0, abs=3.0)
    assert res["burden_baseline_pct"] == pytest.approx(_truth_over_measured(res, truth), abs=3.0)
    assert res["clearance_pct"] == pytest.approx(100.0, abs=5.0)


@pytest.mark.parametrize("gap", [2.0, 4.0, 8.0, 12.0])
def test_a_column_beside_leaves_the_lumen_measured_alone(gap):
    """A straight vein and a second 12 px column ``gap`` px from its edge: width and integral as without it (the
    edges, the background band and the window stop at the valley between the two)."""
    alone, truth = synthetic_vessel(points=STRAIGHT, noise=0.004, seed=1, background=0.2)
    other, _ = synthetic_vessel(points=STRAIGHT, shift=(12.0 + gap, 0.0))
    stations = make_stations(truth["centerline"], 2.0)
    a = measure_lumen(alone, stations, 18.0)
    b = measure_lumen(alone + other, stations, 18.0)
    mid = slice(5, len(stations.s) - 5)
    assert np.nanmedian(b.width[mid] - a.width[mid]) == pytest.approx(0.0, abs=0.1)
    assert np.nanmedian(b.integral[mid] / a.integral[mid]) == pytest.approx(1.0, abs=0.015)
    assert np.nanmax(np.abs(b.integral[mid] / a.integral[mid] - 1.0)) < 0.04
    assert not b.crowded[mid].any()


def test_an_overlapping_column_leaves_the_lumen_unmeasured():
    """Two 12 px columns 11 px apart overlap (a valley at ~80% of their height between them): no edge, no integral
    (NaN, ``crowded``), never a narrower lumen."""
    alone, truth = synthetic_vessel(points=STRAIGHT, noise=0.004, seed=1, background=0.2)
    other, _ = synthetic_vessel(points=STRAIGHT, shift=(11.0, 0.0))
    stations = make_stations(truth["centerline"], 2.0)
    b = measure_lumen(alone + other, stations, 18.0)
    mid = slice(5, len(stations.s) - 5)
    assert np.isnan(b.width[mid]).all() and np.isnan(b.integral[mid]).all()
    assert b.crowded[mid].all()


def test_density_line_ignores_stations_with_another_vessel_over_them():
    """Patent stations at density 1 (drifting 10% along), 30% with a front thrombus (0.6), 15% with a vein over
    them (2.0): the line follows the patent ones."""
    rng = np.random.default_rng(0)
    s = np.arange(200) * 2.0
    y = (1.0 + 0.1 * (s / s[-1] - 0.5)) * (1.0 + 0.02 * rng.standard_normal(200))
    y[20:80] *= 0.6
    y[150:180] *= 2.0
    level, slope = density_line(s, y, np.ones(200, dtype=bool))
    assert level + slope * s[100] == pytest.approx(1.0, abs=0.02)
    assert slope * s[-1] == pytest.approx(0.1, abs=0.04)


def test_contrast_around_a_central_thrombus_is_one_lumen():
    """A thrombus in the middle of the lumen leaves contrast on both sides (two humps, a valley between them, the
    'tram-track'): one lumen with its thrombus, measured, never a neighbour's valley (the station left out)."""
    whole, truth = synthetic_vessel(points=STRAIGHT, noise=0.004, seed=2, background=0.2)
    core, _ = synthetic_vessel(points=STRAIGHT, diameter=6.0)
    rows = np.arange(whole.shape[0])[:, None]
    mid_rows = (rows >= 100) & (rows < 150)
    img = whole - np.where(mid_rows, core, 0.0).astype(np.float32)
    stations = make_stations(truth["centerline"], 2.0)
    a = measure_lumen(whole, stations, 18.0)
    b = measure_lumen(img, stations, 18.0)
    y = stations.xy[:, 1]
    inside = (y > 106) & (y < 144)
    assert not b.crowded.any()
    # Filled: the 12 px lumen less the 6 px core, 75% of its cross-section.
    assert np.nanmedian(b.integral[inside] / a.integral[inside]) == pytest.approx(0.75, abs=0.03)


def test_a_paired_vein_stays_out_of_a_window_whose_axis_drifted_towards_it():
    """The reference lumen's window centred 5 px off the vein's axis towards a paired vein 3 px beyond its edge
    (the axis followed a column cut on that side by thrombus): the valley before the paired vein lies near that
    axis, but the paired vein runs on beyond the lumen's edge, so it is a neighbour: the station is left out or
    measured without it."""
    from core.analysis.lumen import integral_at
    alone, truth = synthetic_vessel(points=STRAIGHT, diameter=20.0, noise=0.004, seed=3, background=0.2)
    other, _ = synthetic_vessel(points=STRAIGHT, diameter=12.0, shift=(19.0, 0.0))
    stations = make_stations(truth["centerline"], 2.0)
    m = len(stations.s)
    off = 5.0 * np.sign(stations.normal[:, 0])        # across is along the normal: +x is towards the paired vein
    width = np.full(m, 20.0)
    a, _ = integral_at(alone, stations, off, width)
    b, crowded = integral_at(alone + other, stations, off, width)
    mid = slice(5, m - 5)
    # Left out (the paired vein begins within the window's lumen) or measured as without it; never more.
    ratio = b[mid] / a[mid]
    assert np.array_equal(np.isnan(ratio), crowded[mid])
    assert np.all(np.abs(ratio[np.isfinite(ratio)] - 1.0) < 0.02)


def _merged_warning(res) -> bool:
    return any("merges with the lumen's" in w for w in res["warnings"])


@pytest.mark.parametrize("offset, seed", [(13.0, 4), (13.0, 0), (14.0, 4)])
def test_a_vein_merged_with_the_lumen_is_left_out_not_read_as_a_wide_lumen(offset, seed):
    """The paired vein so close on the post run that along stretches of the winding vessel no valley shows between
    the two columns: the merged column is not a lumen twice as wide (read as one, it made the reference and the
    baseline burden 62-78%, truth 10): its stations are left out with a note saying so, where, on which run; the
    result is not graded, the reason says the columns merge, and any burden reported is the truth over what is
    measured."""
    base, post, truth = _pair(offset, 0.95, seed, both=False)
    res = measure_clearance(base, post, centerline=truth["centerline"], diameter_px=12.0)
    assert not res["gradable"] and res["grade"] is None
    assert _merged_warning(res), res["warnings"]
    assert any("merges with the lumen's" in n and "on the post run" in n for n in res["notes"]), res["notes"]
    if res["burden_baseline_pct"] is not None:
        assert res["burden_baseline_pct"] == pytest.approx(_truth_over_measured(res, truth), abs=3.0)
    for w in res["warnings"]:
        if "no round contrast column" in w:
            assert "another vessel's contrast column" in w, w


def test_merged_columns_on_both_runs_say_why_no_density_is_read():
    """Merged and overlapping columns over nearly all of both runs: no round column is left to read a run's
    contrast density from, and the warning says why (another vessel over the lumen), never a bare 'no round
    column'; too few stations remain for a burden: none is reported (it read 23%, truth 10)."""
    base, post, truth = _pair(13.0, 0.95, 4, both=True)
    res = measure_clearance(base, post, centerline=truth["centerline"], diameter_px=12.0)
    assert not res["gradable"] and res["grade"] is None
    assert _merged_warning(res), res["warnings"]
    assert res["burden_baseline_pct"] is None and res["burden_post_pct"] is None
    assert any("stations measured in both runs" in w for w in res["warnings"]), res["warnings"]
    for w in res["warnings"]:
        if "no round contrast column" in w:
            assert "another vessel's contrast column" in w, w


def test_merged_columns_needs_a_neighbour_and_a_column_off_the_vessel():
    """Along the vessel: wide columns between two stretches where a neighbour's valley shows are merged; a wide
    stretch beside one such stretch is merged only when its middle moved off the vessel's track (a taper's wide
    end, centred, stays); a wide stretch with no neighbour near it stays."""
    from core.analysis.neighbours import merged_columns
    n = 60
    typical, track = np.full(n, 12.0), np.zeros(n)
    width, centre, crowded = np.full(n, 12.0), np.zeros(n), np.zeros(n, dtype=bool)
    crowded[10:20] = crowded[30:40] = True
    width[20:30] = 23.0                                   # between two neighbour stretches
    width[40:48], centre[40:48] = 23.0, 4.0               # beside one, off the track
    width[50:], centre[50:] = 20.0, 0.0                    # wide, centred, far from any neighbour
    out = merged_columns(width, centre, crowded, typical, track, reach=6)
    assert out[20:30].all() and out[40:48].all() and not out[50:].any()
    centre[40:48] = 0.0                                   # centred beside one neighbour stretch: a taper's end
    assert not merged_columns(width, centre, crowded, typical, track, reach=6)[40:48].any()


def test_a_phantom_paired_vein_over_the_whole_lumen_is_not_graded_not_an_error():
    """The phantom's paired vein 16 px from the main vein's centreline (seed 1): its column overlaps the lumen's over
    the whole vessel, no run shows a round column to read its contrast density from. Legitimate anatomy: a result
    not graded with the reason, never a ValueError (it raised one)."""
    from dataclasses import replace

    from core.analysis.peak import peak_and_mask
    from core.sources.phantom.cases import make_case
    from core.sources.phantom.render import render_run
    from core.sources.phantom.scene import Scene
    from core.sources.stacks import FrameStack
    case = make_case("focal_parallel", 1)
    cfgs = [replace(c, parallel=replace(c.parallel, offset_px=np.sign(c.parallel.offset_px) * 16.0))
            for c in case.configs]
    runs = []
    for cfg in cfgs:
        run = render_run(cfg)
        runs.append(peak_and_mask(FrameStack(run.frames, run.fps, cfg.intensity, 12 if cfg.intensity == "lin" else 8,
                                             np.arange(run.frames.shape[0]) / run.fps, "phantom")))
    sc = Scene(cfgs[0], cfgs[0].shift_px, cfgs[0].thrombus_fraction).truth
    a0, a1 = case.truth.analysed_s
    line = sc.centreline_xy[(sc.centreline_s >= a0) & (sc.centreline_s <= a1)]
    res = measure_clearance(runs[0][0], runs[1][0], centerline=line, masks=[m for _, m in runs])
    assert not res["gradable"] and res["grade"] is None and res["clearance_pct"] is None
    assert any("another vessel's contrast column overlaps" in w for w in res["warnings"]), res["warnings"]
