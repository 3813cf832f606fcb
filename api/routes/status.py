"""Live status, health and metrics: for in-room displays, vendors' systems, monitoring and the status page."""
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from api import metrics
from api.routes.deps import ApplianceDep
from api.routes.models import Health, Status

router = APIRouter(tags=["status"])


@router.get("/api/status", response_model=Status,
            summary="Injector link and telemetry, X-ray, current run, procedure, counters, alarms")
async def get_status(appliance: ApplianceDep, request: Request) -> dict:
    # async on purpose: status() takes microseconds and never touches the disk, so it runs on the event loop
    # instead of paying a thread-pool hop per request (the polled hot path: 20 displays at up to 10 Hz).
    return dict(appliance.status(), warnings=request.app.state.warnings)


@router.get("/healthz", response_model=Health,
            summary="200 when the appliance is healthy, else 503 with the reasons (its active alarms)",
            responses={503: {"model": Health, "description": "Unhealthy: the reasons are listed"}})
async def healthz(appliance: ApplianceDep) -> JSONResponse:
    alarms = appliance.status()["alarms"]
    reasons = [alarm["message"] for alarm in alarms]
    return JSONResponse({"ok": not reasons, "reasons": reasons}, status_code=503 if reasons else 200)


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus text format",
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "Counters and gauges, one family per value"}})
async def get_metrics(request: Request) -> Response:
    state = request.app.state
    if getattr(state, "metrics_registry", None) is None:   # one per app; it reads the appliance at each scrape
        state.metrics_registry = metrics.new_registry(lambda: metrics.appliance_values(state.appliance, state.hub))
    return Response(metrics.scrape(state.metrics_registry), media_type=metrics.CONTENT_TYPE)
