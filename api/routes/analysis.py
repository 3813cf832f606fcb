"""Analysis settings (ROIs, centreline, calibration) and the latest clearance image."""
from typing import Annotated

from fastapi import APIRouter, Body
from fastapi.exceptions import HTTPException
from fastapi.responses import Response

from api.auth import UNAUTHORIZED, TokenDep
from api.routes.deps import NOT_STORED, ApplianceDep, WritableDep, durable
from api.routes.models import BUSY, UNPARSABLE, Calibration, CalibrationSet, Centerline, Message, Rois

router = APIRouter(prefix="/api", tags=["analysis"])


@router.put("/rois", response_model=Rois, dependencies=[TokenDep, WritableDep],
            responses={**UNAUTHORIZED, **UNPARSABLE, **NOT_STORED},
            summary="Set the regions of interest for time-density curves (null: placed automatically)")
def set_rois(appliance: ApplianceDep, body: Annotated[Rois, Body()]) -> Rois:
    appliance.set_rois(None if body.rois is None else [tuple(r) for r in body.rois])
    return durable(appliance, body)


@router.put("/centerline", response_model=Centerline, dependencies=[TokenDep, WritableDep],
            responses={**UNAUTHORIZED, **UNPARSABLE, **BUSY, **NOT_STORED},
            summary="Set the vessel centreline and reference diameter for clearance (null: found automatically)")
def set_centerline(appliance: ApplianceDep, body: Annotated[Centerline, Body()]) -> Centerline:
    points = None if body.points is None else [tuple(p) for p in body.points]
    appliance.set_centerline(points, body.diameter_px)
    return durable(appliance, body)


@router.get("/clearance/latest.png", response_class=Response,
            summary="Latest clearance: baseline and post images side by side with the grade (PNG)",
            responses={200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
                             "description": "Baseline left, post right"},
                       404: {"model": Message, "description": "No clearance measured yet"}, **BUSY})
def clearance_image(appliance: ApplianceDep) -> Response:
    png = appliance.clearance_png()
    if png is None:
        raise HTTPException(404, "no clearance measured yet")
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})


@router.put("/calibration", response_model=Calibration, dependencies=[TokenDep, WritableDep],
            responses={**UNAUTHORIZED, **UNPARSABLE, **BUSY, **NOT_STORED,
                       404: {"model": Message, "description": "No image kept for the catheter's run"}},
            summary="Set the vessel sizing calibration: mm per pixel, or a catheter of known size on a run")
def set_calibration(appliance: ApplianceDep, body: Annotated[CalibrationSet, Body()]) -> dict:
    catheter = None if body.catheter is None else [tuple(p) for p in body.catheter]
    return durable(appliance, appliance.set_calibration(mm_per_px=body.mm_per_px, catheter=catheter,
                                                        catheter_french=body.catheter_french, run_id=body.run_id))
