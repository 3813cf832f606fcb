"""Shared request dependencies: the appliance and the stream hub the lifespan started."""
from typing import Annotated

from fastapi import Depends, Request

from api.sse import StreamHub
from core.appliance import Appliance


def get_appliance(request: Request) -> Appliance:
    return request.app.state.appliance


def get_hub(request: Request) -> StreamHub:
    return request.app.state.hub


ApplianceDep = Annotated[Appliance, Depends(get_appliance)]
HubDep = Annotated[StreamHub, Depends(get_hub)]
