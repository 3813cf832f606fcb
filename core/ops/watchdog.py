"""systemd service notification (sd_notify) and a watchdog that is petted only while the appliance works.

The protocol is a datagram of ``KEY=VALUE`` lines to the AF_UNIX socket named by $NOTIFY_SOCKET (a leading
``@`` means the abstract namespace); systemd sets it for ``Type=notify`` units, together with $WATCHDOG_USEC
(the unit's WatchdogSec) and $WATCHDOG_PID. It is a few lines of the stdlib socket module, so no dependency.

A watchdog that is petted from a timer thread only proves that the timer thread runs. This one asks
``check()`` first, and ``check`` asks whether frames and telemetry have really been processed since the last
time (``ProgressCheck``): a frame thread stuck in a driver call or a dead serial reader stops the petting,
and systemd restarts the service (Restart=on-failure) after WatchdogSec. A box without video by configuration
is judged on its telemetry alone: a restart would not give it frames.
"""
from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
from collections.abc import Callable

log = logging.getLogger("cathlab.watchdog")


def notify_socket_address(value: str | None = None) -> str | None:
    """The socket address from $NOTIFY_SOCKET (or ``value``), abstract names as ``\\0name``; None if unset."""
    value = os.environ.get("NOTIFY_SOCKET") if value is None else value
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if not value.startswith("/"):
        raise ValueError(f"NOTIFY_SOCKET must be an absolute path or @abstract name, got {value!r}")
    return value


def sd_notify(state: str, address: str | None = None) -> bool:
    """Send one notification (e.g. "READY=1\\nSTATUS=…"); False when not under systemd or the send failed."""
    if "\0" in state:
        raise ValueError("notification text must not contain NUL bytes")
    addr = notify_socket_address() if address is None else address
    if addr is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode("utf-8"), addr)
        return True
    except OSError as exc:  # systemd gone or socket replaced: the service goes on, the log says why
        log.warning("sd_notify failed: %s", exc)
        return False


def watchdog_interval_s(environ: dict[str, str] | None = None) -> float | None:
    """Half of WatchdogSec (systemd's advice), or None when the watchdog is off or meant for another process."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    try:
        value = int(usec)
    except ValueError:
        raise ValueError(f"WATCHDOG_USEC must be an integer number of microseconds, got {usec!r}") from None
    if value <= 0:
        raise ValueError(f"WATCHDOG_USEC must be positive, got {value}")
    return value / 2e6


class Watchdog:
    """Pets systemd's watchdog every ``interval_s`` (default WatchdogSec/2) while ``check()`` is true.

    Without $NOTIFY_SOCKET every call is a no-op that returns False, so the same code runs outside systemd.
    """

    def __init__(self, check: Callable[[], bool], *, interval_s: float | None = None,
                 address: str | None = None, status: Callable[[], str] | None = None) -> None:
        if not callable(check):
            raise ValueError("check must be a callable returning bool")
        self.check = check
        self.status = status
        self.address = notify_socket_address() if address is None else address
        self.interval_s = watchdog_interval_s() if interval_s is None else interval_s
        if self.interval_s is not None and self.interval_s <= 0:
            raise ValueError(f"watchdog interval must be positive, got {self.interval_s}")
        self.pets = 0
        self.misses = 0
        self._also: list[tuple[Callable[[], bool], Callable[[], str]]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None and self.interval_s is not None

    def ready(self, status: str = "running") -> bool:
        return sd_notify(f"READY=1\nSTATUS={status}", self.address) if self.address else False

    def stopping(self) -> bool:
        return sd_notify("STOPPING=1\nSTATUS=stopping", self.address) if self.address else False

    def also_require(self, check: Callable[[], bool], reason: Callable[[], str]) -> None:
        """Pet only while ``check()`` passes too (e.g. ``ApiProbe``); ``reason()`` says why when it does not."""
        self._also.append((check, reason))

    def step(self) -> bool:
        """One period: pet if the check passes (True), else only update STATUS (False)."""
        try:
            ok = bool(self.check())
        except Exception:  # boundary: a failing check means "not healthy", never a crashed watchdog thread
            log.exception("watchdog check failed")
            ok = False
        text = self._status_text()
        for check, reason in list(self._also):
            try:
                passed = bool(check())
            except Exception:  # boundary, as above
                log.exception("watchdog check failed")
                passed = False
            if not passed:
                ok = False
                text = str(reason()).replace("\n", " ")
        if ok:
            self.pets += 1
            msg = "WATCHDOG=1" + (f"\nSTATUS={text}" if text else "")
            return sd_notify(msg, self.address) if self.address else False
        self.misses += 1
        log.warning("watchdog not petted: %s", text or "check failed")
        if self.address:
            sd_notify(f"STATUS=stalled: {text or 'check failed'}", self.address)
        return False

    def start(self) -> None:
        """Start the petting thread (only when systemd asked for a watchdog)."""
        if not self.enabled or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.step()

    def _status_text(self) -> str:
        if self.status is None:
            return ""
        try:
            return str(self.status()).replace("\n", " ")
        except Exception:
            log.exception("watchdog status text failed")
            return ""


class ProgressCheck:
    """``check`` for the Watchdog: frames counted and telemetry decoded since the previous call.

    ``status`` returns the appliance's status dict (``Appliance.status``). Telemetry must progress only while
    the link claims to be up: with the injector off or unplugged (link silent/down) the reader thread is
    busy reconnecting, which is its job, and restarting the service would not bring the injector back.
    ``video=False`` (no video by configuration): frames are not judged, telemetry alone is.
    """

    def __init__(self, status: Callable[[], dict], *, video: bool = True) -> None:
        self._status = status
        self.video = video
        self._frames: int | None = None
        self._packets: int | None = None
        self.reason = "starting"

    def __call__(self) -> bool:
        st = self._status()
        counters = st["counters"]
        frames = int(counters["frames"])
        packets = int(sum(counters["serial"].get("packets_by_type", {}).values()))
        link = st["injector"]["link"]
        frames_ok = not self.video or (self._frames is not None and frames > self._frames)
        telemetry_ok = link != "up" or (self._packets is not None and packets > self._packets)
        first = self._frames is None
        self._frames, self._packets = frames, packets
        if first:
            self.reason = "starting"
            return True      # nothing to compare with yet; READY was just sent
        if not frames_ok:
            self.reason = f"no new frames (total {frames})"
        elif not telemetry_ok:
            self.reason = f"injector link up but no packets decoded (total {packets})"
        elif not self.video:
            self.reason = f"no video (by configuration), injector link {link}, packets {packets}"
        else:
            self.reason = f"frames {frames}, injector link {link}, packets {packets}"
        return frames_ok and telemetry_ok

    def status_text(self) -> str:
        return self.reason


class ApiProbe:
    """``check`` for the Watchdog: the HTTP API answers ``GET /healthz`` on its own socket within ``timeout_s``.

    Frames may flow while the API is dead (event loop blocked, descriptors exhausted, listener gone); only a
    real request through the listening socket proves otherwise. Any HTTP response counts, a 503 included: that
    one reports the appliance's alarms, which are the ProgressCheck's business. With TLS the certificate is not
    verified: the probe asks whether our own socket answers, not who it is.
    """

    def __init__(self, host: str, port: int, *, tls: bool = False, timeout_s: float = 5.0) -> None:
        if not 0 < port < 65536:
            raise ValueError(f"the API probe needs the listening port, got {port}")
        wildcard = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}
        self.address = (wildcard.get(host, host), port)
        self.tls, self.timeout_s = tls, timeout_s
        literal = f"[{self.address[0]}]" if ":" in self.address[0] else self.address[0]
        self._request = (f"GET /healthz HTTP/1.1\r\nHost: {literal}:{port}\r\n"
                         "Connection: close\r\n\r\n").encode("ascii")
        self.reason = "API not probed yet"

    def __call__(self) -> bool:
        try:
            with socket.create_connection(self.address, timeout=self.timeout_s) as raw:
                sock = raw
                if self.tls:
                    context = ssl.create_default_context()
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                    sock = context.wrap_socket(raw)
                sock.sendall(self._request)
                head = sock.recv(64)
        except OSError as exc:
            self.reason = f"API on {self.address[0]}:{self.address[1]} does not answer: {exc}"
            return False
        if not head.startswith(b"HTTP/1."):
            self.reason = f"API on {self.address[0]}:{self.address[1]} answered no HTTP ({head[:20]!r})"
            return False
        self.reason = "API answers"
        return True

    def status_text(self) -> str:
        return self.reason
