"""Mask selection: ABC settling, motion, contrast already in frame 0, text boxes and the collimator."""
import numpy as np
import pytest

from core.analysis.autoroi import box_means, box_peak_map, choose_roi, coarse_side, roi_side
from core.analysis.kernels import make_tables
from core.analysis.mask import MAX_MASK_PULSES, OnsetWatcher, choose_mask, log_lut, sample_stride, valid_pixels

H = W = 120
P = 60
ONSET = 30


def scene(seed=0, abc_start=1.0, motion_at=None, shift=(2, 0), residual=0.0, bolus_at=ONSET, text=True):
    """Raw 8-bit display pulses (P, H, W): bony texture, a vessel, ABC, a text box and a black surround."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H + 8, 0:W + 8]
    bone = 40.0 * (((xx // 9) + (yy // 11)) % 2)            # sharp edges, so motion shows
    base = 120 + bone + 20 * np.sin(xx / 13.0)
    vessel = np.abs(xx - 64) < 5
    frames = np.empty((P, H, W), np.uint8)
    for k in range(P):
        dx, dy = shift if motion_at is not None and k >= motion_at else (0, 0)
        img = base[4 + dy:4 + dy + H, 4 + dx:4 + dx + W].copy()
        img += 70 * np.log(1 - (1 - abc_start) * np.exp(-k / 1.5))        # ABC: log shift that settles
        c = residual * np.exp(-k / 20.0)
        if bolus_at is not None and k >= bolus_at:
            c += 1.0 - np.exp(-(k - bolus_at) / 3.0)
        img[vessel[4:4 + H, 4:4 + W]] -= 30 * c
        img += rng.normal(0, 2.0, img.shape)
        frame = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        frame[:, :6] = 0                                    # collimator surround
        if text:
            frame[2:12, 80:118] = 230                        # burnt-in text box
        frames[k] = frame
    return frames


def run_mask(frames):
    return choose_mask(frames, log_lut(np.uint8, "log"))


@pytest.mark.parametrize("dtype,intensity", [(np.uint8, "log"), (np.uint16, "lin"), (np.uint16, "log")])
def test_log_lut_matches_the_kernel_tables(dtype, intensity):
    bits = 8 if dtype == np.uint8 else 16
    lut, _, _ = make_tables(dtype, intensity, bits, 1.0)
    np.testing.assert_array_equal(log_lut(dtype, intensity), lut)


def test_log_lut_bad_arguments():
    with pytest.raises(ValueError):
        log_lut(np.float32, "lin")
    with pytest.raises(ValueError):
        log_lut(np.uint8, "linear")


def test_sample_stride():
    assert sample_stride((256, 256)) == 2 and sample_stride((1024, 1024)) == 6 and sample_stride((64, 80)) == 1


def test_valid_pixels_drop_text_surround_and_saturation():
    frames = scene()
    frames[:, 50:52, 20:22] = 255                           # saturated
    valid = valid_pixels(frames)
    assert not valid[:, :6].any() and not valid[2:12, 80:118].any() and not valid[50:52, 20:22].any()
    assert valid[40:100, 10:120].mean() > 0.95


def test_dark_noisy_surround_is_not_image():
    frames = scene().astype(np.uint16) * 16                 # as 12-bit detector counts
    rng = np.random.default_rng(1)
    frames[:, :, :6] = rng.integers(1, 12, frames[:, :, :6].shape)   # dark noise, changing every pulse
    valid = valid_pixels(frames)
    assert not valid[:, :6].any() and valid[40:100, 10:120].mean() > 0.95


def test_clean_run_mask_just_before_the_rise():
    choice, _ = run_mask(scene())
    assert ONSET - 1 <= choice.onset <= ONSET + 1
    assert choice.reason == "pre-contrast"
    assert choice.last == choice.onset - 2 and choice.last - choice.first + 1 == MAX_MASK_PULSES
    assert choice.motion == ()


def test_abc_settling_is_excluded():
    choice, _ = run_mask(scene(abc_start=0.6))
    assert choice.settled >= 4                              # 60% exposure settling over ~1.5 pulses
    assert choice.first >= choice.settled
    assert ONSET - 1 <= choice.onset <= ONSET + 1


def test_motion_before_the_bolus_starts_a_new_segment():
    choice, _ = run_mask(scene(motion_at=26))
    assert choice.motion == (26,)
    assert choice.first >= 26 and choice.last < choice.onset
    assert ONSET - 1 <= choice.onset <= ONSET + 1


def test_contrast_in_frame_zero_is_not_an_onset():
    choice, _ = run_mask(scene(residual=0.8))               # washing out from pulse 0
    assert ONSET - 1 <= choice.onset <= ONSET + 1 and choice.reason == "pre-contrast"


def test_no_contrast():
    choice, _ = run_mask(scene(bolus_at=None))
    assert choice.onset is None and choice.reason == "no-onset"
    assert (choice.first, choice.last) == (choice.settled, choice.settled + MAX_MASK_PULSES - 1)


def test_contrast_rising_from_the_first_pulse_uses_late_pulses():
    frames = scene(bolus_at=None)
    vessel = np.abs(np.arange(W) - 60) < 5
    for k in range(P):                                      # already filling at X-ray on, then washing out
        level = 30 * np.exp(-k / 8.0) * min(1.0, (k + 3) / 3)
        frames[k][:, vessel] = np.clip(frames[k][:, vessel].astype(float) - level, 0, 255).astype(np.uint8)
    choice, _ = run_mask(frames)
    assert choice.first >= P - MAX_MASK_PULSES


def test_watcher_is_causal_and_matches_the_offline_choice():
    frames = scene(seed=4)
    lut = log_lut(np.uint8, "log")
    offline, valid = run_mask(frames)
    watcher = OnsetWatcher(valid)
    seen = offline.onset + 2                                # only up to the pulse that confirms the onset
    for k in range(seen):
        watcher.feed(lut[frames[k]])
    assert watcher.onset == offline.onset
    c = watcher.choice(seen)
    assert (c.first, c.last) == (offline.first, offline.last)


def test_bad_inputs():
    with pytest.raises(ValueError):
        choose_mask(np.zeros((0, 4, 4), np.uint8), log_lut(np.uint8, "log"))
    with pytest.raises(ValueError):
        valid_pixels(np.zeros((4, 4), np.uint8))
    watcher = OnsetWatcher(np.ones((12, 12), bool))
    with pytest.raises(ValueError):
        watcher.feed(np.zeros((10, 12), np.float32))


def test_auto_roi_on_the_most_opacified_box():
    """A strong vessel, a weaker one, and a dense noisy region: the strong vessel wins."""
    rng = np.random.default_rng(0)
    h = w = 80
    vessel = np.zeros((h, w))
    vessel[10:40, 60:70] = 2.0                              # the strongest filling
    vessel[30:50, 20:24] = 1.0                              # a narrow, weaker one
    noise_sd = np.full((h, w), 0.05)
    noise_sd[50:75, 35:60] = 1.5                            # thick anatomy: 30x the noise, no contrast
    bolus = np.exp(-0.5 * ((np.arange(40) - 20) / 4.0) ** 2)
    logs = [-(bolus[k] * vessel) + noise_sd * rng.standard_normal((h, w)) for k in range(40)]
    valid = np.ones((h, w), dtype=bool)
    valid[:5] = False                                       # a text box
    side = coarse_side((160, 160), 2)
    peak = box_peak_map(lambda k: logs[k], 40, np.zeros((h, w)), np.zeros(40), valid, side, window=4)
    x, y, rw, rh = choose_roi(peak, 2, (160, 160))
    assert (rw, rh) == (roi_side((160, 160)),) * 2
    assert 100 <= x and x + rw <= 160 and 10 <= y and y + rh <= 90   # on the strong vessel (coarse x 60-70)
    assert choose_roi(np.full((4, 4), np.nan), 2, (160, 160)) is None


def test_box_means():
    img = np.arange(16, dtype=float).reshape(4, 4)
    valid = np.ones((4, 4), bool)
    valid[0, 0] = False
    m = box_means(img, valid, 2)
    assert np.isnan(m[0, 0]) and m[1, 1] == pytest.approx(img[1:3, 1:3].mean())


def test_box_peak_map_takes_the_window_mean_peak():
    logs = [np.full((2, 2), v, np.float32) for v in (0.0, -1.0, -3.0, -1.0)]
    pk = box_peak_map(lambda k: logs[k], 4, np.zeros((2, 2)), np.zeros(4), np.ones((2, 2), bool), 1, window=2)
    assert pk[0, 0] == pytest.approx(2.0)                   # mean of opacities 1 and 3
    with pytest.raises(ValueError):
        box_peak_map(lambda k: logs[k], 0, np.zeros((2, 2)), np.zeros(0), np.ones((2, 2), bool), 1, 2)


@pytest.mark.parametrize("bolus_at", [5, 8, 12])
def test_early_bolus_is_neither_motion_nor_in_the_mask(bolus_at):
    choice, _ = run_mask(scene(bolus_at=bolus_at))
    assert choice.motion == ()
    assert choice.onset == bolus_at + 1                     # the first pulse with contrast (the rise starts at 0)
    assert choice.last <= bolus_at


def test_no_onset_mask_from_the_longest_still_stretch():
    choice, _ = run_mask(scene(bolus_at=None, motion_at=20))
    assert choice.motion == (20,) and choice.onset is None
    assert (choice.first, choice.last) == (20, 20 + MAX_MASK_PULSES - 1)
