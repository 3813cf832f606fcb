"""The phantom's DSA acquisitions: exposure programs (fixed and variable rate), the plateau bolus, timing truth."""
import hashlib

import numpy as np
import pytest

from core.sources.phantom.config import PhantomConfig
from core.sources.phantom.dsa import dsa_config, exposure_stack, frame_time_vector_ms
from core.sources.phantom.render import render_run


def test_default_render_is_unchanged():
    # The DSA options default to off: a fluoroscopy render is byte for byte what it was before them.
    run = render_run(PhantomConfig(size=(64, 64), xray_s=1.0, seed=3))
    assert hashlib.sha256(run.frames.tobytes()).hexdigest()[:16] == "84f0d8eb53eb5a96"


@pytest.mark.parametrize("intensity,dtype", [("lin", np.uint16), ("log", np.uint8)])
def test_variable_rate_program(intensity, dtype):
    cfg = dsa_config(2, rates=((0.0, 4.0), (3.0, 1.0)), intensity=intensity)
    run = render_run(cfg)
    frames, times = exposure_stack(run)
    assert frames.dtype == dtype and len(frames) == len(times) == len(run.truth.pulse_times_s)
    steps = np.diff(times)
    assert np.allclose(steps[times[1:] <= 3.0], 0.25, atol=1 / 30 + 1e-9)
    assert np.allclose(steps[times[:-1] >= 3.0], 1.0, atol=1e-9)
    # Every exposure is a new image; on the video line each is held until the next.
    assert all(np.any(frames[i] != frames[i + 1]) for i in range(len(frames) - 1))
    on = run.truth.xray_on
    assert np.count_nonzero(run.truth.is_new_pulse & on) == len(frames)
    assert frame_time_vector_ms(times)[0] == 0.0


@pytest.mark.parametrize("rate", [0.5, 1.0, 3.0, 6.0])
def test_fixed_rates(rate):
    cfg = dsa_config(5, rates=((0.0, rate),), noise="none")
    _, times = exposure_stack(render_run(cfg))
    assert np.allclose(np.diff(times), round(30 / rate) / 30)


def test_timing_truth_centroid_and_mtt():
    cfg = dsa_config(4, rates=((0.0, 2.0),), noise="none")
    run = render_run(cfg)
    roi = run.truth.scene.roi_at(150.0, half=4)
    t = run.truth.truth_timing(roi)
    bolus = run.truth.bolus
    # A small ROI on the centreline: its curve is nearly the gamma variate at that station.
    expect = bolus.t0_s + 150.0 / bolus.speed_px_s + (bolus.a + 1) * bolus.b_s - run.truth.run_start_s
    assert abs(t.centroid_s - expect) < 0.05
    assert t.mtt_s == pytest.approx(t.centroid_s - t.injection_delay_s)
    assert t.arrival_s < t.peak_s < t.washout_s


def test_no_injection_start_no_mtt():
    run = render_run(dsa_config(4, noise="none", inject_at_s=None))
    t = run.truth.truth_timing(run.truth.scene.roi_at(150.0))
    assert t.mtt_s is None and t.centroid_s is None and t.peak_s is None


def test_plateau_bolus():
    cfg = dsa_config(6, rates=((0.0, 3.0),), injection_s=4.0, noise="none")
    run = render_run(cfg)
    t = run.truth.truth_timing(run.truth.scene.roi_at(60.0, half=4))
    assert t.plateau_start_s is not None and t.plateau_end_s - t.plateau_start_s > 2.0
    assert t.peak_s == pytest.approx(0.5 * (t.plateau_start_s + t.plateau_end_s))
    assert t.peak_opacity > 0.1
    # The plateau's concentration is the configured peak, as a short injection's maximum is.
    assert run.truth.bolus.concentration(np.array([0.0]), np.linspace(0, 20, 20001)).max() == pytest.approx(
        cfg.bolus_peak, rel=1e-3)


def test_bad_programs_rejected():
    for rates in (((1.0, 2.0),), ((0.0, 0.0),), ((0.0, 2.0), (0.0, 1.0)), ((0.0, 60.0),)):
        with pytest.raises(ValueError):
            PhantomConfig(frame_rates=rates)
    with pytest.raises(ValueError):
        PhantomConfig(injection_s=-1.0)
