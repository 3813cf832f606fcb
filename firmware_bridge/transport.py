"""Transport: a byte pipe over any pyserial URL, with reconnect. Knows nothing of the content.

One reader thread opens the port (``serial.serial_for_url``: /dev/ttyUSB0, socket://, rfc2217://, loop://,
injsim://), reads, and hands bytes to ``on_data``. When the port vanishes (USB unplug, socket closed) it
reports ``on_lost`` and retries with backoff ``d = min(2 d, d_max)`` from ``d_min``, reset once a
connection delivers data. ``stop()`` cancels the wait and joins.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterator

import serial

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.05  # also the tick period of the caller's on_idle


def backoff(d_min: float, d_max: float) -> Iterator[float]:
    """Reconnect delays: d_min, then d = min(2 d, d_max) forever."""
    d = d_min
    while True:
        yield d
        d = min(2 * d, d_max)


class SerialTransport:
    def __init__(self, url: str, *, on_open: Callable[[int], None], on_data: Callable[[bytes, int], None],
                 on_lost: Callable[[int, str], None], on_idle: Callable[[int], None] = lambda now_ns: None,
                 baudrate: int = 115200, reconnect_min_s: float = 0.2, reconnect_max_s: float = 5.0,
                 opener: Callable[..., serial.SerialBase] = serial.serial_for_url) -> None:
        if not isinstance(url, str) or not url:
            raise ValueError(f"serial URL must be a non-empty string, got {url!r}")
        if baudrate <= 0:
            raise ValueError(f"baudrate must be positive, got {baudrate}")
        if not 0 < reconnect_min_s <= reconnect_max_s:
            raise ValueError(f"need 0 < reconnect_min_s <= reconnect_max_s, got {reconnect_min_s}, {reconnect_max_s}")
        self.url = url
        self._on_open, self._on_data, self._on_lost, self._on_idle = on_open, on_data, on_lost, on_idle
        self._baudrate = baudrate
        self._dmin, self._dmax = reconnect_min_s, reconnect_max_s
        self._opener = opener
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._port: serial.SerialBase | None = None
        self._write_lock = threading.Lock()
        self.open_failures = 0
        self.write_errors = 0
        self.last_error: str | None = None

    @property
    def is_open(self) -> bool:
        return self._port is not None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("transport already started")
        self._thread = threading.Thread(target=self._run, name=f"serial:{self.url}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 1.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error("serial reader for %s did not stop within %.1f s", self.url, timeout_s)

    def write(self, data: bytes) -> bool:
        """Send bytes if the port is open; a failed write is counted (the reader will see the loss)."""
        with self._write_lock:
            port = self._port
            if port is None:
                return False
            try:
                port.write(data)
                return True
            except (serial.SerialException, OSError) as exc:
                self.write_errors += 1
                self.last_error = f"write failed: {exc}"
                return False

    def _run(self) -> None:
        delays = backoff(self._dmin, self._dmax)
        while not self._stop.is_set():
            port = self._open()
            if port is None:
                self._on_idle(time.monotonic_ns())
                self._stop.wait(next(delays))
                continue
            got_data, reason = self._pump(port)
            if got_data:
                delays = backoff(self._dmin, self._dmax)  # a working connection resets the backoff
            with self._write_lock:
                self._port = None
            try:
                port.close()
            except (serial.SerialException, OSError):
                pass
            self._on_lost(time.monotonic_ns(), reason)
            if not self._stop.is_set():
                self._stop.wait(next(delays))

    def _open(self) -> serial.SerialBase | None:
        try:
            port = self._opener(self.url, baudrate=self._baudrate, timeout=READ_TIMEOUT_S, write_timeout=1.0)
        except (serial.SerialException, OSError, ValueError) as exc:
            self.open_failures += 1
            if self.last_error != f"open failed: {exc}":
                log.warning("cannot open serial port %s: %s (retrying)", self.url, exc)
            self.last_error = f"open failed: {exc}"
            return None
        with self._write_lock:
            self._port = port
        self._on_open(time.monotonic_ns())
        return port

    def _pump(self, port: serial.SerialBase) -> tuple[bool, str]:
        got_data = False
        try:
            while not self._stop.is_set():
                data = port.read(max(1, port.in_waiting))
                now = time.monotonic_ns()
                if data:
                    got_data = True
                    self._on_data(data, now)
                self._on_idle(now)
        except (serial.SerialException, OSError) as exc:
            self.last_error = f"read failed: {exc}"
            log.warning("serial port %s lost: %s", self.url, exc)
            return got_data, f"port lost: {exc}"
        except Exception as exc:  # our bug: a dead reader would leave the link silently stuck; reopen
            self.last_error = f"internal error: {exc!r}"
            log.exception("serial reader for %s failed; reopening the port", self.url)
            return got_data, f"internal error: {exc!r}"
        return got_data, "stopped"
