"""Frame kernels: the compiled pass against the NumPy reference and against docs/domain.md (opacity, mask).

Each behavioural test runs on both implementations (``impl`` fixture); the agreement tests run the same
frame sequence through both and compare every output. Seeded data only.
"""
from __future__ import annotations

import importlib.machinery
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ext._frames
from core.analysis import kernels, kernels_ref
from core.analysis.kernels import MAX_ROIS, FrameKernel, FrameStats, build_mask

F32 = dict(rtol=1e-5, atol=1e-5)  # float32 opacities summed in different orders


@pytest.fixture(params=["reference", "compiled"])
def impl(request):
    return request.param


def _frames(rng, n, shape, dtype, bits=None):
    top = (1 << bits) if bits else np.iinfo(dtype).max + 1
    return rng.integers(0, top, (n, *shape), dtype=dtype)


def _run(impl, frames, mask=None, **kw):
    """Every FrameStats plus copies of the kernel's arrays after each frame."""
    k = FrameKernel(frames.shape[1:], frames.dtype, impl=impl, **kw)
    if mask is not None:
        k.set_mask(mask)
    out = []
    for i, f in enumerate(frames):
        s = k.process(f, i)
        out.append((s, k.hist.copy(), k.peak.copy(), k.peak_index.copy(),
                    None if k.opacity is None else k.opacity.copy()))
    return out


def _assert_same(a, b):
    for (sa, ha, pa, ia, oa), (sb, hb, pb, ib, ob) in zip(a, b, strict=True):
        assert sa.mad == sb.mad
        assert sa.repeat == sb.repeat
        assert sa.clipped == sb.clipped
        np.testing.assert_allclose(sa.roi_means, sb.roi_means, **F32)
        if math.isnan(sa.mean_opacity):
            assert math.isnan(sb.mean_opacity)
        else:
            assert sa.mean_opacity == pytest.approx(sb.mean_opacity, rel=1e-5, abs=1e-6)
        np.testing.assert_array_equal(ha, hb)
        np.testing.assert_allclose(pa, pb, **F32)
        np.testing.assert_array_equal(ia, ib)
        if oa is not None:
            np.testing.assert_allclose(oa, ob, **F32)


# ---------------------------------------------------------------------------------------------- no fallback

def test_compiled_module_is_the_one_in_use():
    assert ext._frames.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    assert kernels.frame_pass is ext._frames.frame_pass
    assert kernels.mask_mean is ext._frames.mask_mean
    assert kernels.frame_pass is not kernels_ref.frame_pass
    assert FrameKernel((4, 4), np.uint8, "log")._pass is ext._frames.frame_pass
    assert FrameKernel((4, 4), np.uint8, "log", impl="reference")._pass is kernels_ref.frame_pass


# ------------------------------------------------------------------------------ compiled == reference

CASES = [
    # shape, dtype, intensity, bits, crop, rois
    ((1, 1), np.uint8, "log", None, None, [(0, 0, 1, 1)]),
    ((1, 37), np.uint16, "lin", 12, None, [(0, 0, 5, 1), (30, 0, 7, 1)]),
    ((29, 1), np.uint8, "log", None, (0, 3, 1, 20), [(0, 3, 1, 20)]),
    ((37, 53), np.uint16, "lin", 12, (3, 2, 41, 30), [(3, 2, 41, 30), (10, 10, 7, 9), (43, 31, 1, 1)]),
    ((37, 53), np.uint16, "lin", 16, None, []),
    ((64, 67), np.uint8, "log", None, (1, 1, 63, 62), [(i, i, 3, 5) for i in range(1, 33)]),
    ((33, 130), np.uint16, "log", 14, (5, 0, 123, 33), [(5, 0, 123, 33)]),
]


@pytest.mark.parametrize("alpha", [1.0, 0.4])
@pytest.mark.parametrize("shape,dtype,intensity,bits,crop,rois", CASES)
def test_compiled_matches_reference(shape, dtype, intensity, bits, crop, rois, alpha):
    rng = np.random.default_rng(sum(shape) + int(alpha * 10))
    # Values past bits_stored on purpose: clipping must agree too.
    frames = _frames(rng, 7, shape, dtype, None)
    frames[3] = frames[2]  # an exact repeat in the middle
    mask = rng.uniform(0, 300 if dtype == np.uint8 else 5000, shape).astype(np.float32)
    kw = dict(intensity=intensity, crop=crop, rois=rois, bits_stored=bits, peak_alpha=alpha,
              want_opacity=True)
    _assert_same(_run("compiled", frames, mask, **kw), _run("reference", frames, mask, **kw))


@pytest.mark.parametrize("view", ["rows_cols", "column_slice", "reversed"])
@pytest.mark.parametrize("dtype,intensity", [(np.uint8, "log"), (np.uint16, "lin")])
def test_strided_frames_match_contiguous_copies(impl, view, dtype, intensity):
    rng = np.random.default_rng(7)
    big = _frames(rng, 5, (61, 97), dtype)
    take = {"rows_cols": lambda f: f[::2, ::3], "column_slice": lambda f: f[:, 10:50],
            "reversed": lambda f: f[::-1, ::-2]}[view]
    views = [take(f) for f in big]
    assert not views[0].flags.c_contiguous
    copies = np.stack([np.ascontiguousarray(v) for v in views])
    mask = rng.uniform(1, 200, copies.shape[1:]).astype(np.float32)
    kw = dict(intensity=intensity, rois=[(0, 0, 3, 4), (2, 1, 5, 5)], want_opacity=True)

    k = FrameKernel(copies.shape[1:], dtype, impl=impl, **kw)
    k.set_mask(mask)
    got = [(k.process(v, i), k.hist.copy(), k.peak.copy(), k.peak_index.copy(), k.opacity.copy())
           for i, v in enumerate(views)]
    _assert_same(got, _run(impl, copies, mask, **kw))


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_compiled_matches_reference_on_arbitrary_small_inputs(data):
    dtype = data.draw(st.sampled_from([np.uint8, np.uint16]))
    h = data.draw(st.integers(1, 12))
    w = data.draw(st.integers(1, 40))
    cx, cy = data.draw(st.integers(0, w - 1)), data.draw(st.integers(0, h - 1))
    cw, ch = data.draw(st.integers(1, w - cx)), data.draw(st.integers(1, h - cy))
    rois = []
    for _ in range(data.draw(st.integers(0, 4))):
        rx, ry = data.draw(st.integers(cx, cx + cw - 1)), data.draw(st.integers(cy, cy + ch - 1))
        rois.append((rx, ry, data.draw(st.integers(1, cx + cw - rx)),
                     data.draw(st.integers(1, cy + ch - ry))))
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    top = data.draw(st.sampled_from([2, 256, 4096, 65536])) if dtype == np.uint16 else 256
    frames = rng.integers(0, top, (4, h, w)).astype(dtype)
    if data.draw(st.booleans()):
        frames[2] = frames[1]
    mask = rng.uniform(0, top, (h, w)).astype(np.float32)
    kw = dict(intensity=data.draw(st.sampled_from(["lin", "log"])), crop=(cx, cy, cw, ch), rois=rois,
              bits_stored=12 if dtype == np.uint16 and top <= 4096 else None,
              peak_alpha=data.draw(st.sampled_from([1.0, 0.5])), want_opacity=True)
    _assert_same(_run("compiled", frames, mask, **kw), _run("reference", frames, mask, **kw))


# ------------------------------------------------------------------------------------- the definitions

def test_lin_opacity_histogram_roi_and_change_follow_the_definitions(impl):
    rng = np.random.default_rng(11)
    frames = _frames(rng, 3, (40, 50), np.uint16, 12)
    frames[1, 0, :5] = 0  # ln needs the clamp to 1
    mask = rng.uniform(0.5, 4000, (40, 50)).astype(np.float32)
    crop = (4, 3, 40, 30)
    rois = [(4, 3, 40, 30), (10, 5, 6, 7)]
    k = FrameKernel((40, 50), np.uint16, "lin", crop=crop, rois=rois, bits_stored=12,
                    want_opacity=True, impl=impl)
    k.set_mask(mask)
    k.process(frames[0], 0)
    stats = k.process(frames[1], 1)

    x, y, w, h = crop
    f = frames[1, y:y + h, x:x + w].astype(np.float64)
    p = frames[0, y:y + h, x:x + w].astype(np.float64)
    m = mask[y:y + h, x:x + w].astype(np.float64)
    want = np.log(np.maximum(m, 1)) - np.log(np.maximum(f, 1))
    np.testing.assert_allclose(k.opacity, want, rtol=1e-5, atol=2e-6)
    assert stats.mean_opacity == pytest.approx(want.mean(), rel=1e-5)
    assert stats.roi_means[0] == pytest.approx(want.mean(), rel=1e-5)
    assert stats.roi_means[1] == pytest.approx(want[2:9, 6:12].mean(), rel=1e-5)
    assert stats.mad == pytest.approx(np.abs(f - p).mean())
    assert not stats.repeat and stats.clipped == 0
    np.testing.assert_array_equal(k.hist, np.bincount((f.astype(int) >> 4).ravel(), minlength=256))
    assert k.hist.sum() == w * h


def test_log_opacity_is_scaled_difference(impl):
    rng = np.random.default_rng(12)
    frame = _frames(rng, 1, (9, 31), np.uint8)[0]
    mask = rng.uniform(0, 255, (9, 31)).astype(np.float32)
    k = FrameKernel((9, 31), np.uint8, "log", log_scale=0.01, want_opacity=True, impl=impl)
    k.set_mask(mask)
    stats = k.process(frame, 0)
    want = (mask.astype(np.float64) - frame) * 0.01
    np.testing.assert_allclose(k.opacity, want, rtol=1e-5, atol=1e-6)
    assert stats.mean_opacity == pytest.approx(want.mean(), rel=1e-5)
    assert stats.mad == 0.0 and not stats.repeat  # the first frame has nothing to compare with
    np.testing.assert_array_equal(k.hist, np.bincount(frame.ravel(), minlength=256))


def test_peak_is_running_max_and_index_of_first_maximum(impl):
    rng = np.random.default_rng(13)
    frames = _frames(rng, 6, (8, 9), np.uint8)
    frames[4] = frames[2]  # ties with an earlier frame keep the earlier index
    mask = np.full((8, 9), 128, np.float32)
    k = FrameKernel((8, 9), np.uint8, "log", impl=impl)
    k.set_mask(mask)
    assert np.all(k.peak == -np.inf) and np.all(k.peak_index == -1)
    idx = [10, 11, 12, 13, 14, 15]
    for i, f in zip(idx, frames):
        k.process(f, i)
    o = (mask * np.float32(1 / 255)) - frames.astype(np.float32) * np.float32(1 / 255)
    np.testing.assert_allclose(k.peak, o.max(axis=0), **F32)
    np.testing.assert_array_equal(k.peak_index, np.array(idx)[o.argmax(axis=0)])


def test_smoothed_peak_follows_the_recurrence(impl):
    rng = np.random.default_rng(14)
    frames = _frames(rng, 5, (6, 7), np.uint16, 12)
    mask = np.full((6, 7), 3000, np.float32)
    alpha = 0.3
    k = FrameKernel((6, 7), np.uint16, "lin", bits_stored=12, peak_alpha=alpha, impl=impl)
    k.set_mask(mask)
    for i, f in enumerate(frames):
        k.process(f, i)
    o = np.log(3000.0) - np.log(np.maximum(frames.astype(np.float64), 1))
    s = o[0]
    best, best_i = s.copy(), np.zeros((6, 7), int)
    for i in range(1, 5):
        s = alpha * o[i] + (1 - alpha) * s
        best_i[s > best] = i
        best = np.maximum(best, s)
    np.testing.assert_allclose(k.peak, best, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(k.peak_index, best_i)
    # The smoothed peak of noise sits below the plain maximum: that is the point of alpha < 1.
    assert (k.peak <= o.max(axis=0) + 1e-5).all() and (k.peak < o.max(axis=0) - 1e-3).any()


def test_repeated_frame_keeps_peak_and_returns_previous_stats(impl):
    rng = np.random.default_rng(15)
    a, b = _frames(rng, 2, (12, 14), np.uint8)
    k = FrameKernel((12, 14), np.uint8, "log", rois=[(0, 0, 4, 4), (5, 5, 9, 7)], impl=impl)
    k.set_mask(np.full((12, 14), 200, np.float32))
    k.process(a, 0)
    first = k.process(b, 1)
    peak, peak_index, hist = k.peak.copy(), k.peak_index.copy(), k.hist.copy()
    again = k.process(b.copy(), 2)  # an equal frame in another buffer: the pulse shown twice
    assert again.repeat and again.mad == 0.0
    np.testing.assert_array_equal(again.roi_means, first.roi_means)
    assert again.mean_opacity == first.mean_opacity
    assert again.roi_means is not first.roi_means
    np.testing.assert_array_equal(k.peak, peak)
    np.testing.assert_array_equal(k.peak_index, peak_index)
    np.testing.assert_array_equal(k.hist, hist)
    assert not k.process(a, 3).repeat


def test_repeat_after_new_rois_or_mask_is_recomputed(impl):
    rng = np.random.default_rng(16)
    a = _frames(rng, 1, (10, 10), np.uint16, 12)[0]
    k = FrameKernel((10, 10), np.uint16, "lin", bits_stored=12, rois=[(0, 0, 2, 2)], impl=impl)
    k.set_mask(np.full((10, 10), 1000, np.float32))
    k.process(a, 0)
    k.set_rois([(5, 5, 5, 5), (0, 0, 10, 10)])
    s = k.process(a, 1)
    o = np.log(np.float32(1000)) - np.log(np.maximum(a, 1).astype(np.float32))
    assert s.repeat
    np.testing.assert_allclose(s.roi_means, [o[5:, 5:].mean(), o.mean()], **F32)
    k.set_mask(np.full((10, 10), 2000, np.float32))
    s = k.process(a, 2)
    assert s.repeat and s.roi_means[1] == pytest.approx(o.mean() + math.log(2), rel=1e-5)
    # A repeat never feeds the peak, even the first frame after a new mask.
    assert np.all(k.peak_index == -1)
    k.clear_mask()
    s = k.process(a, 3)
    assert s.repeat and np.isnan(s.roi_means).all() and math.isnan(s.mean_opacity)


def test_without_mask_change_and_histogram_still_work(impl):
    rng = np.random.default_rng(17)
    a, b = _frames(rng, 2, (5, 6), np.uint16, 12)
    k = FrameKernel((5, 6), np.uint16, "lin", bits_stored=12, rois=[(1, 1, 2, 2)], want_opacity=True,
                    impl=impl)
    k.process(a, 0)
    s = k.process(b, 1)
    assert s.mad == pytest.approx(np.abs(a.astype(int) - b).mean())
    assert np.isnan(s.roi_means).all() and s.roi_means.shape == (1,) and math.isnan(s.mean_opacity)
    assert np.isnan(k.opacity).all() and np.all(k.peak_index == -1)
    np.testing.assert_array_equal(k.hist, np.bincount((b >> 4).ravel(), minlength=256))


@pytest.mark.parametrize("bits", [12, 16])
def test_all_zero_and_saturated_frames(impl, bits):
    shape = (7, 11)
    mask = np.full(shape, 2000, np.float32)
    k = FrameKernel(shape, np.uint16, "lin", bits_stored=bits, rois=[(0, 0, 11, 7)], impl=impl)
    k.set_mask(mask)
    s = k.process(np.zeros(shape, np.uint16), 0)
    assert s.mean_opacity == pytest.approx(math.log(2000), rel=1e-6)  # frame clamped to 1: ln 1 = 0
    assert k.hist[0] == 77 and s.clipped == 0
    s = k.process(np.full(shape, 65535, np.uint16), 1)
    top = (1 << bits) - 1
    assert s.mean_opacity == pytest.approx(math.log(2000) - math.log(top), rel=1e-5)
    assert s.roi_means[0] == pytest.approx(s.mean_opacity, rel=1e-6)
    assert k.hist[255] == 77
    assert s.clipped == (77 if bits < 16 else 0)
    assert s.mad == 65535.0 and np.isfinite(k.peak).all()


def test_wide_rows_do_not_overflow_the_change_accumulators(impl):
    # The compiled pass sums |frame - prev| in 32-bit blocks of 32768 pixels.
    shape = (2, 70001)
    k = FrameKernel(shape, np.uint16, "lin", impl=impl)
    k.process(np.zeros(shape, np.uint16), 0)
    s = k.process(np.full(shape, 65535, np.uint16), 1)
    assert s.mad == 65535.0 and not s.repeat
    assert k.process(np.full(shape, 65535, np.uint16), 2).repeat
    last = np.full(shape, 65535, np.uint16)
    last[1, -1] = 0  # differs only in the very last pixel
    s = k.process(last, 3)
    assert not s.repeat and s.mad == pytest.approx(65535 / last.size)


def test_uint8_zero_and_saturated(impl):
    k = FrameKernel((3, 4), np.uint8, "log", impl=impl)
    k.set_mask(np.full((3, 4), 100, np.float32))
    assert k.process(np.zeros((3, 4), np.uint8), 0).mean_opacity == pytest.approx(100 / 255)
    s = k.process(np.full((3, 4), 255, np.uint8), 1)
    assert s.mean_opacity == pytest.approx(-155 / 255, rel=1e-6) and s.mad == 255.0
    assert k.hist[255] == 12 and s.clipped == 0


def test_rois_at_the_crop_edges_and_32_rois(impl):
    rng = np.random.default_rng(18)
    frame = _frames(rng, 1, (30, 40), np.uint8)[0]
    mask = rng.uniform(0, 255, (30, 40)).astype(np.float32)
    crop = (5, 4, 30, 20)
    edges = [(5, 4, 1, 1), (34, 23, 1, 1), (5, 4, 30, 1), (5, 23, 30, 1), (5, 4, 1, 20), (34, 4, 1, 20)]
    rois = edges + [(6 + i % 26, 5 + i % 17, 3, 2) for i in range(MAX_ROIS - len(edges))]
    k = FrameKernel((30, 40), np.uint8, "log", crop=crop, rois=rois, impl=impl)
    k.set_mask(mask)
    s = k.process(frame, 0)
    o = (mask * np.float32(1 / 255)) - frame.astype(np.float32) * np.float32(1 / 255)
    want = [o[y:y + h, x:x + w].mean(dtype=np.float64) for x, y, w, h in rois]
    assert s.roi_means.shape == (32,) and s.roi_means.dtype == np.float64
    np.testing.assert_allclose(s.roi_means, want, **F32)
    assert k.peak.shape == (20, 30) and k.peak_index.shape == (20, 30)


def test_mask_accepts_frame_or_crop_shape_and_resets_peak(impl):
    rng = np.random.default_rng(19)
    frame = _frames(rng, 1, (10, 12), np.uint16, 12)[0]
    full = rng.uniform(1, 4000, (10, 12)).astype(np.float32)
    crop = (2, 1, 8, 7)
    k1 = FrameKernel((10, 12), np.uint16, "lin", crop=crop, bits_stored=12, impl=impl)
    k2 = FrameKernel((10, 12), np.uint16, "lin", crop=crop, bits_stored=12, impl=impl)
    k1.set_mask(full)
    k2.set_mask(full[1:8, 2:10].astype(np.float64))
    assert k1.process(frame, 5).mean_opacity == pytest.approx(k2.process(frame, 5).mean_opacity)
    assert (k1.peak_index == 5).all()
    k1.set_mask(full)
    assert (k1.peak_index == -1).all() and np.all(k1.peak == -np.inf)
    k2.reset_peak()
    assert (k2.peak_index == -1).all()


def test_read_only_frames_are_accepted(impl):
    frame = np.arange(20, dtype=np.uint8).reshape(4, 5)
    frame.flags.writeable = False
    k = FrameKernel((4, 5), np.uint8, "log", impl=impl)
    assert k.process(frame, 0).mad == 0.0
    assert k.process(frame, 1).repeat


def test_stats_type():
    s = FrameKernel((2, 2), np.uint8, "log").process(np.zeros((2, 2), np.uint8), 0)
    assert isinstance(s, FrameStats)
    with pytest.raises(AttributeError):
        s.mad = 1.0


# --------------------------------------------------------------------------------------- mask builder

@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_build_mask_is_the_mean(impl, dtype):
    rng = np.random.default_rng(20)
    frames = _frames(rng, 5, (13, 17), dtype)
    got = build_mask(frames, impl=impl)
    assert got.dtype == np.float32 and got.shape == (13, 17)
    np.testing.assert_allclose(got, frames.mean(axis=0), rtol=1e-6)
    cropped = build_mask(frames[:, ::-1, ::2], crop=(1, 2, 5, 4), impl=impl)
    np.testing.assert_allclose(cropped, frames[:, ::-1, ::2].mean(axis=0)[2:6, 1:6], rtol=1e-6)
    np.testing.assert_array_equal(build_mask(frames[:1], impl=impl), frames[0])


def test_build_mask_compiled_equals_reference():
    frames = _frames(np.random.default_rng(21), 9, (31, 1), np.uint16)
    np.testing.assert_array_equal(build_mask(frames), build_mask(frames, impl="reference"))


@pytest.mark.parametrize("bad", [
    np.zeros((4, 4), np.uint8),                # 2-D
    np.zeros((2, 4, 4), np.float32),           # dtype
    np.zeros((2, 4, 4), np.int16),             # dtype
    np.zeros((0, 4, 4), np.uint8),             # no frames
    [[[1, 2]]],                                # not an array
])
def test_build_mask_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        build_mask(bad)


@pytest.mark.parametrize("crop", [(0, 0, 5, 4), (-1, 0, 2, 2), (0, 0, 0, 1), (1, 2, 3)])
def test_build_mask_rejects_bad_crop(crop):
    with pytest.raises(ValueError):
        build_mask(np.zeros((2, 4, 4), np.uint8), crop=crop)


# ------------------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("kwargs,match", [
    (dict(shape=(4,)), "shape"),
    (dict(shape=(0, 4)), "shape"),
    (dict(shape=(4.5, 4)), "integer"),
    (dict(shape=7), "shape"),
    (dict(dtype=np.float32), "dtype"),
    (dict(dtype=np.int16), "dtype"),
    (dict(dtype=">u2"), "dtype"),
    (dict(dtype="nonsense"), "dtype"),
    (dict(intensity="linear"), "intensity"),
    (dict(crop=(0, 0, 9, 8)), "crop"),
    (dict(crop=(-1, 0, 2, 2)), "crop"),
    (dict(crop=(7, 0, 2, 2)), "crop"),
    (dict(crop=(0, 0, 0, 2)), "crop"),
    (dict(crop=(0, 0, 2)), "crop"),
    (dict(crop=(0, 0, True, 2)), "integer"),
    (dict(rois=[(0, 0, 2, 2)] * (MAX_ROIS + 1)), "at most 32"),
    (dict(crop=(1, 1, 4, 4), rois=[(0, 0, 2, 2)]), "roi 0"),
    (dict(crop=(1, 1, 4, 4), rois=[(1, 1, 4, 4), (2, 2, 4, 1)]), "roi 1"),
    (dict(rois=[(0, 0, 2)]), "roi 0"),
    (dict(rois=5), "rois"),
    (dict(bits_stored=11), "bits_stored"),
    (dict(bits_stored=17), "bits_stored"),
    (dict(dtype=np.uint8, intensity="log", bits_stored=12), "bits_stored"),
    (dict(log_scale=0.0), "log_scale"),
    (dict(log_scale=float("nan")), "log_scale"),
    (dict(peak_alpha=0.0), "peak_alpha"),
    (dict(peak_alpha=1.5), "peak_alpha"),
    (dict(impl="fast"), "impl"),
])
def test_constructor_rejects_bad_arguments(kwargs, match):
    args = dict(shape=(8, 8), dtype=np.uint16, intensity="lin")
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        FrameKernel(**args)


def test_set_rois_rejects_33_and_keeps_working():
    k = FrameKernel((8, 8), np.uint8, "log", rois=[(0, 0, 1, 1)] * MAX_ROIS)
    with pytest.raises(ValueError, match="at most 32"):
        k.set_rois([(0, 0, 1, 1)] * 33)
    assert k.process(np.zeros((8, 8), np.uint8), 0).roi_means.shape == (32,)


@pytest.mark.parametrize("frame,match", [
    (np.zeros((8, 8), np.uint8), "dtype"),
    (np.zeros((8, 8), np.int32), "dtype"),
    (np.zeros((8, 8), np.float32), "dtype"),
    (np.zeros((8, 8, 1), np.uint16), "2-D"),
    (np.zeros((8,), np.uint16), "2-D"),
    (np.zeros((8, 9), np.uint16), "shape"),
    (np.zeros((9, 8), np.uint16), "shape"),
    (np.zeros((8, 8), ">u2"), "dtype"),
    ([[0] * 8] * 8, "ndarray"),
    (None, "ndarray"),
])
def test_process_rejects_bad_frames(impl, frame, match):
    k = FrameKernel((8, 8), np.uint16, "lin", impl=impl)
    with pytest.raises(ValueError, match=match):
        k.process(frame, 0)


@pytest.mark.parametrize("index", [-1, 2**31, 1.5, "3", None, True])
def test_process_rejects_bad_index(index):
    k = FrameKernel((2, 2), np.uint8, "log")
    with pytest.raises(ValueError, match="index"):
        k.process(np.zeros((2, 2), np.uint8), index)
    assert k.process(np.zeros((2, 2), np.uint8), np.int64(2**31 - 1)).mad == 0.0


@pytest.mark.parametrize("mask,match", [
    (np.zeros((8, 8), np.uint16), "float"),
    (np.zeros((7, 8), np.float32), "shape"),
    (np.full((8, 8), np.nan, np.float32), "NaN"),
    (np.full((8, 8), np.inf, np.float64), "NaN"),
    ([[1.0] * 8] * 8, "float"),
])
def test_set_mask_rejects_bad_masks(mask, match):
    k = FrameKernel((8, 8), np.uint16, "lin")
    with pytest.raises(ValueError, match=match):
        k.set_mask(mask)
    assert not k.has_mask


def _raw_args(h=4, w=5):
    k = FrameKernel((h, w), np.uint8, "log", rois=[(0, 0, 2, 2)])
    k.set_mask(np.zeros((h, w), np.float32))
    return dict(frame=np.zeros((h, w), np.uint8), prev=k._prev, has_prev=True, mask_term=k._mask_term,
                lut=k._lut, bins=k._bins, vmax=k._vmax, rois=k._rois, roi_sums=k._roi_sums,
                hist=k.hist, peak=k.peak, peak_index=k.peak_index, smooth=None, opacity=None,
                index=0, alpha=1.0, peak_first=True, skip_repeat=False)


@pytest.mark.parametrize("change", [
    dict(prev=np.zeros((4, 6), np.uint8)),
    dict(peak=np.zeros((3, 5), np.float32)),
    dict(peak_index=np.zeros((4, 4), np.int32)),
    dict(mask_term=np.zeros((5, 5), np.float32)),
    dict(opacity=np.zeros((1, 1), np.float32)),
    dict(smooth=np.zeros((4, 1), np.float32)),
    dict(lut=np.zeros(255, np.float32)),
    dict(bins=np.zeros(65536, np.uint8)),
    dict(hist=np.zeros(255, np.int64)),
    dict(roi_sums=np.zeros(2)),
    dict(rois=np.array([[0, 0, 6, 2]], np.int32)),
    dict(rois=np.array([[1, 0, 1, 2]], np.int32)),
    dict(rois=np.array([[0, -1, 2, 2]], np.int32)),
])
def test_compiled_pass_guards_its_buffers(change):
    """The kernel is private (FrameKernel validates first) but must never write out of bounds."""
    args = _raw_args()
    args.update(change)
    with pytest.raises(ValueError):
        ext._frames.frame_pass(**args)


def test_compiled_pass_rejects_strides_that_split_pixels():
    raw = np.zeros(41, np.uint8)
    frame = np.lib.stride_tricks.as_strided(raw[1:].view(np.uint16), (4, 5), (9, 2))
    args = _raw_args()
    k = FrameKernel((4, 5), np.uint16, "lin")
    args.update(frame=frame, prev=k._prev, lut=k._lut, bins=k._bins, vmax=k._vmax,
                mask_term=None)
    with pytest.raises(ValueError, match="strides"):
        ext._frames.frame_pass(**args)
    with pytest.raises(ValueError, match="strides"):
        k.process(frame, 0)


def test_compiled_pass_raw_call_matches_reference():
    a, b = _raw_args(), _raw_args()
    frame = np.arange(20, dtype=np.uint8).reshape(4, 5)
    a["frame"] = b["frame"] = frame
    assert ext._frames.frame_pass(**a) == kernels_ref.frame_pass(**b)
    for key in ("prev", "hist", "peak", "peak_index", "roi_sums"):
        np.testing.assert_array_equal(a[key], b[key])


def test_compiled_mask_mean_guards_its_buffers():
    with pytest.raises(ValueError):
        ext._frames.mask_mean(np.zeros((2, 3, 4), np.uint8), np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError):
        ext._frames.mask_mean(np.zeros((0, 3, 4), np.uint8), np.zeros((3, 4), np.float32))
