"""Peak-opacity images (core/analysis/peak.py): unbiased under noise, blind to repeats, exposure settling and overlays."""
from __future__ import annotations

import numpy as np
import pytest

from core.analysis.peak import distinct_frames, peak_opacity
from core.sources.phantom.config import PhantomConfig
from core.sources.phantom.render import render_run
from core.sources.stacks import FrameStack


def _stack(frames, fps=30.0, intensity="lin"):
    return FrameStack(frames, fps, intensity, 12 if frames.dtype == np.uint16 else 8,
                      np.arange(frames.shape[0]) / fps, "test")


def _synthetic(intensity="lin", size=96, pulses=24, repeat=2, abc=True, noise=True, seed=0):
    """A vertical vessel (true peak opacity 0.5 at its centre) filling at pulse 8-16; pulses repeated."""
    rng = np.random.default_rng(seed)
    x = np.arange(size)
    opac = 0.5 * np.sqrt(np.clip(1 - ((x - size / 2) / 8.0) ** 2, 0, None))[None, :].repeat(size, 0)
    bolus = np.interp(np.arange(pulses), [0, 7, 10, 15, 19, pulses], [0, 0, 1, 1, 0, 0])
    exposure = 1 - 0.3 * np.exp(-np.arange(pulses) / 1.5) if abc else np.ones(pulses)
    frames = []
    for p in range(pulses):
        quanta = 2000.0 * exposure[p] * np.exp(-0.6 - bolus[p] * opac)
        if noise:
            quanta = rng.poisson(quanta).astype(float)
        if intensity == "lin":
            f = np.clip(np.rint(quanta * 1.2), 0, 4095).astype(np.uint16)
        else:
            f = np.clip(np.rint(20 + 30 * np.log(np.maximum(quanta, 1))), 0, 255).astype(np.uint8)
        frames += [f] * repeat
    return np.stack(frames), opac * (1.0 if intensity == "lin" else 30.0)


def test_distinct_frames_skips_repeats_and_hold():
    frames, _ = _synthetic(repeat=2)
    held = np.concatenate([frames, frames[-1:].repeat(5, 0)])
    idx = distinct_frames(held)
    assert len(idx) == 24 and np.all(idx == np.arange(0, 48, 2))


@pytest.mark.parametrize("intensity", ["lin", "log"])
def test_peak_is_unbiased_under_noise(intensity):
    frames, truth = _synthetic(intensity, seed=1)
    peak = peak_opacity(_stack(frames, intensity=intensity))
    scale = truth.max()
    # Background: a plain per-pixel maximum would sit about a noise sd above zero; this one does not.
    bg = peak[:, :30]
    assert abs(float(np.nanmean(bg))) < 0.01 * scale
    naive = (np.log(frames[:4].astype(float).mean(0) + 0.5) - np.log(frames.astype(float) + 0.5)).max(0) \
        if intensity == "lin" else (frames[:4].astype(float).mean(0) - frames.astype(float)).max(0)
    assert float(naive[:, :30].mean()) > 0.03 * scale          # the bias the method exists to avoid
    # Integrated across the vessel, per row: the truth within 2%.
    ratio = np.nansum(peak[:, 30:66], axis=1).mean() / truth[:, 30:66].sum(axis=1).mean()
    assert ratio == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("intensity", ["lin", "log"])
def test_exposure_settling_leaves_no_offset(intensity):
    """The first pulses are 30% darker (automatic brightness control): no offset may remain."""
    settling, truth = _synthetic(intensity, abc=True, seed=4)
    steady, _ = _synthetic(intensity, abc=False, seed=4)
    scale = truth.max()
    for frames in (settling, steady):
        peak = peak_opacity(_stack(frames, intensity=intensity))
        assert abs(float(np.nanmean(peak[:, :30]))) < 0.01 * scale
        assert float(np.nanmean(peak[:, 46:50])) == pytest.approx(float(truth[:, 46:50].mean()), rel=0.03)


def test_overlay_text_and_counter_are_not_measured():
    frames, _ = _synthetic("log", seed=2)
    frames[:, 2:10, 2:40] = 230                       # burnt-in text
    frames[:, 80:90, 2:20] = 0
    for t in range(frames.shape[0]):                 # a counter changing every 8 frames
        frames[t, 82:88, 4 + (t // 8) % 4 * 3: 6 + (t // 8) % 4 * 3] = 230
    peak = peak_opacity(_stack(frames, intensity="log"))
    assert np.isnan(peak[2:10, 2:40]).all()
    assert np.isnan(peak[80:90, 2:20]).all()
    assert np.isfinite(peak[20:70, 30:66]).all()     # the vessel and tissue are measured
    assert np.isfinite(peak[20:70, :30]).mean() > 0.99


@pytest.mark.parametrize("intensity", ["lin", "log"])
def test_quiet_video_keeps_its_anatomy_and_still_drops_text_over_the_vessel(intensity):
    """Noise-free, steady exposure: the tissue never changes, yet its opacity (0) is real and measured; text
    burnt in over the vessel, unchanged while the vessel around it fills and empties, is still overlay."""
    frames, truth = _synthetic(intensity, abc=False, noise=False)
    top = 4095 if intensity == "lin" else 255
    frames[:, 40:44, 44:52] = int(0.9 * top)          # a label over the vessel
    frames[:, 80:90, 2:20] = 0                        # a black box
    peak = peak_opacity(_stack(frames, intensity=intensity))
    assert np.isnan(peak[40:44, 44:52]).all()
    assert np.isnan(peak[80:90, 2:20]).all()
    assert np.isfinite(peak[:, :30]).mean() > 0.9 and np.isfinite(peak[20:36, 30:66]).all()
    assert float(np.nanmax(np.abs(peak[:, :30]))) < 0.01 * truth.max()
    # Its shape, what sizing reads (half-height edges, ratios): noise-free, the identical pulses of the bolus's
    # plateau are one distinct frame, so the peak window also takes in the ramps (its level read 73%).
    ratio = peak[20:36, 41:55] / truth[20:36, 41:55]
    assert float(np.std(ratio)) < 0.02 * float(np.mean(ratio))


def test_bad_input():
    frames, _ = _synthetic()
    with pytest.raises(ValueError, match="identical"):
        peak_opacity(_stack(np.repeat(frames[:1], 6, axis=0)))
    with pytest.raises(ValueError, match="FrameStack"):
        peak_opacity(frames)
    with pytest.raises(ValueError, match="window_s"):
        peak_opacity(_stack(frames), window_s=-1)


@pytest.mark.parametrize("noise", ["poisson", "none"])
@pytest.mark.parametrize("intensity", ["lin", "log"])
def test_phantom_peak_matches_truth_opacity(intensity, noise):
    """Also noise-free: every pixel off the vessel is then unchanged through the run (display video lost 89% of
    its pixels, and every station of the vein, as overlay)."""
    cfg = PhantomConfig(size=(256, 256), intensity=intensity, seed=3, xray_s=4.0, inject_at_s=0.5,
                        lih_before_s=0.3, diameter_px=12.0, noise=noise)
    run = render_run(cfg)
    peak = peak_opacity(_stack(run.frames, run.fps, intensity))
    # At the bolus peak (concentration 1 everywhere, no dispersion) opacity = mu * L in ln units.
    scale = 1.0 if intensity == "lin" else run.truth.display_gain
    truth = cfg.mu_iodine * run.truth.scene.path_length_map() * scale
    vessel = truth > 0
    ok = vessel & np.isfinite(peak)
    assert ok.sum() > 0.9 * vessel.sum()
    assert np.nansum(peak[ok]) / truth[ok].sum() == pytest.approx(1.0, abs=0.03)
    assert abs(float(np.nanmean(peak[~vessel]))) < 0.02 * truth.max()
