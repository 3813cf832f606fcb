"""Contrast runs: timing, injection and ROI curves as recorded; peak-opacity image; operator labels."""
from typing import Annotated

from fastapi import APIRouter, Body, Path, Query
from fastapi.exceptions import HTTPException
from fastapi.responses import Response

from api.auth import UNAUTHORIZED, TokenDep
from api.routes.deps import NOT_STORED, ApplianceDep, WritableDep, durable
from api.routes.models import BUSY, ID_PATTERN, UNPARSABLE, Message, Run, RunLabel, RunLabelled, RunList, Vessel

router = APIRouter(prefix="/api/runs", tags=["runs"])
RunIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="Run id, as listed by `GET /api/runs`")]
NOT_FOUND = {404: {"model": Message, "description": "No run with this id"}}


@router.get("", response_model=RunList, summary="The last runs, oldest first")
def list_runs(appliance: ApplianceDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> dict:
    return {"runs": appliance.runs(limit=limit)}


@router.get("/{run_id}", response_model=Run, responses=NOT_FOUND,
            summary="One run: timing, injection, ROI time-density curves")
def get_run(appliance: ApplianceDep, run_id: RunIdPath) -> dict:
    run = appliance.run(run_id)
    if run is None:
        raise HTTPException(404, f"no run {run_id!r}")
    return run


@router.get("/{run_id}/image.png", response_class=Response, summary="Peak-opacity image of a run (PNG)",
            responses={200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
                             "description": "Contrast dark on a light field"},
                       404: {"model": Message, "description": "No image for this run (unknown, or no longer kept)"}})
def run_image(appliance: ApplianceDep, run_id: RunIdPath) -> Response:
    png = appliance.run_image_png(run_id)
    if png is None:
        raise HTTPException(404, f"no image for run {run_id!r}")
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})


@router.put("/{run_id}/label", response_model=RunLabelled, dependencies=[TokenDep, WritableDep],
            responses={**UNAUTHORIZED, **NOT_FOUND, **UNPARSABLE, **NOT_STORED},
            summary="Label a run baseline, intraprocedural or completion")
def label_run(appliance: ApplianceDep, run_id: RunIdPath, body: Annotated[RunLabel, Body()]) -> dict:
    appliance.label_run(run_id, body.label)
    return durable(appliance, {"run_id": run_id, "label": body.label})


@router.put("/{run_id}/vessel", response_model=Vessel, dependencies=[TokenDep, WritableDep],
            responses={**UNAUTHORIZED, **BUSY, **NOT_STORED,
                       404: {"model": Message, "description": "No image kept for this run"}},
            summary="Measure the vessel of a run now (diameters, reference, % stenosis, lesion length)")
def measure_vessel(appliance: ApplianceDep, run_id: RunIdPath) -> dict:
    return durable(appliance, appliance.measure_vessel(run_id))
