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


# --- Registration on the anatomy of the mask images -------------------------------------------------------------

SIZE = 512


def anatomy_mask(shift=(0.0, 0.0), seed=0, size=SIZE, gain=1.0, offset=0.0, tilt=0.0, noise=0.004, noise_seed=None):
    """A contrast-free mask image in log units: bones (ellipses with soft edges) and soft-tissue texture that move
    with the patient (``shift``, exact to the sub-pixel), under what differs between runs without the patient
    moving: the exposure (``offset``), a heel-effect gradient (``tilt``), the kV (``gain``) and quantum noise.
    NaN outside a static circular field and under a static burnt-in text box."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    u, v = xx - shift[0], yy - shift[1]
    mu = 0.3 * ((u - size / 2) / size) ** 2
    for _ in range(10):
        cx, cy = rng.uniform(-0.1, 1.1, 2) * size
        ax, ay = rng.uniform(0.06, 0.25, 2) * size
        rot = rng.uniform(0, np.pi)
        a = ((u - cx) * np.cos(rot) + (v - cy) * np.sin(rot)) / ax
        b = (-(u - cx) * np.sin(rot) + (v - cy) * np.cos(rot)) / ay
        edge = (1.0 - np.sqrt(a * a + b * b)) * min(ax, ay) / 2.0       # ~ px inside the rim
        mu += rng.uniform(0.1, 0.3) * (0.5 + 0.5 * np.tanh(edge))
    for _ in range(40):
        k = 2 * np.pi / rng.uniform(8.0, 60.0)
        th = rng.uniform(0, 2 * np.pi)
        mu += 0.01 * np.cos(k * (u * np.cos(th) + v * np.sin(th)) + rng.uniform(0, 2 * np.pi))
    log = 7.5 + offset + tilt * (yy / size) - gain * mu
    log += np.random.default_rng(noise_seed if noise_seed is not None else seed + 1000).normal(0, noise, log.shape)
    outside = (xx - size / 2 + 0.5) ** 2 + (yy - size / 2 + 0.5) ** 2 > (0.49 * size) ** 2
    log[outside] = np.nan
    log[20:44, 150:330] = np.nan       # burnt-in text
    return log.astype(np.float32)


def vessel_peak(shift=(0.0, 0.0), thrombi=(), k=0.05, seed=0, points=None, size=SIZE):
    """A peak-opacity image of one vein (tests/test_clearance.py's renderer), field and text as the masks."""
    if points is None:
        ys = np.linspace(0.95 * size, 0.05 * size, 24)
        points = np.column_stack([0.45 * size + 0.1 * size * np.sin(2 * np.pi * (ys / size) * 1.1), ys])
    img, _ = synthetic_vessel(size=(size, size), diameter=16.0, k=k, thrombi=thrombi, shift=shift, noise=0.005,
                              seed=seed, points=points)
    yy, xx = np.mgrid[0:size, 0:size]
    img[(xx - size / 2 + 0.5) ** 2 + (yy - size / 2 + 0.5) ** 2 > (0.49 * size) ** 2] = np.nan
    img[20:44, 150:330] = np.nan
    return img


def run_pair(shift, anatomy_seed=3, **post):
    """Baseline and post run (peak, mask) of one patient: the post run moved by ``shift``, with 40% weaker
    contrast, the thrombus mostly removed, another exposure, kV and heel gradient."""
    base = vessel_peak(thrombi=[(0.3, 0.5, 0.6, "side")], seed=1), anatomy_mask(seed=anatomy_seed)
    post_peak = post.pop("peak", None)
    if post_peak is None:
        post_peak = vessel_peak(shift, thrombi=[(0.35, 0.4, 0.15, "side")], k=0.03, seed=2)
    moved = anatomy_mask(shift, seed=anatomy_seed, gain=0.85, offset=-0.3, tilt=0.15, noise_seed=7, **post)
    return base, (post_peak, moved)


@pytest.mark.parametrize("shift", [(160.0, 0.0), (-160.0, 37.5), (0.0, -160.0), (120.25, -120.75),
                                   (-119.6, 121.3), (3.3, -2.7), (-150.5, -150.5)])
def test_anatomy_recovers_shifts_up_to_160_px(shift):
    (pa, ma), (pb, mb) = run_pair(shift)
    reg = register(pa, pb, fixed_mask=ma, moving_mask=mb)
    assert reg.basis == "anatomy"
    assert reg.dx == pytest.approx(shift[0], abs=0.5) and reg.dy == pytest.approx(shift[1], abs=0.5)
    assert reg.score > 0.7 and reg.residual < 0.5
    assert reg.shift == (reg.dx, reg.dy)


def test_anatomy_wins_over_a_parallel_vein():
    """The post run filled the parallel vein 45 px beside the baseline's: the vessel alone pairs the two veins,
    the anatomy does not."""
    shift = (-60.0, 100.5)
    ys = np.linspace(0.95 * SIZE, 0.05 * SIZE, 24)
    line = np.column_stack([0.4 * SIZE + 0.05 * SIZE * np.sin(2 * np.pi * ys / SIZE), ys])
    other = vessel_peak(shift, points=line + [45.0, 0.0], k=0.04, seed=2)
    (pa, ma), (pb, mb) = run_pair(shift, peak=other)
    pa = vessel_peak(points=line, seed=1)
    alone = register(pa, pb)
    assert abs(alone.dx - shift[0]) > 20            # the trap is real
    reg = register(pa, pb, fixed_mask=ma, moving_mask=mb)
    assert reg.basis == "anatomy"
    assert reg.dx == pytest.approx(shift[0], abs=0.5) and reg.dy == pytest.approx(shift[1], abs=0.5)


def test_vein_moving_otherwise_than_the_bone_refines_the_shift():
    """A vein at another depth than the bone moves a few px more (parallax): the vessel refines the shift."""
    shift, extra = (90.0, -40.0), (3.0, -2.5)
    peak = vessel_peak((shift[0] + extra[0], shift[1] + extra[1]), k=0.04, seed=2)
    (pa, ma), (pb, mb) = run_pair(shift, peak=peak)
    pa = vessel_peak(seed=1)
    reg = register(pa, pb, fixed_mask=ma, moving_mask=mb)
    assert reg.basis == "anatomy"
    assert reg.dx == pytest.approx(shift[0] + extra[0], abs=1.0)
    assert reg.dy == pytest.approx(shift[1] + extra[1], abs=1.0)


def test_identical_runs_with_masks():
    (pa, ma), _ = run_pair((0.0, 0.0))
    reg = register(pa, pa, fixed_mask=ma, moving_mask=ma)
    assert (reg.dx, reg.dy) == (0.0, 0.0) and reg.basis == "anatomy"
    assert reg.score == pytest.approx(1.0) and reg.residual == pytest.approx(0.0, abs=1e-3)


def test_unrelated_runs_score_low_with_high_residual():
    (pa, ma), _ = run_pair((0.0, 0.0), anatomy_seed=3)
    _, (pb, mb) = run_pair((0.0, 0.0), anatomy_seed=11,
                           peak=vessel_peak(points=np.array([[40.0, 100.0], [256.0, 300.0], [480.0, 180.0]]), seed=5))
    reg = register(pa, pb, fixed_mask=ma, moving_mask=mb)
    assert reg.score < 0.3 and reg.residual > 0.8


def test_masks_without_anatomy_fall_back_to_the_vessel():
    """Flat masks (only noise, exposure and a smooth gradient): nothing to localise, the vessel decides."""
    shift = (-35.0, 22.5)
    rng = np.random.default_rng(0)
    yy = np.mgrid[0:SIZE, 0:SIZE][0] / SIZE
    ma = (7.0 + 0.2 * yy + rng.normal(0, 0.004, (SIZE, SIZE))).astype(np.float32)
    mb = (6.8 + 0.3 * yy + rng.normal(0, 0.004, (SIZE, SIZE))).astype(np.float32)
    pa, pb = vessel_peak(seed=1), vessel_peak(shift, seed=2)
    reg = register(pa, pb, fixed_mask=ma, moving_mask=mb)
    assert reg.basis == "vessel"
    assert reg.dx == pytest.approx(shift[0], abs=1.0) and reg.dy == pytest.approx(shift[1], abs=1.0)
    assert reg == register(pa, pb)


def test_nothing_to_match_scores_zero():
    """The two runs' measured fields never overlap by the minimum share within the search: score 0."""
    (pa, ma), (pb, mb) = run_pair((0.0, 0.0))
    pa, ma, pb, mb = pa.copy(), ma.copy(), pb.copy(), mb.copy()
    pa[:, 100:] = ma[:, 100:] = np.nan
    pb[:, :400] = mb[:, :400] = np.nan
    for kw in ({}, dict(fixed_mask=ma, moving_mask=mb)):
        reg = register(pa, pb, **kw)
        assert reg.score == 0.0 and reg.residual == 1.0


def test_small_overlap_is_not_a_match():
    """A 160 px search on a small image: shifts whose common field is under the minimum share are not
    considered, so the best match of a 200 px image is never found in a sliver at its edge."""
    (pa, ma), (pb, mb) = run_pair((150.0, 150.0))
    reg = register(pa[:200, :200], pb[:200, :200], fixed_mask=ma[:200, :200], moving_mask=mb[:200, :200])
    assert reg.score == 0.0 or (200 - abs(reg.dx)) * (200 - abs(reg.dy)) >= 0.25 * 200 * 200


def test_mask_arguments_checked():
    (pa, ma), (pb, mb) = run_pair((0.0, 0.0))
    with pytest.raises(ValueError, match="both masks"):
        register(pa, pb, fixed_mask=ma)
    with pytest.raises(ValueError, match="masks of shape"):
        register(pa, pb, fixed_mask=ma[:100], moving_mask=mb[:100])
    with pytest.raises(TypeError):
        register(pa, pb, ma, mb)          # masks are keyword-only: a positional third argument is not a mask
