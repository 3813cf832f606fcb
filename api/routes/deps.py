"""Shared request dependencies."""
from typing import Annotated

from fastapi import Depends, Request

from core.appliance import Appliance


def get_appliance(request: Request) -> Appliance:
    return request.app.state.appliance


ApplianceDep = Annotated[Appliance, Depends(get_appliance)]
