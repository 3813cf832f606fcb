"""Clearance on synthetic peak-opacity images with analytic truth, the grading rules, the CLI and the tracker.

The synthetic vessel is a projected cylinder (chord 2 sqrt(R^2 - d^2), pixel-area averaged) along a curved
centreline, with thrombus as a chordal cap of the lumen: a "depth" cap (anterior wall: only shortens the
chords, never a hole in projection) or a "side" cap (side wall: a notch). The cap's area fraction is the
station's truth burden exactly. Accuracy on the project's phantom is in test_clearance_phantom.py.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from api.cli.clearance import clearance_main
from core.analysis.clearance.figure import render_clearance_png
from core.analysis.clearance.grading import grade, parse_segments
from core.analysis.clearance.measure import measure_clearance
from core.analysis.clearance.tracker import ClearanceTracker
from tests.vein_images import cap_offset, nearest_on_polyline

# --------------------------------------------------------------------------------------------- the synthetic vessel

def synthetic_vessel(size=(256, 256), diameter=12.0, k=0.05, thrombi=(), shift=(0.0, 0.0), noise=0.0, seed=0,
                     background=0.0, points=None, dilution=0.0):
    """(image float32, truth) for a projected vessel. ``thrombi``: (start, end, burden, "depth" | "side") in
    arc fractions of the centreline. ``shift`` moves the whole scene (post = baseline moved by +dx, +dy)."""
    h, w = size
    if points is None:
        ys = np.linspace(0.95 * h, 0.05 * h, 24)
        points = np.column_stack([0.5 * w + 0.12 * w * np.sin(2 * np.pi * (ys / h) * 1.2), ys])
    pts = np.asarray(points, dtype=float) + np.asarray(shift, dtype=float)
    R = diameter / 2.0
    ss = 2
    xs = (np.arange(w * ss) + 0.5) / ss - 0.5
    ys_ = (np.arange(h * ss) + 0.5) / ss - 0.5
    band = R + 2.0
    S, Dsign, length = nearest_on_polyline(pts, xs, ys_, band)
    # truth burden along s
    s_grid = np.linspace(0, length, 2001)
    b_grid = np.zeros_like(s_grid)
    kind_grid = np.zeros_like(s_grid)   # 0 depth, 1 side
    for a, b, burden, kind in thrombi:
        inside = (s_grid >= a * length) & (s_grid <= b * length)
        b_grid[inside] = burden
        kind_grid[inside] = 1.0 if kind == "side" else 0.0
    b_px = np.interp(S, s_grid, b_grid)
    side = np.interp(S, s_grid, kind_grid) > 0.5
    c = cap_offset(b_px, np.full_like(b_px, R))
    d = Dsign
    hh = np.sqrt(np.clip(R * R - d * d, 0, None))
    L = 2 * hh
    # depth cap: the lumen above depth z = c is thrombus; side cap: in-plane offset d > c is thrombus
    L_depth = np.clip(c + hh, 0, 2 * hh)
    L_side = np.where(d > c, 0.0, 2 * hh)
    L = np.where(b_px > 0, np.where(side, L_side, L_depth), L)
    # dilution: the contrast thins linearly along the vessel, by this fraction from end to end
    kk = k * (1.0 + dilution * (0.5 - S / length))
    img = (kk * L).reshape(h, ss, w, ss).mean(axis=(1, 3))
    if background:
        yv, xv = np.mgrid[0:h, 0:w]
        img = img + background * (0.5 + 0.3 * xv / w - 0.2 * yv / h)
    if noise:
        img = img + np.random.default_rng(seed).normal(0, noise, img.shape)
    truth = {"centerline": pts, "length": length, "s": s_grid, "burden_s": b_grid,
             "burden": float(np.mean(b_grid))}
    return img.astype(np.float32), truth


def line_text(points) -> str:
    return ";".join(f"{x:.2f},{y:.2f}" for x, y in points)


# --------------------------------------------------------------------------------------------- densitometry

def test_clean_vessel_measures_near_zero_burden():
    img, truth = synthetic_vessel(noise=0.01, seed=1, background=0.3)
    res = measure_clearance(img, img, centerline=truth["centerline"], diameter_px=12.0)
    assert res["burden_baseline_pct"] < 2.0
    assert res["clearance_pct"] is None and res["grade"] is None and res["removal_ge_75"] is None
    assert any("too little thrombus" in n for n in res["notes"])


@pytest.mark.parametrize("kind", ["depth", "side"])
def test_partial_thrombus_counts_by_volume(kind):
    thrombi = [(0.2, 0.45, 0.5, kind), (0.6, 0.7, 0.3, kind)]
    base, truth = synthetic_vessel(thrombi=thrombi, noise=0.01, seed=2, background=0.2)
    post, truth1 = synthetic_vessel(thrombi=[(0.2, 0.45, 0.1, kind)], noise=0.01, seed=3, background=0.2)
    res = measure_clearance(base, post, centerline=truth["centerline"], diameter_px=12.0,
                            segments=[("a", 0.2, 0.45), ("b", 0.6, 0.7), ("clean", 0.0, 0.15)])
    assert res["burden_baseline_pct"] == pytest.approx(truth["burden"] * 100, abs=3.0)
    assert res["burden_post_pct"] == pytest.approx(truth1["burden"] * 100, abs=3.0)
    true_clear = (truth["burden"] - truth1["burden"]) / truth["burden"] * 100
    assert res["clearance_pct"] == pytest.approx(true_clear, abs=5.0)
    a, b, clean = res["segments"]
    assert a["burden_baseline_pct"] == pytest.approx(50.0, abs=5.0)
    assert a["burden_post_pct"] == pytest.approx(10.0, abs=5.0)
    assert a["clearance_pct"] == pytest.approx(80.0, abs=8.0) and a["grade"] == "II"
    assert b["burden_baseline_pct"] == pytest.approx(30.0, abs=5.0) and b["burden_post_pct"] < 5.0
    assert clean["burden_baseline_pct"] < 3.0 and clean["clearance_pct"] is None


@pytest.mark.parametrize("dilution", [0.3, -0.3])
def test_contrast_diluting_along_the_vessel_is_not_thrombus(dilution):
    clean, truth = synthetic_vessel(noise=0.005, seed=17, dilution=dilution)
    res = measure_clearance(clean, clean, centerline=truth["centerline"], diameter_px=12.0)
    assert res["burden_baseline_pct"] < 2.0
    thrombi = [(0.1, 0.3, 0.5, "side"), (0.7, 0.8, 0.4, "depth")]
    base, truth = synthetic_vessel(thrombi=thrombi, noise=0.005, seed=18, dilution=dilution)
    res = measure_clearance(base, clean, centerline=truth["centerline"], diameter_px=12.0)
    assert res["burden_baseline_pct"] == pytest.approx(100 * truth["burden"], abs=3.0)
    assert res["burden_post_pct"] < 2.0


@pytest.mark.parametrize("thrombi", [
    [(0.72, 1.0, 0.15, "depth")],                                  # mild thrombus over the whole last quarter
    [(0.5, 1.0, 0.3, "side"), (0.0, 0.1, 0.2, "depth")],           # half the vessel, both ends
])
def test_thrombus_filling_a_quarter_is_not_taken_for_dilution(thrombi):
    base, truth = synthetic_vessel(thrombi=thrombi, noise=0.005, seed=19)
    clean, _ = synthetic_vessel(noise=0.005, seed=20)
    res = measure_clearance(base, clean, centerline=truth["centerline"], diameter_px=12.0)
    assert res["burden_baseline_pct"] == pytest.approx(100 * truth["burden"], abs=3.0)
    first = [st["burden_baseline_pct"] for st in res["stations"] if 0.2 < st["frac"] < 0.45]
    assert abs(float(np.mean(first))) < 2.0          # patent stations read patent, no tilted reference


def test_calibration_is_per_run_and_ignores_bolus_strength():
    """The post run's bolus is half as dense: burden must not change (each run calibrates itself)."""
    thrombi = [(0.3, 0.5, 0.6, "side")]
    base, truth = synthetic_vessel(thrombi=thrombi, k=0.05, noise=0.005, seed=4)
    post, _ = synthetic_vessel(thrombi=thrombi, k=0.025, noise=0.005, seed=5)
    res = measure_clearance(base, post, centerline=truth["centerline"], diameter_px=12.0)
    assert res["burden_post_pct"] == pytest.approx(res["burden_baseline_pct"], abs=2.0)
    assert abs(res["clearance_pct"]) < 8.0


def test_same_image_twice_gives_zero_clearance_and_no_shift():
    base, truth = synthetic_vessel(thrombi=[(0.3, 0.6, 0.5, "depth")], noise=0.01, seed=6)
    res = measure_clearance(base, base, centerline=truth["centerline"], diameter_px=12.0)
    assert res["shift_px"] == [0.0, 0.0]
    assert res["clearance_pct"] == 0.0 and res["grade"] == "I" and res["removal_ge_75"] is False


def test_shifted_post_is_registered_and_sampled_at_the_same_anatomy():
    thrombi = [(0.3, 0.6, 0.5, "side")]
    base, truth = synthetic_vessel(thrombi=thrombi, noise=0.005, seed=7)
    post, _ = synthetic_vessel(thrombi=[(0.3, 0.6, 0.0, "side")], shift=(17.0, -23.0), noise=0.005, seed=8)
    res = measure_clearance(base, post, centerline=truth["centerline"][3:-3], diameter_px=12.0)
    assert res["shift_px"][0] == pytest.approx(17.0, abs=1.0)
    assert res["shift_px"][1] == pytest.approx(-23.0, abs=1.0)
    assert res["burden_post_pct"] < 3.0
    assert res["clearance_pct"] > 90.0 and res["grade"] in ("II", "III")


def test_not_measured_pixels_exclude_stations_instead_of_reading_as_thrombus():
    thrombi = [(0.3, 0.6, 0.5, "depth")]
    base, truth = synthetic_vessel(thrombi=thrombi, noise=0.005, seed=9)
    post = base.copy()
    post[100:130, :] = np.nan        # e.g. a burnt-in text box over the vessel
    res = measure_clearance(base, post, centerline=truth["centerline"], diameter_px=12.0)
    missing = [s for s in res["stations"] if s["burden_post_pct"] is None]
    assert missing and all(s["burden_baseline_pct"] is None for s in missing)
    assert res["stations_measured"] == len(res["stations"]) - len(missing)
    assert abs(res["clearance_pct"]) < 5.0


def test_automatic_vessel_and_diameter():
    thrombi = [(0.3, 0.5, 0.6, "side")]
    base, truth = synthetic_vessel(thrombi=thrombi, noise=0.01, seed=10)
    post, truth1 = synthetic_vessel(thrombi=[(0.3, 0.5, 0.2, "side")], noise=0.01, seed=11)
    res = measure_clearance(base, post)
    assert res["diameter_px"] == pytest.approx(12.0, rel=0.1)
    assert res["clearance_pct"] == pytest.approx(100 * (0.6 - 0.2) / 0.6, abs=8.0)


def test_bad_inputs_raise_value_error_with_a_reason():
    img, truth = synthetic_vessel()
    line = truth["centerline"]
    with pytest.raises(ValueError, match="same|differ"):
        measure_clearance(img, img[:-1], centerline=line, diameter_px=12.0)
    with pytest.raises(ValueError, match="outside"):
        measure_clearance(img, img, centerline=line + 1000, diameter_px=12.0)
    with pytest.raises(ValueError, match="diameter"):
        measure_clearance(img, img, centerline=line, diameter_px=0.0)
    with pytest.raises(ValueError, match="grade_thresholds"):
        measure_clearance(img, img, centerline=line, diameter_px=12.0, grade_thresholds=(95, 50))
    with pytest.raises(ValueError, match="2-D"):
        measure_clearance(img[0], img, centerline=line, diameter_px=12.0)
    with pytest.raises(ValueError, match="no measured pixels"):
        measure_clearance(np.full_like(img, np.nan), img, centerline=line, diameter_px=12.0)
    with pytest.raises(ValueError, match="vessel"):
        measure_clearance(np.zeros_like(img), np.zeros_like(img))


# --------------------------------------------------------------------------------------------- grades, parsing

@pytest.mark.parametrize("value, expected", [(-10.0, "I"), (0.0, "I"), (49.9, "I"), (50.0, "II"), (75.0, "II"),
                                             (95.0, "II"), (95.1, "III"), (100.0, "III"), (None, None)])
def test_sir_grades(value, expected):
    assert grade(value) == expected


def test_cavent_thresholds_are_configurable():
    assert grade(92.0) == "II"
    assert grade(92.0, (50.0, 90.0)) == "III"
    with pytest.raises(ValueError):
        grade(50.0, (60.0, 60.0))


def test_removal_flag_at_75():
    base, truth = synthetic_vessel(thrombi=[(0.2, 0.6, 0.6, "side")], noise=0.003, seed=12)
    post, _ = synthetic_vessel(thrombi=[(0.2, 0.6, 0.3, "side")], noise=0.003, seed=13)
    res = measure_clearance(base, post, centerline=truth["centerline"], diameter_px=12.0)
    assert res["clearance_pct"] == pytest.approx(50.0, abs=6.0)
    assert res["removal_ge_75"] is False
    post2, _ = synthetic_vessel(thrombi=[(0.2, 0.6, 0.06, "side")], noise=0.003, seed=14)
    res2 = measure_clearance(base, post2, centerline=truth["centerline"], diameter_px=12.0)
    assert res2["clearance_pct"] == pytest.approx(90.0, abs=6.0) and res2["removal_ge_75"] is True


def test_parse_segments():
    assert parse_segments("femoral:0-0.4, iliac:0.4-1") == [("femoral", 0.0, 0.4), ("iliac", 0.4, 1.0)]
    assert parse_segments(None) == []
    for bad in ["", "femoral", "femoral:0.4", "femoral:a-b", "f:0.5-0.2", "f:0-1.5", "f:0-0.5,f:0.5-1", ":0-1"]:
        with pytest.raises(ValueError):
            parse_segments(bad)


# --------------------------------------------------------------------------------------------- picture

def test_png_picture_is_a_real_image_of_both_runs():
    from PIL import Image

    base, truth = synthetic_vessel(thrombi=[(0.3, 0.6, 0.5, "side")], noise=0.005, seed=15)
    post, _ = synthetic_vessel(thrombi=[(0.3, 0.6, 0.1, "side")], shift=(5, 3), noise=0.005, seed=16)
    res = measure_clearance(base, post, centerline=truth["centerline"], diameter_px=12.0, segments="a:0.3-0.6")
    png = render_clearance_png(base, post, res)
    im = Image.open(io.BytesIO(png))
    assert im.format == "PNG" and im.size[0] > 2 * base.shape[1]
    # Not blank: the two image panels, the coloured burden strip.
    arr = np.asarray(im.convert("RGB")).astype(int)
    assert arr.std() > 20
    reds = (arr[..., 0] > 180) & (arr[..., 1] < 90) & (arr[..., 2] < 90)
    assert reds.sum() > 20           # the defect is drawn


# --------------------------------------------------------------------------------------------- CLI body

@pytest.fixture(scope="module")
def npy_runs(tmp_path_factory):
    """Two (T, H, W) uint16 linear stacks rendered from synthetic opacity (contrast arrives at frame 4)."""
    d = tmp_path_factory.mktemp("clr")
    rng = np.random.default_rng(20)
    out = {}
    for name, burden, shift in (("base", 0.5, (0, 0)), ("post", 0.1, (6, -4))):
        opac, truth = synthetic_vessel(size=(128, 128), diameter=10.0, k=0.06,
                                       thrombi=[(0.3, 0.6, burden, "side")], shift=shift,
                                       points=np.array([[60.0, 120.0], [64.0, 64.0], [74.0, 8.0]]))
        bolus = np.array([0, 0, 0, 0, 0.3, 0.8, 1.0, 1.0, 0.9, 0.6, 0.3, 0.1])
        counts = 3000.0 * np.exp(-0.7 - bolus[:, None, None] * opac[None])
        frames = np.clip(rng.poisson(counts), 0, 4095).astype(np.uint16)
        path = d / f"{name}.npy"
        np.save(path, frames)
        out[name] = (str(path), truth)
    return out


def _cli(*args, **kw):
    out, err = io.StringIO(), io.StringIO()
    defaults = dict(fps=10.0, intensity=None, centerline=None, diameter=None, segments=None, as_json=True, image=None)
    defaults.update(kw)
    rc = clearance_main(*args, defaults["fps"], defaults["intensity"], defaults["centerline"], defaults["diameter"],
                        defaults["segments"], defaults["as_json"], defaults["image"], out=out, err=err)
    return rc, out.getvalue(), err.getvalue()


def test_cli_json_contract(npy_runs, tmp_path):
    (b, truth), (p, _) = npy_runs["base"], npy_runs["post"]
    img = tmp_path / "out.png"
    rc, out, err = _cli(b, p, centerline=line_text(truth["centerline"]), diameter="10",
                        segments="thrombus:0.3-0.6", image=str(img))
    assert rc == 0, err
    res = json.loads(out)
    for key in ("burden_baseline_pct", "burden_post_pct", "clearance_pct", "grade", "removal_ge_75", "shift_px",
                "stations", "segments"):
        assert key in res
    assert res["shift_px"] == pytest.approx([6.0, -4.0], abs=1.0)
    assert res["grade"] in ("I", "II", "III") and isinstance(res["removal_ge_75"], bool)
    assert res["clearance_pct"] == pytest.approx(80.0, abs=10.0)
    assert res["segments"][0]["name"] == "thrombus"
    assert img.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_same_input_twice(npy_runs):
    b, _ = npy_runs["base"]
    rc, out, err = _cli(b, b)
    assert rc == 0, err
    res = json.loads(out)
    assert res["shift_px"] == [0.0, 0.0] and res["clearance_pct"] == 0.0


def test_cli_readable_summary(npy_runs):
    (b, _), (p, _) = npy_runs["base"], npy_runs["post"]
    rc, out, err = _cli(b, p, as_json=False)
    assert rc == 0, err
    assert "clearance" in out and "grade" in out and "registration" in out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)


@pytest.mark.parametrize("kw, message", [
    (dict(fps=None), "--fps"),
    (dict(fps="fast"), "--fps"),
    (dict(intensity="gamma"), "--intensity"),
    (dict(centerline="1,2;3"), "--centerline"),
    (dict(centerline="1,2"), "at least two"),
    (dict(centerline="1,2;5000,5"), "outside"),
    (dict(diameter="-3"), "--diameter"),
    (dict(segments="x:0.9-0.1"), "--segments"),
])
def test_cli_bad_input_exits_2_with_one_line(npy_runs, kw, message):
    (b, _), (p, _) = npy_runs["base"], npy_runs["post"]
    rc, out, err = _cli(b, p, **kw)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and message in err


def test_cli_bad_files_exit_2(npy_runs, tmp_path):
    b, _ = npy_runs["base"]
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not a dicom file")
    small = tmp_path / "small.npy"
    np.save(small, np.zeros((5, 64, 64), np.uint16))
    held = tmp_path / "held.npy"
    np.save(held, np.full((5, 128, 128), 1000, np.uint16))
    for other, message in ((str(tmp_path / "missing.npy"), "no such file"), (str(junk), "DICOM"),
                           (str(small), "differ" if False else "128"), (str(held), "identical")):
        rc, out, err = _cli(b, other)
        assert rc == 2 and err.count("\n") == 1, err
        assert message in err, err


def test_cli_unwritable_image_exits_2(npy_runs, tmp_path):
    (b, _), (p, _) = npy_runs["base"], npy_runs["post"]
    rc, out, err = _cli(b, p, image=str(tmp_path / "no" / "such" / "dir.png"))
    assert rc == 2 and "--image" in err and err.count("\n") == 1


# --------------------------------------------------------------------------------------------- live tracker

@pytest.fixture(scope="module")
def runs():
    thrombi = lambda b: [(0.3, 0.6, b, "side")]   # noqa: E731
    base, truth = synthetic_vessel(thrombi=thrombi(0.5), noise=0.005, seed=30)
    mid, _ = synthetic_vessel(thrombi=thrombi(0.25), shift=(8, -5), noise=0.005, seed=31)
    done, _ = synthetic_vessel(thrombi=thrombi(0.0), shift=(-12, 9), noise=0.005, seed=32)
    other, _ = synthetic_vessel(noise=0.005, seed=33, points=np.array([[10.0, 60.0], [128.0, 140.0], [250.0, 100.0]]))
    return {"base": base, "mid": mid, "done": done, "other": other, "truth": truth}


def test_tracker_first_run_is_baseline_and_later_runs_are_measured(runs):
    tr = ClearanceTracker()
    assert tr.add_run("r1", runs["base"], None) is None
    assert tr.baseline_id == "r1" and tr.latest() is None
    res = tr.add_run("r2", runs["mid"], "intraprocedural")
    assert res["run_id"] == "r2" and res["baseline_run_id"] == "r1" and res["label"] == "intraprocedural"
    assert res["shift_px"] == pytest.approx([8, -5], abs=1.0)
    assert 30 < res["clearance_pct"] < 70
    res = tr.add_run("r3", runs["done"], "completion")
    assert res["clearance_pct"] > 85 and tr.latest() is res
    png = tr.render_png(res)
    assert png[:4] == b"\x89PNG"


def test_tracker_keeps_one_baseline_per_anatomy(runs):
    tr = ClearanceTracker()
    tr.add_run("r1", runs["base"], None)
    # Another vein under the C-arm: its first contrast run is its own baseline, not a pairing.
    assert tr.add_run("x1", runs["other"], None) is None
    assert tr.baselines == ("r1", "x1") and tr.latest() is None
    x2 = runs["other"] + np.random.default_rng(1).normal(0, 0.005, runs["other"].shape).astype(np.float32)
    res = tr.add_run("x2", x2, None)
    assert res["baseline_run_id"] == "x1" and abs(res["clearance_pct"] or 0.0) < 10
    res = tr.add_run("r2", runs["done"], "completion")
    assert res["baseline_run_id"] == "r1" and res["clearance_pct"] > 85
    assert tr.result("x2")["baseline_run_id"] == "x1" and tr.result("r1") is None


def test_tracker_labelled_run_of_unknown_anatomy_is_not_paired(runs):
    tr = ClearanceTracker()
    tr.add_run("r1", runs["base"], None)
    assert tr.add_run("x", runs["other"], "intraprocedural") is None
    assert tr.unpaired == 1 and tr.baselines == ("r1",) and tr.latest() is None


def test_tracker_labels_and_relabel(runs):
    tr = ClearanceTracker()
    tr.add_run("r1", runs["mid"], None)                   # automatic: the first run is the baseline
    assert tr.baseline_id == "r1"
    tr.add_run("r2", runs["base"], "baseline")           # operator: this is the real baseline (same vein)
    assert tr.baselines == ("r2",)
    res = tr.add_run("r3", runs["done"], None)
    assert res["baseline_run_id"] == "r2" and res["clearance_pct"] > 85
    res = tr.relabel("r2", "intraprocedural")            # undo: r1 is the baseline again, all re-measured
    assert tr.baselines == ("r1",) and res["run_id"] == "r3" and res["baseline_run_id"] == "r1"
    assert tr.result("r2")["baseline_run_id"] == "r1" and tr.result("r2")["clearance_pct"] < 0  # more clot
    res = tr.relabel("r1", "completion")                 # no baseline left before r3: r3 is the first auto run
    assert res is None and tr.baselines == ("r3",) and tr.unpaired == 2
    with pytest.raises(ValueError, match="label"):
        tr.relabel("r1", "final")
    with pytest.raises(ValueError, match="unknown"):
        tr.relabel("nope", None)
    with pytest.raises(ValueError, match="already"):
        tr.add_run("r3", runs["done"], None)


def test_tracker_memory_is_bounded(runs):
    tr = ClearanceTracker(max_runs=3)
    tr.add_run("b", runs["base"], None)
    for i in range(5):
        tr.add_run(f"r{i}", runs["done"], None)
    assert tr.baselines == ("b",) and len(tr._order) == 3 and tr.latest()["run_id"] == "r4"
    assert tr.render_png()[:4] == b"\x89PNG"


def test_tracker_contrast_free_first_run_is_not_the_baseline(runs):
    tr = ClearanceTracker()
    rng = np.random.default_rng(3)
    assert tr.add_run("noise", rng.normal(0, 0.005, runs["base"].shape).astype(np.float32), None) is None
    assert tr.baseline_id is None
    tr.add_run("r1", runs["base"], None)
    assert tr.baseline_id == "r1"


def test_tracker_operator_centerline(runs):
    tr = ClearanceTracker()
    with pytest.raises(ValueError, match="no baseline"):
        tr.set_centerline([[1, 2], [3, 40]], 12.0)
    tr.add_run("r1", runs["base"], None)
    tr.add_run("r2", runs["done"], None)
    auto = tr.latest()
    line = runs["truth"]["centerline"]
    res = tr.set_centerline(line[(line[:, 1] > 40) & (line[:, 1] < 220)], 12.0)
    assert res is tr.latest() and res["diameter_px"] == 12.0 and res["clearance_pct"] > 85
    assert res["centerline"] != auto["centerline"]
    assert tr.set_centerline(None, None)["centerline"] == auto["centerline"]    # automatic again
    with pytest.raises(ValueError):
        tr.set_centerline([[1, 2]], 12.0)
    with pytest.raises(ValueError, match="outside"):
        tr.set_centerline([[1, 2], [3000, 2]], 12.0)


@pytest.mark.parametrize("share, gradable", [(0.15, True), (0.6, False)])
def test_a_vessel_alongside_much_of_the_vein_makes_it_not_gradable(share, gradable):
    """Another vein running alongside (touching) on the post run puts more contrast in the stations' windows than
    the lumen holds: those stations are left out; over most of the vessel what is left is too little to grade."""
    base, truth = synthetic_vessel(thrombi=[(0.1, 0.3, 0.5, "depth")], noise=0.01, seed=4, background=0.2)
    post, _ = synthetic_vessel(noise=0.01, seed=5, background=0.2)
    beside, _ = synthetic_vessel(shift=(10.0, 0.0))
    rows = np.arange(post.shape[0])[:, None]
    alongside = (rows >= post.shape[0] * 0.05) & (rows < post.shape[0] * (0.05 + share))   # from the top end
    post = post + np.where(alongside, beside, 0.0).astype(np.float32)
    res = measure_clearance(base, post, centerline=truth["centerline"], diameter_px=12.0)
    overfilled = [w for w in res["warnings"] if "more contrast than its lumen" in w]
    assert res["gradable"] is gradable and bool(overfilled) is not gradable, res["warnings"]
    assert any("left out: more contrast there" in n for n in res["notes"]), res["notes"]
    assert res["clearance_pct"] == pytest.approx(100.0, abs=5.0)      # reported for the record either way
