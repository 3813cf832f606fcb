"""V4L2 source: pixel formats, driver timestamps, sequence gaps, unplug/replug -- with a fake device at the
library boundary (GrabberDevice), so V4L2Source runs exactly as it does over linuxpy.

The layer below, LinuxpyGrabber and probe_device through linuxpy itself, runs in test_v4l2_linuxpy.py against a
fake V4L2 driver at the ioctl boundary. Still only on real hardware (no /dev/video*, no v4l2loopback or vivid in
the container): the kernel driver itself and real timing; docs/video-capture.md says how to run that test.
"""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from core.sources.v4l2 import (FLAG_ERROR, FLAG_TIMESTAMP_MONOTONIC, CaptureFormat, RawBuffer, V4L2Source,
                               map_timestamp, to_grey)
from core.vocab import NS

W, H = 32, 16   # the smallest frames are 16 px on a side (core.sources.frames.MIN_FRAME_SIDE)


def luma(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (H, W), dtype=np.uint8)


def encode(y: np.ndarray, fourcc: str, pad: int = 0) -> tuple[bytes, CaptureFormat]:
    """Pack a Y plane the way a grabber would, chroma filled with recognisable junk."""
    h, w = y.shape
    if fourcc == "GREY":
        rows = np.full((h, w + pad), 7, np.uint8)
        rows[:, :w] = y
        data = rows.tobytes()
        bpl = w + pad
    elif fourcc in ("YUYV", "UYVY"):
        rows = np.full((h, 2 * w + pad), 99, np.uint8)
        off = 0 if fourcc == "YUYV" else 1
        rows[:, off:2 * w:2] = y
        data = rows.tobytes()
        bpl = 2 * w + pad
    else:  # NV12
        rows = np.full((h, w + pad), 5, np.uint8)
        rows[:, :w] = y
        chroma = np.full((h // 2, w + pad), 200, np.uint8)
        data = rows.tobytes() + chroma.tobytes()
        bpl = w + pad
    return data, CaptureFormat(w, h, fourcc, bpl, 30.0)


@pytest.mark.parametrize("fourcc", ["GREY", "YUYV", "UYVY", "NV12"])
@pytest.mark.parametrize("pad", [0, 6])
def test_y_plane_of_every_format(fourcc, pad):
    y = luma(1)
    data, fmt = encode(y, fourcc, pad)
    got = to_grey(data, fmt)
    assert got.dtype == np.uint8 and got.flags.c_contiguous
    assert np.array_equal(got, y)


def test_last_line_padding_may_be_missing():
    y = luma(2)
    data, fmt = encode(y, "YUYV", pad=4)
    assert np.array_equal(to_grey(data[:-4], fmt), y)


@pytest.mark.parametrize("data, fmt, message", [
    (b"\0" * 10, CaptureFormat(W, H, "GREY", W, None), "short GREY buffer"),
    (b"\0" * 64, CaptureFormat(W, H, "MJPG", W, None), "unsupported pixel format 'MJPG'"),
    (b"\0" * 64, CaptureFormat(W, H, "YUYV", W, None), "bad YUYV geometry"),
    (b"\0" * 64, CaptureFormat(0, H, "GREY", W, None), "bad GREY geometry"),
])
def test_bad_buffers(data, fmt, message):
    with pytest.raises(ValueError, match=message):
        to_grey(data, fmt)


def test_timestamp_mapping():
    now = 50 * NS
    assert map_timestamp(now - 3_000_000, FLAG_TIMESTAMP_MONOTONIC, now) == (now - 3_000_000, True)
    assert map_timestamp(now - 3_000_000, 0x0000, now) == (now, False)            # unknown clock
    assert map_timestamp(now - 3_000_000, 0x4000, now) == (now, False)            # copied from the source
    assert map_timestamp(None, FLAG_TIMESTAMP_MONOTONIC, now) == (now, False)
    assert map_timestamp(now + 1, FLAG_TIMESTAMP_MONOTONIC, now) == (now, False)   # from the future
    assert map_timestamp(now - 2 * NS, FLAG_TIMESTAMP_MONOTONIC, now) == (now, False)


class FakeGrabber:
    """A grabber at the library boundary: plays a script of buffers, timeouts and errors."""

    def __init__(self, script, fmt=CaptureFormat(W, H, "GREY", W, 25.0), fail_open=None):
        self.script = list(script)
        self.fmt = fmt
        self.fail_open = fail_open
        self.opened = self.closed = 0

    def open(self):
        if self.fail_open is not None:
            raise self.fail_open
        self.opened += 1
        return self.fmt

    def read(self, timeout_s):
        if not self.script:
            time.sleep(timeout_s)
            return None
        item = self.script.pop(0)
        if item is None:
            time.sleep(timeout_s)
            return None
        if isinstance(item, Exception):
            raise item
        seq, value, age_ns, flags = item
        data = np.full((H, W), value, np.uint8).tobytes()
        return RawBuffer(data, seq, time.monotonic_ns() - age_ns, flags)

    def close(self):
        self.closed += 1


def buffers(seqs, age_ns=1_000_000, flags=FLAG_TIMESTAMP_MONOTONIC):
    return [(s, s % 256, age_ns, flags) for s in seqs]


def make_source(devices, events, **kw):
    it = iter(devices)

    def factory():
        dev = next(it)
        if isinstance(dev, Exception):
            raise dev
        return dev
    kw.setdefault("read_timeout_s", 0.01)
    kw.setdefault("reconnect_min_s", 0.01)
    kw.setdefault("reconnect_max_s", 0.04)
    return V4L2Source(factory, name="/dev/video0", on_event=lambda k, d: events.append((k, d)), **kw)


def test_frames_with_driver_timestamps_and_sequence_gaps():
    events = []
    dev = FakeGrabber(buffers([10, 11, 12, 15, 16, 20]))
    src = make_source([dev], events)
    before = time.monotonic_ns()
    frames = [src.read() for _ in range(6)]
    assert [f.index for f in frames] == [0, 1, 2, 5, 6, 10]     # gaps in the index show dropped frames
    assert [int(f.pixels[0, 0]) for f in frames] == [10, 11, 12, 15, 16, 20]
    assert src.dropped == 2 + 3
    assert all(before - 1_000_000 <= f.t_ns <= time.monotonic_ns() for f in frames)
    assert src.driver_timestamps == 6 and src.late == 0
    assert src.shape == (H, W) and src.fps == 25.0            # the driver's rate when none is configured
    assert events == [("grabber_up", {"width": W, "height": H, "format": "GREY", "fps": 25.0,
                                      "device": "/dev/video0"})]
    src.close()
    assert dev.closed == 1


def test_sequence_wraps_around_u32():
    src = make_source([FakeGrabber(buffers([2**32 - 2, 2**32 - 1, 0, 2]))], [])
    [src.read() for _ in range(4)]
    assert src.dropped == 1


def test_late_frames_and_arrival_time_fallback():
    slow = [(1, 1, 200_000_000, FLAG_TIMESTAMP_MONOTONIC), (2, 2, 1_000_000, FLAG_TIMESTAMP_MONOTONIC),
            (3, 3, 1_000_000, 0)]
    src = make_source([FakeGrabber(slow)], [], fps=30.0)
    [src.read() for _ in range(3)]
    assert src.late == 1                                      # 200 ms old at 30 fps: it waited in the queue
    assert src.driver_timestamps == 2 and src.arrival_timestamps == 1


def test_error_flagged_and_undecodable_buffers_are_counted_and_skipped():
    script = [(1, 1, 0, FLAG_TIMESTAMP_MONOTONIC | FLAG_ERROR), (2, 2, 0, FLAG_TIMESTAMP_MONOTONIC)]
    src = make_source([FakeGrabber(script)], [])
    frame = src.read()
    assert int(frame.pixels[0, 0]) == 2 and frame.index == 1 and src.frame_errors == 1
    bad = FakeGrabber(buffers([1, 2]), fmt=CaptureFormat(W, H, "GREY", W * 4, 25.0))   # buffers too short
    src = make_source([bad], [])
    threading.Timer(0.2, src.close).start()
    assert src.read() is None and src.frame_errors == 2


def test_unplug_alarm_backoff_and_automatic_reopen():
    events = []
    first = FakeGrabber(buffers([1, 2]) + [OSError(19, "No such device")])
    second = FakeGrabber(buffers([0, 1]))
    gone = OSError(2, "No such file or directory")
    src = make_source([first, gone, gone, gone, second], events)
    assert src.read().index == 0 and src.read().index == 1
    start = time.monotonic()
    frame = src.read()                                        # unplug, three failed opens, then the new device
    waited = time.monotonic() - start
    assert frame is not None and int(frame.pixels[0, 0]) == 0
    assert frame.index == 2                                   # the counter goes on; no false "dropped" frames
    assert src.dropped == 0 and src.reconnects == 1 and src.alarm is None
    assert waited >= 0.01 + 0.02 + 0.04 - 0.005               # backoff doubled up to the maximum
    kinds = [k for k, _ in events]
    assert kinds == ["grabber_up", "grabber_down", "grabber_up"]   # one down event per outage
    assert "No such device" in events[1][1]["reason"]
    assert first.closed == 1


def test_silent_grabber_raises_an_alarm_then_reopens():
    events = []
    first = FakeGrabber(buffers([1]) + [None] * 100)
    second = FakeGrabber(buffers([1]))
    src = make_source([first, second], events, stall_reopen_s=0.1)
    src.read()
    frame = src.read()
    assert frame is not None
    kinds = [k for k, _ in events]
    assert kinds[:3] == ["grabber_up", "grabber_stalled", "grabber_down"] and kinds[-1] == "grabber_up"
    assert src.alarm is None


def test_alarm_is_visible_while_down_and_close_ends_read():
    events = []
    src = make_source([OSError(2, "gone")] * 1000, events)
    result = []
    t = threading.Thread(target=lambda: result.append(src.read()))
    t.start()
    time.sleep(0.1)
    assert src.alarm is not None and "gone" in src.alarm
    assert [k for k, _ in events] == ["grabber_down"]
    src.close()
    t.join(1)
    assert not t.is_alive() and result == [None]


def test_unsupported_format_is_a_down_state_with_the_reason():
    events = []
    src = make_source([FakeGrabber([], fmt=CaptureFormat(W, H, "MJPG", W, 30.0))] * 50, events,
                      reconnect_max_s=0.01)
    threading.Timer(0.1, src.close).start()
    assert src.read() is None
    assert events[0][0] == "grabber_down" and "MJPG" in events[0][1]["reason"]


def test_frames_too_small_for_fluoroscopy_are_a_down_state_with_the_reason():
    events = []
    src = make_source([FakeGrabber([], fmt=CaptureFormat(8, 4, "GREY", 8, 30.0))] * 50, events,
                      reconnect_max_s=0.01)
    threading.Timer(0.1, src.close).start()
    assert src.read() is None
    assert events[0][0] == "grabber_down"
    assert "8x4 pixel frames are not fluoroscopy" in events[0][1]["reason"]


def test_listener_errors_do_not_stop_frames():
    def broken(kind, data):
        raise RuntimeError("listener bug")
    src = V4L2Source(lambda: FakeGrabber(buffers([1])), on_event=broken, read_timeout_s=0.01)
    assert src.read() is not None


@pytest.mark.parametrize("kw", [dict(reconnect_min_s=0), dict(reconnect_min_s=2, reconnect_max_s=1),
                                dict(read_timeout_s=0), dict(fps=-1)])
def test_bad_settings(kw):
    with pytest.raises(ValueError):
        V4L2Source(lambda: None, **kw)


@pytest.mark.skipif(not any(n.startswith("video") for n in os.listdir("/dev")), reason="no /dev/video* here")
def test_real_device_if_present():
    from core.sources.v4l2 import open_grabber

    path = sorted(f"/dev/{n}" for n in os.listdir("/dev") if n.startswith("video"))[0]
    src = open_grabber(path)
    try:
        frame = src.read()
        assert frame is not None and frame.pixels.dtype == np.uint8
    finally:
        src.close()
