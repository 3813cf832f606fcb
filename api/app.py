"""The FastAPI application: ``create_app(settings)`` builds it; the appliance and the stream hub live in the
lifespan.

Errors are split by who is at fault: a caller's bad value (ValueError from the appliance) is a 422 in the same
shape as FastAPI's own validation errors, an unknown id (LookupError) a 404. Anything else is our bug and stays
a 500 so it gets fixed, not hidden.
"""
from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pydantic
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.auth import ensure_token
from api.routes import analysis, events, page, procedures, runs, status
from api.routes.models import Status
from api.server import RequestLimits, TrustedHosts, exposure_warnings
from api.sse import StreamHub
from core.appliance.appliance import Appliance
from core.ops.settings import Settings
from core.ops.watchdog import ApiProbe
from core.sources.frames import FrameSource
from core.store.eventlog import LogUnavailable

log = logging.getLogger("cathlab.api")

# The largest legitimate body (a 256-point centreline, pretty-printed) is ~15 kB. A 1 MiB body of 90,000
# unknown keys cost 2.6 s of event-loop time to validate and a 9.6 MB 422; at 64 KiB that is a sixteenth.
MAX_BODY_BYTES = 64 * 1024
# Errors listed in a 422: enough to fix a request, not one per unknown key of a body built to be refused.
MAX_VALIDATION_ERRORS = 20


def create_app(settings: Settings, *, appliance: Appliance | None = None, source: FrameSource | None = None,
               trusted_hosts: list[str] | None = None) -> FastAPI:
    """The app for ``settings``; pass ``appliance`` to serve one built elsewhere (tests, other sources), or
    ``source`` for a frame source already opened from ``settings.video`` (the command line checks a replay first).

    The write token is read from (or created in) ``settings.data_dir``; ``ensure_token`` tells the caller
    whether it was new, so the command line can print it once. ``trusted_hosts``: the Host names to answer
    (``api.server.trusted_host_names``; the command line always passes them), None for no Host check.
    """
    token, _ = ensure_token(settings.data_dir)
    warnings = exposure_warnings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The event loop shares the interpreter with the frame, serial and analysis threads. At the default 5 ms
        # switch interval a busy one holds it long enough to double the p99 of a status poll; at 1 ms the loop
        # gets it back sooner (the frame kernel runs without the GIL, so it loses nothing).
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(switch_interval, 0.001))
        try:
            for warning in warnings:
                log.warning("%s", warning)
            device = appliance if appliance is not None else Appliance(settings, source=source)
            device.start()
            if settings.port:
                # systemd's watchdog also needs the API to answer, not only the frames to flow.
                probe = ApiProbe(settings.host, settings.port, tls=settings.tls_certfile is not None)
                device.watchdog.also_require(probe, probe.status_text)
            hub = StreamHub(lambda: Status.model_validate(dict(device.status(), warnings=warnings))
                            .model_dump(mode="json"),
                            replay_reader(device))
            hub.start()
            unsubscribe = device.subscribe(hub.on_event)
            restore_signals = _close_streams_on_exit_signals(hub.close_threadsafe)
            app.state.appliance, app.state.hub = device, hub
            try:
                yield
            finally:
                restore_signals()
                unsubscribe()
                await hub.stop()
                device.stop()
        finally:
            sys.setswitchinterval(switch_interval)

    # No /docs or /redoc: FastAPI serves them from a CDN, and the room has no internet. /openapi.json stays.
    app = FastAPI(title="cathlab-edge", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Status of the passive cath-lab edge appliance: injector telemetry, X-ray runs, "
                              "contrast-run timing, venographic clearance, event log. Reads need no token; "
                              "writes need `Authorization: Bearer <token>` (the token is in `<data_dir>/api-token`).")
    app.state.token = token
    app.state.event_pages = events.PageGate()
    app.state.warnings = warnings
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    if trusted_hosts is not None:
        app.add_middleware(TrustedHosts, names=trusted_hosts)
    app.add_middleware(RequestLimits)   # outermost: the cheapest refusals first
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ValueError, _value_error)
    app.add_exception_handler(LookupError, _lookup_error)
    app.add_exception_handler(TimeoutError, _busy)
    app.add_exception_handler(LogUnavailable, _not_stored)
    for module in (status, runs, procedures, analysis, events, page):
        app.include_router(module.router)
    return app


def replay_reader(device: Appliance) -> Callable[[int, int], list[dict]]:
    """The stream's Last-Event-ID replay: a page as ``GET /api/events`` gives it (about 256 kB at most), read
    two at a time. 32 streams replaying 1,000 events each at once dropped 41 frames and held 146 MB."""
    readers = threading.BoundedSemaphore(events.PAGES_AT_ONCE)

    def read(after: int, limit: int) -> list[dict]:
        with readers:
            return events.within_bytes(device.events(after=after, limit=limit), events.MAX_PAGE_BYTES)
    return read


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    return JSONResponse({"detail": jsonable_encoder(errors[:MAX_VALIDATION_ERRORS])}, status_code=422,
                        headers={"X-Validation-Errors": str(len(errors))})


async def _value_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, pydantic.ValidationError):
        raise exc  # our own model refusing the appliance's data is a bug (requests are validated by FastAPI)
    # Same body as FastAPI's RequestValidationError, so clients parse one 422 shape.
    return JSONResponse({"detail": [{"loc": ["body"], "msg": str(exc), "type": "value_error"}]}, status_code=422)


async def _lookup_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, (KeyError, IndexError)):
        raise exc  # a missing key or index in our own code is a bug: let it be a 500 and a traceback
    message = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    return JSONResponse({"detail": message or "not found"}, status_code=404)


async def _busy(request: Request, exc: Exception) -> JSONResponse:
    # The appliance's analysis worker did not answer in time (a long clearance analysis ahead in its queue).
    return JSONResponse({"detail": "the appliance is busy with an analysis; try again shortly"}, status_code=503,
                        headers={"Retry-After": "2"})


async def _not_stored(request: Request, exc: Exception) -> JSONResponse:
    # The event log cannot commit (disk full, read-only, I/O error): a 2xx would claim what is not durable.
    return JSONResponse({"detail": exc.reason}, status_code=503, headers={"Retry-After": str(exc.retry_after_s)})


def _close_streams_on_exit_signals(close: Callable[[], None]) -> Callable[[], None]:
    """Chain SIGTERM/SIGINT so open event streams end the moment shutdown begins.

    uvicorn waits for open responses before it runs the lifespan shutdown; an SSE response never finishes on
    its own, so without this every stream would hold the server for the whole graceful timeout. The previous
    handler (uvicorn's) still runs; nothing is chained outside the main thread (TestClient) or when no Python
    handler is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    installed: dict[int, Callable] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum, frame, previous=previous):
            close()
            previous(signum, frame)

        signal.signal(sig, handler)
        installed[sig] = (handler, previous)

    def restore() -> None:
        for sig, (handler, previous) in installed.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, previous)
    return restore


class _TooLarge(BaseException):
    """Not an Exception: FastAPI turns any Exception raised while reading a body into a 400."""


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``limit`` bytes, declared or streamed, before it is held in
    memory (FastAPI would read any body whole)."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(send)
            return
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send) -> None:
        body = f'{{"detail":"request body larger than {self.limit} bytes"}}'.encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
