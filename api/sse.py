"""Server-Sent Events for ``/api/stream``: one hub samples the appliance, every stream gets the same bytes.

Two kinds of message go out:
- ``status``: the body of ``GET /api/status``. The hub samples ``appliance.status()`` every ``tick_s`` (10 ms) and sends
  it as soon as its live part changes (a serial packet, a frame that moves the run timer), and at least every
  ``heartbeat_s`` regardless, so a client knows the appliance is alive. Status coalesces: a slow client gets the
  latest one, never a backlog.
- ``event``: each event as the event log commits it (``id:`` is the event id, so a reconnecting browser's
  ``Last-Event-ID`` replays what it missed). Events queue per client, bounded; a client that falls that far
  behind is disconnected and catches up through the replay when it reconnects.

All of it runs on the event loop: the log's writer thread only hands events over with call_soon_threadsafe.
``close()`` ends every stream at once, which is what lets the server stop within its 1 s grace period.
"""
from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

log = logging.getLogger("cathlab.api.sse")

# Fields that change on every sample without meaning anything new to a viewer.
_NOISE = ("uptime_s", "counters")
REPLAY_MAX = 1000


def encode(kind: str, data: str, event_id: int | None = None) -> bytes:
    """One SSE message; ``data`` is single-line JSON, so it needs no line splitting."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {data}\n\n".encode()


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, default=str)


class _Client:
    __slots__ = ("events", "status", "wake", "closed", "overflowed")

    def __init__(self) -> None:
        self.events: collections.deque[tuple[int, bytes]] = collections.deque()
        self.status: bytes | None = None
        self.wake = asyncio.Event()
        self.closed = False
        self.overflowed = False


class StreamHub:
    def __init__(self, status: Callable[[], dict], events: Callable[[int, int], list[dict]],
                 *, tick_s: float = 0.01, heartbeat_s: float = 0.4, queue_max: int = 2000) -> None:
        if not (0 < tick_s <= heartbeat_s <= 0.5):
            raise ValueError("need 0 < tick_s <= heartbeat_s <= 0.5 (a status at least twice a second)")
        self._status, self._events = status, events
        self.tick_s, self.heartbeat_s, self.queue_max = tick_s, heartbeat_s, queue_max
        self._clients: set[_Client] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._latest: bytes | None = None
        self._joined = False
        self._closed = False
        self.dropped_clients = 0
        self.status_messages = 0
        self.event_messages = 0
        self.sample_errors = 0

    @property
    def clients(self) -> int:
        return len(self._clients)

    # -- lifecycle (event loop) ------------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._sample_loop(), name="sse-status")

    async def stop(self) -> None:
        self.close()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def close(self) -> None:
        """End every stream now and refuse new ones (server shutdown). Event-loop thread only."""
        self._closed = True
        for client in self._clients:
            client.closed = True
            client.wake.set()

    def close_threadsafe(self) -> None:
        """``close()`` from any thread, or from a signal handler."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.close)

    # -- producers -------------------------------------------------------------------------------------
    def on_event(self, event: dict) -> None:
        """Subscriber callback for the event log; runs on its writer thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._publish_event, event)

    def _publish_event(self, event: dict) -> None:
        message = (event["id"], encode("event", dumps(event), event["id"]))
        for client in self._clients:
            if len(client.events) >= self.queue_max:
                client.overflowed = client.closed = True
            else:
                client.events.append(message)
            client.wake.set()
        self.event_messages += 1

    async def _sample_loop(self) -> None:
        last_key: str | None = None
        last_sent = 0.0
        while not self._closed:
            if not self._clients:  # nobody listening: no sampling (a newcomer is served within one tick)
                await asyncio.sleep(self.tick_s)
                continue
            try:
                status = self._status()
                key = dumps({k: v for k, v in status.items() if k not in _NOISE})
                body = dumps(status)
            except Exception:  # boundary: a failing read is logged and counted; the stream keeps its heartbeat
                self.sample_errors += 1
                log.exception("status() failed while feeding the stream")
                await asyncio.sleep(self.heartbeat_s)
                continue
            now = time.monotonic()
            if key != last_key or now - last_sent >= self.heartbeat_s or self._joined:
                last_key, last_sent, self._joined = key, now, False
                self._latest = encode("status", body)
                for client in self._clients:
                    client.status = self._latest
                    client.wake.set()
                self.status_messages += 1
            await asyncio.sleep(self.tick_s)

    # -- one stream ------------------------------------------------------------------------------------
    async def stream(self, last_event_id: int | None = None) -> AsyncIterator[bytes]:
        """The body of one ``/api/stream`` response."""
        client = _Client()
        if self._closed:
            return
        # Join before reading the replay, so nothing committed in between is lost; duplicates are skipped.
        self._clients.add(client)
        self._joined = True  # the next tick sends a fresh status to everyone, the newcomer included
        try:
            yield b"retry: 1000\n\n"
            seen = last_event_id or 0
            if last_event_id is not None:
                # A SQLite read: off the event loop, so a long replay never stalls the other streams.
                for event in await asyncio.to_thread(self._events, last_event_id, REPLAY_MAX):
                    seen = event["id"]
                    yield encode("event", dumps(event), event["id"])
            while True:  # one message per pass, so a close is seen between any two
                if not (client.closed or client.events or client.status):
                    await client.wake.wait()
                    client.wake.clear()
                if client.closed:  # shutdown, or too far behind: end now, the replay covers what is queued
                    if client.overflowed:
                        self.dropped_clients += 1
                        log.warning("stream client fell %d events behind; disconnected", self.queue_max)
                    return
                if client.events:
                    event_id, message = client.events.popleft()
                    if event_id > seen:
                        seen = event_id
                        yield message
                elif client.status is not None:
                    message, client.status = client.status, None
                    yield message
        finally:
            self._clients.discard(client)
