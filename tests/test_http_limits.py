"""HTTP limits that hold under attack, against a live appliance: a never-ending header and 1,100 half-sent
requests neither stall the frames nor the API nor use up the process's descriptors (1,024, a service's default),
and RSS stays put."""
import socket
import time

import pytest

from api.server import MAX_HEAD_BYTES, REQUEST_TIMEOUT_S
from tests.live import HealthProber, Live, closed_by_server, half_sent_requests, header_bomb, raise_own_nofile
from tests.waiting import wait_for

pytestmark = pytest.mark.slow

NOFILE = 1024        # systemd's default soft limit, and what the red team's repro exhausted
IDLE = 1100


def timed_out(sockets) -> int:
    answered = 0
    for s in sockets:
        try:
            answered += s.recv(64, socket.MSG_PEEK).startswith(b"HTTP/1.1 408 ")
        except OSError:       # evicted: reset without an answer
            pass
    return answered


def counters(live: Live) -> dict:
    return live.status()["counters"]


@pytest.fixture
def live(tmp_path):
    appliance = Live(tmp_path / "data", nofile=NOFILE)
    appliance.wait_ready()
    yield appliance
    appliance.stop()


def assert_no_stall(live: Live, before: dict, prober: HealthProber, rss_before: float) -> None:
    after = counters(live)
    assert not prober.failures, prober.failures
    assert prober.latencies and max(prober.latencies) < 5.0, max(prober.latencies)
    # The phantom's frames on a 2-core machine shared with other jobs drop a few now and then; the red team's
    # attack dropped 422 in 21 s.
    assert after["frames_dropped"] - before["frames_dropped"] <= 5, (before, after)
    assert after["frames"] > before["frames"]
    alarms = [a["message"] for a in live.status()["alarms"]]
    assert "no frames from the video source" not in alarms
    assert live.rss_mb() - rss_before < 50, (rss_before, live.rss_mb())


def test_a_never_ending_header_is_cut_off(live):
    before, rss_before = counters(live), live.rss_mb()
    with HealthProber(live.url) as prober:
        sent = [header_bomb(live.port, 64) for _ in range(2)]
        time.sleep(1.0)    # the prober keeps asking for a second after the attack: any stall shows in its latencies
    # Closed after MAX_HEAD_BYTES; what the kernel buffers before the reset is all that leaves the client.
    assert all(s < 16 * 2**20 for s in sent), sent
    assert MAX_HEAD_BYTES < 2**20
    assert_no_stall(live, before, prober, rss_before)


def test_1100_half_sent_requests_leave_the_api_answering(live):
    raise_own_nofile(IDLE + 200)
    before, rss_before = counters(live), live.rss_mb()
    started = time.monotonic()
    with HealthProber(live.url) as prober:
        held = half_sent_requests(live.port, IDLE)
        try:
            # The oldest were closed to make room: descriptors stay below the process's limit.
            counts = []

            def evictions_over() -> int | None:   # the same count twice, 0.3 s apart: the server has caught up
                counts.append(closed_by_server(held))
                return counts[-1] if len(counts) > 1 and counts[-1] == counts[-2] else None
            evicted = wait_for(evictions_over, 5, interval=0.3, explain=lambda: counts)
            assert evicted >= IDLE - (NOFILE - 128), evicted
            assert live.open_fds() < NOFILE - 50, live.open_fds()
            # The rest are refused once they have had REQUEST_TIMEOUT_S to finish their head.
            remaining = REQUEST_TIMEOUT_S + 2.0 - (time.monotonic() - started)
            wait_for(lambda: closed_by_server(held) == IDLE, remaining, interval=0.2,
                     explain=lambda: closed_by_server(held))
            assert timed_out(held) >= IDLE - evicted - 5     # told why: 408, not just dropped
        finally:
            for s in held:
                s.close()
    assert_no_stall(live, before, prober, rss_before)
    out, err = live.stop()
    assert "Too many open files" not in err
