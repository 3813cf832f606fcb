"""Accuracy on the project's phantom: arrival and peak within one pulse interval of the noise-free truth.

16-bit linear frames and 8-bit display video (pulses repeated on a 30/60 fps line, circular collimator,
burnt-in text boxes), clinical quantum noise, ABC settling, contrast already in frame 0, a small motion.
Small images keep the default run fast; the analysis is the one ``cathlab-edge analyze`` runs.
"""
from dataclasses import replace

import numpy as np
import pytest

from core.analysis.offline import analyze_stack
from core.analysis.pipeline import FramePipeline
from core.sources.frames import Frame
from core.sources.phantom.config import PhantomConfig
from core.sources.phantom.render import render_run
from core.sources.stacks import FrameStack
from core.vocab import NS

SIZE = (256, 256)
CLINICAL_I0 = 500.0      # quanta per pixel per pulse behind the patient: low-dose fluoroscopy noise

CASES = {
    "plain": {},
    "abc_settling": dict(abc_start=0.5, abc_tau_pulses=3.0),
    "contrast_in_frame0": dict(residual_contrast=0.1),
    "injection_at_xray_on": dict(inject_at_s=0.0),
    "7.5_pps": dict(pulse_rate=7.5),
    "30_pps": dict(pulse_rate=30.0),
    "60_fps_line": dict(fps=60.0),
    "3.75_pps_60_fps": dict(fps=60.0, pulse_rate=3.75, xray_s=8.0),
    "fluoro_counter": dict(counter=True),
    "more_noise": dict(i0=250.0, electronic_sd=3.0),
}


def config(intensity, seed, **kw):
    kw.setdefault("i0", CLINICAL_I0)
    return PhantomConfig(size=SIZE, intensity=intensity, seed=seed, **kw)


def stack_of(frames, cfg):
    bits = 16 if cfg.intensity == "lin" else 8
    return FrameStack(frames, cfg.fps, cfg.intensity, bits, np.arange(len(frames)) / cfg.fps, "phantom")


def check(result, truth, cfg):
    interval = 1.0 / cfg.pulse_rate
    frame = 1.0 / cfg.fps
    run = result["run"]
    assert abs(result["pulse_rate"] - cfg.pulse_rate) <= 0.1
    assert abs(run["start_s"] - truth.run_start_s) <= frame + 1e-6          # X-ray on edge
    assert abs(run["end_s"] - truth.run_end_s) <= frame + 1e-6              # X-ray off edge
    assert run["contrast"]
    roi = result["rois"][0]
    t = truth.truth_timing(roi["roi"])
    start = truth.run_start_s
    assert abs(roi["arrival_s"] - (t.arrival_s + start)) < interval, (roi, t)
    assert abs(roi["peak_s"] - (t.peak_s + start)) < interval, (roi, t)
    mask_first, mask_last = result["mask_frames"]
    assert truth.xray_on_frame <= mask_first <= mask_last < truth.xray_off_frame


@pytest.mark.parametrize("intensity", ["lin", "log"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_auto_roi_timing(case, intensity):
    seed = sorted(CASES).index(case) + (0 if intensity == "lin" else 100)
    cfg = config(intensity, seed, **CASES[case])
    run = render_run(cfg)
    result = analyze_stack(stack_of(run.frames, cfg))
    assert result["rois"][0]["auto"]
    check(result, run.truth, cfg)


@pytest.mark.parametrize("intensity", ["lin", "log"])
def test_configured_rois_along_the_vessel(intensity):
    cfg = config(intensity, 7)
    run = render_run(cfg)
    # ROIs centred on the vessel at three places along it: the bolus reaches them one after the other.
    xy = run.truth.centreline_xy
    picks = [xy[int(f * (len(xy) - 1))] for f in (0.25, 0.5, 0.75)]
    rois = [(int(px) - 10, int(py) - 10, 20, 20) for px, py in picks]
    result = analyze_stack(stack_of(run.frames, cfg), rois=rois, injection_start_s=run.truth.inject_start_s)
    arrivals = [r["arrival_s"] for r in result["rois"]]
    assert arrivals == sorted(arrivals)[::-1] or arrivals == sorted(arrivals)
    for r in result["rois"]:
        assert not r["auto"]
        assert r["arrival_after_injection_s"] == pytest.approx(r["arrival_s"] - run.truth.inject_start_s, abs=1e-3)
    for i in range(3):
        sub = dict(result, rois=[result["rois"][i]])
        check(sub, run.truth, cfg)


@pytest.mark.parametrize("intensity", ["lin", "log"])
def test_small_motion_before_the_bolus(intensity):
    """The table moves 3 px right and 2 px down 0.3 s before the bolus arrives in the field."""
    cfg = config(intensity, 11)
    before = render_run(cfg)
    after = render_run(replace(cfg, shift_px=(3.0, 2.0), seed=12))
    cut = before.truth.xray_on_frame + int(round(1.2 * cfg.fps))            # on a pulse boundary
    frames = np.concatenate([before.frames[:cut], after.frames[cut:]])
    result = analyze_stack(stack_of(frames, cfg))
    assert result["run"]["mask"]["motion"] == [int(round(1.2 * cfg.pulse_rate))]
    assert result["mask_frames"][0] >= cut
    check(result, after.truth, cfg)


@pytest.mark.parametrize("intensity", ["lin", "log"])
def test_live_pipeline_matches_truth(intensity):
    """The live path (coarse automatic ROI, kernel mask at onset) on the same phantom."""
    cfg = config(intensity, 21)
    run = render_run(cfg)
    pipeline = FramePipeline(intensity)
    pipeline.injection(int(round(run.truth.inject_start_s * NS)))
    ended = []
    for i, frame in enumerate(run.frames):
        ended += [e.run for e in pipeline.process(Frame(frame, int(round(i * NS / cfg.fps)), i))
                  if e.kind == "run_end"]
        if i == run.truth.xray_on_frame + int(4.0 * cfg.fps):
            live = pipeline.current_run(int(round(i * NS / cfg.fps)))
    ended += [e.run for e in pipeline.close(int(len(run.frames) * NS / cfg.fps))]
    assert len(ended) == 1
    s = ended[0].summary()
    assert s["contrast"] and s["injection_delay_s"] == pytest.approx(1.0, abs=1e-6)
    assert live["contrast"] and len(live["tdc"]["curve"]) > 30
    roi = s["rois"][0]
    t = run.truth.truth_timing(roi["roi"])
    assert abs(roi["arrival_s"] - t.arrival_s) < 1 / cfg.pulse_rate
    assert abs(roi["peak_s"] - t.peak_s) < 1 / cfg.pulse_rate
    peak = ended[0].peak_opacity
    assert peak is not None and peak.dtype == np.float32 and peak.shape == SIZE
    # The peak-opacity image is brightest on the vessel: compare with the truth path-length map.
    path = run.truth.scene.path_length_map()
    assert np.nanmean(peak[path > 0.8 * path.max()]) > 5 * abs(np.nanmedian(peak[path == 0]))


@pytest.mark.parametrize("intensity", ["lin", "log"])
def test_fluoroscopy_with_a_table_move_is_not_a_bolus(intensity):
    """No injection, no contrast, the table moves 1 s in: the step in every curve is not timed."""
    cfg = config(intensity, 31, inject_at_s=None, xray_s=4.0)
    before = render_run(cfg)
    after = render_run(replace(cfg, shift_px=(4.0, -3.0), seed=32))
    cut = before.truth.xray_on_frame + int(round(1.0 * cfg.fps))
    result = analyze_stack(stack_of(np.concatenate([before.frames[:cut], after.frames[cut:]]), cfg))
    assert not result["run"]["contrast"]
    assert result["run"]["mask"]["motion"] == [int(round(1.0 * cfg.pulse_rate))]
    assert result["mask_frames"][0] >= cut                   # the longer still stretch, after the move
    roi = result["rois"][0]
    assert roi["arrival_s"] is None and roi["peak_s"] is None and roi["method"] == "none"
