"""Vessel sizing (core/analysis/sizing.py, calibration.py, ``cathlab-edge vessel``) on the phantom's tapering
veins with concentric narrowings of known geometry (core/sources/phantom/sizing_cases.py)."""
from __future__ import annotations

import json
import math

import numpy as np
import pydicom
import pytest

from api.cli.main import main
from core.analysis.along_vessel import local_quadratic
from core.analysis.calibration import catheter_mm_per_px, dicom_mm_per_px, parse_catheter
from core.analysis.peak import peak_and_mask
from core.analysis.sizing import QUAD_SMOOTH_DIAMETERS, _lesion_station, measure_sizing
from core.analysis.sizing_plot import profile_plot
from core.analysis.sizing_reference import follow_steps, reference_fit
from core.sources.phantom.render import render_run
from core.sources.phantom.sizing_cases import analysed_span, lesion_length, make_sizing_case
from core.sources.stacks import FrameStack
from tests.dicom_files import write_multiframe

_cache: dict = {}


def _rendered(seed: int, pct: float, intensity: str, catheter: bool = False, length: float | None = None):
    key = (seed, pct, intensity, catheter, length)
    if key not in _cache:
        case = make_sizing_case(seed, pct, intensity, catheter=catheter, length_diameters=length)
        run = render_run(case.config)
        stack = FrameStack(run.frames, run.fps, intensity, 12 if intensity == "lin" else 8,
                           np.arange(run.frames.shape[0]) / run.fps, "phantom")
        peak, mask = peak_and_mask(stack)
        _cache[key] = (case, run, peak, mask)
    return _cache[key]


def _check_lesion(result: dict, truth, stenosis_tol: float, place_tol: float = 8.0) -> None:
    assert abs(result["diameter_stenosis_pct"] - truth.diameter_stenosis_pct) <= stenosis_tol, result
    assert abs(result["mld_px"] - truth.mld_px) <= 0.12 * truth.mld_px
    assert abs(result["lesion_length_px"] - truth.lesion_length_px) <= max(5.0, 0.35 * truth.lesion_length_px)
    assert math.hypot(result["lesion"]["x"] - truth.lesion_xy[0],
                      result["lesion"]["y"] - truth.lesion_xy[1]) <= place_tol
    expect_area = 100.0 * (1.0 - (result["mld_px"] / result["reference_diameter_px"]) ** 2)
    assert result["area_stenosis_pct"] == pytest.approx(expect_area, abs=0.2)
    assert result["residual_stenosis_ge_50"] == (result["diameter_stenosis_pct"] >= 50.0)


def test_lesion_length_truth_is_the_cosine_dip_below_80_percent():
    assert lesion_length(0.2, 10.0) == 0.0
    assert lesion_length(0.6, 10.0) == pytest.approx(20.0 * math.acos(0.4 / 0.6 - 1.0) / math.pi)
    case = make_sizing_case(3, 50.0)
    assert case.truth.mld_px == pytest.approx(0.5 * case.truth.reference_px)


@pytest.mark.parametrize("seed,pct,intensity,length", [
    (0, 30.0, "lin", None), (1, 50.0, "lin", None), (2, 70.0, "lin", None), (3, 30.0, "log", None),
    (4, 50.0, "log", None), (5, 70.0, "log", None), (10, 62.0, "log", 1.2), (11, 45.0, "lin", 1.2)])
def test_stenosis_on_a_tapering_vein_with_the_centreline_given(seed, pct, intensity, length):
    case, _, peak, _ = _rendered(seed, pct, intensity, length=length)
    result = measure_sizing(peak, case.truth.centreline_xy).to_json()
    _check_lesion(result, case.truth, 5.0)
    assert result["calibration"] is None and result["mld_mm"] is None and result["warnings"] == []


# Narrowings 12-20 reference diameters long, on veins whose analysed part is 18-22 diameters: the healthy vein
# left either side is short, and the reference must not follow the narrowing down (it read 5-21 points low).
@pytest.mark.parametrize("seed,pct,intensity,length,automatic", [
    (21, 50.0, "lin", 14.0, False), (22, 60.0, "log", 16.0, False), (24, 50.0, "log", 20.0, False),
    (31, 55.0, "lin", 15.0, False), (30, 45.0, "log", 12.0, True)])
def test_long_narrowings_keep_their_reference(seed, pct, intensity, length, automatic):
    case, _, peak, _ = _rendered(seed, pct, intensity, length=length)
    result = measure_sizing(peak, None if automatic else case.truth.centreline_xy).to_json()
    # A long cosine dip's bottom is flat: its narrowest point is anywhere the true diameter is within 1% of the
    # MLD, cos(pi ds / h) >= 1 - 0.02 (1 - p) / p, h its half length (or within 8 px).
    p, half = pct / 100.0, length * case.truth.reference_px / 2.0
    flat = half * math.acos(1.0 - 0.02 * (1.0 - p) / p) / math.pi
    _check_lesion(result, case.truth, 7.0 if automatic else 5.0, place_tol=max(8.0, flat))


def test_a_long_narrowings_lesion_is_on_its_flat_bottom():
    """On a 30% narrowing 14 diameters long the true diameter is within 1% of the MLD over +-12 px, and within 2
    points of stenosis over +-30 px: the greatest reading fell 13 px from the middle, wherever the noise's lumps
    put it. The lesion is now the middle of the stretch within the noise of that reading."""
    case, _, peak, _ = _rendered(7, 30.0, "log", catheter=True, length=14.0)
    result = measure_sizing(peak, case.truth.centreline_xy).to_json()
    p, half = 0.3, 14.0 * case.truth.reference_px / 2.0
    flat = half * math.acos(1.0 - 0.02 * (1.0 - p) / p) / math.pi
    _check_lesion(result, case.truth, 5.0, place_tol=flat)
    # The status page's plot marks the same station (it read the greatest stenosis, 13 px away).
    s_lesion = result["lesion"]["frac"] * max(r["s_px"] for r in result["profile"])
    assert profile_plot(result)["lesion_s"] == pytest.approx(s_lesion, abs=1.0)


def test_lesion_station_on_flat_and_curved_bottoms():
    """Analytic stenosis profiles over 60 noise draws: cosine dips on lumpy noise (white noise summed over 10
    stations, sd 0.5 points, plus 0.3 points white, as the diameters' lumps). On a long flat bottom the greatest
    reading lands 4-6 px RMS from the centre, sometimes beyond 8; the middle of the stretch within the noise of it
    lands nearer; a short curved bottom's lesion stays at its bottom."""
    n, d_typ, centre, draws = 400, 16.0, 203.0, 60
    x = np.arange(n, dtype=float)
    dips = {"long 30%": (30.0, 7.0 * d_typ), "long 50%": (50.0, 7.0 * d_typ), "short 70%": (70.0, 1.25 * d_typ)}
    off: dict[str, list[int]] = {name: [] for name in dips}
    for draw in range(draws):
        rng = np.random.default_rng(draw)
        noise = 0.5 * np.convolve(rng.normal(0.0, 1.0, n + 9), np.ones(10) / math.sqrt(10.0), mode="valid")
        noise += 0.3 * rng.normal(0.0, 1.0, n)
        for name, (pct, half) in dips.items():
            dip = np.where(np.abs(x - centre) < half, pct * (1.0 + np.cos(np.pi * (x - centre) / half)) / 2.0, 0.0)
            off[name].append(_lesion_station(dip + noise, d_typ) - int(centre))
    rms = {name: math.sqrt(float(np.mean(np.square(v)))) for name, v in off.items()}
    assert rms["long 30%"] <= 4.5 and rms["long 50%"] <= 3.0, rms       # the greatest reading: 5.7 and 4.3
    assert max(abs(v) for v in off["long 50%"]) <= 8, off["long 50%"]
    assert max(abs(v) for v in off["short 70%"]) <= 2, off["short 70%"]


@pytest.mark.parametrize("d_typ", [10.0, 16.0, 24.0])
def test_the_diameters_smoothing_leaves_a_short_narrowings_bottom(d_typ):
    """The local quadratic smoothing the diameters along the vessel (QUAD_SMOOTH_DIAMETERS) lifts the bottom of
    a 70% cosine narrowing 1.2 diameters long, the shortest the tests size, by under 1% (a running median that
    long lifts it by 16-24%)."""
    half = max(2, int(round(QUAD_SMOOTH_DIAMETERS * d_typ)))
    x = np.arange(-60, 61, dtype=float)
    h = 0.6 * d_typ
    d = d_typ * (1.0 - 0.7 * np.where(np.abs(x) < h, (1.0 + np.cos(np.pi * x / h)) / 2.0, 0.0))
    assert local_quadratic(d, half)[60] == pytest.approx(d[60], rel=0.01)


@pytest.mark.parametrize("seed,pct,intensity", [(1, 50.0, "lin"), (5, 70.0, "log")])
def test_stenosis_with_the_centreline_found_automatically(seed, pct, intensity):
    case, _, peak, _ = _rendered(seed, pct, intensity)
    _check_lesion(measure_sizing(peak).to_json(), case.truth, 7.0)


@pytest.mark.parametrize("seed,intensity", [(6, "lin"), (7, "log")])
def test_the_thin_end_of_a_clean_tapering_vein_is_not_a_lesion(seed, intensity):
    case, _, peak, _ = _rendered(seed, 0.0, intensity)
    for line in (case.truth.centreline_xy, None):
        result = measure_sizing(peak, line).to_json()
        assert result["diameter_stenosis_pct"] < 20.0, result
        assert result["lesion_length_px"] == 0.0 and not result["residual_stenosis_ge_50"]
        prof = result["profile"]
        # the reference follows the taper: its thin end is not the wide end's
        assert prof[0]["reference_px"] < 0.85 * prof[-1]["reference_px"] or \
            prof[-1]["reference_px"] < 0.85 * prof[0]["reference_px"]


def test_a_step_at_a_confluence_is_not_a_lesion():
    probe = make_sizing_case(9, 0.0, "lin")
    s0, s1, length = analysed_span(probe.config)
    at = (s0 + 0.5 * (s1 - s0)) / length
    step = ((0.0, 16.0), (at - 3 / length, 16.0), (at + 3 / length, 27.0), (1.0, 27.0))
    case = make_sizing_case(9, 0.0, "lin", diameter_profile=step, diameter_px=16.0)
    run = render_run(case.config)
    stack = FrameStack(run.frames, run.fps, "lin", 12, np.arange(run.frames.shape[0]) / run.fps, "phantom")
    peak, _ = peak_and_mask(stack)
    for line in (case.truth.centreline_xy, None):
        result = measure_sizing(peak, line).to_json()
        assert result["diameter_stenosis_pct"] < 15.0 and result["lesion_length_px"] == 0.0, result


def test_operator_calibration_scales_every_length():
    case, _, peak, _ = _rendered(1, 50.0, "lin")
    r = measure_sizing(peak, case.truth.centreline_xy, mm_per_px=0.25, calibration="operator").to_json()
    assert r["calibration"] == "operator" and r["mm_per_px"] == 0.25
    assert r["mld_mm"] == pytest.approx(0.25 * r["mld_px"], abs=0.01)
    assert r["reference_diameter_mm"] == pytest.approx(0.25 * r["reference_diameter_px"], abs=0.01)
    assert r["lesion_length_mm"] == pytest.approx(0.25 * r["lesion_length_px"], abs=0.05)


@pytest.mark.parametrize("seed,intensity", [(0, "lin"), (1, "log")])
def test_catheter_calibration(seed, intensity):
    case, _, peak, mask = _rendered(seed, 50.0, intensity, catheter=True)
    true_mm = (6.0 / 3.0) / case.truth.catheter_px          # a 6 F catheter of the phantom's outer width
    mm = catheter_mm_per_px(mask, case.truth.catheter_xy, 6.0)
    assert mm == pytest.approx(true_mm, rel=0.05)
    r = measure_sizing(peak, case.truth.centreline_xy, mm_per_px=mm, calibration="catheter").to_json()
    assert abs(r["mld_mm"] - case.truth.mld_px * true_mm) <= 0.3


def test_catheter_points_off_a_catheter_are_refused():
    case, _, _, mask = _rendered(0, 50.0, "lin", catheter=True)
    x, y = case.truth.lesion_xy                # the contrast-free vein beside no catheter
    with pytest.raises(ValueError, match="not on a catheter"):
        catheter_mm_per_px(mask, np.array([[x + 60, y - 20], [x + 60, y + 20]]), 6.0)
    with pytest.raises(ValueError, match="two points"):
        parse_catheter("1,2")
    with pytest.raises(ValueError, match="French|french"):
        catheter_mm_per_px(mask, case.truth.catheter_xy, 100.0)


def _dicom(path, frames, **tags):
    write_multiframe(path, frames, modality="XA", frame_time_ms=1000.0 / 30.0)
    ds = pydicom.dcmread(path)
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.save_as(path)


def test_dicom_calibration_tags(tmp_path):
    frames = np.zeros((2, 32, 32), dtype=np.uint8)
    _dicom(tmp_path / "a.dcm", frames, ImagerPixelSpacing=[0.3, 0.3], EstimatedRadiographicMagnificationFactor=1.5,
           PixelSpacing=[0.1, 0.1])
    assert dicom_mm_per_px(tmp_path / "a.dcm") == pytest.approx(0.2)
    _dicom(tmp_path / "b.dcm", frames, PixelSpacing=[0.25, 0.25])
    assert dicom_mm_per_px(tmp_path / "b.dcm") == pytest.approx(0.25)
    _dicom(tmp_path / "c.dcm", frames)
    assert dicom_mm_per_px(tmp_path / "c.dcm") is None
    np.save(tmp_path / "d.npy", frames)
    assert dicom_mm_per_px(tmp_path / "d.npy") is None


def test_cli_json_with_dicom_calibration_and_figure(tmp_path, capsys):
    case, run, _, _ = _rendered(4, 50.0, "log")
    path = tmp_path / "run.dcm"
    _dicom(path, run.frames, ImagerPixelSpacing=[0.3, 0.3], EstimatedRadiographicMagnificationFactor=1.5)
    line = ";".join(f"{x:.2f},{y:.2f}" for x, y in case.truth.centreline_xy[::10])
    assert main(["vessel", str(path), "--json", "--centerline", line, "--image", str(tmp_path / "f.png")]) == 0
    r = json.loads(capsys.readouterr().out)
    assert list(r) == ["calibration", "mm_per_px", "reference_diameter_px", "reference_diameter_mm", "mld_px",
                       "mld_mm", "diameter_stenosis_pct", "area_stenosis_pct", "lesion_length_px",
                       "lesion_length_mm", "lesion", "residual_stenosis_ge_50", "profile", "warnings"]
    assert set(r["lesion"]) == {"x", "y", "frac"} and set(r["profile"][0]) == {"s_px", "diameter_px", "reference_px"}
    assert r["calibration"] == "dicom" and r["mm_per_px"] == pytest.approx(0.2)
    assert abs(r["mld_mm"] - 0.2 * case.truth.mld_px) <= 0.3
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The operator's number wins over the file's.
    assert main(["vessel", str(path), "--json", "--centerline", line, "--mm-per-px", "0.5"]) == 0
    assert json.loads(capsys.readouterr().out)["calibration"] == "operator"


def test_cli_catheter_calibration_and_text(tmp_path, capsys):
    case, run, _, _ = _rendered(0, 50.0, "lin", catheter=True)
    np.save(tmp_path / "run.npy", run.frames)
    cath = ";".join(f"{x:.1f},{y:.1f}" for x, y in case.truth.catheter_xy)
    assert main(["vessel", str(tmp_path / "run.npy"), "--fps", "30", "--catheter", cath,
                 "--catheter-french", "6"]) == 0
    out = capsys.readouterr().out
    assert "calibration       catheter" in out and "stenosis" in out


@pytest.mark.parametrize("extra,fragment", [
    (["--catheter", "100,100;100,140"], "--catheter and --catheter-french go together"),
    (["--catheter-french", "6"], "--catheter and --catheter-french go together"),
    (["--catheter", "1,2", "--catheter-french", "6"], "two points"),
    (["--mm-per-px", "0"], "out of range"),
    (["--mm-per-px", "0.2", "--catheter", "1,1;5,5"], "not allowed with"),
    (["--catheter-french", "100", "--catheter", "1,1;5,5"], "out of range"),
    (["--centerline", "1,1;9999,5"], "outside"),
    (["--centerline", ";".join(f"{i % 60},{i // 60}" for i in range(300))], "at most 256 points"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, extra, fragment):
    np.save(tmp_path / "run.npy", np.random.default_rng(0).integers(90, 110, (4, 64, 64), dtype=np.uint8))
    assert _exit_status(["vessel", str(tmp_path / "run.npy"), "--fps", "30", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err, err


def test_cli_no_vessel(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "run.npy", rng.integers(90, 110, (8, 64, 64), dtype=np.uint8))
    assert main(["vessel", str(tmp_path / "run.npy"), "--fps", "30"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "vessel" in err and "run.npy" not in err, err


def _exit_status(argv) -> int:
    """main's status, whether the parser stops (SystemExit) or the command returns it."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


def _synthetic_vein(h=200, w=120, d0=16.0, edge_on=None):
    """Analytic peak image of a straight vertical vein (k * chord); ``edge_on``: (y0, y1) where it reads 1.35x
    wider and 0.45x as dense (a flattened vein seen edge-on)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    R = np.full(h, d0 / 2)
    k = np.full(h, 0.05)
    if edge_on is not None:
        y0, y1 = edge_on
        R[y0:y1] *= 1.35
        k[y0:y1] *= 0.45
    x = xx - w / 2
    img = k[:, None] * 2 * np.sqrt(np.clip(R[:, None] ** 2 - x ** 2, 0, None))
    return (img + np.random.default_rng(1).normal(0, 0.003, img.shape)).astype(np.float32)


def test_edge_on_compression_is_warned():
    line = np.array([[60.0, 190.0], [60.0, 10.0]])
    r = measure_sizing(_synthetic_vein(edge_on=(90, 120)), line).to_json()
    assert any("edge-on" in w for w in r["warnings"]), r["warnings"]
    clean = measure_sizing(_synthetic_vein(), line).to_json()
    assert clean["warnings"] == [] and clean["diameter_stenosis_pct"] < 10.0
    assert clean["reference_diameter_px"] == pytest.approx(16.0, rel=0.06)


def _curved_vein_1024(d0=14.0, d1=26.0):
    """A 1024x1024 analytic peak image of a tapering vein along a gentle S-curve, with its centreline."""
    h = w = 1024
    ys = np.linspace(980.0, 40.0, 200)
    line = np.column_stack([512 + 80 * np.sin(ys / 300.0), ys])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx = 512 + 80 * np.sin(yy / 300.0)
    R = (d0 + (d1 - d0) * (980.0 - yy) / 940.0) / 2
    dist = (xx - cx) * np.cos(np.arctan(80 / 300.0 * np.cos(yy / 300.0)))
    img = 0.05 * 2 * np.sqrt(np.clip(R ** 2 - dist ** 2, 0, None))
    return (img + np.random.default_rng(2).normal(0, 0.003, img.shape)).astype(np.float32), line


def test_bench_sizing_1024(benchmark):
    img, line = _curved_vein_1024()
    result = benchmark(lambda: measure_sizing(img, line))
    assert result.diameter_stenosis_pct < 15.0



@pytest.mark.parametrize("centre,half,depth", [(160.0, 150.0, 0.5), (180.0, 120.0, 0.6)])
def test_a_long_lesions_reference_rides_over_its_shoulders(centre, half, depth):
    """Analytic diameters (a 14 -> 20 px taper over 360 px, a cosine narrowing whose shoulders reach the line's
    ends, lumpy noise 0.15 px), 20 draws: the reference at the lesion. Fitted as equals after the upper start,
    the shoulders pulled it 1.9 / 0.9% low on average (2.9 / 1.3% at worst); ridden over, 1.0 / 0.2%."""
    s = np.arange(0.0, 361.0)
    true_ref = 14.0 + 6.0 * s / 360.0
    u = (s - centre) / half
    clean = true_ref * (1.0 - depth * np.where(np.abs(u) < 1.0, (1.0 + np.cos(np.pi * u)) / 2.0, 0.0))
    k = int(centre)
    errors = []
    for draw in range(20):
        rng = np.random.default_rng(draw)
        d = clean + 0.15 * np.convolve(rng.normal(0.0, 1.0, len(s) + 9), np.ones(10) / math.sqrt(10.0), "valid")
        fit, _ = reference_fit(s, d, float(np.median(d)))
        errors.append(100.0 * (fit[k] / true_ref[k] - 1.0))
    assert abs(float(np.mean(errors))) <= 1.2 and min(errors) >= -2.7, errors


@pytest.mark.parametrize("draw", range(3))
def test_a_fit_a_hair_above_the_vessels_end_keeps_a_long_lesion(draw):
    """follow_steps on analytic diameters: a taper with a 70% narrowing 17 diameters long in the middle, the fit
    0.5% above the diameters (a fit riding their upper side). The envelope under the fit is the lesion's dip, not
    a step: it regains the fit's level on both sides within the blend's dead zone. Counted below the fit by any
    amount, that dip ran to the vessel's end and the envelope took the reference down 16%."""
    s = np.arange(0.0, 361.0)
    true_ref = 16.0 + 6.0 * s / 360.0
    u = (s - 180.0) / 150.0
    d = true_ref * (1.0 - 0.7 * np.where(np.abs(u) < 1.0, (1.0 + np.cos(np.pi * u)) / 2.0, 0.0))
    d = d + 0.1 * np.random.default_rng(draw).normal(size=len(s))
    fit = 1.005 * true_ref
    assert follow_steps(fit, d, s, 18.0, 1.0)[180] == pytest.approx(fit[180], rel=1e-6)
