"""The phantom's detector blur (``psf_px``): applied to the detected quanta, before display video's log, as a
scintillator spreads each photon's light; off by default, so every render without it is unchanged. And the live
pipeline times such a run as one run."""
import math
from dataclasses import replace

import numpy as np
import pytest

from core.sources.phantom.psf import blur
from core.sources.phantom.render import LIN_FULL_SCALE, render_run
from core.sources.phantom.sizing_cases import make_sizing_case
from tests.test_display_gain_live import baseline_run


def _frames(seed: int, intensity: str, psf_px: float) -> tuple[np.ndarray, object]:
    cfg = make_sizing_case(seed, 50.0, intensity, catheter=True).config
    cfg = replace(cfg, noise="none", psf_px=psf_px, xray_s=0.1, lih_before_s=0.0, lih_after_s=0.0)
    run = render_run(cfg)
    return run.frames[-1].astype(np.float64), cfg


@pytest.mark.parametrize("seed", [0, 3])
def test_display_video_is_the_log_of_the_blurred_quanta(seed):
    lin, cfg = _frames(seed, "lin", 1.5)
    log, _ = _frames(seed, "log", 1.5)
    sharp, _ = _frames(seed, "lin", 0.0)
    inside = (lin > 0) & (blur((sharp > 0).astype(float), 1.5) > 0.999)   # in the field, away from the collimator
    quanta = lin / (LIN_FULL_SCALE / cfg.i0)
    offset = 235 - cfg.display_gain * math.log(cfg.i0)
    expected = offset + cfg.display_gain * np.log(np.maximum(quanta, 1.0))
    # The log of the blurred quanta, to the levels' rounding (and the linear counts' at 1 DN).
    assert np.abs(log - expected)[inside].max() < 1.0
    # The linear frame is the sharp one blurred (in counts, to their rounding).
    assert np.abs(lin - blur(sharp, 1.5))[inside].max() < 1.0
    # Not the display levels blurred: that differs by several levels at the catheter's and bones' edges.
    sharp_log, _ = _frames(seed, "log", 0.0)
    assert np.abs(log - blur(sharp_log, 1.5))[inside].max() > 1.5


def test_no_psf_renders_as_before_and_bad_psf_is_refused():
    cfg = make_sizing_case(1, 30.0, "lin").config
    assert cfg.psf_px == 0.0
    for bad in (-0.5, float("nan"), 6.0, "1"):
        with pytest.raises(ValueError, match="psf_px"):
            replace(cfg, psf_px=bad)


@pytest.mark.parametrize("intensity, psf_px", [("log", 1.0), ("log", 1.5), ("lin", 1.0)])
def test_the_live_pipeline_times_a_blurred_run_as_one_run(intensity, psf_px):
    """Under the PSF the steady noise changes a pulse 0.45 levels where the exposure's first pulses changed it
    18, 9.6, 4.3: against their median the steady pulses read as a counter's ticks, and the baseline split in
    two (6 + 81 pulses) with no contrast found."""
    run = baseline_run(intensity, 70.0, psf_px)
    assert run.pulses == 90      # the baseline venogram: 6 s at 15 pulses/s
