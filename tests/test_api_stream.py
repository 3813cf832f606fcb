"""/api/stream over real HTTP: `cathlab-edge run` on its simulators in a subprocess, as deployed.

Also: the server stops within 2 s of SIGTERM with streams open, and the hub's own rules (coalesced status,
bounded event queue) in-process.
"""
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from api.sse import StreamHub
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: Path, port: int | None = None, **env_overrides: str) -> tuple[subprocess.Popen, str]:
    """`python -m api.cli run` on the simulators; returns once /api/status answers with frames and a link."""
    port = port or free_port()
    env = dict(os.environ, CATHLAB_PHANTOM_SIZE="256", PYTHONUNBUFFERED="1", **env_overrides)
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "run", "--port", str(port), "--data-dir",
                             str(data_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=ROOT)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {proc.communicate()[1][-3000:]}")
        try:
            s = httpx.get(url + "/api/status", timeout=1).json()
        except httpx.HTTPError:
            return False
        return s["injector"]["link"] == "up" and s["counters"]["frames"] > 0
    try:
        wait_for(ready, 30, interval=0.1)
    except AssertionError:
        if proc.poll() is None:
            proc.kill()
            raise AssertionError(f"server not ready in 30 s: {proc.communicate()[1][-3000:]}") from None
        raise
    return proc, url


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


class SSEReader:
    """Reads one stream on a thread, keeping (arrival monotonic s, event name, id, parsed data)."""

    def __init__(self, url: str, headers: dict | None = None) -> None:
        self.messages: list[tuple[float, str, int | None, object]] = []
        self.ended = threading.Event()
        self.error: BaseException | None = None
        self._client = httpx.Client(timeout=httpx.Timeout(5.0, read=10.0))
        self._url, self._headers = url, headers or {}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with self._client.stream("GET", self._url + "/api/stream", headers=self._headers) as r:
                assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
                name, eid, data = "message", None, None
                for line in r.iter_lines():
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("id: "):
                        eid = int(line[4:])
                    elif line.startswith("data: "):
                        data = json.loads(line[6:])
                    elif line == "" and data is not None:
                        self.messages.append((time.monotonic(), name, eid, data))
                        name, eid, data = "message", None, None
        except (httpx.HTTPError, AssertionError) as exc:
            self.error = exc
        finally:
            self.ended.set()

    def of(self, name: str) -> list:
        return [m for m in list(self.messages) if m[1] == name]

    def wait_for(self, predicate, seconds: float):
        """The first message satisfying ``predicate`` within ``seconds``."""
        return wait_for(lambda: next((m for m in list(self.messages) if predicate(m)), None), seconds,
                        interval=0.02, explain=lambda: [m[1:3] for m in self.messages][-20:])

    def close(self) -> None:
        self._client.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    proc, url = start_server(data_dir, CATHLAB_AUTO_PROCEDURE="false")
    token = (data_dir / "api-token").read_text().strip()
    yield url, token
    stop_server(proc)


def test_status_at_least_twice_a_second(server):
    url, _ = server
    reader = SSEReader(url)
    try:
        statuses = wait_for(lambda: len(got := reader.of("status")) >= 5 and got, 2.2,
                            explain=lambda: f"{len(reader.of('status'))} status messages")
        assert reader.error is None
        gaps = [b[0] - a[0] for a, b in zip(statuses, statuses[1:])]
        assert max(gaps) < 0.5, f"largest gap {max(gaps):.3f} s"
        assert {"injector", "xray", "run", "counters", "alarms"} <= set(statuses[-1][3])
        assert statuses[-1][3]["counters"]["frames"] > statuses[0][3]["counters"]["frames"]
    finally:
        reader.close()


def test_events_arrive_as_recorded(server):
    url, token = server
    reader = SSEReader(url)
    try:
        reader.wait_for(lambda m: m[1] == "status", 2)
        h = {"Authorization": f"Bearer {token}"}
        httpx.post(url + "/api/procedures/current/end", headers=h)
        sent = time.monotonic()
        r = httpx.post(url + "/api/procedures", json={"label": "stream test"}, headers=h)
        assert r.status_code == 201, r.text
        pid = r.json()["id"]
        arrived, _, eid, event = reader.wait_for(
            lambda m: m[1] == "event" and m[3]["kind"] == "procedure_start" and m[3]["procedure_id"] == pid, 2)
        assert arrived - sent < 1.0
        assert eid == event["id"] and event["data"] == {"label": "stream test"}
        # The same event, from the log, has the same id and body.
        page = httpx.get(url + "/api/events", params={"after": eid - 1, "limit": 1}).json()
        assert page["events"][0] == event
        # Status follows: the procedure shows up within a status message.
        reader.wait_for(lambda m: m[1] == "status" and (m[3]["procedure"] or {}).get("id") == pid, 1)
    finally:
        reader.close()


def test_last_event_id_replays_what_was_missed(server):
    url, _ = server
    reader = SSEReader(url, headers={"Last-Event-ID": "2"})
    try:
        reader.wait_for(lambda m: m[1] == "event" and m[2] >= 6, 2)
        ids = [m[2] for m in reader.of("event")]
        assert ids[:4] == [3, 4, 5, 6]
        assert ids == sorted(set(ids)), "no duplicates, in id order"
    finally:
        reader.close()


def test_bad_last_event_id_is_ignored(server):
    url, _ = server
    for value in (b"x", b"-1", "²".encode(), b"9" * 40):
        reader = SSEReader(url, headers={"Last-Event-ID": value})
        try:
            reader.wait_for(lambda m: m[1] == "status", 2)
            assert reader.error is None
        finally:
            reader.close()


def test_closed_streams_are_forgotten(server):
    url, _ = server
    readers = [SSEReader(url) for _ in range(3)]
    for r in readers:
        r.wait_for(lambda m: m[1] == "status", 2)

    def clients() -> int:
        for line in httpx.get(url + "/metrics").text.splitlines():
            if line.startswith("cathlab_api_stream_clients "):
                return int(float(line.split()[1]))
        raise AssertionError("no cathlab_api_stream_clients in /metrics")

    assert clients() >= 3
    for r in readers:
        r.close()
    wait_for(lambda: clients() == 0, 3, interval=0.1, explain=lambda: f"{clients()} stream clients left")


def test_sigterm_stops_within_2_s_with_streams_open(tmp_path):
    proc, url = start_server(tmp_path / "data")
    readers = []
    try:
        readers = [SSEReader(url) for _ in range(5)]
        for r in readers:
            r.wait_for(lambda m: m[1] == "status", 3)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        elapsed = time.monotonic() - started
        assert proc.returncode == 0, proc.communicate()[1][-3000:]
        assert elapsed < 2.0, f"took {elapsed:.2f} s to stop with 5 streams open"
        for r in readers:
            assert r.ended.wait(2), "a stream was left hanging"
    finally:
        for r in readers:
            r.close()
        stop_server(proc)


# -- the hub in-process ------------------------------------------------------------------------------------------
def test_hub_coalesces_status_and_drops_a_client_that_falls_behind():
    async def scenario():
        state = {"n": 0}
        hub = StreamHub(lambda: {"n": state["n"]}, lambda after, limit: [], tick_s=0.01, heartbeat_s=0.2,
                        queue_max=5)
        hub.start()
        stream = hub.stream()
        assert await anext(stream) == b"retry: 1000\n\n"
        await asyncio.sleep(0.05)
        for n in range(1, 6):               # five status changes while the client reads nothing
            state["n"] = n
            await asyncio.sleep(0.03)
        first = await anext(stream)
        assert first.startswith(b"event: status\ndata: ")
        assert json.loads(first.split(b"data: ")[1]) == {"n": 5}, "a slow client gets the latest status only"
        hub._publish_event({"id": 1, "kind": "k"})
        assert (await anext(stream)).startswith(b"id: 1\nevent: event\n")
        for i in range(2, 8):               # six events for a queue of five, unread
            hub._publish_event({"id": i, "kind": "k"})
        assert [m async for m in stream] == [], "the stream ends; Last-Event-ID replay covers the rest"
        assert hub.dropped_clients == 1 and hub.clients == 0
        await hub.stop()

    asyncio.run(scenario())


def test_hub_close_ends_streams_and_refuses_new_ones():
    async def scenario():
        hub = StreamHub(lambda: {"ok": True}, lambda after, limit: [])
        hub.start()
        stream = hub.stream()
        await anext(stream)
        hub.close()
        assert [m async for m in stream] == []
        assert [m async for m in hub.stream()] == []
        await hub.stop()

    asyncio.run(scenario())


def test_hub_needs_a_status_at_least_twice_a_second():
    with pytest.raises(ValueError, match="twice a second"):
        StreamHub(dict, lambda a, b: [], tick_s=0.1, heartbeat_s=0.6)


def _outward_address() -> str | None:
    """This machine's address on its default route (no packet is sent), or None without a network."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_binds_loopback_only_by_default(server):
    url, _ = server
    address = _outward_address()
    if address is None:
        pytest.skip("no non-loopback address on this machine to try")
    port = int(url.rsplit(":", 1)[1])
    with pytest.raises(OSError):
        socket.create_connection((address, port), timeout=1).close()
    socket.create_connection(("127.0.0.1", port), timeout=1).close()
