"""uvicorn with the limits an HTTP server on a hospital network needs and uvicorn does not enforce itself.

uvicorn bounds neither the time a client may take to send its request nor the number of open connections, and
its httptools parser accepts a header of any size: one never-ending header grew the process by hundreds of MB,
and 1,100 half-sent requests used up every file descriptor (the hardening requirement: bad input never stalls the box). ``RequestGuard`` closes

- a request whose head (request line and headers) exceeds ``MAX_HEAD_BYTES`` (431),
- a connection whose request (head and body) is not complete ``REQUEST_TIMEOUT_S`` after its first byte or
  after the connection opened (408), so a slow or endless sender holds nothing for long,
- the longest-waiting idle or still-sending connection once ``max_connections`` are open, so descriptors never
  run out; a connection whose request is being answered (an event stream included) is never evicted.

The ASGI middleware ``RequestLimits`` refuses too many headers (431), an overlong request target (414) and more
than ``MAX_IN_FLIGHT`` requests (or ``MAX_STREAMS`` event streams) at once (503). It replaces uvicorn's
``limit_concurrency``, which counts open connections as well and so would answer 503 to everyone while idle
connections wait to be closed.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import resource
import socket
import ssl
import time
from collections import OrderedDict

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from core.ops.settings import Settings

log = logging.getLogger("cathlab.api.server")

# Request line + headers; browsers send 0.5-2 kB. nginx allows 8 kB per line, Apache 8190 bytes per line.
MAX_HEAD_BYTES = 16 * 1024
MAX_HEADERS = 100               # Apache's LimitRequestFields
MAX_TARGET_BYTES = 8 * 1024     # path + query
REQUEST_TIMEOUT_S = 10.0        # a request (head and body) from its first byte, or from connect, to complete
KEEP_ALIVE_S = 5                # idle time between requests on one connection (uvicorn's own timer)
MAX_IN_FLIGHT = 64              # requests being answered at once, besides the event streams
MAX_STREAMS = 32                # open /api/stream responses (each one is sent every status change)
STREAM_PATH = "/api/stream"
MAX_CONNECTIONS = 512
RESERVED_FDS = 128              # for the event log, serial port, grabber, recordings and the interpreter itself


def max_connections() -> int:
    """Open connections allowed: ``MAX_CONNECTIONS``, or fewer when the descriptor limit is lower."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(16, min(MAX_CONNECTIONS, soft - RESERVED_FDS))


class ConnectionBook:
    """Open connections of one server, and which of them may be closed to make room (oldest first)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self.refused = {"evicted": 0, "timed out": 0, "head too large": 0}
        self._logged = dict(self.refused)
        self._logged_at = 0.0
        self._idle: OrderedDict[RequestGuard, None] = OrderedDict()

    def note(self, kind: str) -> None:
        """Count a refused connection; a warning at most once a minute, so an attack cannot flood the log."""
        self.refused[kind] += 1
        now = time.monotonic()
        if now - self._logged_at >= 60.0:
            since = {k: v - self._logged[k] for k, v in self.refused.items() if v > self._logged[k]}
            log.warning("HTTP connections closed by the server's limits since the last report: %s (%d open)",
                        ", ".join(f"{v} {k}" for k, v in since.items()), self.open)
            self._logged, self._logged_at = dict(self.refused), now

    def opened(self, conn: RequestGuard) -> None:
        self.open += 1
        self._idle[conn] = None
        while self.open > self.limit:
            victim = next(iter(self._idle), None)
            if victim is None:  # every connection is being answered: the newcomer waits its turn elsewhere
                victim = conn
            self._idle.pop(victim, None)
            self.note("evicted")
            victim.drop()

    def waiting(self, conn: RequestGuard) -> None:
        self._idle.pop(conn, None)
        self._idle[conn] = None        # to the end: it waits from now

    def busy(self, conn: RequestGuard) -> None:
        self._idle.pop(conn, None)

    def closed(self, conn: RequestGuard) -> None:
        self._idle.pop(conn, None)
        self.open -= 1


class RequestGuard:
    """Mixin for a uvicorn HTTP protocol class: a bounded request head, a request deadline, a connection cap.

    Each connection is reading a request (deadline armed, head bytes counted), busy (the app answers), or idle
    between requests (uvicorn's keep-alive timer). Head bytes are counted per chunk received, so a parser holds
    at most ``MAX_HEAD_BYTES`` plus one read (256 kB) of an endless header before the connection is closed.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        book = getattr(self.server_state, "cathlab_connections", None)
        if book is None:
            book = self.server_state.cathlab_connections = ConnectionBook(max_connections())
        self._book: ConnectionBook = book
        self._counted = True
        self._dropped = False
        self._deadline: asyncio.TimerHandle | None = None
        self._start_reading()
        book.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        if self._counted:
            self._counted = False
            self._book.closed(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._dropped:
            return
        if self._reading is None:          # the first bytes of the next request on a kept-alive connection
            self._start_reading()
        cycle = self.cycle
        super().data_received(data)
        if self.transport.is_closing():    # the parser refused the request (400) and closed
            return
        if self.cycle is not cycle and self.cycle is not None:
            self._head_done = True
        if not self._head_done:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._book.note("head too large")
                self._refuse(431, "Request Header Fields Too Large")
        elif not self.cycle.more_body and self._reading is not None:
            self._reading = None           # the whole request is in: the app answers, however long it takes
            self._cancel_deadline()
            self._book.busy(self)

    def on_headers_complete(self) -> None:
        # uvicorn keeps only the path of an absolute-form target (``GET http://evil/ HTTP/1.1``), so the Host
        # check would see whatever Host header came along. RFC 9112 3.2.2: the target's authority is the host.
        if not self.url.startswith(b"/") and self.url != b"*":
            authority = self.url.partition(b"://")[2] if b"://" in self.url else self.url
            authority = re.split(rb"[/?#]", authority, maxsplit=1)[0]
            self.headers[:] = [(n, v) for n, v in self.headers if n != b"host"] + [(b"host", authority)]
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self._dropped and not self.transport.is_closing() and not getattr(self, "pipeline", None):
            self._book.waiting(self)

    def drop(self) -> None:
        """Close now, without a response (evicted to make room): the client may simply reconnect."""
        self._dropped = True
        self._cancel_deadline()
        if self._counted:
            self._counted = False
            self._book.closed(self)
        self.transport.abort()

    def _start_reading(self) -> None:
        self._reading = time.monotonic()
        self._head_done = False
        self._head_bytes = 0
        self._cancel_deadline()
        self._deadline = self.loop.call_later(REQUEST_TIMEOUT_S, self._too_slow)
        if self._counted:
            self._book.waiting(self)

    def _too_slow(self) -> None:
        self._deadline = None
        if self._reading is not None and not self.transport.is_closing():
            self._book.note("timed out")
            self._refuse(408, "Request Timeout")

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _refuse(self, status: int, reason: str) -> None:
        self._dropped = True
        self._cancel_deadline()
        body = f'{{"detail":"{reason.lower()}"}}'.encode()
        self.transport.write(f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
                             f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode() + body)
        self.transport.close()


class GuardedHttpToolsProtocol(RequestGuard, HttpToolsProtocol):
    """The protocol ``cathlab-edge run`` serves with (why httptools and not h11: docs/api.md)."""


class RequestLimits:
    """ASGI middleware: 431 for more than ``MAX_HEADERS`` headers or ``MAX_HEAD_BYTES`` of them, 414 for a
    target over ``MAX_TARGET_BYTES``, 503 with Retry-After beyond ``MAX_IN_FLIGHT`` requests or ``MAX_STREAMS``
    event streams at once, before the app reads anything. Streams have their own budget: open for hours, they
    would otherwise crowd out polls."""

    def __init__(self, app, max_in_flight: int = MAX_IN_FLIGHT, max_streams: int = MAX_STREAMS) -> None:
        self.app = app
        self.limits = {False: max_in_flight, True: max_streams}
        self.open = {False: 0, True: 0}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        if len(headers) > MAX_HEADERS:
            await _plain(send, 431, f"more than {MAX_HEADERS} request headers")
            return
        # A head that arrived whole in one read was not counted by RequestGuard; its size is known here.
        if sum(len(name) + len(value) + 4 for name, value in headers) > MAX_HEAD_BYTES:
            await _plain(send, 431, f"request headers larger than {MAX_HEAD_BYTES} bytes")
            return
        if len(scope.get("raw_path", b"")) + len(scope.get("query_string", b"")) > MAX_TARGET_BYTES:
            await _plain(send, 414, f"request target longer than {MAX_TARGET_BYTES} bytes")
            return
        stream = scope["path"] == STREAM_PATH
        if self.open[stream] >= self.limits[stream]:
            what = "event streams" if stream else "requests"
            await _plain(send, 503, f"too many {what} at once; try again shortly", retry_after=True)
            return
        self.open[stream] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.open[stream] -= 1


async def _plain(send, status: int, message: str, *, retry_after: bool = False) -> None:
    body = f'{{"detail":"{message}"}}'.encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    if retry_after:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# -- who may call: the Host header, and whether the network sees the token ---------------------------------
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def trusted_host_names(settings: Settings) -> list[str]:
    """The Host names the API answers besides an address literal of the interface a request arrived on:
    the loopback names, this machine's host name and ``allowed_hosts``."""
    names = list(LOOPBACK_NAMES)
    hostname = socket.gethostname().lower()
    names += [hostname, hostname.split(".")[0]]
    if not _is_any(settings.host):
        names.append(settings.host.lower())
    names += [h.lower().rstrip(".") for h in settings.allowed_hosts or ()]
    return list(dict.fromkeys(names))


def exposure_warnings(settings: Settings) -> list[str]:
    """What the log and the status page say about how the API is exposed."""
    if settings.tls_certfile is None and not is_loopback(settings.host):
        return [f"the API listens on {settings.host} without TLS: the write token and all data cross the "
                "network in clear; set tls_certfile and tls_keyfile (docs/operations.md)"]
    return []


def _is_any(host: str) -> bool:
    return host in ("0.0.0.0", "::", "")


_HOST_RE = re.compile(r"^(?:\[(?P<v6>[0-9a-f:.]+(?:%[0-9a-z._~-]+)?)\]|(?P<name>[a-z0-9._-]+))(?::(?P<port>\d{1,5}))?$")


def host_of(header: str) -> str | None:
    """The host part of a Host header, lower case, without port, brackets or a trailing dot; None when the
    header is not a host with an optional port (RFC 9110 7.2: ``[::1]:80@evil``, ``[localhost]``,
    ``localhost:evil``, ``a..``), which is refused rather than guessed at."""
    header = header.strip().lower()
    try:
        if ipaddress.ip_address(header.partition("%")[0]).version == 6:
            return header                 # a bare IPv6 literal: no port can follow it
    except ValueError:
        pass
    match = _HOST_RE.match(header)
    if match is None or (match["port"] is not None and int(match["port"]) > 65535):
        return None
    if match["v6"] is not None:
        try:
            ipaddress.IPv6Address(match["v6"].partition("%")[0])
        except ValueError:
            return None
        return match["v6"]
    name = match["name"].removesuffix(".")
    return name if name and ".." not in name and not name.startswith(".") else None


class TrustedHosts:
    """ASGI middleware: 400 unless the Host header names this appliance.

    A web page from elsewhere can make a browser on the lab network call the API through a name that resolves
    to this box (DNS rebinding); its requests then carry that foreign name. Starlette's TrustedHostMiddleware
    would do, but it splits ``[::1]:8000`` at the first colon and cannot accept the address a request came in
    on, which is how a box bound to 0.0.0.0 is reached by IP from every one of its interfaces.
    """

    def __init__(self, app, names: list[str]) -> None:
        self.app = app
        self.any = "*" in names
        self.exact = {n for n in names if not n.startswith("*")}
        self.suffixes = tuple(n[1:] for n in names if n.startswith("*."))

    def allowed(self, host: str | None, local_address: str | None) -> bool:
        if host is None:
            return False
        if self.any or host in self.exact or (self.suffixes and host.endswith(self.suffixes)):
            return True
        if local_address is None:
            return False
        try:
            return ipaddress.ip_address(host) == ipaddress.ip_address(local_address.partition("%")[0])
        except ValueError:
            return False

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        hosts = [v for k, v in scope["headers"] if k == b"host"]
        server = scope.get("server")
        # Exactly one Host (RFC 9112 3.2): with two, a proxy and this server could each believe another one.
        if len(hosts) != 1 or not self.allowed(host_of(hosts[0].decode("latin-1")), server[0] if server else None):
            await _plain(send, 400, "unknown Host header: add the name to the allowed_hosts setting")
            return
        await self.app(scope, receive, send)


# -- the server ----------------------------------------------------------------------------------------------
def tls_context_check(settings: Settings) -> None:
    """Load the certificate and key once, so a bad pair is one clear error naming the settings, not a
    traceback from inside the server."""
    if settings.tls_certfile is None:
        return
    for name in ("tls_certfile", "tls_keyfile"):
        path = getattr(settings, name)
        if not path.is_file():
            raise ValueError(f"{name} {path} does not exist or is not a file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.tls_certfile, settings.tls_keyfile)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"tls_certfile {settings.tls_certfile} and tls_keyfile {settings.tls_keyfile} cannot "
                         f"be used: {exc.strerror or exc}") from None


try:   # the loop uvicorn itself would pick, with one change (below)
    from uvloop import Loop as _BaseLoop
except ImportError:   # pragma: no cover - uvloop is a dependency on Linux
    _BaseLoop = asyncio.SelectorEventLoop


class HandshakeBoundedLoop(_BaseLoop):
    """uvicorn's event loop with the TLS handshake bounded like a request: uvicorn passes no
    ``ssl_handshake_timeout``, so a connection that never finishes its handshake held a descriptor and OpenSSL's
    buffers for the loop's default 60 s, before ``RequestGuard`` (which sees connections only after the
    handshake) could count it."""

    async def create_server(self, *args, **kwargs):
        if kwargs.get("ssl") is not None:
            kwargs.setdefault("ssl_handshake_timeout", REQUEST_TIMEOUT_S)
        return await super().create_server(*args, **kwargs)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvicorn's ``loop`` factory (``Config(loop="api.server:new_event_loop")``)."""
    return HandshakeBoundedLoop()


def server_config(app, settings: Settings) -> uvicorn.Config:
    """uvicorn's configuration for ``app``; call ``tls_context_check`` first."""
    tls = {}
    if settings.tls_certfile is not None:
        tls = {"ssl_certfile": str(settings.tls_certfile), "ssl_keyfile": str(settings.tls_keyfile)}
    # log_config=None: uvicorn's records go through our handler (JSON lines for journald). No WebSockets.
    return uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None, access_log=False,
                          timeout_graceful_shutdown=1, http=GuardedHttpToolsProtocol, ws="none",
                          timeout_keep_alive=KEEP_ALIVE_S, server_header=False,
                          loop="api.server:new_event_loop", **tls)
