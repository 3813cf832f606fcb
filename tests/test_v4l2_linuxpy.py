"""LinuxpyGrabber and probe_device through linuxpy for real, against a fake V4L2 capture driver at the ioctl
boundary.

Only the system call is replaced: ``fcntl.ioctl`` on the fake's device node is answered by ``FakeDriver``
(one method per VIDIOC request, the rest ENOTTY like a real driver); every other fd still reaches the kernel.
The "device node" is a regular file, so linuxpy opens it, mmaps the buffers at the offsets QUERYBUF gives and
selects on it as it would on /dev/videoN. What this cannot show: the kernel driver itself and real timing.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import threading
import time
from collections import deque
from typing import NoReturn

import numpy as np
import pytest
from linuxpy.video import raw

from core.sources.v4l2 import (FLAG_ERROR, FLAG_TIMESTAMP_MASK, FLAG_TIMESTAMP_MONOTONIC, CaptureFormat, LinuxpyGrabber,
                               V4L2Source, probe_device, to_grey)

W, H = 64, 48
PAD = 32                                  # some grabbers pad lines (alignment): bytesperline > 2 * width
BYTES_PER_PIXEL = {"YUYV": 2, "UYVY": 2, "GREY": 1, "MJPG": 0}
CAPTURE = raw.BufType.VIDEO_CAPTURE
MMAP = raw.Memory.MMAP
CAPS = raw.Capability
GRABBER_CAPS = CAPS.VIDEO_CAPTURE | CAPS.STREAMING | CAPS.EXT_PIX_FORMAT
KERNEL_IOCTL = fcntl.ioctl


def fail(code: int) -> NoReturn:
    raise OSError(code, os.strerror(code))    # what fcntl.ioctl raises for a driver's -code


def fourcc(text: str) -> int:
    return int.from_bytes(text.encode(), "little")


def pattern(k: int) -> np.ndarray:
    """A luma picture that differs in every pixel from frame to frame."""
    return ((np.add.outer(np.arange(H) * 3, np.arange(W) * 5) + 37 * k) % 256).astype(np.uint8)


class FakeDriver:
    """A V4L2 capture driver behind one device node (a regular file standing in for /dev/videoN).

    Buffers are regions of the node file, so linuxpy's mmap of them sees what DQBUF writes there (as DMA
    would). ``send`` is the camera: frames wait in ``signal`` until a queued buffer takes one.
    """

    def __init__(self, path, *, caps=GRABBER_CAPS, pixel_format="YUYV", timeperframe=(1, 25), streamon_error=0):
        self.path = path
        self.streamon_error = streamon_error
        self.caps = caps
        self.width, self.height, self.pixel_format = W, H, pixel_format
        self.timeperframe = timeperframe
        self.count = 0                    # buffers allocated by REQBUFS
        self.queued = deque()             # indices handed to us by QBUF, filled in this order
        self.streaming = False
        self.signal = deque()             # (sequence, luma, timestamp_ns, extra flags)
        self.unplugged = False
        self.calls = []
        self._new = path.with_name(path.name + ".new")
        self._new.write_bytes(b"")
        self._fd = os.open(self._new, os.O_RDWR)
        st = os.fstat(self._fd)
        self.node = (st.st_dev, st.st_ino)    # the fake ioctl finds the driver by the node's inode

    # -- the test's side ----------------------------------------------------------------------------------
    def send(self, sequence, luma, age_ns=2_000_000, flags=0):
        self.signal.append((sequence, luma, time.monotonic_ns() - age_ns, flags))

    def appear(self):
        self._new.rename(self.path)       # atomically, like udev: never a node without its driver

    def unplug(self):
        self.unplugged = True             # open fds stay, every ioctl on them fails
        self.path.unlink()                # and udev removes the node

    @property
    def bytesperline(self):
        bpp = BYTES_PER_PIXEL[self.pixel_format]
        return self.width * bpp + PAD if bpp else 0

    @property
    def sizeimage(self):
        return self.bytesperline * self.height or self.width * self.height   # MJPG: a maximum

    @property
    def stride(self):                     # mmap offsets must be page aligned
        return -(-self.sizeimage // mmap.ALLOCATIONGRANULARITY) * mmap.ALLOCATIONGRANULARITY

    # -- the kernel's side --------------------------------------------------------------------------------
    def ioctl(self, fd, request, arg):
        try:
            name = raw.IOC(request).name
        except ValueError:
            fail(errno.ENOTTY)
        self.calls.append(name)
        if self.unplugged:
            fail(errno.ENODEV)
        handler = getattr(self, "vidioc_" + name.lower(), None)
        if handler is None:
            fail(errno.ENOTTY)
        handler(fd, arg)

    def vidioc_querycap(self, fd, cap):
        cap.driver, cap.card, cap.bus_info = b"uvcvideo", b"Fake Capture HDMI", b"usb-0000:00:14.0-2"
        cap.version = 0x060100
        cap.capabilities = self.caps | CAPS.DEVICE_CAPS
        cap.device_caps = self.caps

    def vidioc_g_fmt(self, fd, fmt):
        if fmt.type != CAPTURE or CAPS.VIDEO_CAPTURE not in self.caps:
            fail(errno.EINVAL)
        pix = fmt.fmt.pix
        pix.width, pix.height, pix.pixelformat = self.width, self.height, fourcc(self.pixel_format)
        pix.field, pix.bytesperline, pix.sizeimage = raw.Field.NONE, self.bytesperline, self.sizeimage

    def vidioc_try_fmt(self, fd, fmt, apply=False):
        if fmt.type != CAPTURE:
            fail(errno.EINVAL)
        pix = fmt.fmt.pix
        wanted = pix.pixelformat.to_bytes(4, "little").decode("ascii", "replace")
        saved = self.width, self.height, self.pixel_format
        self.width, self.height = max(2, pix.width & ~1), max(1, pix.height)   # drivers adjust, never refuse
        self.pixel_format = wanted if wanted in BYTES_PER_PIXEL else "YUYV"
        self.vidioc_g_fmt(fd, fmt)
        if not apply:
            self.width, self.height, self.pixel_format = saved

    def vidioc_s_fmt(self, fd, fmt):
        if self.count:
            fail(errno.EBUSY)             # buffers exist in the old size
        self.vidioc_try_fmt(fd, fmt, apply=True)

    def vidioc_g_parm(self, fd, parm):
        if self.timeperframe is None:
            fail(errno.ENOTTY)            # not every capture driver implements the frame-rate ioctls
        if parm.type != CAPTURE:
            fail(errno.EINVAL)
        parm.parm.capture.capability = CAPS.TIMEPERFRAME
        tpf = parm.parm.capture.timeperframe
        tpf.numerator, tpf.denominator = self.timeperframe

    def vidioc_s_parm(self, fd, parm):
        if self.timeperframe is None:
            fail(errno.ENOTTY)
        tpf = parm.parm.capture.timeperframe
        if parm.type != CAPTURE or not tpf.numerator or not tpf.denominator:
            fail(errno.EINVAL)
        self.timeperframe = tpf.numerator, tpf.denominator
        self.vidioc_g_parm(fd, parm)

    def vidioc_reqbufs(self, fd, req):
        if req.type != CAPTURE or req.memory != MMAP:
            fail(errno.EINVAL)
        if self.streaming:
            fail(errno.EBUSY)
        self.count = min(req.count, 8)
        self.queued.clear()
        if self.count:
            os.ftruncate(self._fd, self.count * self.stride)
        req.count = self.count

    def _check(self, buf):
        if buf.type != CAPTURE or buf.memory != MMAP or buf.index >= self.count:
            fail(errno.EINVAL)

    def vidioc_querybuf(self, fd, buf):
        self._check(buf)
        buf.length = self.sizeimage
        buf.m.offset = buf.index * self.stride
        buf.flags = raw.BufferFlag.MAPPED | FLAG_TIMESTAMP_MONOTONIC
        if buf.index in self.queued:
            buf.flags |= raw.BufferFlag.QUEUED

    def vidioc_qbuf(self, fd, buf):
        self._check(buf)
        if buf.index in self.queued:
            fail(errno.EINVAL)
        self.queued.append(buf.index)

    def vidioc_dqbuf(self, fd, buf):
        if buf.type != CAPTURE or buf.memory != MMAP or not self.streaming:
            fail(errno.EINVAL)
        if not (self.queued and self.signal):
            # A blocking fd would sleep here until a frame comes, maybe forever: the grabber must not use one.
            assert not os.get_blocking(fd), "DQBUF on a blocking fd: a silent grabber would hang the reader"
            fail(errno.EAGAIN)
        index = self.queued.popleft()
        sequence, luma, t_ns, flags = self.signal.popleft()
        rows = np.full((self.height, self.bytesperline), 128, np.uint8)       # YUYV, neutral chroma, padding
        rows[:, 0:2 * self.width:2] = luma
        os.pwrite(self._fd, rows.tobytes(), index * self.stride)
        buf.index, buf.bytesused, buf.field, buf.sequence = index, rows.size, raw.Field.NONE, sequence
        buf.flags = raw.BufferFlag.MAPPED | FLAG_TIMESTAMP_MONOTONIC | flags
        buf.timestamp.secs, buf.timestamp.usecs = divmod(t_ns // 1000, 1_000_000)

    def vidioc_streamon(self, fd, buf_type):
        if buf_type.value != CAPTURE or not self.count:
            fail(errno.EINVAL)
        if self.streamon_error:
            fail(self.streamon_error)
        self.streaming = True

    def vidioc_streamoff(self, fd, buf_type):
        if buf_type.value != CAPTURE:
            fail(errno.EINVAL)
        self.streaming = False
        self.queued.clear()               # STREAMOFF hands every buffer back to the application


@pytest.fixture
def plug(tmp_path, monkeypatch):
    """plug(**driver_options) -> a FakeDriver whose node appears at tmp_path/video0 once it is ready."""
    drivers = {}

    def ioctl(fd, request, arg=0, *rest):
        fd = fd if isinstance(fd, int) else fd.fileno()
        st = os.fstat(fd)
        driver = drivers.get((st.st_dev, st.st_ino))
        if driver is None:
            return KERNEL_IOCTL(fd, request, arg, *rest)
        return driver.ioctl(fd, request, arg)

    monkeypatch.setattr(fcntl, "ioctl", ioctl)

    def plug(**options):
        driver = FakeDriver(tmp_path / "video0", **options)
        drivers[driver.node] = driver
        driver.appear()
        return driver

    yield plug
    for driver in drivers.values():
        os.close(driver._fd)


def mappings(path) -> int:
    """How many of this process's memory mappings are of the node (the buffers linuxpy mmapped)."""
    with open("/proc/self/maps") as maps:
        return sum(str(path) in line for line in maps)


def stamp(t_ns: int) -> int:
    return t_ns // 1000 * 1000            # v4l2_buffer.timestamp is a timeval: microseconds


# -- LinuxpyGrabber --------------------------------------------------------------------------------------
def test_grabber_streams_frames_with_driver_sequence_and_timestamps(plug):
    driver = plug()
    grabber = LinuxpyGrabber(str(driver.path), buffers=3)
    fmt = grabber.open()
    assert fmt == CaptureFormat(W, H, "YUYV", 2 * W + PAD, 25.0)
    assert driver.streaming and list(driver.queued) == [0, 1, 2] and mappings(driver.path) == 3
    for seq in range(5):                  # more frames than buffers: each buffer is requeued and reused
        driver.send(100 + seq, pattern(seq), flags=FLAG_ERROR if seq == 3 else 0)
    sent = list(driver.signal)
    got = [grabber.read(0.5) for _ in range(5)]
    for buf, (seq, luma, t_ns, flags) in zip(got, sent):
        assert buf.sequence == seq and buf.timestamp_ns == stamp(t_ns)
        assert buf.flags & FLAG_TIMESTAMP_MASK == FLAG_TIMESTAMP_MONOTONIC and buf.flags & FLAG_ERROR == flags
        assert np.array_equal(to_grey(buf.data, fmt), luma)   # still intact: copied out before the requeue
    assert sorted(driver.queued) == [0, 1, 2]

    start = time.monotonic()
    assert grabber.read(0.2) is None      # nothing captured: DQBUF says EAGAIN
    assert time.monotonic() - start < 0.5

    grabber.close()
    assert not driver.streaming and driver.calls.count("STREAMOFF") == 1
    assert driver.calls[-1] == "REQBUFS" and driver.count == 0 and mappings(driver.path) == 0   # unmapped, freed
    grabber.close()
    assert driver.calls.count("STREAMOFF") == 1


def test_grabber_asks_for_the_configured_mode(plug):
    driver = plug()
    grabber = LinuxpyGrabber(str(driver.path), width=32, height=24, fps=50)
    fmt = grabber.open()
    assert fmt == CaptureFormat(32, 24, "YUYV", 2 * 32 + PAD, 50.0)
    assert driver.timeperframe == (1, 50)
    grabber.close()


def test_grabber_without_frame_rate_ioctls(plug):
    driver = plug(timeperframe=None)
    grabber = LinuxpyGrabber(str(driver.path))
    assert grabber.open().fps is None     # G_PARM: ENOTTY, so the configured rate will be used
    assert "G_PARM" in driver.calls
    grabber.close()


def test_grabber_that_cannot_start_streaming_leaves_nothing_mapped(plug):
    driver = plug(streamon_error=errno.ENOSPC)   # uvcvideo's "not enough USB bandwidth"
    with pytest.raises(OSError) as exc:
        LinuxpyGrabber(str(driver.path)).open()
    assert exc.value.errno == errno.ENOSPC
    assert mappings(driver.path) == 0 and driver.count == 0   # each retry would map another set otherwise


def test_grabber_after_unplug(plug):
    driver = plug()
    grabber = LinuxpyGrabber(str(driver.path))
    grabber.open()
    driver.unplug()
    with pytest.raises(OSError) as exc:
        grabber.read(0.5)
    assert exc.value.errno == errno.ENODEV
    grabber.close()                       # STREAMOFF fails with ENODEV: still closes quietly,
    assert mappings(driver.path) == 0     # and unmaps the gone device's buffers now, not at some later GC
    grabber.close()


# -- the whole path: V4L2Source over LinuxpyGrabber over linuxpy -------------------------------------------
@contextlib.contextmanager
def source(path, events, limit_s=5.0):
    """V4L2Source over LinuxpyGrabber, closed at the end or after limit_s: a bug fails the test, never hangs it."""
    src = V4L2Source(lambda: LinuxpyGrabber(str(path)), name="video0", read_timeout_s=0.05,
                     reconnect_min_s=0.01, reconnect_max_s=0.05, on_event=lambda k, d: events.append((k, d)))
    watchdog = threading.Timer(limit_s, src.close)
    watchdog.start()
    try:
        yield src
    finally:
        watchdog.cancel()
        src.close()


def test_source_frames_carry_driver_time_and_count_dropped_frames(plug):
    driver = plug()
    for seq in (1, 2, 3, 6, 7):           # the driver dropped 4 and 5
        driver.send(seq, pattern(seq))
    sent = list(driver.signal)
    events = []
    with source(driver.path, events) as src:
        frames = [src.read() for _ in range(5)]
    assert [f.index for f in frames] == [0, 1, 2, 5, 6] and src.dropped == 2
    assert [f.t_ns for f in frames] == [stamp(t) for _, _, t, _ in sent]   # driver time, monotonic clock
    assert all(np.array_equal(f.pixels, luma) for f, (_, luma, _, _) in zip(frames, sent))
    assert src.driver_timestamps == 5 and src.arrival_timestamps == 0
    assert src.shape == (H, W) and src.fps == 25.0
    assert events == [("grabber_up", {"width": W, "height": H, "format": "YUYV", "fps": 25.0, "device": "video0"})]
    assert not driver.streaming


def test_unplugged_grabber_goes_down_then_reopens_by_itself(plug):
    driver = plug()
    driver.send(1, pattern(1))
    driver.send(2, pattern(2))
    events = []

    def replug():
        back = plug()
        back.send(0, pattern(9))          # a new device counts from 0 again
    with source(driver.path, events) as src:
        assert src.read().index == 0 and src.read().index == 1
        driver.unplug()
        timer = threading.Timer(0.2, replug)
        timer.start()
        frame = src.read()                # ENODEV, failed reopens with backoff, then the new node
        timer.join()
    assert np.array_equal(frame.pixels, pattern(9)) and frame.index == 2
    assert src.dropped == 0 and src.reconnects == 1 and src.alarm is None
    assert [k for k, _ in events] == ["grabber_up", "grabber_down", "grabber_up"]
    assert "No such device" in events[1][1]["reason"]


# -- probe_device (cathlab-edge doctor) -----------------------------------------------------------------
def test_probe_describes_the_grabber_without_streaming(plug):
    driver = plug()
    assert probe_device(str(driver.path)) == "Fake Capture HDMI (uvcvideo), 64x48 YUYV"
    assert "STREAMON" not in driver.calls and "REQBUFS" not in driver.calls


@pytest.mark.parametrize("options, reason", [
    ({"caps": CAPS.META_CAPTURE | CAPS.STREAMING}, "cannot capture video"),   # UVC's metadata node
    ({"pixel_format": "MJPG"}, "delivers MJPG; set it to one of GREY, YUYV, UYVY, NV12"),
])
def test_probe_says_why_a_device_cannot_be_used(plug, options, reason):
    driver = plug(**options)
    with pytest.raises(ValueError, match=reason):
        probe_device(str(driver.path))


@pytest.mark.parametrize("path", ["/dev/null", "plain file"])
def test_probe_of_a_file_that_is_no_v4l2_device(tmp_path, path):
    if path == "plain file":
        path = tmp_path / "video7"
        path.write_bytes(b"\0" * 4096)
    with pytest.raises(ValueError, match="not a V4L2 device"):   # the kernel's ENOTTY, said plainly
        probe_device(str(path))
