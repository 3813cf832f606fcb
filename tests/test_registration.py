"""Registration of a later run to the baseline (core/analysis/registration.py)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from core.analysis.peak import peak_opacity
from core.analysis.registration import register
from core.sources.phantom.config import PhantomConfig
from core.sources.phantom.render import render_run
from core.sources.stacks import FrameStack
from tests.test_clearance import synthetic_vessel


@pytest.mark.parametrize("shift", [(0.0, 0.0), (48.0, -48.0), (-48.0, 30.0), (12.5, 7.25), (-3.3, -40.0), (5.0, 48.0)])
def test_synthetic_shifts_up_to_48_px(shift):
    base, _ = synthetic_vessel(thrombi=[(0.3, 0.5, 0.5, "side")], noise=0.005, seed=1)
    post, _ = synthetic_vessel(thrombi=[(0.3, 0.5, 0.1, "side")], shift=shift, noise=0.005, seed=2)
    reg = register(base, post)
    # Across the vessel (what the densitometry needs) sub-pixel; along it within a pixel.
    assert reg.dx == pytest.approx(shift[0], abs=0.6)
    assert reg.dy == pytest.approx(shift[1], abs=1.0)
    assert reg.score > 0.6


def test_identical_images_register_at_zero_with_full_score():
    base, _ = synthetic_vessel(noise=0.01, seed=3)
    reg = register(base, base)
    assert (reg.dx, reg.dy) == (0.0, 0.0) and reg.score == pytest.approx(1.0)


def test_other_anatomy_scores_low():
    base, _ = synthetic_vessel(noise=0.005, seed=4)
    other, _ = synthetic_vessel(noise=0.005, seed=5, points=np.array([[10.0, 60.0], [128.0, 140.0], [250.0, 100.0]]))
    assert register(base, other).score < 0.3
    rng = np.random.default_rng(6)
    assert register(base, rng.normal(0, 0.005, base.shape)).score < 0.3


def test_static_field_edge_does_not_pull_to_zero():
    """Both runs share the (static) field: NaN outside a circle. The vessel, not the circle, decides."""
    base, _ = synthetic_vessel(noise=0.005, seed=7)
    post, _ = synthetic_vessel(shift=(20.0, -30.0), noise=0.005, seed=8)
    yy, xx = np.mgrid[0:256, 0:256]
    outside = (xx - 127.5) ** 2 + (yy - 127.5) ** 2 > 110 ** 2
    base[outside] = np.nan
    post[outside] = np.nan
    base[~outside] += 0.02       # the measured field sits on a small positive floor (as real peaks do)
    post[~outside] += 0.02
    reg = register(base, post)
    assert reg.dx == pytest.approx(20.0, abs=0.6) and reg.dy == pytest.approx(-30.0, abs=1.0)


def test_straight_vessel_cut_by_the_field_moves_along_itself():
    """A straight vessel, cut by a static circular field: only its thrombus pattern and the anatomy inside
    the common field say how far it moved along itself. The static cut ends must not win."""
    line = np.array([[128.0, 300.0], [128.0, -40.0]])
    yy, xx = np.mgrid[0:256, 0:256]
    outside = (xx - 127.5) ** 2 + (yy - 127.5) ** 2 > 115 ** 2
    thrombi = [(0.35, 0.45, 0.6, "side"), (0.6, 0.65, 0.4, "depth")]
    base, _ = synthetic_vessel(thrombi=thrombi, noise=0.005, seed=9, points=line)
    post, _ = synthetic_vessel(thrombi=thrombi, shift=(6.0, -35.0), noise=0.005, seed=10, points=line)
    base[outside] = np.nan
    post[outside] = np.nan
    reg = register(base, post)
    assert reg.dx == pytest.approx(6.0, abs=0.5) and reg.dy == pytest.approx(-35.0, abs=1.5)


def test_bad_input():
    a, _ = synthetic_vessel()
    with pytest.raises(ValueError, match="same shape"):
        register(a, a[:100])
    with pytest.raises(ValueError, match="small"):
        register(a[:4, :4], a[:4, :4])
    with pytest.raises(ValueError, match="max_shift"):
        register(a, a, max_shift=-1)
    assert register(np.zeros_like(a), a).score == 0.0     # nothing to match: no pairing, no crash


@pytest.mark.parametrize("intensity, shift", [("lin", (40.0, -40.0)), ("log", (-48.0, 17.5))])
def test_phantom_runs(intensity, shift):
    cfg = PhantomConfig(size=(512, 512), intensity=intensity, noise="gaussian", seed=1, xray_s=4.0,
                        inject_at_s=0.5, lih_before_s=0.3)
    peaks = []
    for c in (cfg, replace(cfg, seed=2, thrombus_fraction=0.3, shift_px=shift)):
        run = render_run(c)
        peaks.append(peak_opacity(FrameStack(run.frames, run.fps, intensity, 12, np.arange(len(run.frames)) / run.fps,
                                             "phantom")))
    reg = register(*peaks)
    assert reg.dx == pytest.approx(shift[0], abs=1.0) and reg.dy == pytest.approx(shift[1], abs=1.0)
    assert reg.score > 0.6
