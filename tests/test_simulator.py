"""The injector simulator: scenarios, retransmission, time sync, the injsim:// handler and the CLI body."""
import io
import re
import threading
import time

import pytest
import serial

from firmware_bridge.checker import check_main
from firmware_bridge.link import Link
from firmware_bridge.messages import (Fault, Hello, InjectorState, Sample, State, Summary, TimeReq, TimeResp,
                                      Xray)
from firmware_bridge.scenarios import PROCEDURE, PROCEDURE_PERIOD_S
from firmware_bridge.simulator import (SCENARIOS, InjectorDevice, Scenario, SimInjection, parse_sim_url,
                                       simulate_main)

MS = 1_000_000
S = 1_000_000_000


def play(device, seconds, *, ack=True, step_ms=10, link=None):
    """Drive device and link together in simulated time; returns (link, [(msg, host_ns)])."""
    link = link or Link()
    link.port_opened(0)
    device.connected(0)
    got = []
    for k in range(0, int(seconds * 1000), step_ms):
        now = k * MS
        out = link.feed(device.poll(now), now)
        out.extend(link.tick(now))
        if ack:
            for frame in out.send:
                device.receive(frame, now)
        got += out.messages
    return link, got


def of(got, cls):
    return [(m, t) for m, t in got if isinstance(m, cls)]


def test_scenario_names_match_the_cli():
    assert set(SCENARIOS) == {"procedure", "nominal", "repeated", "hold-resume", "faults", "noisy", "disconnects"}


@pytest.mark.parametrize("name", sorted(set(SCENARIOS) - {"noisy"}))
def test_scenarios_are_clean_protocol(name):
    link, got = play(InjectorDevice(name, t0_ns=0, seed=1), 2 * SCENARIOS[name].period_s + 1)
    c = link.counters()
    assert c["crc_errors"] == c["framing_errors"] == c["seq_gaps"] == c["malformed"] == c["duplicates"] == 0
    assert len(of(got, Summary)) >= 2 and of(got, Hello)


def test_procedure_follows_the_shared_timeline():
    _, got = play(InjectorDevice("procedure", t0_ns=0, seed=2), PROCEDURE_PERIOD_S + 1)
    xray = [(round(t / S, 3), m.on) for m, t in of(got, Xray)]
    expected = sorted([(r.xray_on_s, 1) for r in PROCEDURE] + [(r.xray_off_s, 0) for r in PROCEDURE])
    assert [(round(t, 1), on) for t, on in xray[:len(expected)]] == expected
    for (m, t), (tx, _) in zip(of(got, Xray), expected):
        assert abs(t - tx * S) <= 12 * MS  # host time of the device event, through the clock mapping
    starts = [t for m, t in of(got, State) if m.state == InjectorState.INJECTING]
    assert [round(t / S, 1) for t in starts] == [r.inject_start_s for r in PROCEDURE if r.inject_start_s]
    sums = [m for m, _ in of(got, Summary)]
    runs = [r for r in PROCEDURE if r.inject_start_s]
    assert [s.delivered_volume for s in sums] == [round(r.volume_ml * 100) for r in runs]
    assert [s.xray_delay_ms for s in sums] == [round((r.xray_on_s - r.inject_start_s) * 1000) for r in runs]


def test_samples_are_50_hz_while_injecting():
    _, got = play(InjectorDevice("nominal", t0_ns=0), 12)
    ms = [m.device_ms for m, _ in of(got, Sample)]
    assert {b - a for a, b in zip(ms, ms[1:])} == {20}
    assert max(m.volume for m, _ in of(got, Sample)) == 1000


def test_hold_resume_and_faults():
    _, got = play(InjectorDevice("hold-resume", t0_ns=0), 15)
    states = [InjectorState(m.state).name for m, _ in of(got, State)]
    assert states == ["ARMED", "INJECTING", "HOLD", "INJECTING", "COMPLETE", "IDLE"]
    held = [m for m, t in of(got, Sample) if 3.05 * S < t < 4.45 * S]
    assert held and all(m.flow == 0 for m in held)
    _, got = play(InjectorDevice("faults", t0_ns=0), 15)
    faults = [m for m, _ in of(got, Fault)]
    assert [f.severity for f in faults] == [2, 0, 1]
    (summary,), = [[m for m, _ in of(got, Summary)]]
    assert summary.delivered_volume < summary.programmed_volume
    assert InjectorState.ABORTED in [m.state for m, _ in of(got, State)]


def test_unacked_packets_resent_every_500_ms_at_most_10_times():
    sc = Scenario("one", "one summary", 100.0, injections=(SimInjection(1.0, 1.0, 5.0),))
    dev = InjectorDevice(sc, t0_ns=0)
    link, got = play(dev, 12, ack=False)
    assert len(of(got, Summary)) == 1                       # delivered once ...
    assert link.counters()["packets_by_type"]["SUMMARY"] == 11  # ... from 1 + 10 copies
    assert dev.unacked_given_up >= 1
    dev2 = InjectorDevice(sc, t0_ns=0)
    link2, _ = play(dev2, 12, ack=True)
    assert link2.counters()["packets_by_type"]["SUMMARY"] == 1 and dev2.retransmissions == 0


def test_time_request_is_answered_with_the_token():
    dev = InjectorDevice("nominal", t0_ns=0, boot_ms=1000)
    dev.receive(TimeReq(0, 0, token=0xABCDEF01).encode(), 2 * S)
    from firmware_bridge.framing import Decoder
    from firmware_bridge.messages import parse
    msgs = [parse(p) for p in Decoder().feed(dev.poll(2 * S))]
    (resp,) = [m for m in msgs if isinstance(m, TimeResp)]
    assert resp.token == 0xABCDEF01 and resp.device_ms == 3000


def test_bit_errors_at_the_requested_rate():
    dev = InjectorDevice("nominal", t0_ns=0, bit_error_rate=1e-3, seed=4)
    link, _ = play(dev, 24)
    expected = dev.bytes_sent * 8 * 1e-3
    assert abs(dev.bits_flipped - expected) < 4 * expected ** 0.5  # Poisson, 4 sigma
    c = link.counters()
    assert c["crc_errors"] + c["framing_errors"] > expected / 3
    with pytest.raises(ValueError, match="bit error rate"):
        InjectorDevice("nominal", t0_ns=0, bit_error_rate=1.5)
    with pytest.raises(ValueError, match="unknown scenario"):
        InjectorDevice("nope", t0_ns=0)


def test_sim_url_options():
    assert parse_sim_url("injsim://?scenario=faults&t0_ns=5&ber=0.001&seed=3") == {
        "scenario": "faults", "t0_ns": 5, "ber": 0.001, "seed": 3}
    assert parse_sim_url("injsim://")["scenario"] == "procedure"
    for url, match in [("injsim://?scenario=x", "unknown scenario"), ("injsim://?colour=1", "unknown"),
                       ("injsim://?t0_ns=soon", "not valid"), ("injsim://?ber=2", "ber")]:
        with pytest.raises(ValueError, match=match):
            parse_sim_url(url)
    with pytest.raises(serial.SerialException, match="unknown scenario"):
        serial.serial_for_url("injsim://?scenario=x")


def test_url_handler_reads_and_answers():
    t0 = time.monotonic_ns() - int(1.95 * S)  # the injection starts 50 ms from now
    port = serial.serial_for_url(f"injsim://?scenario=nominal&seed=11&t0_ns={t0}", timeout=0.3)
    try:
        link = Link()
        link.port_opened(time.monotonic_ns())
        got = []
        deadline = time.monotonic() + 0.6
        while time.monotonic() < deadline:
            out = link.feed(port.read(max(1, port.in_waiting)), time.monotonic_ns())
            for frame in out.send:
                port.write(frame)
            got += out.messages
        assert of(got, Hello) and of(got, Sample) and link.state == "up"
        assert port.cts and port.in_waiting >= 0
    finally:
        port.close()
    with pytest.raises(serial.PortNotOpenError):
        port.read(1)


def _run_sim(port, scenario, seconds, **kw):
    out = io.StringIO()
    th = threading.Thread(target=simulate_main, args=(port, scenario), kwargs={"seconds": seconds, "out": out, **kw})
    th.start()
    for _ in range(200):
        m = re.search(r" on (\S+)$", out.getvalue().strip())
        if m:
            return th, m.group(1)
        time.sleep(0.01)
    raise AssertionError("simulator did not print its port")


@pytest.mark.parametrize("where", ["pty", "socket://127.0.0.1:0"])
def test_simulate_main_passes_serial_check(where):
    th, path = _run_sim(where, "nominal", 2.0)
    try:
        assert check_main(path, seconds=1.6, out=io.StringIO()) == 0
    finally:
        th.join(5)
    assert not th.is_alive()


def test_simulate_main_rejects_bad_arguments(capsys):
    assert simulate_main("pty", "nope", seconds=1) == 2
    assert simulate_main("/nonexistent/tty", "nominal", seconds=1) == 2
    assert simulate_main("pty", "nominal", seconds=-1) == 2
    assert "unknown scenario" in capsys.readouterr().err


def test_simulate_main_disconnects_on_a_socket():
    from firmware_bridge.bridge import InjectorBridge
    t0 = time.monotonic_ns() - int(3.7 * S)  # the line drops 0.4 s from now, as the SUMMARY is due
    th, url = _run_sim("socket://127.0.0.1:0", "disconnects", 4.0, t0_ns=t0)
    links, msgs = [], []
    bridge = InjectorBridge(url, on_message=lambda m, t: msgs.append(m), on_link=lambda *a: links.append(a[1]),
                            reconnect_min_s=0.05, reconnect_max_s=0.25)
    bridge.start()
    try:
        end = time.monotonic() + 4.5
        while time.monotonic() < end and not (links[-1:] == ["up"] and "down" in links
                                              and any(isinstance(m, Summary) for m in msgs)):
            time.sleep(0.05)
    finally:
        bridge.stop()
        th.join(3)
    assert links[:5] == ["silent", "up", "down", "silent", "up"]
    assert [m.delivered_volume for m in msgs if isinstance(m, Summary)] == [1000]
