"""Shared request dependencies: the appliance and the stream hub the lifespan started; durable writes."""
from typing import Annotated, TypeVar

from fastapi import Depends, Request

from api.routes.models import Message
from api.sse import StreamHub
from core.appliance.appliance import Appliance

T = TypeVar("T")


def get_appliance(request: Request) -> Appliance:
    return request.app.state.appliance


def get_hub(request: Request) -> StreamHub:
    return request.app.state.hub


ApplianceDep = Annotated[Appliance, Depends(get_appliance)]
HubDep = Annotated[StreamHub, Depends(get_hub)]


def require_writable(appliance: ApplianceDep) -> None:
    """A write endpoint refuses (503, core.store.eventlog.LogUnavailable) while the event log cannot commit."""
    appliance.check_writable()


WritableDep = Depends(require_writable)
NOT_STORED = {503: {"model": Message, "headers": {"Retry-After": {"schema": {"type": "integer"},
                                                                  "description": "Seconds to wait"}},
                    "description": "Not stored: the event log cannot commit now (disk full, read-only, I/O "
                                   "error), or the appliance is busy; the reason is given, retry later"}}


def durable(appliance: Appliance, answer: T) -> T:
    """``answer`` once what the write queued is committed; else LogUnavailable (503), never a 2xx."""
    appliance.confirm_written()
    return answer
