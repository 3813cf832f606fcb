"""The event log over HTTP: pages in id order, and the live Server-Sent Events stream."""
import json
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from api.routes.deps import ApplianceDep, HubDep
from api.routes.models import EventPage

router = APIRouter(prefix="/api", tags=["events"])
MAX_ID = 2**63 - 1  # SQLite INTEGER PRIMARY KEY range
MAX_PAGE_BYTES = 256 * 1024  # a page stops early past this; `next` continues where it stopped


@router.get("/events", response_model=EventPage, summary="Committed events with id > after, in id order; at most `limit` events and about 256 kB")
def list_events(appliance: ApplianceDep,
                after: Annotated[int, Query(ge=0, le=MAX_ID,
                                            description="Last id already seen (0: from the start)")] = 0,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict:
    events = _within_bytes(appliance.events(after=after, limit=limit), MAX_PAGE_BYTES)
    return {"events": events, "next": events[-1]["id"] if events else after}


def _within_bytes(events: list[dict], budget: int) -> list[dict]:
    """The first events whose JSON fits ``budget`` (at least one): a clearance result is ~30 kB, so 1,000 of
    them were a 30 MB answer, and 100 clients asking without reading held 230 MB and dropped frames."""
    kept, size = [], 0
    for event in events:
        size += len(json.dumps(event["data"], separators=(",", ":"))) + 200   # + id, kind, times
        if kept and size > budget:
            break
        kept.append(event)
    return kept


@router.get("/stream", response_class=StreamingResponse,
            summary="Server-Sent Events: `status` at least twice a second and on change, every `event` as recorded",
            responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                             "description": "`event: status` carries the body of GET /api/status; "
                                            "`event: event` one event log entry, with `id:` its event id"}})
async def stream(hub: HubDep,
                 last_event_id: Annotated[str | None, Header(description="Replay events after this id "
                                                                         "(sent by browsers on reconnect)")] = None,
                 ) -> StreamingResponse:
    # Browsers echo the last id they saw; anything else (or an id beyond SQLite's range) means "no replay".
    text = last_event_id or ""
    after = int(text) if text.isascii() and text.isdigit() and len(text) < 19 else None
    return StreamingResponse(hub.stream(after), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
