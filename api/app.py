"""The FastAPI application: ``create_app(settings)`` builds it; the appliance lives in the lifespan."""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.routes import page, status
from core.appliance import Appliance
from core.settings import Settings


def create_app(settings: Settings, *, appliance: Appliance | None = None) -> FastAPI:
    """The app for ``settings``; pass ``appliance`` to serve one built elsewhere (tests, other sources)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        device = appliance if appliance is not None else Appliance(settings)
        device.start()
        app.state.appliance = device
        try:
            yield
        finally:
            device.stop()

    app = FastAPI(title="cathlab-edge", version="0.1.0", lifespan=lifespan,
                  description="Status of the passive cath-lab edge appliance: injector telemetry, X-ray runs, "
                              "contrast-run timing, venographic clearance, event log.")
    app.include_router(status.router)
    app.include_router(page.router)
    return app
