"""Time-density curve timing (docs/domain.md, run timing) and the gamma-variate fit."""
import math

import numpy as np
import pytest

from core.analysis.curve import downsample, noise_sd
from core.analysis.gamma import fit_gamma, gamma_variate, solve_fraction
from core.analysis.tdc import tdc_metrics
from core.vocab import check_roi

T0, A, B = 1.2, 2.5, 0.35
RATE = 15.0


def truth_timing(t0=T0, a=A, b=B):
    """arrival / peak / washout of the continuous gamma variate, by brute force on a 0.1 ms grid."""
    tt = np.arange(0.0, t0 + (a + 12) * b, 1e-4)
    y = gamma_variate(tt, t0, a, b, 1.0)
    k = int(np.argmax(y))
    arrival = tt[np.argmax(y >= 0.1 * y[k])]
    washout = tt[k + np.argmax(y[k:] <= 0.5 * y[k])]
    return arrival, tt[k], washout


def sampled(noise=0.0, seed=0, duration=6.0, rate=RATE):
    t = np.arange(0.0, duration, 1.0 / rate)
    y = gamma_variate(t, T0, A, B, 1.0)
    y = y / y.max()
    return t, y + noise * np.random.default_rng(seed).standard_normal(len(t))


def test_gamma_variate_shape():
    t = np.array([0.0, T0, T0 + A * B, 10.0])
    y = gamma_variate(t, T0, A, B, 2.0)
    assert y[0] == 0 and y[1] == 0 and y[2] > y[3] > 0


@pytest.mark.parametrize("f,rising", [(0.1, True), (0.5, False), (0.9, True), (0.01, False)])
def test_fraction_solver_hits_the_level(f, rising):
    x = solve_fraction(A, f, rising)
    assert (x < 1) == rising
    assert x ** A * math.exp(A * (1 - x)) == pytest.approx(f, rel=1e-9)


def test_noise_free_metrics_match_the_definitions():
    t, y = sampled()
    m = tdc_metrics(t, y)
    arrival, peak, washout = truth_timing()
    assert m.method == "gamma" and m.fit.r2 > 0.9999
    assert m.arrival_s == pytest.approx(arrival, abs=2e-3)
    assert m.peak_s == pytest.approx(peak, abs=2e-3)
    assert m.washout_s == pytest.approx(washout, abs=2e-3)
    assert m.centroid_s == pytest.approx(T0 + (A + 1) * B, abs=2e-3)
    assert m.fit.a == pytest.approx(A, rel=1e-3) and m.fit.b == pytest.approx(B, rel=1e-3)


@pytest.mark.parametrize("seed", range(5))
def test_noisy_curve_within_a_pulse_interval(seed):
    t, y = sampled(noise=0.04, seed=seed)
    m = tdc_metrics(t, y)
    arrival, peak, _ = truth_timing()
    assert abs(m.arrival_s - arrival) < 1 / RATE
    assert abs(m.peak_s - peak) < 1 / RATE
    assert m.noise_sd == pytest.approx(0.04, rel=0.35)


def test_pure_noise_is_no_contrast():
    y = 0.01 * np.random.default_rng(3).standard_normal(90)
    m = tdc_metrics(np.arange(90) / RATE, y)
    assert m.method == "none" and not m.contrast
    assert m.arrival_s is None and m.peak_s is None and m.washout_s is None and m.centroid_s is None


def test_curve_that_has_not_washed_out_has_no_washout():
    t, y = sampled(duration=2.4)            # ends just after the peak (2.075 s)
    m = tdc_metrics(t, y)
    assert m.peak_s is not None and m.washout_s is None


def test_non_gamma_shape_falls_back_to_the_samples():
    t = np.arange(0, 6, 1 / RATE)
    y = np.clip((t - 1.0) / 0.2, 0, 1) * (t < 3.0)            # a plateau with a cliff: no gamma variate
    m = tdc_metrics(t, y + 0.001 * np.sin(37 * t))
    assert m.method == "samples"
    assert m.arrival_s == pytest.approx(1.02, abs=1 / RATE)
    assert m.washout_s == pytest.approx(3.0, abs=1 / RATE)


def test_fit_gamma_returns_none_without_a_rise():
    assert fit_gamma(np.arange(10.0), -np.ones(10)) is None


@pytest.mark.parametrize("t,y", [
    ([0, 1], [0, 1]),                                  # too short
    ([0, 1, 2], [0, 1]),                               # length mismatch
    ([0, 1, 1], [0, 1, 2]),                            # times not increasing
    ([0, 1, 2], [0, np.nan, 2]),                       # not finite
    ([[0, 1, 2]], [[0, 1, 2]]),                        # not 1-D
])
def test_bad_curves(t, y):
    with pytest.raises(ValueError):
        tdc_metrics(t, y)


def test_noise_sd_ignores_the_smooth_curve():
    t, y = sampled()
    assert noise_sd(y) < 0.01
    assert noise_sd(np.random.default_rng(0).standard_normal(2000)) == pytest.approx(1.0, rel=0.1)


def test_downsample_keeps_at_most_200_points_and_the_ends():
    t = np.arange(1000) / 30
    pts = downsample(t, np.sin(t))
    assert len(pts) <= 200 and pts[0][0] == 0.0 and pts[-1][0] == pytest.approx(t[-1], abs=1e-4)
    assert len(downsample(t[:50], t[:50])) == 50
    with pytest.raises(ValueError):
        downsample(t, t, max_points=1)


@pytest.mark.parametrize("roi", [(0, 0, 0, 5), (-1, 0, 4, 4), (60, 0, 8, 8), (1.5, 0, 4, 4), "abcd", (1, 2, 3)])
def test_check_roi_rejects(roi):
    with pytest.raises(ValueError):
        check_roi(roi, (64, 64))


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(t0=st.floats(0.2, 2.0), a=st.floats(1.5, 5.0), b=st.floats(0.2, 0.8), rate=st.sampled_from([7.5, 15.0, 30.0]))
def test_any_noise_free_bolus_is_timed_within_a_pulse(t0, a, b, rate):
    t = np.arange(0.0, t0 + a * b + 6 * b + 1.0, 1.0 / rate)
    y = gamma_variate(t, t0, a, b, 1.0)
    m = tdc_metrics(t, y / y.max())
    arrival, peak, washout = truth_timing(t0, a, b)
    assert abs(m.arrival_s - arrival) < 1 / rate and abs(m.peak_s - peak) < 1 / rate
    assert m.arrival_s <= m.peak_s <= m.washout_s
    assert abs(m.washout_s - washout) < 1 / rate


def test_width_and_slopes_match_the_curve():
    t, y = sampled()
    tt = np.arange(0.0, 8.0, 1e-4)
    yt = gamma_variate(tt, T0, A, B, 1.0)
    yt /= yt.max()
    above = tt[yt >= 0.5]
    slope = np.gradient(yt, tt)
    for m in (tdc_metrics(t, y), tdc_metrics(t, y + 1e-3 * np.sin(50 * t))):
        assert m.width_s == pytest.approx(above[-1] - above[0], abs=2 / RATE)
        assert m.wash_in_slope == pytest.approx(slope.max(), rel=0.1)
        assert m.wash_out_slope == pytest.approx(slope.min(), rel=0.1)
    samples = tdc_metrics(np.arange(0, 6, 1 / RATE), np.clip((np.arange(0, 6, 1 / RATE) - 1) / 0.2, 0, 1)
                          * (np.arange(0, 6, 1 / RATE) < 3))
    assert samples.method == "samples" and samples.width_s == pytest.approx(2.0, abs=2 / RATE)
    assert samples.wash_in_slope > 0 > samples.wash_out_slope


def test_contrast_already_there_is_an_arrival_at_the_start():
    """Residual contrast above 10% of the peak at t = 0 is "reaching" the level (docs/domain.md, run timing),
    noise is not."""
    t, y = sampled(noise=0.02, seed=2)
    arrival, _, _ = truth_timing()
    residual = 0.3 * np.exp(-t / 0.5)
    m = tdc_metrics(t, y + residual - residual[15])          # baseline taken just before the bolus
    assert m.arrival_s == t[0]
    m = tdc_metrics(t, y)                                   # noise wiggles before the bolus do not count
    assert abs(m.arrival_s - arrival) < 1 / RATE
