"""Display video's LUT gain in the live path: the pipeline keeps each contrast run's first pulses
(core/analysis/pipeline.py), the appliance estimates the gain from them after the run is recorded and keeps it
with the run's images, and a catheter calibration through the API fits the exact model with it
(core/appliance/sizing.py), as `cathlab-edge vessel` does."""
import numpy as np
import pytest

from core.analysis.display_gain import trusted_gain
from core.analysis.pipeline import FramePipeline
from core.appliance.sizing import LiveSizing
from core.appliance.worker import AnalysisWorker
from core.sources.frames import Frame
from core.sources.phantom.config import PhantomConfig
from core.sources.phantom.video import PhantomVideo
from core.vocab import NS
from firmware_bridge.scenarios import PROCEDURE
from tests.test_display_gain import GAIN_TOL, display_run
from tests.test_vessel_live import ListLog

FPS = 30.0


def baseline_run(intensity: str, gain: float, psf_px: float):
    """The scripted procedure's baseline venogram through the live pipeline; its run."""
    video = PhantomVideo(PhantomConfig(size=(384, 384), intensity=intensity, seed=2, diameter_px=14.0,
                                       psf_px=psf_px, display_gain=gain))
    pipe = FramePipeline(intensity)
    run = next(r for r in PROCEDURE if r.label == "baseline")
    ended = []
    for k in range(int((run.xray_on_s - 1) * FPS), int((run.xray_off_s + 2) * FPS)):
        pixels, _ = video.frame_at(k / FPS)
        ended += [e.run for e in pipe.process(Frame(pixels, round(k * NS / FPS), k)) if e.kind == "run_end"]
    contrast = [r for r in ended if r.contrast and r.peak_opacity is not None]
    assert len(contrast) == 1, [(r.pulses, r.contrast) for r in ended]
    return contrast[0]


def test_the_live_pipeline_keeps_a_display_runs_pulses_for_its_gain_and_none_for_linear_video():
    pulses = baseline_run("log", 90.0, 0.5).gain_pulses
    assert pulses.shape == (25, 192, 192) and pulses.dtype == np.uint8
    gain, reason = trusted_gain(pulses, "run")
    assert gain == pytest.approx(90.0, rel=GAIN_TOL) and reason == ""
    assert baseline_run("lin", 70.0, 0.5).gain_pulses is None


def test_a_catheter_calibration_through_the_appliance_uses_the_runs_gain():
    outer, gain = 6.0, 55.0
    frames, mask, opacity, points, vein = display_run(outer, 1.2, 0.3, 1.0, gain, seed=3, angle=65.0)
    worker = AnalysisWorker("test-gain")
    try:
        live = LiveSizing(worker, ListLog())
        live.set_centerline([tuple(p) for p in vein])
        worker.submit(live.add_run, "g-1", opacity, mask, None, False, 56.0).result(timeout=10)
        cal = live.set_calibration(catheter_french=6.0, catheter=points.tolist(), run_id="g-1")
    finally:
        worker.shutdown()
    # The linear model reads this catheter 8-12% narrow (tests/test_display_gain.py).
    assert (6.0 / 3.0) / cal["mm_per_px"] == pytest.approx(outer, rel=0.04)
    assert cal["display_gain"] == 56.0
