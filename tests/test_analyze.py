"""``cathlab-edge analyze``: JSON, table, plot, ROIs, injection start, and one-line errors for bad input."""
import io
import json

import numpy as np
import pytest

from api.cli.analyze import analyze_main
from core.analysis.offline import analyze_stack
from core.sources.phantom.config import PhantomConfig
from core.sources.phantom.render import render_run
from core.sources.stacks import load_stack
from core.vocab import parse_roi
from tests.dicom_files import write_multiframe


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    cfg = PhantomConfig(size=(128, 128), intensity="lin", seed=5, i0=800.0, diameter_px=12.0)
    run = render_run(cfg)
    path = tmp_path_factory.mktemp("analyze") / "run.npy"
    np.save(path, run.frames)
    return path, run


def call(*args, **kw):
    out, err = io.StringIO(), io.StringIO()
    defaults = dict(fps=None, intensity=None, rois=[], injection_start=None, as_json=True, plot=None)
    defaults.update(kw)
    code = analyze_main(str(args[0]), defaults["fps"], defaults["intensity"], defaults["rois"],
                        defaults["injection_start"], defaults["as_json"], defaults["plot"], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_json_object(phantom):
    path, run = phantom
    code, out, err = call(path, fps=30.0, injection_start=run.truth.inject_start_s)
    assert code == 0 and err == ""
    d = json.loads(out)
    assert d["frames"] == len(run.frames) and d["fps"] == 30.0 and d["pulse_rate"] == pytest.approx(15.0, abs=0.1)
    first, last = d["mask_frames"]
    assert run.truth.xray_on_frame <= first <= last < run.truth.xray_off_frame
    assert len(d["rois"]) == 1
    roi = d["rois"][0]
    assert roi["auto"] is True and len(roi["roi"]) == 4
    assert set(roi) >= {"roi", "auto", "arrival_s", "peak_s", "washout_s", "mtt_s", "arrival_after_injection_s"}
    assert set(roi) >= {"centroid_s", "plateau_start_s", "plateau_end_s", "reason", "width_s", "fit_r2"}
    assert roi["reason"] and roi["plateau_start_s"] is None           # a short fluoroscopy bolus: no plateau
    assert roi["arrival_s"] < roi["peak_s"] < roi["washout_s"] and roi["centroid_s"] > roi["arrival_s"]
    # mtt_s (timing version 2): the centroid minus the injection start, a transit time, not a clock time
    assert d["timing_version"] == 2
    assert roi["mtt_s"] == pytest.approx(roi["centroid_s"] - run.truth.inject_start_s, abs=1e-3)
    assert roi["arrival_after_injection_s"] == pytest.approx(roi["arrival_s"] - run.truth.inject_start_s, abs=1e-3)
    # times from the first frame of the file: the X-ray run starts 0.5 s in
    truth = run.truth.truth_timing(roi["roi"])
    assert abs(roi["peak_s"] - (truth.peak_s + run.truth.run_start_s)) < 1 / 15


def test_configured_rois_and_table(phantom, tmp_path):
    path, run = phantom
    plot = tmp_path / "tdc.png"
    code, out, err = call(path, fps=30.0, rois=["40,60,16,16", " 50, 20, 10, 12 "], as_json=False, plot=str(plot))
    assert code == 0, err
    assert "40,60,16,16" in out and "50,20,10,12" in out and "arrival s" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, _ = call(path, fps=30.0, rois=["40,60,16,16", "50,20,10,12"])
    d = json.loads(out)
    assert [r["roi"] for r in d["rois"]] == [[40, 60, 16, 16], [50, 20, 10, 12]]
    assert not any(r["auto"] for r in d["rois"])
    assert all(r["arrival_after_injection_s"] is None for r in d["rois"])


def test_dicom_xa_file(phantom, tmp_path):
    _, run = phantom
    dcm = tmp_path / "run.dcm"
    write_multiframe(dcm, run.frames, modality="XA", frame_time_ms=1000 / 30, relationship="LIN", bits_stored=12)
    code, out, err = call(dcm)
    assert code == 0, err
    d = json.loads(out)
    assert d["fps"] == pytest.approx(30.0, rel=1e-3) and d["pulse_rate"] == pytest.approx(15.0, abs=0.1)


def test_analyze_stack_without_contrast(tmp_path):
    cfg = PhantomConfig(size=(96, 96), intensity="log", seed=2, inject_at_s=None, xray_s=2.0, diameter_px=10.0)
    run = render_run(cfg)
    np.save(tmp_path / "fluoro.npy", run.frames)
    d = analyze_stack(load_stack(tmp_path / "fluoro.npy", fps=30.0))
    assert d["run"]["contrast"] is False
    assert d["rois"][0]["arrival_s"] is None and d["rois"][0]["peak_s"] is None


def test_parse_roi():
    assert parse_roi("1,2,3,4") == (1, 2, 3, 4)
    for bad in ["1,2,3", "a,b,c,d", "1,2,0,4", "-1,0,4,4", "1.5,2,3,4", ""]:
        with pytest.raises(ValueError):
            parse_roi(bad)
    with pytest.raises(ValueError):
        parse_roi("100,100,50,50", (128, 128))


def bad_files(tmp_path):
    frames = np.random.default_rng(0).integers(0, 4000, (20, 32, 32)).astype(np.uint16)
    np.save(tmp_path / "good.npy", frames)
    raw = (tmp_path / "good.npy").read_bytes()
    (tmp_path / "truncated.npy").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "text.npy").write_text("not an array\n")
    (tmp_path / "text.dcm").write_text("not an image at all\n")
    np.save(tmp_path / "single.npy", frames[:1])
    np.save(tmp_path / "float.npy", frames.astype(np.float32))
    np.save(tmp_path / "int16.npy", frames.astype(np.int16))
    np.save(tmp_path / "flat.npy", frames[0])
    np.save(tmp_path / "static.npy", np.repeat(frames[:1], 20, axis=0))
    return {
        "missing": (tmp_path / "nope.npy", {"fps": 30.0}),
        "truncated": (tmp_path / "truncated.npy", {"fps": 30.0}),
        "text_npy": (tmp_path / "text.npy", {"fps": 30.0}),
        "text_dicom": (tmp_path / "text.dcm", {}),
        "single_frame": (tmp_path / "single.npy", {"fps": 30.0}),
        "float": (tmp_path / "float.npy", {"fps": 30.0}),
        "int16": (tmp_path / "int16.npy", {"fps": 30.0}),
        "2d": (tmp_path / "flat.npy", {"fps": 30.0}),
        "no_fps": (tmp_path / "good.npy", {}),
        "negative_fps": (tmp_path / "good.npy", {"fps": -5.0}),
        "nan_fps": (tmp_path / "good.npy", {"fps": float("nan")}),
        "bad_intensity": (tmp_path / "good.npy", {"fps": 30.0, "intensity": "gamma"}),
        "bad_roi": (tmp_path / "good.npy", {"fps": 30.0, "rois": ["1,2,3"]}),
        "roi_outside": (tmp_path / "good.npy", {"fps": 30.0, "rois": ["30,30,8,8"]}),
        "bad_injection": (tmp_path / "good.npy", {"fps": 30.0, "injection_start": float("inf")}),
        "no_run": (tmp_path / "static.npy", {"fps": 30.0}),
        "plot_dir_missing": (tmp_path / "good.npy", {"fps": 30.0, "plot": str(tmp_path / "no" / "dir.png")}),
    }


CASES = ["missing", "truncated", "text_npy", "text_dicom", "single_frame", "float", "int16", "2d", "no_fps",
         "negative_fps", "nan_fps", "bad_intensity", "bad_roi", "roi_outside", "bad_injection", "no_run",
         "plot_dir_missing"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_with_one_line(tmp_path, case):
    path, kw = bad_files(tmp_path)[case]
    code, out, err = call(path, **kw)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cathlab-edge analyze: ") and "Traceback" not in err


def test_slow_acquisition_is_one_run(tmp_path):
    """A DSA-style recording at 3 frames/s, every frame a new exposure, is analysed as one run."""
    cfg = PhantomConfig(size=(96, 96), intensity="lin", seed=6, fps=3.0, pulse_rate=3.0, xray_s=8.0,
                        lih_before_s=0.0, lih_after_s=0.0, i0=2000.0, diameter_px=10.0, bolus_b_s=0.8)
    run = render_run(cfg)
    np.save(tmp_path / "dsa.npy", run.frames)
    code, out, err = call(tmp_path / "dsa.npy", fps=3.0)
    assert code == 0, err
    d = json.loads(out)
    assert d["run"]["first_frame"] == 0 and d["pulse_rate"] == pytest.approx(3.0)
    assert d["run"]["contrast"] and d["rois"][0]["peak_s"] is not None
