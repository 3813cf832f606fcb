"""Implausible values: judged by the protocol layer (no I/O), counted by the link, logged once per kind a minute by
the bridge, never silently taken."""
from __future__ import annotations

import logging
import socket

import pytest

from firmware_bridge.bridge import InjectorBridge
from firmware_bridge.link import Link
from firmware_bridge.messages import Heartbeat, InjectorState, Sample, State, Summary, Xray
from firmware_bridge.plausibility import Plausibility, ReportLimiter
from firmware_bridge.scenarios import SCENARIOS
from firmware_bridge.simulator import InjectorDevice
from tests.waiting import wait_for

MS = 1_000_000
S = 1_000_000_000
INJECTING, IDLE, HOLD = InjectorState.INJECTING, InjectorState.IDLE, InjectorState.HOLD


def kinds(found):
    return [v.kind for v in found]


def test_volume_going_backwards_within_an_injection():
    p = Plausibility()
    assert p.check(State(0, 1000, state=INJECTING, phase=1)) == []
    assert p.check(Sample(1, 1020, flow=500, volume=10)) == []
    assert p.check(Sample(2, 1040, flow=500, volume=20)) == []
    assert p.check(Sample(3, 1060, flow=0, volume=20)) == []              # a hold keeps the volume
    (v,) = p.check(Sample(4, 1080, flow=500, volume=15))
    assert (v.kind, v.field) == ("volume_backwards", "volume")
    assert "0.15 ml is below the previous sample's 0.20 ml" in v.text and v.message.seq == 4
    assert p.check(Sample(5, 1100, flow=500, volume=30)) == []            # one glitch, one violation


@pytest.mark.parametrize("boundary", [
    State(9, 2000, state=IDLE), State(9, 2000, state=InjectorState.COMPLETE), Heartbeat(9, 2000, state=IDLE),
    Summary(9, 2000, delivered_volume=500, duration_ms=1000)])
def test_a_new_injection_counts_from_zero(boundary):
    p = Plausibility()
    p.check(State(0, 1000, state=INJECTING, phase=1))
    p.check(Sample(1, 1020, volume=500))
    p.check(boundary)
    p.check(State(10, 3000, state=INJECTING, phase=1))
    assert p.check(Sample(11, 3020, volume=5)) == []


def test_hold_and_resume_is_the_same_injection():
    p = Plausibility()
    p.check(State(0, 1000, state=INJECTING, phase=1))
    p.check(Sample(1, 1020, volume=500))
    p.check(State(2, 1040, state=HOLD, phase=1))
    p.check(State(3, 1060, state=INJECTING, phase=1))
    assert kinds(p.check(Sample(4, 1080, volume=100))) == ["volume_backwards"]


def xray_then_summary(p, on_ms, off_ms, start_ms, duration_ms, delay_ms):
    edges = [Xray(0, on_ms, on=1)] + ([Xray(1, off_ms, on=0)] if off_ms is not None else [])
    for e in sorted(edges, key=lambda m: m.device_ms):
        p.check(e)
    end = start_ms + duration_ms
    return p.check(Summary(5, end, delivered_volume=1000, duration_ms=duration_ms, xray_delay_ms=delay_ms))


def test_a_delay_from_a_stale_xray_on_is_caught():
    # X-ray on at 10 s, off at 14 s; the injection starts at 19.5 s without X-ray, and the device reports
    # -9500 ms: from the X-ray-on before the last off.
    (v,) = xray_then_summary(Plausibility(), 10_000, 14_000, 19_500, 2_000, -9_500)
    assert (v.kind, v.field) == ("stale_xray_delay", "xray_delay_ms")
    assert "xray_delay_ms -9500" in v.text and "went off 5500 ms before the injection started" in v.text


@pytest.mark.parametrize("on_ms, off_ms, delay_ms", [
    (18_500, None, -1_000),    # X-ray on 1 s before the injection and still on: what the delay says
    (18_500, 30_000, -1_000),  # off only after the injection
    (20_500, 25_000, 1_000),   # X-ray after the start (positive delay): nothing stale about it
    (10_000, 14_000, 0),       # 0: unknown
    (19_400, 19_450, -100),    # an off within the tolerance of the start proves nothing
])
def test_plausible_delays_pass(on_ms, off_ms, delay_ms):
    assert xray_then_summary(Plausibility(), on_ms, off_ms, 19_500, 2_000, delay_ms) == []


def test_without_xray_edges_a_delay_is_not_judged_and_the_clock_may_wrap():
    assert xray_then_summary(Plausibility(), 0, None, 19_500, 2_000, -9_500) == []
    p = Plausibility()
    p.check(Xray(0, 2**32 - 5_000, on=1))
    p.check(Xray(1, 2**32 - 1_000, on=0))                    # 1 s before the wrap
    end = 3_000                                              # the injection ran 0.5 s - 3 s after the wrap
    (v,) = p.check(Summary(2, end, duration_ms=2_500, xray_delay_ms=-5_500))
    assert v.kind == "stale_xray_delay"


def test_every_scenario_of_the_reference_simulator_is_plausible():
    for name, scenario in SCENARIOS.items():
        link = Link()
        link.port_opened(0)
        dev = InjectorDevice(scenario, t0_ns=0, seed=1, bit_error_rate=0.0)
        dev.connected(0)
        for k in range(0, int(2 * scenario.period_s * 1000), 10):
            out = link.feed(dev.poll(k * MS), k * MS)
            for frame in out.send:
                dev.receive(frame, k * MS)
            assert out.violations == [], (name, out.violations)
        assert link.counters()["protocol_violations"] == 0


def test_the_link_counts_by_kind_and_still_delivers():
    link = Link()
    link.port_opened(0)
    link.feed(State(0, 1000, state=INJECTING, phase=1).encode(), 1 * S)
    link.feed(Sample(1, 1020, volume=500).encode(), 1 * S)
    out = link.feed(Sample(2, 1040, volume=400).encode() + Sample(3, 1060, volume=300).encode(), 1 * S)
    assert [m.volume for m, _ in out.messages] == [400, 300]          # delivered: flow and pressure are sound
    assert [v.message for v in out.violations] == [m for m, _ in out.messages]
    assert [p.violations[0].kind for p in link.last_packets] == ["volume_backwards"] * 2
    c = link.counters()
    assert c["protocol_violations"] == 2 and c["protocol_violations_by_kind"] == {"volume_backwards": 2}
    link.port_closed(2 * S)                                           # a new connection starts afresh
    link.port_opened(3 * S)
    assert link.feed(Sample(4, 5000, volume=100).encode(), 4 * S).violations == []


def test_report_limiter_first_at_once_then_once_a_period_with_the_count():
    lim = ReportLimiter(60.0)
    assert lim.admit("a", 0) == 0
    assert [lim.admit("a", t * S) for t in (1, 2, 3)] == [None, None, None]
    assert lim.admit("b", 4 * S) == 0                                 # per kind
    assert lim.admit("a", 60 * S) == 3
    assert lim.admit("a", 61 * S) is None
    with pytest.raises(ValueError):
        ReportLimiter(0)


def test_bridge_logs_one_line_per_kind_and_calls_back_before_the_message(caplog):
    """A device over a real socket sends 200 samples whose volume goes backwards every other sample."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    order: list[tuple[str, int]] = []
    bridge = InjectorBridge(f"socket://127.0.0.1:{port}",
                            on_message=lambda m, t: order.append(("message", m.seq)),
                            on_link=lambda *a: None,
                            on_violation=lambda v, t: order.append((v.kind, v.message.seq)),
                            reconnect_min_s=0.05, reconnect_max_s=0.1)
    caplog.set_level(logging.WARNING, logger="firmware_bridge.bridge")
    bridge.start()
    try:
        conn, _ = srv.accept()
        assert wait_for(lambda: bridge.link_state == "silent", 2)
        packets = [State(0, 1000, state=INJECTING, phase=1).encode()]
        packets += [Sample(k, 1000 + 10 * k, volume=100 * k if k % 2 else 1).encode() for k in range(1, 201)]
        conn.sendall(b"".join(packets))
        assert wait_for(lambda: bridge.counters()["protocol_violations"] == 100, 3)
        conn.close()
    finally:
        bridge.stop()
        srv.close()
    lines = [r.getMessage() for r in caplog.records if "protocol violation" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("protocol violation volume_backwards: SAMPLE seq 2:")
    assert lines[0].endswith("volume not taken")
    assert order[order.index(("volume_backwards", 2)) + 1] == ("message", 2)
    assert sum(kind == "volume_backwards" for kind, _ in order) == 100
    assert bridge.counters()["protocol_violations_by_kind"] == {"volume_backwards": 100}
