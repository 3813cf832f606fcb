"""Analysis settings (ROIs, centreline) and the latest clearance image."""
from typing import Annotated

from fastapi import APIRouter, Body
from fastapi.exceptions import HTTPException
from fastapi.responses import Response

from api.auth import UNAUTHORIZED, TokenDep
from api.routes.deps import NOT_STORED, ApplianceDep, WritableDep, durable
from api.routes.models import BUSY, UNPARSABLE, Centerline, Message, Rois

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
