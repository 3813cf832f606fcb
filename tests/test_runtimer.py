"""RunTimer: one run's pulses into timed curves (mask at the contrast onset, live curve, memory cap)."""
import numpy as np
import pytest

from core.analysis.gamma import gamma_variate
from core.analysis.runtimer import RunTimer
from tests.test_tdc import RATE, T0, A, B, truth_timing


def test_run_timer_on_a_synthetic_run():
    """A blob that fills with a gamma bolus on a noisy textured field; configured ROI on it."""
    rng = np.random.default_rng(0)
    h = w = 96
    yy, xx = np.mgrid[0:h, 0:w]
    field = 1500 + 400 * np.sin(xx / 7.0) * np.cos(yy / 9.0)
    blob = ((xx - 48) ** 2 + (yy - 40) ** 2) < 10 ** 2
    t = np.arange(90) / RATE
    c = gamma_variate(t, T0, A, B, 1.0)
    c /= c.max()
    timer = RunTimer((h, w), np.uint16, "lin", rois=[(40, 32, 16, 16)])
    for k in range(len(t)):
        quanta = field * np.exp(-0.5 * c[k] * blob)
        frame = np.clip(rng.poisson(quanta), 0, 4095).astype(np.uint16)
        timer.add(frame, int(round(t[k] * 1e9)), k)
    assert timer.mask_ready
    live = timer.live_curve()
    assert live["roi"] == [40, 32, 16, 16] and not live["auto"] and len(live["curve"]) == len(t)
    res = timer.finish(0, RATE)
    roi = res["rois"][0]
    arrival, peak, washout = truth_timing()
    assert res["mask"]["reason"] == "pre-contrast" and res["mask"]["last"] < res["mask"]["onset"]
    assert t[res["mask"]["onset"]] < arrival + 0.5
    assert abs(roi["arrival_s"] - arrival) < 1 / RATE and abs(roi["peak_s"] - peak) < 1 / RATE
    assert abs(roi["washout_s"] - washout) < 2 / RATE
    assert res["contrast_rise"]


def test_run_timer_caps_its_memory():
    timer = RunTimer((32, 32), np.uint8, "log", max_pulses=10)
    rng = np.random.default_rng(1)
    for k in range(15):
        timer.add(rng.integers(50, 200, (32, 32), dtype=np.uint8), k * 10**8, k)
    assert timer.pulses == 10 and timer.truncated
    assert timer.finish(0, 10.0)["truncated"]
    with pytest.raises(ValueError):
        RunTimer((32, 32), np.uint8, "log", max_pulses=2)
