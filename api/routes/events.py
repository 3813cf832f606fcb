"""The event log over HTTP: pages in id order, and the live Server-Sent Events stream."""
import asyncio
import json
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.routes.deps import ApplianceDep, HubDep
from api.routes.models import EventPage, Message

router = APIRouter(prefix="/api", tags=["events"])
MAX_ID = 2**63 - 1  # SQLite INTEGER PRIMARY KEY range
MAX_PAGE_BYTES = 256 * 1024  # a page stops early past this; `next` continues where it stopped
PAGE_WAIT_S = 10.0
PAGES_AT_ONCE = 2
PAGES_WAITING = 8


@router.get("/events", response_model=EventPage,
            responses={503: {"model": Message, "description": "Too many pages asked for at once; retry after the "
                                                              "Retry-After seconds"}},
            summary="Committed events with id > after, in id order; at most `limit` events and about 256 kB")
async def list_events(request: Request, appliance: ApplianceDep,
                      after: Annotated[int, Query(ge=0, le=MAX_ID,
                                                  description="Last id already seen (0: from the start)")] = 0,
                      limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Response:
    # Pages are the API's costliest reads (~0.1 s of interpreter time each): 40 at once in the thread pool
    # starved the frame thread of the GIL (109 frames dropped for 100 pages). Two at a time; a few more wait
    # here, on the event loop, not in the thread pool other requests need.
    gate: PageGate = request.app.state.event_pages
    if not await gate.enter():
        raise HTTPException(503, "too many event pages asked for at once; try again shortly",
                            headers={"Retry-After": "1"})
    try:
        return await run_in_threadpool(_page, appliance, after, limit)
    finally:
        gate.leave()


class PageGate:
    """``PAGES_AT_ONCE`` pages built at a time, at most ``PAGES_WAITING`` more waiting (``wait_s`` at most);
    beyond that a 503 at once, so queued pages never fill the server's in-flight budget that /healthz shares."""

    def __init__(self, wait_s: float = PAGE_WAIT_S) -> None:
        self._building = asyncio.Semaphore(PAGES_AT_ONCE)
        self._waiting = 0
        self._wait_s = wait_s

    async def enter(self) -> bool:
        if self._waiting >= PAGES_WAITING:
            return False
        self._waiting += 1
        try:
            await asyncio.wait_for(self._building.acquire(), self._wait_s)
            return True
        except TimeoutError:
            return False
        finally:
            self._waiting -= 1

    def leave(self) -> None:
        self._building.release()


def _page(appliance, after: int, limit: int) -> Response:
    events = within_bytes(appliance.events(after=after, limit=limit), MAX_PAGE_BYTES)
    page = EventPage.model_validate({"events": events, "next": events[-1]["id"] if events else after})
    return Response(page.model_dump_json(), media_type="application/json")   # encoded inside the limit too


def within_bytes(events: list[dict], budget: int) -> list[dict]:
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
