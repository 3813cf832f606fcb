"""Live status, for in-room displays, vendors' systems and the status page."""
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.routes.deps import ApplianceDep

router = APIRouter(tags=["status"])


@router.get("/api/status", summary="Injector link and telemetry, X-ray, current run, counters, alarms")
def get_status(appliance: ApplianceDep) -> dict:
    return appliance.status()


@router.get("/healthz", summary="200 when frames and the event log are healthy, else 503 with the reasons",
            responses={503: {"description": "Unhealthy: the reasons are listed"}})
def healthz(appliance: ApplianceDep) -> JSONResponse:
    status = appliance.status()
    reasons = [alarm["message"] for alarm in status["alarms"]]
    return JSONResponse({"ok": not reasons, "reasons": reasons}, status_code=503 if reasons else 200)
