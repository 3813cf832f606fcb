"""A V4L2 frame grabber (UVC / Magewell / Epiphan ...) as a frame source. Why linuxpy: docs/video-capture.md.

Two layers, split where the library starts:
- ``GrabberDevice`` is the library boundary: open -> ``CaptureFormat``, ``read(timeout_s)`` -> ``RawBuffer``
  (bytes, driver sequence number, driver timestamp) or None on timeout, ``close``. ``LinuxpyGrabber`` is the
  real one (mmap streaming, non-blocking with select so a silent grabber cannot hang us). Tests plug a fake
  device in here, so everything below runs unchanged on them.
- ``V4L2Source`` (a FrameSource) turns buffers into ``Frame``: the Y plane as uint8, the driver's timestamp
  on time.monotonic_ns()'s clock, dropped frames from gaps in the driver's sequence numbers, late frames
  from the age of a buffer when we get it, and an unplugged or silent grabber reopened with backoff, with
  ``grabber_down`` / ``grabber_up`` events and an alarm in between.
"""
from __future__ import annotations

import errno
import logging
import select
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from core.sources.frames import Frame, FrameSource, shape_problem
from core.vocab import NS

log = logging.getLogger("cathlab.v4l2")

FLAG_ERROR = 0x0040                  # V4L2_BUF_FLAG_ERROR: the driver says the data is damaged
FLAG_TIMESTAMP_MASK = 0xE000
FLAG_TIMESTAMP_MONOTONIC = 0x2000    # the driver stamped CLOCK_MONOTONIC, the clock of time.monotonic_ns()
MAX_TIMESTAMP_AGE_NS = NS            # a driver stamp older than this (or in the future) is not believed
SUPPORTED = ("GREY", "YUYV", "UYVY", "NV12")


@dataclass(frozen=True)
class CaptureFormat:
    width: int
    height: int
    fourcc: str                      # "GREY" | "YUYV" | "UYVY" | "NV12"
    bytes_per_line: int
    fps: float | None                # what the driver reports, None if it does not say


@dataclass
class RawBuffer:
    data: bytes | bytearray | memoryview
    sequence: int                    # the driver's frame counter (v4l2_buffer.sequence)
    timestamp_ns: int | None         # driver timestamp in ns, None if the driver gave none
    flags: int = 0                   # v4l2_buffer.flags


class GrabberDevice(Protocol):
    def open(self) -> CaptureFormat: ...
    def read(self, timeout_s: float) -> RawBuffer | None: ...
    def close(self) -> None: ...


# -- pixel formats ---------------------------------------------------------------------------------------
def to_grey(data, fmt: CaptureFormat) -> np.ndarray:
    """The luma (Y) plane of one buffer as a contiguous (H, W) uint8 array (display video is already grey)."""
    w, h, bpl = fmt.width, fmt.height, fmt.bytes_per_line
    if fmt.fourcc not in SUPPORTED:
        raise ValueError(f"unsupported pixel format {fmt.fourcc!r}; the grabber must deliver one of "
                         f"{', '.join(SUPPORTED)}")
    per_pixel = 1 if fmt.fourcc in ("GREY", "NV12") else 2
    if w <= 0 or h <= 0 or bpl < w * per_pixel:
        raise ValueError(f"bad {fmt.fourcc} geometry: {w}x{h}, {bpl} bytes per line")
    buf = np.frombuffer(data, dtype=np.uint8)
    need = bpl * (h - 1) + w * per_pixel     # the last line's padding may be missing
    if buf.size < need:
        raise ValueError(f"short {fmt.fourcc} buffer: {buf.size} bytes, {w}x{h} needs at least {need}")
    if buf.size < bpl * h:
        buf = np.concatenate([buf, np.zeros(bpl * h - buf.size, np.uint8)])
    rows = buf[:bpl * h].reshape(h, bpl)
    if fmt.fourcc in ("GREY", "NV12"):       # NV12: the Y plane comes first, chroma after it
        y = rows[:, :w]
    elif fmt.fourcc == "YUYV":               # Y0 U Y1 V
        y = rows[:, 0:2 * w:2]
    else:                                    # UYVY: U Y0 V Y1
        y = rows[:, 1:2 * w:2]
    return np.ascontiguousarray(y)


def map_timestamp(driver_ns: int | None, flags: int, arrival_ns: int) -> tuple[int, bool]:
    """(monotonic ns of the frame, whether the driver's stamp was used).

    Only a CLOCK_MONOTONIC stamp that is not in the future and not older than a second is used; anything
    else (no stamp, realtime or "unknown" clock, nonsense) falls back to the arrival time.
    """
    if driver_ns is not None and flags & FLAG_TIMESTAMP_MASK == FLAG_TIMESTAMP_MONOTONIC:
        age = arrival_ns - driver_ns
        if 0 <= age <= MAX_TIMESTAMP_AGE_NS:
            return driver_ns, True
    return arrival_ns, False


# -- the source ------------------------------------------------------------------------------------------
class V4L2Source(FrameSource):
    """Frames from a grabber; never ends by itself (an unplugged grabber is waited for), only by close()."""

    intensity = "log"
    dtype = np.dtype(np.uint8)

    def __init__(self, device_factory: Callable[[], GrabberDevice], *, name: str = "v4l2",
                 fps: float | None = None, on_event: Callable[[str, dict], None] | None = None,
                 read_timeout_s: float = 0.5, stall_reopen_s: float = 5.0,
                 reconnect_min_s: float = 0.2, reconnect_max_s: float = 5.0,
                 late_frames: float = 2.0) -> None:
        super().__init__()
        if not 0 < reconnect_min_s <= reconnect_max_s:
            raise ValueError(f"need 0 < reconnect_min_s <= reconnect_max_s, got {reconnect_min_s}, {reconnect_max_s}")
        if read_timeout_s <= 0 or stall_reopen_s <= 0 or late_frames <= 0:
            raise ValueError("read_timeout_s, stall_reopen_s and late_frames must be positive")
        if fps is not None and fps <= 0:
            raise ValueError(f"frame rate must be positive, got {fps}")
        self._factory = device_factory
        self.name = name
        self.fps = fps or 30.0
        self._fps_given = fps is not None
        self.shape = None
        self._on_event = on_event
        self._timeout = read_timeout_s
        self._stall_reopen_ns = int(stall_reopen_s * NS)
        self._dmin, self._dmax = reconnect_min_s, reconnect_max_s
        self._late_ns_factor = late_frames
        self._dev: GrabberDevice | None = None
        self._fmt: CaptureFormat | None = None
        self._delay = reconnect_min_s
        self._last_seq: int | None = None
        self._next_index = 0
        self._last_frame_ns: int | None = None
        self._stalled = False
        self._down_reason: str | None = None
        self.alarm: str | None = None        # set while the grabber is down or silent
        self.late = 0
        self.frame_errors = 0
        self.reconnects = 0
        self.driver_timestamps = 0
        self.arrival_timestamps = 0

    def counters(self) -> dict:
        return {"dropped": self.dropped, "late": self.late, "errors": self.frame_errors,
                "reconnects": self.reconnects, "driver_timestamps": self.driver_timestamps,
                "arrival_timestamps": self.arrival_timestamps, "alarm": self.alarm}

    def read(self) -> Frame | None:
        while not self._closed.is_set():
            if self._dev is None and not self._open():
                continue
            try:
                buf = self._dev.read(self._timeout)
            except OSError as exc:
                self._lost(f"read failed: {exc.strerror or exc}")
                continue
            now = time.monotonic_ns()
            if buf is None:
                self._silent(now)
                continue
            frame = self._frame(buf, now)
            if frame is not None:
                return frame
        return None

    def close(self) -> None:
        super().close()
        self._release()

    # -- steps -----------------------------------------------------------------------------------------
    def _open(self) -> bool:
        try:
            dev = self._factory()
            fmt = dev.open()
        except (OSError, ValueError) as exc:
            self._down(f"cannot open: {exc}")
            self._closed.wait(self._delay)
            self._delay = min(2 * self._delay, self._dmax)
            return False
        problem = None
        if fmt.fourcc not in SUPPORTED:
            problem = f"unsupported pixel format {fmt.fourcc!r} (need one of {', '.join(SUPPORTED)})"
        elif (small := shape_problem((fmt.height, fmt.width))) is not None:
            problem = small     # refused once with the reason, not frame by frame
        if problem is not None:
            try:
                dev.close()
            except OSError:
                pass
            self._down(problem)
            self._closed.wait(self._dmax)
            return False
        self._dev, self._fmt = dev, fmt
        self.shape = (fmt.height, fmt.width)
        if not self._fps_given and fmt.fps:
            self.fps = float(fmt.fps)
        self._last_seq = None
        self._last_frame_ns = time.monotonic_ns()
        self._stalled = False
        if self._down_reason is not None:
            self.reconnects += 1
        self._down_reason = None
        self.alarm = None
        self._delay = self._dmin
        self._emit("grabber_up", {"width": fmt.width, "height": fmt.height, "format": fmt.fourcc,
                                  "fps": self.fps})
        return True

    def _frame(self, buf: RawBuffer, now: int) -> Frame | None:
        if self._last_seq is not None:
            gap = (buf.sequence - self._last_seq - 1) & 0xFFFFFFFF   # u32 counter, wraps
            if gap and gap < 0x80000000:
                self.dropped += gap
                self._next_index += gap
        self._last_seq = buf.sequence
        self._last_frame_ns = now
        if self._stalled:
            self._stalled = False
            self.alarm = None
            self._emit("grabber_resumed", {})
        index = self._next_index
        self._next_index += 1
        if buf.flags & FLAG_ERROR:
            self.frame_errors += 1
            return None
        t_ns, from_driver = map_timestamp(buf.timestamp_ns, buf.flags, now)
        if from_driver:
            self.driver_timestamps += 1
            if now - t_ns > self._late_ns_factor * NS / self.fps:
                self.late += 1               # waited in the driver's queue: we are falling behind
        else:
            self.arrival_timestamps += 1
        try:
            pixels = to_grey(buf.data, self._fmt)
        except ValueError as exc:
            self.frame_errors += 1
            log.warning("grabber frame %d rejected: %s", buf.sequence, exc)
            return None
        return Frame(pixels, t_ns, index)

    def _silent(self, now: int) -> None:
        silent_ns = now - (self._last_frame_ns or now)
        if not self._stalled and silent_ns > 2 * self._timeout * NS:
            self._stalled = True
            self.alarm = "grabber delivers no frames (no input signal?)"
            self._emit("grabber_stalled", {"silent_s": round(silent_ns / NS, 3)})
        if silent_ns > self._stall_reopen_ns:
            # Some grabbers only recover from a lost input signal by reopening the device.
            self._lost(f"no frame for {silent_ns / NS:.1f} s")

    def _lost(self, reason: str) -> None:
        self._release()
        self._down(reason)

    def _down(self, reason: str) -> None:
        self.alarm = f"grabber down: {reason}"
        if self._down_reason is None:        # one event per outage, not one per retry
            self._emit("grabber_down", {"reason": reason})
            log.warning("grabber %s down: %s", self.name, reason)
        self._down_reason = reason

    def _release(self) -> None:
        dev, self._dev = self._dev, None
        if dev is not None:
            try:
                dev.close()
            except OSError:
                pass

    def _emit(self, kind: str, data: dict) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(kind, dict(data, device=self.name))
        except Exception:  # boundary: the listener's bug must not stop the frames
            log.exception("grabber event listener failed")


# -- the real device -------------------------------------------------------------------------------------
class LinuxpyGrabber:
    """A V4L2 capture device through linuxpy: mmap streaming, non-blocking, with select for the timeout."""

    def __init__(self, path: str, *, width: int | None = None, height: int | None = None,
                 fourcc: str | None = None, fps: float | None = None, buffers: int = 4) -> None:
        self.path = path
        self.request = (width, height, fourcc, fps)
        self.buffers = buffers
        self._device = None
        self._capture = None
        self._fmt: CaptureFormat | None = None

    def open(self) -> CaptureFormat:
        from linuxpy.video.device import BufferType, Device, VideoCapture

        device = Device(self.path, blocking=False)
        capture = None
        try:
            device.open()
            capture = VideoCapture(device, size=self.buffers)
            width, height, fourcc, fps = self.request
            if width and height:
                capture.set_format(width, height, fourcc or "YUYV")
            if fps:
                capture.set_fps(fps)
            fmt = device.get_format(BufferType.VIDEO_CAPTURE)
            try:
                driver_fps = float(device.get_fps(BufferType.VIDEO_CAPTURE))
            except (OSError, ZeroDivisionError, ValueError):
                driver_fps = None
            capture.open()
        except Exception:
            self._capture, self._device = capture, device
            try:
                self.close()                 # a late failure (STREAMON: ENOSPC) leaves buffers mapped
            except OSError:
                pass
            raise
        self._device, self._capture = device, capture
        self._fmt = CaptureFormat(fmt.width, fmt.height, fourcc_text(int(fmt.pixel_format)),
                                  fmt.bytes_per_line, driver_fps)
        return self._fmt

    def read(self, timeout_s: float) -> RawBuffer | None:
        ready, _, _ = select.select((self._device,), (), (), timeout_s)
        if not ready:
            return None
        try:
            # ``into``: copied out while the buffer is dequeued; the driver refills it right after.
            frame = self._capture.buffer.raw_read(into=bytearray(self._capture.buffer.format.size))
        except BlockingIOError:
            return None
        buff = frame.buff
        ts = buff.timestamp.secs * NS + buff.timestamp.usecs * 1000
        return RawBuffer(frame.data, int(buff.sequence), ts if ts else None, int(buff.flags))

    def close(self) -> None:
        capture, device, self._capture, self._device = self._capture, self._device, None, None
        try:
            if capture is not None:
                capture.close()
        except OSError as exc:
            if exc.errno not in (errno.ENODEV, errno.EBADF):
                raise
            # STREAMOFF failed, so linuxpy skipped unmapping: do it now, or the gone device's buffers stay
            # mapped until the cyclic GC happens to collect them (MBs per unplug).
            try:
                capture.disarm()
            except OSError:
                pass                         # freeing them (REQBUFS) fails too, after the unmapping
        finally:
            if device is not None:
                device.close()


def fourcc_text(code: int) -> str:
    return code.to_bytes(4, "little").decode("ascii", errors="replace")


def open_grabber(path: str, *, fps: float | None = None, on_event=None, reconnect_min_s: float = 0.2,
                 reconnect_max_s: float = 5.0) -> V4L2Source:
    """The source for ``--video /dev/videoN``."""
    return V4L2Source(lambda: LinuxpyGrabber(path, fps=fps), name=path, fps=fps, on_event=on_event,
                      reconnect_min_s=reconnect_min_s, reconnect_max_s=reconnect_max_s)


def probe_device(path: str) -> str:
    """One line about a grabber for ``doctor``; OSError / ValueError say why it cannot capture."""
    from linuxpy.video.device import BufferType, Capability, Device

    try:
        with Device(path) as device:
            info = device.info
            try:
                caps = info.device_capabilities
            except OSError as exc:       # the kernel answers ENOTTY for a node of another kind (or a file)
                if exc.errno != errno.ENOTTY:
                    raise
                raise ValueError(f"not a V4L2 device: it rejects VIDIOC_QUERYCAP ({exc.strerror})") from None
            if Capability.VIDEO_CAPTURE not in caps:
                raise ValueError(f"{info.card} ({info.driver}) cannot capture video")
            fmt = device.get_format(BufferType.VIDEO_CAPTURE)
            fourcc = fourcc_text(int(fmt.pixel_format))
            if fourcc not in SUPPORTED:
                raise ValueError(f"{info.card} delivers {fourcc}; set it to one of {', '.join(SUPPORTED)}")
            return f"{info.card} ({info.driver}), {fmt.width}x{fmt.height} {fourcc}"
    except (OSError, ValueError):
        raise
    except Exception as exc:  # boundary: whatever else linuxpy raises on answers it cannot parse
        raise ValueError(f"not a V4L2 capture device ({exc})") from None
