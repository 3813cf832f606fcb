"""Automatic collimated field and burnt-in text, on the phantom and on synthetic rectangles."""
from __future__ import annotations

import numpy as np
import pytest

from core.sources.collimator import FieldDetector, detect_field
from core.sources.phantom.config import PhantomConfig
from core.sources.phantom.render import render_run


@pytest.fixture(scope="module")
def phantom_log():
    run = render_run(PhantomConfig(intensity="log", collimator=True, text=True, xray_s=1.0,
                                   lih_before_s=0.1, lih_after_s=0.1))
    return run


def truth_disc(shape, circle):
    cx, cy, r = circle
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def test_phantom_round_field_and_corner_text(phantom_log):
    frames = phantom_log.frames
    first = int(phantom_log.truth.xray_on_frame)
    geo = detect_field(frames[first:first + 8])
    cx, cy, r = phantom_log.truth.collimator
    assert geo.shape == "circle"
    assert geo.circle == pytest.approx((cx, cy, r), abs=1.0)
    disc = truth_disc(frames.shape[1:], (cx, cy, r))
    assert not (geo.mask & ~disc).any()                      # nothing of the black surround
    assert geo.mask.sum() > 0.9 * disc.sum()                 # and nearly all of the field
    # Every glyph pixel of every text box is excluded and lies inside a reported box.
    text_px = np.zeros(frames.shape[1:], dtype=bool)
    for x, y, w, h in phantom_log.truth.text_boxes:
        text_px[y:y + h, x:x + w] = frames[first, y:y + h, x:x + w] > 0
    assert text_px.sum() > 100
    assert not (geo.mask & text_px).any()
    covered = np.zeros_like(text_px)
    for x, y, w, h in geo.text_boxes:
        covered[y:y + h, x:x + w] = True
    assert covered[text_px].all()
    assert len(geo.text_boxes) == len(phantom_log.truth.text_boxes)
    x, y, w, h = geo.crop
    assert geo.crop_mask.shape == (h, w) and geo.crop_mask.sum() == geo.mask.sum()


def test_phantom_linear_frames_without_text():
    run = render_run(PhantomConfig(size=(256, 256), intensity="lin", collimator=True, xray_s=0.6,
                                   lih_before_s=0.1, lih_after_s=0.1))
    geo = detect_field(run.frames[4:10])
    assert geo.shape == "circle" and geo.text_boxes == ()
    assert geo.circle == pytest.approx(run.truth.collimator, abs=1.0)


def test_phantom_without_collimator_is_the_whole_frame():
    run = render_run(PhantomConfig(size=(128, 160), intensity="log", collimator=False, text=False,
                                   xray_s=0.4, lih_before_s=0.1, lih_after_s=0.1))
    geo = detect_field(run.frames[3:8])
    assert geo.shape == "rect"
    x, y, w, h = geo.crop
    assert x <= 3 and y <= 3 and x + w >= 157 and y + h >= 125


def synthetic(shape=(240, 320), field=(40, 30, 200, 170), n=5, seed=0, text_in=None, text_out=None,
              noise=6.0, dtype=np.uint8):
    """A noisy mid-grey rectangle (x, y, w, h) on black, with static bright text blocks."""
    rng = np.random.default_rng(seed)
    frames = np.zeros((n, *shape), dtype=dtype)
    x, y, w, h = field
    yy, xx = np.mgrid[:h, :w]
    anatomy = 120 + 30 * np.sin(xx / 17.0) * np.cos(yy / 23.0)
    anatomy[h // 3:h // 3 + 6, :] -= 50                      # a dark (contrast-filled) vessel across the field
    for i in range(n):
        frames[i, y:y + h, x:x + w] = np.clip(anatomy + rng.normal(0, noise, (h, w)), 1, 250).astype(dtype)
    for box in (text_in, text_out):
        if box is not None:
            bx, by, bw, bh = box
            glyphs = (np.indices((bh, bw)).sum(axis=0) // 3) % 2 == 0   # a stripy static pattern
            block = np.where(glyphs, 245, 5).astype(dtype)
            frames[:, by:by + bh, bx:bx + bw] = block
    return frames


def test_synthetic_rectangle_with_text_inside_and_outside():
    field = (40, 30, 200, 170)
    text_in, text_out = (60, 150, 40, 14), (250, 5, 60, 12)
    frames = synthetic(field=field, text_in=text_in, text_out=text_out)
    geo = detect_field(frames)
    assert geo.shape == "rect"
    x, y, w, h = geo.crop
    fx, fy, fw, fh = field
    assert fx <= x <= fx + 6 and fy <= y <= fy + 6
    assert fx + fw - 6 <= x + w <= fx + fw and fy + fh - 6 <= y + h <= fy + fh
    for bx, by, bw, bh in (text_in, text_out):
        assert not geo.mask[by:by + bh, bx:bx + bw].any()
    assert len(geo.text_boxes) == 2
    # The vessel is measured (dark is not surround when it is inside the field).
    assert geo.mask[fy + fh // 3 + 2, fx + fw // 2]


def test_text_inside_is_not_guessed_from_held_frames():
    # Identical frames (last-image-hold) cannot separate static text from anatomy: only outside text is found.
    frames = synthetic(text_in=(60, 150, 40, 14), n=1)
    geo = detect_field(np.repeat(frames, 4, axis=0))
    assert geo.text_boxes == ()


def test_uint16_rectangle():
    frames = synthetic(dtype=np.uint16) * np.uint16(16)
    assert detect_field(frames).shape == "rect"


def test_configured_crop_overrides_but_text_stays_excluded():
    frames = synthetic(text_in=(60, 150, 40, 14))
    geo = detect_field(frames, crop=(50, 100, 100, 80))
    assert geo.shape == "configured" and geo.crop == (50, 100, 100, 80)
    assert not geo.mask[150:164, 60:100].any()
    assert geo.mask[100:150, 50:150].all()
    assert not geo.mask[:100].any() and not geo.mask[:, 150:].any()


def test_round_field_clipped_by_the_frame():
    # Image intensifier circle larger than the frame height: top and bottom are cut by the frame itself.
    h, w = 200, 320
    yy, xx = np.mgrid[:h, :w]
    disc = (xx - 160) ** 2 + (yy - 100) ** 2 <= 120 ** 2
    rng = np.random.default_rng(1)
    frames = np.stack([np.where(disc, rng.normal(150, 5, (h, w)), 0).astype(np.uint8) for _ in range(4)])
    geo = detect_field(frames)
    assert geo.shape == "circle"
    assert geo.circle == pytest.approx((160, 100, 120), abs=1.0)
    assert not (geo.mask & ~disc).any()


@pytest.mark.parametrize("frames, message", [
    (np.zeros((3, 64, 64), np.uint8), "uniform"),
    (np.zeros((3, 64, 64), np.float32), "uint8 or uint16"),
    (np.zeros((3, 8, 8), np.uint8), "at least 16x16"),
    (np.zeros((2, 3, 64, 64), np.uint8), "shape"),
])
def test_unusable_frames_are_rejected(frames, message):
    with pytest.raises(ValueError, match=message):
        detect_field(frames)


def test_tiny_bright_spot_is_not_a_field():
    frames = np.zeros((3, 100, 100), np.uint8)
    frames[:, 10:14, 10:14] = 200
    with pytest.raises(ValueError, match="no collimated field"):
        detect_field(frames)


@pytest.mark.parametrize("crop", [(0, 0, 400, 10), (-1, 0, 5, 5), (0, 0, 0, 5), (1.5, 0, 5, 5), (1, 2, 3)])
def test_bad_crop(crop):
    with pytest.raises(ValueError, match="crop"):
        detect_field(synthetic(), crop=crop)


def test_detector_waits_for_xray_and_ignores_repeats():
    black = np.zeros((240, 320), np.uint8)
    frames = synthetic(n=4)
    det = FieldDetector(frames_needed=3)
    for _ in range(5):
        assert det.feed(black) is None                         # X-ray off: nothing to see yet
    assert det.feed(frames[0]) is None
    assert det.feed(frames[0]) is None                         # a repeated pulse does not count
    assert det.feed(frames[1]) is None
    geo = det.feed(frames[2])
    assert geo is not None and geo.shape == "rect"
    assert det.feed(black) is geo
    with pytest.raises(ValueError):
        FieldDetector(frames_needed=0)


def test_detector_split_for_a_worker_thread():
    text_only = np.zeros((240, 320), np.uint8)
    text_only[5:17, 250:310] = 245                             # overlay on a black screen: not a field
    det = FieldDetector(frames_needed=1)
    assert det.add(text_only) and det.detect() is None         # tried, not found, slides on
    frames = synthetic(n=3)
    assert det.add(frames[0])
    geo = det.detect()
    assert geo is not None and geo.shape == "rect" and det.geometry is geo
    assert not det.add(frames[1])                              # found: nothing more to collect
