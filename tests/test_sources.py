"""Paced sources: frames at their capture times; a brief consumer stall is absorbed like a grabber's queue."""
import time

import numpy as np
import pytest

from core.sources.frames import QUEUE_FRAMES
from core.sources.replay import ArraySource
from core.vocab import NS

FPS = 100.0


def stack(n=400):
    return np.arange(n, dtype=np.uint16)[:, None, None] * np.ones((1, 16, 16), np.uint16)


def test_frames_carry_their_capture_times():
    source = ArraySource(stack(5), FPS, "lin", speed=1.0)
    frames = [source.read() for _ in range(5)]
    steps = np.diff([f.t_ns for f in frames])
    assert np.all(steps == pytest.approx(NS / FPS, abs=1))
    assert [f.index for f in frames] == list(range(5)) and source.read() is None


def test_a_short_stall_loses_nothing():
    source = ArraySource(stack(), FPS, "lin", speed=1.0)
    source.read()
    time.sleep((QUEUE_FRAMES - 3) / FPS)            # shorter than the queue
    indices = [source.read().index for _ in range(QUEUE_FRAMES)]
    assert indices == list(range(1, QUEUE_FRAMES + 1)) and source.dropped == 0


def test_a_long_stall_drops_and_counts():
    source = ArraySource(stack(), FPS, "lin", speed=1.0)
    source.read()
    time.sleep((QUEUE_FRAMES + 20) / FPS)           # far longer than the queue
    frame = source.read()
    assert source.dropped >= 20 and frame.index == 1 + source.dropped


def test_as_fast_as_possible_and_loop():
    source = ArraySource(stack(3), FPS, "lin", speed=None, loop=True)
    assert [source.read().index for _ in range(7)] == list(range(7))
    assert source.dropped == 0


@pytest.mark.parametrize("kwargs,match", [
    (dict(frames=np.zeros((0, 2, 2), np.uint8)), "frame stack"),
    (dict(frames=np.zeros((2, 2, 2), np.float32)), "uint8 or uint16"),
    (dict(intensity="linear"), "intensity"),
    (dict(fps=0), "frame rate"),
    (dict(speed=-1), "replay speed"),
    (dict(frames=np.zeros((3, 15, 640), np.uint8)), "640x15 pixel frames are not fluoroscopy"),
])
def test_bad_arguments(kwargs, match):
    args = dict(frames=stack(2), fps=FPS, intensity="lin")
    speed = kwargs.pop("speed", 1.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ArraySource(args.pop("frames"), args.pop("fps"), args.pop("intensity"), speed=speed)


# -- the phantom renders ahead of the reader ------------------------------------------------------------------
from core.sources.phantom.config import PhantomConfig  # noqa: E402
from core.sources.phantom.video import PhantomSource, PhantomVideo  # noqa: E402


def small_phantom():
    return PhantomVideo(PhantomConfig(size=(64, 64), intensity="lin", fps=FPS, pulse_rate=25.0))


def test_phantom_frames_are_the_phantom_at_their_times():
    source = PhantomSource(small_phantom())
    reference = small_phantom()
    try:
        for _ in range(12):
            frame = source.read()
            expected, on = reference.frame_at(frame.index / FPS)
            np.testing.assert_array_equal(frame.pixels, expected)
            assert source.xray_on == on
        assert source.dropped == 0
    finally:
        source.close()


def test_phantom_reader_too_late_skips_like_a_grabber():
    source = PhantomSource(small_phantom())
    reference = small_phantom()
    try:
        source.read()
        time.sleep((QUEUE_FRAMES + 20) / FPS)
        frame = source.read()
        assert source.dropped >= 20 and frame.index == 1 + source.dropped
        np.testing.assert_array_equal(frame.pixels, reference.frame_at(frame.index / FPS)[0])
        assert len(source._ready) <= PhantomSource.RENDER_AHEAD     # nothing piles up for skipped frames
    finally:
        source.close()


def test_closing_the_phantom_ends_reads_and_its_renderer():
    source = PhantomSource(small_phantom())
    source.read()
    source.close()
    assert source.read() is None
    source._renderer.join(2)
    assert not source._renderer.is_alive()


def test_a_failing_phantom_is_an_error_not_a_hang():
    class Broken:
        config = PhantomConfig(size=(64, 64), fps=FPS, pulse_rate=25.0)
        shape, dtype = (64, 64), np.uint16

        def frame_at(self, t_s):
            raise ZeroDivisionError("bad scene")

    source = PhantomSource(Broken())
    with pytest.raises(RuntimeError, match="phantom rendering failed"):
        source.read()
    source.close()


def test_a_replay_starts_at_its_first_read():
    source = ArraySource(stack(), FPS, "lin", speed=1.0)
    time.sleep((QUEUE_FRAMES + 20) / FPS)           # opened long before anyone reads: nothing is missed
    assert [source.read().index for _ in range(3)] == [0, 1, 2] and source.dropped == 0


def test_joining_a_live_stream_late_is_not_a_drop():
    source = PhantomSource(small_phantom(), t0_ns=time.monotonic_ns() - int(2 * NS))
    try:
        first = source.read()
        assert first.index >= 2 * FPS - 2 and source.dropped == 0   # starts at the frame now on the line
        assert source.read().index == first.index + 1
    finally:
        source.close()
