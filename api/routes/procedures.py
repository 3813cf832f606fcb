"""Procedures: totals, contrast against its limit, clearance results; start, end, patient parameters."""
from typing import Annotated

from fastapi import APIRouter, Body, Path, Query
from fastapi.exceptions import HTTPException

from api.auth import UNAUTHORIZED, TokenDep
from api.routes.deps import NOT_STORED, ApplianceDep, WritableDep, durable
from api.routes.models import (ID_PATTERN, UNPARSABLE, HandInjection, Message, Patient, Procedure, ProcedureList,
                               ProcedureStart, Totals)

router = APIRouter(prefix="/api/procedures", tags=["procedures"])
ProcedureIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="Procedure id")]
NO_OPEN = {404: {"model": Message, "description": "No procedure is open"}}


@router.get("", response_model=ProcedureList, summary="Procedures, most recent first")
def list_procedures(appliance: ApplianceDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> dict:
    return {"procedures": appliance.procedures(limit=limit)}


@router.get("/{procedure_id}", response_model=Procedure,
            responses={404: {"model": Message, "description": "No procedure with this id"}},
            summary="One procedure: totals, contrast against its limit, clearance results")
def get_procedure(appliance: ApplianceDep, procedure_id: ProcedureIdPath) -> dict:
    proc = appliance.procedure(procedure_id)
    if proc is None:
        raise HTTPException(404, f"no procedure {procedure_id!r}")
    return proc


@router.post("", response_model=Procedure, status_code=201, dependencies=[TokenDep, WritableDep],
             responses={**UNAUTHORIZED, **UNPARSABLE, **NOT_STORED,
                        409: {"model": Message, "description": "A procedure is already open"}},
             summary="Start a procedure")
def start_procedure(appliance: ApplianceDep, body: Annotated[ProcedureStart, Body()] = ProcedureStart()) -> dict:
    current = appliance.status()["procedure"]
    if current is not None:
        raise HTTPException(409, f"procedure {current['id']} is still open; end it first")
    return durable(appliance, appliance.start_procedure(body.label))


@router.post("/current/end", response_model=Procedure, dependencies=[TokenDep, WritableDep],
             responses={**UNAUTHORIZED, **NO_OPEN, **NOT_STORED}, summary="End the open procedure")
def end_procedure(appliance: ApplianceDep) -> dict:
    proc = appliance.end_procedure()
    if proc is None:
        raise HTTPException(404, "no procedure is open")
    return durable(appliance, proc)


@router.put("/current/patient", response_model=Totals, dependencies=[TokenDep, WritableDep],
            responses={**UNAUTHORIZED, **NO_OPEN, **UNPARSABLE, **NOT_STORED},
            summary="Set weight and creatinine of the open procedure; answers its totals with the new limit")
def set_patient(appliance: ApplianceDep, body: Annotated[Patient, Body()]) -> dict:
    if appliance.status()["procedure"] is None:
        raise HTTPException(404, "no procedure is open")
    return durable(appliance, appliance.set_patient(body.weight_kg, body.creatinine_mg_dl))


@router.post("/current/injections", response_model=Totals, status_code=201, dependencies=[TokenDep, WritableDep],
             responses={**UNAUTHORIZED, **NO_OPEN, **UNPARSABLE, **NOT_STORED},
             summary="Enter contrast given by hand in the open procedure; answers its totals")
def add_hand_injection(appliance: ApplianceDep, body: Annotated[HandInjection, Body()]) -> dict:
    if appliance.status()["procedure"] is None:
        raise HTTPException(404, "no procedure is open")
    return durable(appliance, appliance.add_hand_injection(body.volume_ml, body.concentration_mg_ml, body.at))
