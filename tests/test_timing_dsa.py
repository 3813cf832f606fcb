"""DSA-rate timing on the phantom: exposure stacks at 1-3 frames/s (16-bit linear, 8-bit display) and a
variable-rate run, timed as ``cathlab-edge analyze`` times them; truth analytic (core.sources.phantom.truth)."""
from dataclasses import replace

import numpy as np
import pytest

from core.analysis.offline import analyze_stack
from core.sources.phantom.dsa import dsa_config, exposure_stack
from core.sources.phantom.render import render_run
from core.sources.stacks import FrameStack


def analyse(cfg, injection_known=True, at_s=None):
    run = render_run(cfg)
    frames, times = exposure_stack(run)
    stack = FrameStack(frames, float(1 / np.median(np.diff(times))), cfg.intensity,
                       16 if cfg.intensity == "lin" else 8, times, "phantom")
    inj = run.truth.injection_delay_s if injection_known else None
    rois = None if at_s is None else [run.truth.scene.roi_at(at_s)]
    return analyze_stack(stack, rois=rois, injection_start_s=inj), run.truth


@pytest.mark.parametrize("intensity", ["lin", "log"])
@pytest.mark.parametrize("rate,seed", [(1.0, 0), (1.0, 3), (2.0, 1), (2.0, 4), (3.0, 2), (3.0, 5)])
def test_dsa_timing_within_a_quarter_interval(rate, seed, intensity):
    result, truth = analyse(dsa_config(seed + (50 if intensity == "log" else 0), rates=((0.0, rate),),
                                       intensity=intensity))
    assert result["runs"] == 1 and result["timing_version"] == 2
    roi = result["rois"][0]
    t = truth.truth_timing(roi["roi"])
    quarter = 0.25 / rate
    assert roi["method"] == "gamma"
    assert abs(roi["arrival_s"] - t.arrival_s) < quarter, (roi, t)
    assert abs(roi["peak_s"] - t.peak_s) < quarter, (roi, t)
    assert abs(roi["mtt_s"] - t.mtt_s) < 0.15, (roi, t)
    assert roi["centroid_s"] == pytest.approx(roi["mtt_s"] + truth.injection_delay_s, abs=1e-3)


def test_variable_rate_run_times_on_its_frame_times():
    result, truth = analyse(dsa_config(2, rates=((0.0, 4.0), (4.0, 1.0))))
    assert result["runs"] == 1 and result["run"]["pulses"] == len(truth.pulse_times_s)
    roi = result["rois"][0]
    t = truth.truth_timing(roi["roi"])
    assert abs(roi["peak_s"] - t.peak_s) < 0.25 and abs(roi["mtt_s"] - t.mtt_s) < 0.15
    assert roi["washout_s"] is not None and abs(roi["washout_s"] - t.washout_s) < 0.5


def test_mtt_unknown_without_injection_start():
    result, truth = analyse(dsa_config(1, rates=((0.0, 2.0),)), injection_known=False)
    roi = result["rois"][0]
    assert roi["mtt_s"] is None and roi["centroid_s"] is not None
    assert abs(roi["centroid_s"] - truth.truth_timing(roi["roi"]).centroid_s) < 0.15


def test_plateau_peak_is_stable_across_noise():
    base = dsa_config(6, rates=((0.0, 3.0),), injection_s=4.0)
    peaks = []
    for seed in range(20):
        result, truth = analyse(replace(base, seed=100 + seed), at_s=150.0)
        roi = result["rois"][0]
        assert roi["plateau_start_s"] is not None and roi["plateau_end_s"] - roi["plateau_start_s"] > 1.0
        assert roi["peak_s"] == pytest.approx(0.5 * (roi["plateau_start_s"] + roi["plateau_end_s"]), abs=1e-3)
        peaks.append(roi["peak_s"])
    assert max(peaks) - min(peaks) < 1 / 3.0, peaks
    assert abs(np.mean(peaks) - truth.truth_timing(roi["roi"]).peak_s) < 1 / 3.0


@pytest.mark.parametrize("intensity,rel", [("lin", "LIN"), ("log", "LOG"), ("log", "DISP")])
def test_inverted_sign_dicom_times_like_its_upright_copy(tmp_path, intensity, rel):
    """Each Pixel Intensity Relationship with both signs: +1 (contrast dark) and -1 (contrast bright, the
    stored values inverted). DISP is display-ready grey levels: the phantom's display video, read as log."""
    from core.sources.phantom.dsa import frame_time_vector_ms
    from core.sources.stacks import load_stack
    from tests.dicom_files import write_multiframe

    cfg = dsa_config(7, rates=((0.0, 4.0), (3.0, 1.0)), intensity=intensity)
    run = render_run(cfg)
    frames, times = exposure_stack(run)
    bits = 12 if intensity == "lin" else 8
    if rel == "DISP":
        # Display-ready grey levels stored in 10 bits of 16 (the pixel type alone would say linear).
        frames, bits = frames.astype(np.uint16) * 4, 10
    top = (1 << bits) - 1
    up, inv = tmp_path / "up.dcm", tmp_path / "inv.dcm"
    write_multiframe(up, frames, frame_time_ms=None, frame_time_vector=frame_time_vector_ms(times),
                     relationship=rel, bits_stored=bits, sign=1)
    write_multiframe(inv, (top - frames.astype(np.int32)).astype(frames.dtype), frame_time_ms=None,
                     frame_time_vector=frame_time_vector_ms(times), relationship=rel, bits_stored=bits, sign=-1)
    upright, inverted = load_stack(up), load_stack(inv)
    assert upright.intensity == inverted.intensity == intensity
    assert np.array_equal(upright.frames, inverted.frames)     # brighter = more photons again
    a = analyze_stack(upright, injection_start_s=run.truth.injection_delay_s)
    b = analyze_stack(inverted, injection_start_s=run.truth.injection_delay_s)
    ra, rb = a["rois"][0], b["rois"][0]
    assert a["runs"] == b["runs"] == 1 and ra["roi"] == rb["roi"]
    for key in ("arrival_s", "peak_s", "washout_s", "mtt_s", "centroid_s"):
        assert ra[key] == pytest.approx(rb[key], abs=1e-6), key
    t = run.truth.truth_timing(ra["roi"])
    assert abs(ra["peak_s"] - t.peak_s) < 0.25 and abs(ra["mtt_s"] - t.mtt_s) < 0.15
