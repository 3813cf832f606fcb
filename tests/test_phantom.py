"""The phantom's images agree with its own ground truth, and the truth with the geometry it claims."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from core.sources.phantom.config import PhantomConfig
from core.sources.phantom.geometry import ThrombusSegment, lens_area, path_length, solve_thrombus_radius
from core.sources.phantom.render import render_run
from core.sources.phantom.video import PhantomVideo
from firmware_bridge.scenarios import PROCEDURE, ScriptedRun

# Small and short: every test here renders in well under a second.
SMALL = PhantomConfig(size=(128, 128), diameter_px=10.0, xray_s=3.0, lih_before_s=0.2, lih_after_s=0.2,
                      inject_at_s=0.3, bolus_b_s=0.25, bolus_speed_px_s=150.0)
CLEAN = replace(SMALL, noise="none", abc_start=1.0)


@pytest.fixture(scope="module")
def lin_clean():
    return render_run(CLEAN)


@pytest.fixture(scope="module")
def log_clean():
    return render_run(replace(CLEAN, intensity="log"))


def _vessel_roi(truth, frac=0.5, half=6):
    """An (x, y, w, h) box around the centreline station at ``frac`` of the analysed range."""
    s0, s1 = truth.scene.analysed_s
    return truth.scene.roi_at(s0 + frac * (s1 - s0), half)


# ------------------------------------------------------------------------------------------ config

@pytest.mark.parametrize("kwargs", [
    dict(size=(16, 16)), dict(intensity="raw"), dict(noise="gauss"), dict(fps=0.0), dict(pulse_rate=60.0),
    dict(diameter_px=200.0), dict(thrombus_fraction=1.5), dict(shift_px=(49.0, 0.0)),
    dict(shift_px=(float("nan"), 0.0)), dict(i0=-1.0), dict(xray_s=float("inf")), dict(lih_before_s=-0.1),
    dict(inject_at_s=float("nan")), dict(abc_start=0.0), dict(supersample=0), dict(vessel_points=((0.5, 0.5),)),
    dict(segments=("not a segment",)), dict(bolus_speed_px_s=0.0), dict(wall_offset=1.0),
    dict(size=(128.0, 128)), dict(size=128), dict(seed=-1), dict(fps="30"), dict(shift_px=("1", 0.0)),
    dict(inject_at_s="soon"), dict(drift_px_s=(1.0,)),
])
def test_bad_config_is_rejected_with_a_message(kwargs):
    with pytest.raises(ValueError, match=r"\w"):
        PhantomConfig(**kwargs)


@pytest.mark.parametrize("args", [(0.5, 0.4, 0.3), (0.1, 0.2, 1.2), (0.1, 0.2, 0.3, 0.0, -1.0)])
def test_bad_segment_is_rejected(args):
    with pytest.raises(ValueError):
        ThrombusSegment(*args)


def test_bad_roi_is_rejected(lin_clean):
    for roi in [(0, 10, 10, -5), (0, 10, 0, 5), (0, 0, 500, 10), (0, -1, 5, 6), (120, 0, 10, 5), (0, 5, 0), "roi",
                (0.5, 0, 5, 5)]:
        with pytest.raises(ValueError):
            lin_clean.truth.truth_tdc(roi, np.array([0.0]))


# ------------------------------------------------------------------------------------------ image vs model

def test_linear_log_opacity_matches_the_model(lin_clean):
    run, truth = lin_clean, lin_clean.truth
    mask = run.frames[0].astype(float)          # the held contrast-free image before the run
    field = mask > 0
    peak_seen = 0.0
    for k in range(0, len(truth.pulse_times_s), 5):
        j = truth.xray_on_frame + int(np.argmax(truth.frame_pulse[truth.xray_on_frame:] == k))
        frame = run.frames[j].astype(float)
        measured = np.zeros_like(mask)
        measured[field] = np.log(mask[field]) - np.log(frame[field])
        model = truth.opacity(truth.pulse_times_s[k] - truth.run_start_s)
        # 12-bit rounding of two frames at a few hundred DN and up: a few 1e-3 in ln.
        assert np.max(np.abs(measured - model)) < 4e-3
        peak_seen = max(peak_seen, model.max())
    assert peak_seen > 0.2   # the bolus really passed, so the comparison had something to compare


def test_display_video_opacity_is_proportional_to_iodine(log_clean):
    run, truth = log_clean, log_clean.truth
    mask = run.frames[0].astype(float)
    k = int(np.argmax([truth.opacity(t - truth.run_start_s).sum() for t in truth.pulse_times_s]))
    j = truth.xray_on_frame + int(np.argmax(truth.frame_pulse[truth.xray_on_frame:] == k))
    model = truth.opacity(truth.pulse_times_s[k] - truth.run_start_s)
    vessel = model > 0.02
    diff = mask - run.frames[j].astype(float)
    # Each frame is rounded to whole levels: at most one level apart from gain * opacity.
    assert np.max(np.abs(diff[vessel] - truth.display_gain * model[vessel])) <= 1.0 + 1e-9
    slope = np.sum(diff[vessel] * model[vessel]) / np.sum(model[vessel] ** 2)
    assert slope == pytest.approx(truth.display_gain, rel=0.02)
    assert np.all(diff[~vessel & (model == 0) & (mask > 0)] == 0)


def test_contrast_makes_display_darker_and_linear_counts_lower(lin_clean, log_clean):
    for run in (lin_clean, log_clean):
        t = run.truth
        roi = _vessel_roi(t)
        curve = t.truth_tdc(roi, t.frame_times_s - t.run_start_s)
        j = int(np.argmax(curve))
        x, y, w, h = roi
        assert run.frames[j, y:y + h, x:x + w].mean() < run.frames[0, y:y + h, x:x + w].mean() - 2


# ------------------------------------------------------------------------------------------ timing truth

def test_truth_tdc_is_the_mean_of_the_opacity_image(lin_clean):
    t = lin_clean.truth
    roi = _vessel_roi(t, 0.3)
    times = np.array([0.0, 0.7, 1.1, 1.6, 2.4])
    x, y, w, h = roi
    direct = [t.opacity(s)[y:y + h, x:x + w].mean() for s in times]
    np.testing.assert_allclose(t.truth_tdc(roi, times), direct, rtol=1e-9, atol=1e-12)


def test_truth_tdc_matches_the_rendered_noise_free_frames(lin_clean):
    run, t = lin_clean, lin_clean.truth
    roi = _vessel_roi(t, 0.6)
    x, y, w, h = roi
    mask = np.log(run.frames[0, y:y + h, x:x + w].astype(float))
    js = np.flatnonzero(t.is_new_pulse)
    measured = [(mask - np.log(run.frames[j, y:y + h, x:x + w].astype(float))).mean() for j in js]
    expected = t.truth_tdc(roi, t.pulse_times_s - t.run_start_s)
    np.testing.assert_allclose(measured, expected, atol=1e-3)
    assert max(expected) > 0.05


def _gamma_root(a, b, level, lo, hi):
    """tau in (lo, hi) where tau^a exp(-tau/b) / peak crosses ``level`` (bisection, independent of the phantom)."""
    peak = (a * b) ** a * math.exp(-a)
    f = lambda x: x ** a * math.exp(-x / b) / peak - level  # noqa: E731
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if (f(lo) < 0) == (f(mid) < 0):
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def test_timing_truth_follows_the_domain_definitions_on_one_pixel():
    # One pixel sees c(s, t) scaled: its timing is the gamma variate's, shifted by the transit to s.
    run = render_run(replace(CLEAN, xray_s=4.0))
    t = run.truth
    s_map = t.scene.arc_length_map()
    y, x = np.argwhere(t.scene.path_length_map(clean=True) > 0)[len(np.argwhere(s_map > 0)) // 2]
    timing = t.truth_timing((x, y, 1, 1))
    b = t.bolus
    shift = b.t0_s + s_map[y, x] / b.speed_px_s - t.run_start_s   # tau = 0, from the run's first frame
    ab = b.a * b.b_s
    assert timing.peak_s == pytest.approx(shift + ab, abs=1e-3)
    assert timing.arrival_s == pytest.approx(shift + _gamma_root(b.a, b.b_s, 0.1, 0.0, ab), abs=1.5e-3)
    assert timing.washout_s == pytest.approx(shift + _gamma_root(b.a, b.b_s, 0.5, ab, 20 * ab), abs=1.5e-3)
    assert timing.injection_delay_s == pytest.approx(CLEAN.inject_at_s)


def test_timing_truth_on_a_roi_matches_definitions_on_its_curve(lin_clean):
    t = lin_clean.truth
    roi = _vessel_roi(t, 0.5)
    timing = t.truth_timing(roi)
    times = np.arange(0.0, t.run_end_s - t.run_start_s + 5e-4, 1e-3)
    curve = t.truth_tdc(roi, times)
    peak = curve.max()
    assert timing.peak_opacity == pytest.approx(peak)
    assert timing.peak_s == pytest.approx(times[np.argmax(curve)])
    at_arrival = curve[np.isclose(times, timing.arrival_s)][0]
    assert curve[times < timing.arrival_s - 1e-9].max(initial=0) < 0.1 * peak <= at_arrival
    after = (times > timing.peak_s) & (times < timing.washout_s - 1e-9)
    assert curve[after].min() > 0.5 * peak >= curve[np.isclose(times, timing.washout_s)][0]
    # later stations see the bolus later: it travels along the vein
    assert t.truth_timing(_vessel_roi(t, 0.9)).arrival_s > t.truth_timing(_vessel_roi(t, 0.1)).arrival_s + 0.2


def test_no_injection_means_no_contrast_and_no_timing():
    run = render_run(replace(CLEAN, inject_at_s=None))
    t = run.truth
    assert t.truth_timing(_vessel_roi(t)) .peak_s is None
    assert np.all(run.frames[t.xray_on_frame:] == run.frames[0])


def test_contrast_already_present_at_the_first_frame():
    for cfg in (replace(CLEAN, inject_at_s=-1.0), replace(CLEAN, inject_at_s=None, residual_contrast=0.5)):
        t = render_run(cfg).truth
        assert t.truth_tdc(_vessel_roi(t), np.array([0.0]))[0] > 0.02


# ------------------------------------------------------------------------------------------ burden truth

def _raster_burden(R, dc, zc, rt, n=1201):
    """(thrombus fraction, filled fraction) of the lumen by counting grid points: no formula shared."""
    g = np.linspace(-R, R, n)
    d, z = np.meshgrid(g, g)
    lumen = d * d + z * z <= R * R
    clot = lumen & ((d - dc) ** 2 + (z - zc) ** 2 <= rt * rt)
    return clot.sum() / lumen.sum(), (lumen & ~clot).sum() / lumen.sum()


def test_burden_truth_matches_brute_force_integration(lin_clean):
    scene = lin_clean.truth.scene
    s_all = scene.stations_s
    checked = 0
    for i in np.linspace(0, len(s_all) - 1, 61).astype(int):
        R, dc, zc, rt = scene.cross_section(s_all[i])
        clot, filled = _raster_burden(R, dc, zc, rt)
        assert scene.stations_burden[i] == pytest.approx(clot, abs=4e-3)
        # the chord formula integrates to the same filled area (what videodensitometry measures)
        dd = np.linspace(-R, R, 20001)
        area = np.trapezoid(path_length(dd, R, dc, zc, rt), dd)
        assert area / (math.pi * R * R) == pytest.approx(filled, abs=4e-3)
        checked += clot > 0.05
    assert checked >= 5   # the sweep really crossed thrombus


def test_segment_and_overall_burden_are_volume_fractions(lin_clean):
    scene = lin_clean.truth.scene
    s, b = scene.stations_s, scene.stations_burden
    for seg in scene.segments:
        inside = (s >= seg.s_start) & (s <= seg.s_end)
        assert seg.burden == pytest.approx(b[inside].mean(), abs=0.01)
        assert 0 < seg.burden < seg.peak_burden
    s0, s1 = scene.analysed_s
    inside = (s >= s0) & (s <= s1)
    assert scene.burden == pytest.approx(b[inside].mean(), abs=0.01)
    # the plateau reaches the scripted burden exactly
    for seg_cfg, seg in zip(CLEAN.segments, scene.segments):
        assert seg.peak_burden == pytest.approx(seg_cfg.burden * CLEAN.thrombus_fraction, abs=1e-9)


def test_projected_image_carries_the_truth_burden(lin_clean):
    # Sum of filled path over a stretch of vessel pixels = filled lumen volume: the image agrees with the truth.
    scene = lin_clean.truth.scene
    s_map = scene.arc_length_map()
    L, Lc = scene.path_length_map(), scene.path_length_map(clean=True)
    for seg in scene.segments:
        sel = (s_map >= seg.s_start) & (s_map <= seg.s_end)
        image_burden = 1 - L[sel].sum() / Lc[sel].sum()
        assert image_burden == pytest.approx(seg.burden, abs=0.01)
        # and the clean lumen volume matches pi R^2 per px of length
        R = scene.diameter_px / 2
        assert Lc[sel].sum() == pytest.approx(math.pi * R * R * (seg.s_end - seg.s_start), rel=0.03)


def test_thrombus_scales_with_fraction_and_vanishes_at_zero():
    full = render_run(replace(CLEAN, xray_s=0.5)).truth.scene
    part = render_run(replace(CLEAN, xray_s=0.5, thrombus_fraction=0.4)).truth.scene
    none = render_run(replace(CLEAN, xray_s=0.5, thrombus_fraction=0.0)).truth.scene
    assert part.burden == pytest.approx(0.4 * full.burden, rel=1e-9)
    assert none.burden == 0.0 and all(seg.burden == 0.0 for seg in none.segments)
    np.testing.assert_array_equal(none.path_length_map(), none.path_length_map(clean=True))
    assert (full.path_length_map() < full.path_length_map(clean=True) - 1e-9).any()


def test_partial_depth_thrombus_shortens_the_path_without_a_hole(lin_clean):
    scene = lin_clean.truth.scene
    seg = next(s for s in scene.segments if s.name == "iliac")      # anterior wall, 90 deg
    s_mid = 0.5 * (seg.s_start + seg.s_end)
    R, dc, zc, rt = scene.cross_section(s_mid)
    d = np.linspace(-0.95 * R, 0.95 * R, 101)
    L, Lc = path_length(d, R, dc, zc, rt), path_length(d, R)
    assert np.all(L > 0) and np.all(L <= Lc + 1e-12)     # never a hole, never longer than the lumen
    assert np.count_nonzero(L < Lc - 0.1) > len(d) // 2     # but shorter across most of the width


def test_station_normals_point_to_the_positive_d_side(lin_clean):
    # The femoral thrombus sits on the +d wall (angle 20 deg): the path is shorter on the normal's side.
    scene = lin_clean.truth.scene
    seg = next(s for s in scene.segments if s.name == "femoral")
    L = scene.path_length_map()
    R = scene.diameter_px / 2
    k = int(np.searchsorted(scene.stations_s, 0.5 * (seg.s_start + seg.s_end)))
    xy, n = scene.stations_xy[k], scene.stations_normal[k]
    plus = L[tuple(np.rint(xy + 0.6 * R * n)[::-1].astype(int))]
    minus = L[tuple(np.rint(xy - 0.6 * R * n)[::-1].astype(int))]
    assert plus < 0.5 * minus
    np.testing.assert_allclose(np.hypot(*scene.stations_normal.T), 1.0)


def test_roi_at_centres_a_box_on_the_vessel(lin_clean):
    scene = lin_clean.truth.scene
    x, y, w, h = scene.roi_at(80.0, half=4)
    assert (w, h) == (8, 8)
    assert scene.path_length_map(clean=True)[y:y + h, x:x + w].max() > 0.9 * scene.diameter_px
    for bad in [(-1e6, 4), (1e6, 4), (80.0, 0), (80.0, 2.5), ("80", 4)]:
        with pytest.raises(ValueError):
            scene.roi_at(*bad)


def test_thrombus_geometry_helpers():
    R = 5.0
    assert lens_area(R, np.array([0.0]), np.array([2.0]))[0] == pytest.approx(math.pi * 4)
    assert lens_area(R, np.array([8.0]), np.array([2.0]))[0] == 0.0
    targets = np.array([0.0, 0.1, 0.5, 0.9, 1.0])
    rt = solve_thrombus_radius(R, 0.85 * R, targets)
    np.testing.assert_allclose(lens_area(R, 0.85 * R, rt) / (math.pi * R * R), targets, atol=1e-9)


# ------------------------------------------------------------------------------------------ video structure

@pytest.mark.parametrize("fps, rate, repeats", [(30.0, 15.0, 2), (30.0, 7.5, 4), (30.0, 3.75, 8),
                                                 (30.0, 30.0, 1), (60.0, 15.0, 4)])
def test_pulses_repeat_on_the_video_line(fps, rate, repeats):
    run = render_run(replace(SMALL, fps=fps, pulse_rate=rate, xray_s=1.1, text=False))
    t, f = run.truth, run.frames
    on, off = t.xray_on_frame, t.xray_off_frame
    news = np.flatnonzero(t.is_new_pulse)
    assert news[0] == on and len(news) == len(t.pulse_times_s)
    assert np.all(np.diff(news) == repeats)
    for j in range(on + 1, off):
        same = np.array_equal(f[j], f[j - 1])
        assert same != t.is_new_pulse[j], j   # repeats are identical, new pulses carry new noise
    assert t.pulse_rate == rate and run.fps == fps
    np.testing.assert_allclose(t.frame_times_s[news], t.pulse_times_s)


def test_last_image_hold_before_and_after():
    run = render_run(replace(SMALL, lih_before_s=0.3, lih_after_s=0.4))
    t, f = run.truth, run.frames
    assert t.xray_on_frame == 9 and len(f) - t.xray_off_frame == 12
    assert all(np.array_equal(f[j], f[0]) for j in range(t.xray_on_frame))
    assert all(np.array_equal(f[j], f[t.xray_off_frame - 1]) for j in range(t.xray_off_frame, len(f)))
    assert not np.array_equal(f[t.xray_on_frame], f[0])
    assert not t.xray_on[: t.xray_on_frame].any() and t.xray_on[t.xray_on_frame:t.xray_off_frame].all()
    assert not t.xray_on[t.xray_off_frame:].any()


@pytest.mark.parametrize("intensity", ["lin", "log"])
def test_collimator_outside_is_black_and_text_sits_outside_the_field(intensity):
    run = render_run(replace(SMALL, intensity=intensity, xray_s=0.3, counter=True))
    t = run.truth
    cx, cy, r = t.collimator
    yy, xx = np.mgrid[0:128, 0:128]
    outside = (xx - cx) ** 2 + (yy - cy) ** 2 > r * r
    text = np.zeros((128, 128), dtype=bool)
    for x, y, w, h in t.text_boxes:
        text[y:y + h, x:x + w] = True
        assert outside[y:y + h, x:x + w].all()
    assert np.all(run.frames[:, outside & ~text] == 0)
    assert np.all(run.frames[:, ~outside] > 0)
    if intensity == "log":
        assert len(t.text_boxes) == 4 and t.counter_box in t.text_boxes and run.frames[0][text].max() == 230
    else:
        assert t.text_boxes == () and t.counter_box is None   # raw detector data carries no overlay


@pytest.mark.parametrize("intensity, top", [("lin", 4095), ("log", 255)])
def test_default_exposure_neither_clips_nor_underflows(intensity, top):
    # Clipping would break opacity proportionality: the default dose must sit inside the output range.
    run = render_run(replace(SMALL, intensity=intensity, xray_s=1.0, inject_at_s=-0.5, text=False))
    t = run.truth
    cx, cy, r = t.collimator
    yy, xx = np.mgrid[0:128, 0:128]
    inside = run.frames[:, (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r]
    assert inside.min() > 0.1 * top and inside.max() < 0.9 * top


def test_counter_changes_once_a_second_and_only_in_its_box():
    run = render_run(replace(SMALL, intensity="log", counter=True, xray_s=2.5, noise="none", abc_start=1.0,
                             inject_at_s=None))
    t = run.truth
    x, y, w, h = t.counter_box
    changes = np.flatnonzero(np.diff(t.counter_values)) + 1
    np.testing.assert_allclose(t.frame_times_s[changes] - t.run_start_s, [1.0, 2.0])
    masked = run.frames.copy()
    masked[:, y:y + h, x:x + w] = 0
    assert np.all(masked[t.xray_on_frame:] == masked[t.xray_on_frame])
    assert not np.array_equal(run.frames[changes[0]], run.frames[changes[0] - 1])


def test_abc_settling_ramps_the_exposure():
    run = render_run(replace(SMALL, noise="none", inject_at_s=None, abc_start=0.6))
    t = run.truth
    assert t.exposure[0] == pytest.approx(0.6) and t.exposure[-1] == pytest.approx(1.0, abs=1e-6)
    assert np.all(np.diff(t.exposure) > 0)
    means = [run.frames[j].astype(float).mean() for j in np.flatnonzero(t.is_new_pulse)[:6]]
    assert np.all(np.diff(means) > 0)


def test_poisson_noise_level_is_quantum_limited():
    run = render_run(replace(SMALL, inject_at_s=None, abc_start=1.0, xray_s=0.2, i0=2000.0))
    t = run.truth
    a, b = (run.frames[j, 50:80, 20:40].astype(float) for j in np.flatnonzero(t.is_new_pulse)[:2])
    var = np.var(a - b) / 2
    quanta = 0.5 * (a + b).mean() / t.dn_per_quantum
    # DN = quanta * g: var(DN) = g^2 * quanta (plus 1/12 rounding)
    assert var == pytest.approx(t.dn_per_quantum ** 2 * quanta + 1 / 12, rel=0.15)


def test_same_seed_same_frames_other_seed_other_noise():
    cfg = replace(SMALL, xray_s=0.3)
    a, b, c = render_run(cfg), render_run(cfg), render_run(replace(cfg, seed=1))
    np.testing.assert_array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, c.frames)


# ------------------------------------------------------------------------------------------ shift

def test_integer_shift_moves_everything_by_the_stated_amount():
    base = render_run(replace(CLEAN, xray_s=1.5, collimator=False, text=False))
    moved = render_run(replace(CLEAN, xray_s=1.5, collimator=False, text=False, shift_px=(7.0, -5.0)))
    assert moved.truth.shift_px == (7.0, -5.0)
    np.testing.assert_allclose(moved.truth.centreline_xy - base.truth.centreline_xy,
                               np.broadcast_to([7.0, -5.0], base.truth.centreline_xy.shape), atol=1e-9)
    j = base.truth.xray_off_frame - 1
    # interior: frame content at (y, x) moves to (y - 5, x + 7)
    np.testing.assert_array_equal(moved.frames[j, 20:100, 27:120], base.frames[j, 25:105, 20:113])
    assert moved.truth.burden == base.truth.burden


def test_drift_moves_the_scene_during_the_run():
    cfg = replace(CLEAN, xray_s=1.0, drift_px_s=(6.0, -3.0), residual_contrast=1.0)
    run = render_run(cfg)
    t = run.truth
    dt = t.pulse_times_s - t.run_start_s
    np.testing.assert_allclose(t.pulse_shift_px, np.column_stack([6.0 * dt, -3.0 * dt]))
    # the last pulse is exactly a still scene at that pulse's shift
    k = len(dt) - 1
    still = render_run(replace(cfg, drift_px_s=(0.0, 0.0), shift_px=tuple(t.pulse_shift_px[k])))
    j = t.xray_off_frame - 1
    np.testing.assert_array_equal(run.frames[j], still.frames[j])
    assert not np.array_equal(run.frames[j], render_run(replace(cfg, drift_px_s=(0.0, 0.0))).frames[j])
    with pytest.raises(ValueError):
        PhantomConfig(xray_s=6.0, drift_px_s=(10.0, 0.0))   # would end 60 px away


def test_subpixel_shift_moves_the_vessel_centroid():
    base = render_run(replace(CLEAN, xray_s=0.2)).truth.scene.path_length_map(clean=True)
    moved = render_run(replace(CLEAN, xray_s=0.2, shift_px=(2.5, 0.0))).truth.scene.path_length_map(clean=True)
    rows = slice(40, 90)
    cols = np.arange(128)
    cb = (base[rows] * cols).sum(1) / base[rows].sum(1)
    cm = (moved[rows] * cols).sum(1) / moved[rows].sum(1)
    np.testing.assert_allclose(cm - cb, 2.5, atol=0.05)


# ------------------------------------------------------------------------------------------ live video

VIDEO_CFG = replace(SMALL, intensity="log", noise="none", abc_start=1.0, text=False)


@pytest.fixture(scope="module")
def video():
    return PhantomVideo(VIDEO_CFG)


def test_video_xray_flag_follows_the_timeline(video):
    for t in np.arange(0.0, 50.0, 0.25):
        local = t % 50.0
        expected = any(r.xray_on_s <= local < r.xray_off_s for r in PROCEDURE)
        frame, on = video.frame_at(float(t))
        assert on == expected, t
        assert frame.shape == (128, 128) and frame.dtype == np.uint8
    assert video.frame_at(75.0)[1] == video.frame_at(25.0)[1]   # the procedure repeats


def test_video_is_dark_before_the_first_run_and_holds_the_last_image_after_each(video):
    assert video.frame_at(1.0)[0].max() == 0
    last_fluoro, on = video.frame_at(4.99)
    held, off = video.frame_at(6.5)
    assert on and not off and held is last_fluoro
    assert video.frame_at(50.5)[0] is video.frame_at(43.99)[0]   # previous cycle's completion run, held


def test_video_contrast_rises_only_in_contrast_runs(video):
    truth = video.scene_truth(1)
    roi = _vessel_roi(type("T", (), {"scene": truth})())
    x, y, w, h = roi

    def level(t):
        return video.frame_at(t)[0][y:y + h, x:x + w].astype(float).mean()

    for i, run in enumerate(PROCEDURE):
        start = level(run.xray_on_s + 0.01)
        lows = min(level(t) for t in np.arange(run.xray_on_s, run.xray_off_s, 0.2))
        if run.inject_start_s is None:
            assert lows == start, run
            assert video.timing_truth(i, roi).peak_s is None
        else:
            assert lows < start - 5, run       # display: contrast is darker
            timing = video.timing_truth(i, roi)
            assert timing.arrival_s > run.inject_start_s - run.xray_on_s


def test_video_thrombus_follows_the_scripted_fraction(video):
    base = video.scene_truth(1).burden
    for i, run in enumerate(PROCEDURE):
        assert video.scene_truth(i).burden == pytest.approx(run.thrombus_fraction * base, rel=1e-9)


def test_video_frames_depend_only_on_time():
    v1 = PhantomVideo(replace(SMALL, intensity="lin"))
    v2 = PhantomVideo(replace(SMALL, intensity="lin"))
    times = [10.0, 3.0, 10.03, 24.5, 3.0, 62.0]
    f1 = {t: v1.frame_at(t)[0] for t in times}
    f2 = {t: v2.frame_at(t)[0] for t in reversed(times)}
    for t in times:
        np.testing.assert_array_equal(f1[t], f2[t])
    assert not np.array_equal(v1.frame_at(62.0)[0], v1.frame_at(12.0)[0])   # the next cycle: same pulse, new noise
    a, b = v1.frame_at(10.0)[0], v1.frame_at(10.0 + 1 / 15)[0]
    assert not np.array_equal(a, b)           # a new pulse, new noise
    assert v1.frame_at(10.0)[0] is v1.frame_at(10.03)[0]   # a repeat is the cached pulse
    with pytest.raises(ValueError):
        v1.frame_at(float("nan"))
    with pytest.raises(ValueError):
        v1.frame_at(-1.0)


def test_video_rejects_bad_timelines():
    with pytest.raises(ValueError):
        PhantomVideo(SMALL, timeline=())
    with pytest.raises(ValueError):
        PhantomVideo(SMALL, timeline=(ScriptedRun("fluoro", 5.0, 4.0, None),))
    with pytest.raises(ValueError):
        PhantomVideo(SMALL, timeline=PROCEDURE, period_s=30.0)
    with pytest.raises(ValueError):
        PhantomVideo(SMALL, shifts=((0.0, 0.0),))


def test_video_per_run_shifts():
    shifts = tuple((0.0, 0.0) if i < 3 else (6.0, -4.0) for i in range(len(PROCEDURE)))
    v = PhantomVideo(replace(SMALL, noise="none"), shifts=shifts)
    assert v.scene_truth(4).shift_px == (6.0, -4.0)
    xy = v.scene_truth(1).centreline_xy
    np.testing.assert_allclose(v.scene_truth(4).centreline_xy - xy, np.broadcast_to([6.0, -4.0], xy.shape))


# ------------------------------------------------------------------------------------------ benchmarks
# Skipped by default (pyproject addopts --benchmark-skip); run with --benchmark-only.

@pytest.mark.parametrize("size", [512, 1024])
@pytest.mark.parametrize("noise", ["poisson", "gaussian"])
def test_bench_render_one_pulse(benchmark, size, noise):
    video = PhantomVideo(PhantomConfig(size=(size, size), intensity="log", noise=noise))
    k = iter(range(10**9))
    # each call lands on the next pulse of the baseline venogram: a fresh render, never a cached repeat
    benchmark(lambda: video.frame_at(8.0 + (next(k) % 90) / 15.0))
