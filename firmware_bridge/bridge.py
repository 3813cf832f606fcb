"""InjectorBridge: transport + link, the one object the appliance holds for the injector line.

Threads: the transport's reader thread runs the whole chain (decode, link, callbacks, ACK writes);
callers on other threads only read ``link_state``, ``device`` and ``counters()``. Exceptions raised by the
caller's callbacks are logged and counted, never allowed to stop the reader.

An implausible value (firmware_bridge.plausibility) is logged as a protocol violation, one line per kind at
most once a minute (with how many were held back), and handed to ``on_violation`` just before its message
reaches ``on_message``; the link's counters keep every one.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

from .link import DOWN, Link, LinkOutput
from .plausibility import ReportLimiter, Violation
from .transport import SerialTransport

log = logging.getLogger(__name__)


class InjectorBridge:
    def __init__(self, url: str, *, on_message: Callable[[object, int], None],
                 on_link: Callable[[str, str, str], None], baudrate: int = 115200, silent_s: float = 3.0,
                 reconnect_min_s: float = 0.2, reconnect_max_s: float = 5.0,
                 on_bytes: Callable[[bytes, int], None] | None = None,
                 on_violation: Callable[[Violation, int], None] | None = None) -> None:
        """``on_bytes(data, arrival_ns)``, optional, sees every received byte before decoding (a recorder's
        tap: replaying those bytes through ``Link`` reproduces what was delivered). ``on_violation(violation,
        host_ns)``, optional, hears of each implausible value just before its message is delivered."""
        if not callable(on_message) or not callable(on_link):
            raise ValueError("on_message and on_link must be callables")
        for name, fn in (("on_bytes", on_bytes), ("on_violation", on_violation)):
            if fn is not None and not callable(fn):
                raise ValueError(f"{name} must be a callable or None")
        self._on_message, self._on_link, self._on_bytes = on_message, on_link, on_bytes
        self._on_violation = on_violation
        self._log_limit = ReportLimiter(60.0)
        self._lock = threading.Lock()
        self._link = Link(silent_s)
        self._transport = SerialTransport(
            url, on_open=self._opened, on_data=self._data, on_lost=self._lost, on_idle=self._idle,
            baudrate=baudrate, reconnect_min_s=reconnect_min_s, reconnect_max_s=reconnect_max_s)
        self.callback_errors = 0
        self._started = False

    def start(self) -> None:
        """Start the reader thread; a missing port is not an error (it is retried with backoff)."""
        if self._started:
            raise RuntimeError("bridge already started")
        self._started = True
        self._transport.start()

    def stop(self) -> None:
        """Stop reading and join the reader thread (within 1 s)."""
        self._transport.stop(timeout_s=1.0)

    @property
    def link_state(self) -> str:
        return self._link.state

    @property
    def device(self) -> dict | None:
        hello = self._link.device
        return hello.to_dict() if hello is not None else None

    def counters(self) -> dict:
        with self._lock:
            c = self._link.counters()
        c["callback_errors"] = self.callback_errors
        c["write_errors"] = self._transport.write_errors
        return c

    # -- reader thread -------------------------------------------------------------------------------
    def _opened(self, now_ns: int) -> None:
        with self._lock:
            out = self._link.port_opened(now_ns)
        self._dispatch(out)

    def _data(self, data: bytes, now_ns: int) -> None:
        if self._on_bytes is not None:
            self._call(self._on_bytes, data, now_ns)
        with self._lock:
            out = self._link.feed(data, now_ns)
        self._dispatch(out)

    def _idle(self, now_ns: int) -> None:
        with self._lock:
            out = self._link.tick(now_ns)
        self._dispatch(out)

    def _lost(self, now_ns: int, reason: str) -> None:
        with self._lock:
            out = self._link.port_closed(now_ns, reason) if self._link.state != DOWN else LinkOutput()
        self._dispatch(out)

    def _dispatch(self, out: LinkOutput) -> None:
        for data in out.send:
            self._transport.write(data)
        for old, new, reason in out.events:
            self._call(self._on_link, old, new, reason)
        doubted: dict[int, list[Violation]] = {}
        for violation in out.violations:
            doubted.setdefault(id(violation.message), []).append(violation)
        for msg, host_ns in out.messages:
            for violation in doubted.get(id(msg), ()):
                self._report(violation, host_ns)
            self._call(self._on_message, msg, host_ns)

    def _report(self, violation: Violation, host_ns: int) -> None:
        held = self._log_limit.admit(violation.kind, host_ns)
        if held is not None:
            more = f" ({held} more of this kind since the last report)" if held else ""
            log.warning("protocol violation %s: %s; %s not taken%s", violation.kind, violation.text,
                        violation.field, more)
        if self._on_violation is not None:
            self._call(self._on_violation, violation, host_ns)

    def _call(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception:  # the caller's bug must not kill the serial line; count and log it
            self.callback_errors += 1
            log.exception("serial bridge callback %r failed", fn)
