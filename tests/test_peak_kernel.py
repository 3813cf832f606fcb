"""Peak-image kernels (ext/_peak.pyx) against their NumPy reference (core/analysis/peak_ref.py): bit for bit.

Whole runs through ``peak_and_mask`` with both implementations (repeats, last-image-hold, burnt-in text,
black and saturated pixels, exposure drift, odd sizes, strided views), then each kernel on its own, where
the cases a FrameStack never makes (1- and 3-pixel blocks, no 3x3 vote, NaN light) can be reached. Seeded data
only.
"""
from __future__ import annotations

import importlib.machinery

import numpy as np
import pytest

import ext._peak
from core.analysis import peak, peak_ref
from core.analysis.peak import distinct_frames, peak_and_mask
from core.sources.stacks import FrameStack

IMPLS = (peak_ref, ext._peak)


def _same(a, b):
    """Equal bit for bit (NaN where the other has NaN; -0.0 and 0.0 told apart)."""
    np.testing.assert_array_equal(a, b)
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(np.signbit(a), np.signbit(b))


def _run(seed, shape, dtype, pulses=20, noise=0.02, arrive=6, text=True, drift=True, hold=4):
    """A run as a video line delivers it: each pulse on 1-3 identical frames, then last-image-hold; a vessel
    filling from pulse ``arrive``; exposure settling over the first pulses; noise of sd ``noise`` x the top
    level (a faint one lets the mask take several pulses); burnt-in text, a black box and a saturated patch."""
    rng = np.random.default_rng(seed)
    h, w = shape
    top = 4095 if dtype == np.uint16 else 255
    y, x = np.mgrid[0:h, 0:w]
    anatomy = 0.6 + 0.3 * np.sin(x / 7.0) * np.cos(y / 11.0)
    vessel = np.exp(-(((x - w / 2 - 3 * np.sin(y / 9.0)) / max(2.0, w / 12)) ** 2))
    bolus = np.clip((np.arange(pulses) - arrive) / 4.0, 0, 1) * (np.arange(pulses) < pulses - 3)
    frames = []
    for p in range(pulses):
        exposure = 1.0 - (0.25 * np.exp(-p / 1.5) if drift else 0.0)
        level = 0.8 * top * exposure * np.exp(-anatomy - 0.5 * bolus[p] * vessel)
        if noise:
            level = level + rng.normal(0.0, noise * top, shape)
        f = np.clip(np.rint(level), 0, top).astype(dtype)
        if text:
            f[1:4, 2:min(w, 12)] = top * 9 // 10
            f[h - 4:h - 1, 2:6] = 0
            f[h // 2:h // 2 + 3, 1:4] = top
        frames += [f] * int(rng.integers(1, 4))
    frames += [frames[-1]] * hold
    return np.stack(frames)


def _stack(frames, intensity, fps=30.0):
    return FrameStack(frames, fps, intensity, 12 if frames.dtype == np.uint16 else 8,
                      np.arange(frames.shape[0]) / fps, "test")


def _both(stack, window_s=0.25):
    ref = peak_and_mask(stack, window_s, impl="reference")
    out = peak_and_mask(stack, window_s)
    for a, b in zip(ref, out, strict=True):
        _same(a, b)
    return out


def test_compiled_module_is_the_one_in_use():
    assert ext._peak.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    assert peak._kernels("compiled") is ext._peak
    assert peak._kernels("reference") is peak_ref
    with pytest.raises(ValueError, match="impl"):
        peak_and_mask(_stack(_run(0, (16, 16), np.uint8), "log"), impl="numpy")


# ------------------------------------------------------------------------------------------ whole runs

@pytest.mark.parametrize("dtype, intensity", [(np.uint16, "lin"), (np.uint8, "log"), (np.uint8, "lin"),
                                              (np.uint16, "log")])
@pytest.mark.parametrize("shape", [(16, 16), (37, 53), (64, 18), (48, 64)])
def test_runs_equal(dtype, intensity, shape):
    # The second: faint noise and a steady exposure, so the mask is the mean of several pulses.
    for seed, noise, drift in [(0, 0.02, True), (1, 0.002, False)]:
        frames = _run(seed, shape, dtype, noise=noise, drift=drift, arrive=2 + 5 * seed)
        p, m = _both(_stack(frames, intensity))
        assert np.isnan(p[1:4, 2:12]).all() and np.isfinite(p).any()


@pytest.mark.parametrize("intensity", ["lin", "log"])
def test_quiet_and_clean_runs_equal(intensity):
    """Noise-free (the quiet-video overlay rule) and steady exposure; contrast from the first pulse."""
    dtype = np.uint16 if intensity == "lin" else np.uint8
    _both(_stack(_run(3, (40, 44), dtype, noise=0.0, drift=False), intensity))
    _both(_stack(_run(4, (40, 44), dtype, arrive=0, text=False), intensity))


@pytest.mark.parametrize("window_s", [0.0, 0.1, 0.25, 1.0, 100.0])
def test_every_window_length(window_s):
    """k from one distinct pulse to all of them."""
    _both(_stack(_run(5, (33, 35), np.uint16, pulses=12), "lin"), window_s)


@pytest.mark.parametrize("pulses", [2, 3, 5])
def test_short_runs_equal(pulses):
    """Under 4 probed pairs the overlay is the static pixels alone."""
    _both(_stack(_run(15, (24, 20), np.uint8, pulses=pulses, hold=0), "log"))


def test_more_pairs_than_probes():
    frames = _run(6, (20, 24), np.uint8, pulses=90, arrive=30)
    assert distinct_frames(frames).size > peak.STATIC_PROBES + 1
    _both(_stack(frames, "log"))


@pytest.mark.parametrize("view", ["flipped", "every_other_column", "transposed", "packed_records"])
def test_strided_frames_equal(view):
    frames = _run(7, (40, 72), np.uint16)
    if view == "flipped":
        v = frames[:, ::-1, ::-1]
    elif view == "every_other_column":
        v = frames[:, :, ::2]
    elif view == "transposed":
        v = frames.transpose(0, 2, 1)
    else:   # a field of a packed record array: strides of 3 bytes, not whole uint16 pixels
        rec = np.zeros(frames.shape, dtype=[("a", np.uint8), ("px", np.uint16)])
        rec["px"] = frames
        v = rec["px"]
    assert not v.flags.c_contiguous
    out = _both(_stack(v, "lin"))
    for a, b in zip(out, peak_and_mask(_stack(np.ascontiguousarray(v), "lin")), strict=True):
        _same(a, b)


def test_a_full_size_run_equal():
    frames = _run(8, (1024, 1000), np.uint16, pulses=8, hold=1)
    _both(_stack(frames, "lin"))


def test_row_statistics_are_numpys():
    """Pass 1's faster medians and percentiles (shared by both implementations) are np.median's and
    np.percentile's, bit for bit: ties, equal rows, odd and even lengths, NaN. Only the sign of a zero may
    differ, in a row holding both -0.0 and +0.0 (pass 1's never do: a difference of equal values is +0.0)."""
    rng = np.random.default_rng(14)
    for n in (1, 2, 3, 64, 1001, 4096):
        a = rng.normal(0.0, 1.0, (6, n)).astype(np.float32)
        a[1] = np.round(a[1] * 3) / 3 + np.float32(0.0)      # ties, zeros all +0.0
        a[2] = 0.25
        a[3, n // 2] = np.nan
        a[4] = np.abs(a[4] - np.median(a[4]))
        with np.errstate(invalid="ignore"):
            _same(peak._row_medians(a), np.median(a, axis=1))
            for q in (0.0, 50.0, peak.SIGNAL_QUANTILE, 100.0):
                _same(peak._row_percentiles(a.copy(), q), np.percentile(a, q, axis=1))
        a[5] = np.round(a[5] * 3) / 3                        # -0.0 beside +0.0: the values still equal
        np.testing.assert_array_equal(peak._row_medians(a[5:]), np.median(a[5:], axis=1))


# ------------------------------------------------------------------------------------------ each kernel

@pytest.mark.parametrize("impl", IMPLS, ids=["reference", "compiled"])
def test_distinct_frames(impl):
    frames = _run(9, (16, 20), np.uint8)
    idx = impl.distinct_frames(frames)
    _same(idx, peak_ref.distinct_frames(frames))
    assert idx.dtype == np.intp and idx[0] == 0 and np.all(np.diff(idx) > 0)
    one = frames[:, 5:7, 3:4]      # a difference outside the first rows, on a strided view
    _same(impl.distinct_frames(one), peak_ref.distinct_frames(one))
    _same(impl.distinct_frames(np.broadcast_to(frames[0], (5, 16, 20))), np.array([0], np.intp))


def _pass_args(seed, shape, dtype, b, n_mask, lin):
    rng = np.random.default_rng(seed)
    frames = _run(seed, shape, dtype)
    idx = peak_ref.distinct_frames(frames)
    probe = (rng.random(idx.size) < 0.6).astype(np.uint8)
    probe[0] = 0
    gains = rng.normal(0.0, 0.3, idx.size).astype(np.float32)
    lut = peak._log_lut(frames.dtype) if lin else None
    hb, wb = shape[0] // b, shape[1] // b
    return frames, idx, probe, min(n_mask, idx.size), gains, lut, b, hb, wb


@pytest.mark.parametrize("b", [1, 3, 4])
@pytest.mark.parametrize("dtype, lin", [(np.uint16, True), (np.uint8, False), (np.uint8, True)])
def test_frame_pass_and_gather(b, dtype, lin):
    for seed, shape, n_mask in [(10, (17, 23), 1), (11, (16, 16), 4), (12, (6, 5), 40)]:
        frames, idx, probe, n_mask, gains, lut, b_, hb, wb = _pass_args(seed, shape, dtype, b, n_mask, lin)
        outs = []
        for impl in IMPLS:
            out = []
            for k in sorted({1, 2, 5, idx.size}):
                for box in (False, True):
                    same = np.full(shape, 7, np.uint8)          # overwritten, not added to
                    mask = np.full(shape, 7, np.float32)
                    end = np.empty((hb, wb), np.intp)
                    impl.frame_pass(frames, idx, probe, n_mask, gains, lut, b, k, box, same, mask, end)
                    p = np.empty(shape, np.float32)
                    impl.gather(frames, idx, end, b, k, gains, lut, mask, p)
                    out += [same, mask, end, p]
            outs.append(out)
        for a, c in zip(*outs, strict=True):
            _same(a, c)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_static_overlay(dtype):
    rng = np.random.default_rng(16)
    for shape in [(1, 1), (1, 7), (3, 3), (20, 31)]:
        same = rng.integers(0, 12, shape, dtype=np.uint8)
        same[rng.random(shape) < 0.3] = 11                   # runs of static pixels
        first = rng.integers(0, 4, (shape[0], 2 * shape[1]), dtype=dtype)[:, ::2] * (np.iinfo(dtype).max // 3)
        for thr, top in [(1, 255), (10, int(np.iinfo(dtype).max)), (11, 1 << 17), (12, 0)]:
            outs = []
            for impl in IMPLS:
                overlay = np.ones(shape, bool)
                counts = impl.static_overlay(same, thr, first, top, overlay.view(np.uint8))
                outs.append((counts, overlay))
            assert outs[0][0] == outs[1][0]
            _same(outs[0][1], outs[1][1])


def _window_ends(impl, frames, gains, lut, box):
    same, mask = np.empty((3, 4), np.uint8), np.empty((3, 4), np.float32)
    end = np.empty((3, 4), np.intp)
    idx = np.arange(frames.shape[0], dtype=np.intp)
    impl.frame_pass(frames, idx, np.zeros(idx.size, np.uint8), 1, gains, lut, 1, 2, box, same, mask, end)
    return end


@pytest.mark.parametrize("impl", IMPLS, ids=["reference", "compiled"])
def test_peak_window_ties_and_nan_like_argmin(impl):
    """The first darkest window wins a tie; a NaN window, as in np.argmin, wins over any number before it
    (NaN light needs an absurd gain: an infinite one on display video)."""
    frames = np.ones((6, 3, 4), np.uint8)
    frames[2:4, 0, 0] = 0             # k = 2: window 2 (frames 2, 3) the darkest
    frames[[0, 1, 4, 5], 0, 2] = 0    # windows 0 and 4 tie
    gains = np.zeros(6, np.float32)
    for box in (False, True):
        end = _window_ends(impl, frames, gains, None, box)
        _same(end, _window_ends(peak_ref, frames, gains, None, box))
        if not box:
            assert (end[0, 0], end[0, 2], end[1, 1]) == (3, 1, 1)
    gains[3] = np.inf                 # frame 3's light -inf: windows 2 and 3 -inf, window 4 (-inf) - (-inf)
    for box in (False, True):
        with np.errstate(invalid="ignore"):
            end = _window_ends(impl, frames, gains, None, box)
            _same(end, _window_ends(peak_ref, frames, gains, None, box))
        _same(end, np.full((3, 4), 5, np.intp))


def test_kernel_guards():
    """The compiled kernels' own checks, for direct callers: no out-of-bounds read or write."""
    frames, idx, probe, n_mask, gains, lut, b, hb, wb = _pass_args(13, (16, 16), np.uint16, 4, 1, True)
    same, mask, end = np.empty((16, 16), np.uint8), np.empty((16, 16), np.float32), np.empty((hb, wb), np.intp)

    def frame_pass(frames=frames, idx=idx, probe=probe, lut=lut, b=b, k=2, end=end):
        ext._peak.frame_pass(frames, idx, probe, n_mask, gains, lut, b, k, True, same, mask, end)
    frame_pass()
    with pytest.raises(ValueError, match="frame index"):
        frame_pass(idx=idx + frames.shape[0])
    with pytest.raises(ValueError, match="lut"):
        frame_pass(lut=lut[:256])
    bad = probe.copy()
    bad[0] = 1
    with pytest.raises(ValueError, match="first distinct frame"):
        frame_pass(probe=bad)
    with pytest.raises(ValueError, match="blocks"):
        frame_pass(b=3)
    with pytest.raises(ValueError, match="k"):
        frame_pass(k=idx.size + 1)
    with pytest.raises(ValueError, match="frame strides"):
        ext._peak.distinct_frames(np.zeros((2, 4, 4), dtype=[("a", np.uint8), ("px", np.uint16)])["px"])
    bad_end = np.full((hb, wb), idx.size, np.intp)
    with pytest.raises(ValueError, match="window end"):
        ext._peak.gather(frames, idx, bad_end, b, 2, gains, lut, mask, np.empty((16, 16), np.float32))
    with pytest.raises(ValueError, match="thr"):
        ext._peak.static_overlay(same, 0, frames[0], 4095, np.empty((16, 16), np.uint8))
    with pytest.raises(ValueError, match="native uint8 or uint16"):
        distinct_frames(frames.astype(">u2"))
