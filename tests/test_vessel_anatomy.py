"""Vessel sizing beside and inside other things (issue 16, DOMAIN's conditions): a paired vein beside the vein
found automatically must not be joined to it through the background (the crossing read as a "100% stenosis");
a catheter lying in the lumen through the narrowing displaces its contrast, so the lumen there is read from the
contrast around it plus the device (from the run's mask), and the result says so."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from core.analysis.lumen import Lumen
from core.analysis.peak import peak_and_mask
from core.analysis.sizing import measure_sizing
from core.analysis.sizing_path import (
    HOP,
    HOP_WARNING,
    OCCLUSION,
    UNJUDGED,
    background_ends,
    path_gaps,
    untrusted_gap,
)
from core.analysis.vessel import make_stations
from core.sources.phantom.features import Collateral, Device, ParallelVein
from core.sources.phantom.render import render_run
from core.sources.phantom.sizing_cases import analysed_span, make_sizing_case
from core.sources.stacks import FrameStack


def _images(case):
    run = render_run(case.config)
    lin = case.config.intensity == "lin"
    stack = FrameStack(run.frames, run.fps, case.config.intensity, 12 if lin else 8,
                       np.arange(run.frames.shape[0]) / run.fps, "phantom")
    return peak_and_mask(stack)


# (seed, stenosis %, intensity, paired vein offset px, its diameter px): the automatic path crossed to the paired
# vein on each of these before (100% stenosis, MLD 0, no warning).
PAIRED = [(2, 45.0, "lin", None, 39.9, 11.7), (3, 50.0, "log", 14.0, -37.3, 10.2), (18, 0.0, "lin", None, 32.7, 11.3)]


@pytest.mark.parametrize("seed,pct,intensity,long,offset,diameter", PAIRED)
def test_paired_vein_automatic_centreline_sizes_one_vessel(seed, pct, intensity, long, offset, diameter):
    case = make_sizing_case(seed, pct, intensity, length_diameters=long,
                            parallel=ParallelVein(offset_px=offset, diameter_px=diameter))
    peak, _ = _images(case)
    res = measure_sizing(peak).to_json()
    truth = case.truth
    assert abs(res["diameter_stenosis_pct"] - truth.diameter_stenosis_pct) <= 7.0, res["diameter_stenosis_pct"]
    if pct > 0:
        assert abs(res["mld_px"] - truth.mld_px) <= 0.12 * truth.mld_px
        # (a long narrowing's flat bottom: anywhere along it)
        allowed = 8.0 if long is None else 0.5 * truth.lesion_length_px
        assert np.hypot(res["lesion"]["x"] - truth.lesion_xy[0], res["lesion"]["y"] - truth.lesion_xy[1]) <= allowed
    else:
        assert res["lesion_length_px"] == 0.0
    # The other vessel is said, whether the path crossed to it or only ran beside it.
    assert any("another vessel" in w or w == HOP_WARNING for w in res["warnings"]), res["warnings"]


def _path(points, vessel_x, d=15.0):
    """Stations along the polyline ``points`` and a lumen that reads a column (width ``d``) where a station lies
    on one of the vertical vessels at ``vessel_x``, background elsewhere."""
    st = make_stations(np.asarray(points, dtype=float), 1.0)
    on = np.min(np.abs(st.xy[:, :1] - np.asarray(vessel_x, dtype=float)[None, :]), axis=1) < 1.0
    lumen = Lumen(integral=np.where(on, 10.0, 0.05), width=np.where(on, d, 4.0), centre=np.zeros(len(on)),
                  height=np.where(on, 1.0, 0.01), noise=0.02)
    return st, lumen


@pytest.mark.parametrize("points,vessels,occluded,kind", [
    # along one vessel, across to another 35 px beside it, along that one: a crossing
    ([(0, 0), (0, 100), (35, 112), (35, 300)], [0, 35], None, HOP),
    # along the line of the vessel through 40 px without a column: an occlusion
    ([(0, 0), (0, 300)], [0], (100, 140), OCCLUSION),
    # a 12 px stub of the other vessel before (or after) the crossing, shorter than the line a crossing is judged
    # on (two diameters): still a crossing, judged on the long piece's line
    ([(0, 0), (0, 12), (35, 24), (35, 300)], [0, 35], None, HOP),
    ([(35, 0), (35, 260), (0, 272), (0, 284)], [0, 35], None, HOP),
    # the same 12 px beyond a gap along the line: an occlusion near the path's end
    ([(0, 0), (0, 300)], [0], (260, 288), OCCLUSION),
    # nothing long enough either side to give a line: not judged
    ([(0, 0), (0, 25), (20, 30), (20, 55)], [0, 20], None, UNJUDGED),
])
def test_path_gaps_told_by_the_line_of_the_vessel(points, vessels, occluded, kind):
    st, lumen = _path(points, vessels)
    if occluded is not None:
        lumen.integral[slice(*occluded)] = 0.05
    gaps = path_gaps(st, lumen)
    assert [g[2] for g in gaps] == [kind], gaps
    # No lumen is read in a crossing, nor where it cannot be told from an occlusion: sizing refuses there.
    a, b, _ = gaps[0]
    assert (untrusted_gap(st, lumen, (a + b) // 2) is None) == (kind == OCCLUSION)


def test_path_ending_in_the_background_is_taken_off():
    """A path's end without a column (the other vessel's stub trimmed away) is not part of the vessel; one that
    is only unmeasured (the field's edge, NaN) is left as it is."""
    st, lumen = _path([(35, 0), (35, 10), (0, 22), (0, 300)], [0])
    lo, hi = background_ends(st, lumen)
    assert 45 <= lo <= 48 and hi == len(st.s)     # 10 px on the other vessel, 37 px across
    lumen.integral[:lo] = np.nan
    assert background_ends(st, lumen) == (0, len(st.s))


@pytest.mark.parametrize("seed,pct,intensity,long", [(7, 70.0, "lin", None), (20, 60.0, "log", None),
                                                     (5, 99.0, "lin", 6.0), (9, 99.0, "log", 10.0)])
def test_narrowing_or_occlusion_alone_is_no_crossing(seed, pct, intensity, long):
    """A tight narrowing, or a near-occlusion up to ~125 px long that leaves no column, on its own vessel leaves
    the line of the vessel nowhere: it is sized, not cut, and no crossing is said."""
    case = make_sizing_case(seed, pct, intensity, length_diameters=long)
    peak, _ = _images(case)
    res = measure_sizing(peak).to_json()
    assert HOP_WARNING not in res["warnings"]
    assert abs(res["diameter_stenosis_pct"] - case.truth.diameter_stenosis_pct) <= 7.0
    assert abs(res["lesion_length_px"] - case.truth.lesion_length_px) <= max(5.0, 0.35 * case.truth.lesion_length_px)


def _device_case(seed: int, pct: float, intensity: str, outer: float, long: bool = False):
    case = make_sizing_case(seed, pct, intensity, length_diameters=14.0 if long else None)
    s0, s1, total = analysed_span(case.config)
    tip = (case.truth.lesion_s + 0.25 * (s1 - case.truth.lesion_s)) / total
    return replace(case, config=replace(case.config, device=Device(end=min(tip, 0.99), outer_diameter_px=outer,
                                                                    wall_px=1.0)))


@pytest.mark.parametrize("seed,pct,intensity,outer,long", [(14, 45.0, "lin", 5.9, False),
                                                            (15, 50.0, "log", 5.6, True)])
def test_device_through_the_narrowing_read_from_areas(seed, pct, intensity, outer, long):
    case = _device_case(seed, pct, intensity, outer, long)
    peak, mask = _images(case)
    truth = case.truth
    res = measure_sizing(peak, truth.centreline_xy, mask=mask).to_json()
    assert abs(res["mld_px"] - truth.mld_px) <= 0.12 * truth.mld_px, (res["mld_px"], truth.mld_px)
    assert abs(res["diameter_stenosis_pct"] - truth.diameter_stenosis_pct) <= 5.0
    assert any("device lies in the lumen" in w for w in res["warnings"]), res["warnings"]


def test_device_filling_the_narrowing_is_never_read_as_no_lumen():
    """Where the catheter fills the narrowing no contrast is left: the lumen is at least the device, and said."""
    case = _device_case(23, 70.0, "log", 5.29, long=True)
    peak, mask = _images(case)
    res = measure_sizing(peak, case.truth.centreline_xy, mask=mask).to_json()
    assert res["mld_px"] >= 0.9 * 5.29
    assert abs(res["diameter_stenosis_pct"] - case.truth.diameter_stenosis_pct) <= 7.0
    assert any("device lies in the lumen" in w for w in res["warnings"]), res["warnings"]


@pytest.mark.parametrize("seed,pct,intensity,start,end,bulge,diameter", [(4, 60.0, "lin", 0.28, 0.61, -48.0, 8.1),
                                                                         (13, 30.0, "log", 0.26, 0.57, 36.8, 7.2)])
def test_collateral_beside_automatic_centreline_is_said(seed, pct, intensity, start, end, bulge, diameter):
    """A collateral the path does not cross to still runs beside the automatic centreline: said, as clearance
    says it (the operator may treat either), while the vein is still sized right."""
    case = make_sizing_case(seed, pct, intensity, collateral=Collateral(start, end, bulge_px=bulge,
                                                                        diameter_px=diameter))
    peak, _ = _images(case)
    res = measure_sizing(peak).to_json()
    assert any("another vessel runs beside the automatic centreline" in w for w in res["warnings"]), res["warnings"]
    assert abs(res["diameter_stenosis_pct"] - case.truth.diameter_stenosis_pct) <= 7.0
    given = measure_sizing(peak, case.truth.centreline_xy).to_json()
    assert not any("another vessel" in w for w in given["warnings"])   # a drawn centreline is the operator's choice


def test_cli_reads_the_device_from_the_runs_mask(tmp_path, capsys):
    """`cathlab-edge vessel` hands the run's mask to the measurement: the catheter filling the narrowing is found
    there (the MLD is never 0, the warning is printed)."""
    import json

    from api.cli.main import main

    case = _device_case(23, 70.0, "log", 5.29, long=True)
    run = render_run(case.config)
    np.save(tmp_path / "run.npy", run.frames)
    line = ";".join(f"{x:.1f},{y:.1f}" for x, y in case.truth.centreline_xy[::8])
    assert main(["vessel", str(tmp_path / "run.npy"), "--fps", str(run.fps), "--intensity", "log", "--centerline",
                 line, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["mld_px"] >= 0.9 * 5.29
    assert any("device lies in the lumen" in w for w in res["warnings"]), res["warnings"]


def test_device_filling_a_long_narrowing_mld_is_not_the_least_of_its_noise():
    """Read from areas, the thin contrast left around the catheter is noisy station to station; on a long flat
    bottom the least of that noise was the MLD (-14%, the place 12 px off). Smoothed by a local quadratic, which
    leaves a curved narrowing's bottom where it is, the MLD is within issue 16's 12% and its place on the flat
    bottom."""
    case = _device_case(23, 70.0, "log", 5.29, long=True)
    peak, mask = _images(case)
    truth = case.truth
    res = measure_sizing(peak, truth.centreline_xy, mask=mask).to_json()
    assert abs(res["mld_px"] - truth.mld_px) <= 0.12 * truth.mld_px, (res["mld_px"], truth.mld_px)
    off = np.hypot(res["lesion"]["x"] - truth.lesion_xy[0], res["lesion"]["y"] - truth.lesion_xy[1])
    assert off <= 8.0, off


def test_device_through_a_long_narrowing_lesion_is_the_middle_of_its_flat_bottom():
    """Read from areas beside a catheter, a long 50% narrowing's diameters are smooth but tilted by their noise:
    the greatest stenosis reading fell 8-9 px from the middle of its flat bottom. The middle of the stretch within
    the noise of it is near the middle: within half the +-8 px where the truth is within 1% of the MLD."""
    case = _device_case(15, 50.0, "log", 5.6, long=True)
    peak, mask = _images(case)
    truth = case.truth
    res = measure_sizing(peak, truth.centreline_xy, mask=mask).to_json()
    off = np.hypot(res["lesion"]["x"] - truth.lesion_xy[0], res["lesion"]["y"] - truth.lesion_xy[1])
    assert off <= 4.0, off
    assert abs(res["diameter_stenosis_pct"] - truth.diameter_stenosis_pct) <= 5.0
    assert abs(res["mld_px"] - truth.mld_px) <= 0.12 * truth.mld_px


@pytest.mark.parametrize("noise_seed", [18, 1001, 1002])
def test_a_clean_vein_beside_its_pair_reads_no_stenosis_whatever_the_noise(noise_seed):
    """A clean tapering vein with a paired vein beside it, the centreline given, three draws of the quantum
    noise. Draw 18 dips the edges by about 1 px over 4 stations near the vein's start (not without noise: 0.3%),
    which the 3-station median alone read as a 5.4% stenosis (the other draws 2.0-2.9%). Smoothed along the
    vessel by a local quadratic over +-0.2 diameters, as QCA smooths its diameters, all read within issue 16's
    5 points."""
    from benchmarks.sweep_vessel import case_for
    case = case_for(18)[0]          # the sweep's seed 18: a paired vein 32.7 px beside, 11.3 px wide
    case = replace(case, config=replace(case.config, seed=noise_seed))
    peak, _ = _images(case)
    res = measure_sizing(peak, case.truth.centreline_xy).to_json()
    assert res["diameter_stenosis_pct"] <= 5.0, res["diameter_stenosis_pct"]
    assert res["lesion_length_px"] == 0.0


# (seed, intensity, collateral start, end, bulge px, diameter px): a clean vein (no narrowing) whose collateral
# leaves and rejoins it, under a 1 px PSF. The first is the sweep's seed 36: the branch's junction widened the
# column by 30-45% over under a diameter, and the reference's envelope held that width for ~5 diameters
# downstream (a false 12% stenosis).
JUNCTIONS = [(36, "lin", 0.226, 0.618, 49.8, 8.6), (5, "log", 0.25, 0.6, -40.0, 7.0), (12, "lin", 0.2, 0.55, 45.0, 9.5)]


@pytest.mark.parametrize("seed,intensity,start,end,bulge,diameter", JUNCTIONS)
def test_a_collaterals_junction_is_no_narrowing_downstream(seed, intensity, start, end, bulge, diameter):
    case = make_sizing_case(seed, 0.0, intensity, collateral=Collateral(start, end, bulge_px=bulge,
                                                                        diameter_px=diameter))
    peak, mask = _images(replace(case, config=replace(case.config, psf_px=1.0)))
    res = measure_sizing(peak, case.truth.centreline_xy, mask=mask).to_json()
    assert res["diameter_stenosis_pct"] < 5.0 and res["lesion_length_px"] == 0.0, res
