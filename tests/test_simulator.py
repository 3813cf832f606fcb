"""The injector simulator: scenarios, retransmission, time sync, the injsim:// handler and the CLI body."""
import io
import re
import threading
import time
from itertools import pairwise

import pytest
import serial

from api.cli.check import check_main
from api.cli.simulate import simulate_main
from firmware_bridge.framing import Decoder
from firmware_bridge.link import Link
from firmware_bridge.messages import (Fault, Hello, InjectorState, MsgType, Sample, State, Summary, TimeReq, TimeResp,
                                      Xray, parse)
from firmware_bridge.scenarios import PROCEDURE, PROCEDURE_PERIOD_S, SCENARIOS, Scenario, SimInjection
from firmware_bridge.simulator import InjectorDevice, parse_sim_url
from tests.waiting import wait_for

MS = 1_000_000
S = 1_000_000_000


def play(device, seconds, *, ack=True, step_ms=10, link=None, sent=None):
    """Drive device and link together in simulated time; returns (link, [(msg, host_ns)]). ``sent``
    collects the frames the link sends back (delivered to the device only with ``ack``)."""
    link = link or Link()
    link.port_opened(0)
    device.connected(0)
    got = []
    for k in range(0, int(seconds * 1000), step_ms):
        now = k * MS
        out = link.feed(device.poll(now), now)
        out.extend(link.tick(now))
        if sent is not None:
            sent += out.send
        if ack:
            for frame in out.send:
                device.receive(frame, now)
        got += out.messages
    return link, got


def of(got, cls):
    return [(m, t) for m, t in got if isinstance(m, cls)]


def test_scenario_names_match_the_cli():
    assert set(SCENARIOS) == {"procedure", "dsa", "late-summary", "nominal", "repeated", "hold-resume", "faults",
                              "noisy", "disconnects", "continuous"}


@pytest.mark.parametrize("name", sorted(set(SCENARIOS) - {"noisy"}))
def test_scenarios_are_clean_protocol(name):
    link, got = play(InjectorDevice(name, t0_ns=0, seed=1), 2 * SCENARIOS[name].period_s + 1)
    c = link.counters()
    assert c["crc_errors"] == c["framing_errors"] == c["seq_gaps"] == c["malformed"] == c["duplicates"] == 0
    # Every scenario's injections are summarised (the DSA venogram is hand-injected: X-ray edges only).
    assert len(of(got, Summary)) >= 2 * len(SCENARIOS[name].injections) and of(got, Hello)
    assert len(of(got, Xray)) >= 2 * len(SCENARIOS[name].xray)


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


@pytest.fixture(scope="module")
def continuous():
    """Two minutes and a bit of the continuous scenario: two changeovers, at 59.86 s and 119.86 s."""
    return play(InjectorDevice("continuous", t0_ns=0, seed=5), 125)


def test_continuous_samples_at_50_hz(continuous):
    _, got = continuous
    samples = of(got, Sample)
    first = samples[0][1]
    assert first < 1 * S                                        # streaming within a second of power-up
    in_10_s = [t for _, t in samples if first <= t < first + 10 * S]
    assert 490 <= len(in_10_s) <= 510                           # 50 Hz +-1 over 10 simulated seconds
    over_2_min = [t for _, t in samples if first <= t < first + 120 * S]
    assert 49 * 120 <= len(over_2_min) <= 51 * 120              # changeovers included
    ms = [m.device_ms for m, _ in samples]
    steps = [b - a for a, b in pairwise(ms)]
    assert {d for d in steps if d < 100} == {20}                # steady while injecting ...
    assert max(steps) <= 1000 and sum(d > 20 for d in steps) == 2   # ... and one short changeover a minute
    hosts = [t for _, t in samples]
    assert max(b - a for a, b in pairwise(hosts)) <= 1 * S  # the same on the host clock
    sums = [m for m, _ in of(got, Summary)]
    assert [s.delivered_volume for s in sums] == [29600, 29600] and all(s.xray_delay_ms < 0 for s in sums)


def test_continuous_keeps_xray_on_through_the_injections(continuous):
    _, got = continuous
    xray = [(m.on, t) for m, t in of(got, Xray)]
    assert [on for on, _ in xray] == [1, 0, 1, 0, 1]
    on_spans = [(a, b) for (_, a), (_, b) in zip(xray[0::2], xray[1::2])]
    samples = [t for _, t in of(got, Sample)]
    assert all(any(a < t < b for a, b in on_spans) for t in samples if t < xray[-1][1])
    states = [InjectorState(m.state).name for m, _ in of(got, State)]
    assert states == ["ARMED", "INJECTING", "COMPLETE", "IDLE"] * 2 + ["ARMED", "INJECTING"]


def test_continuous_decodes_with_our_decoder():
    dev = InjectorDevice("continuous", t0_ns=0, seed=6, retransmit=False)  # nobody acknowledges here
    dev.connected(0)
    decoder, msgs = Decoder(), []
    for k in range(0, 65_000, 10):
        msgs += [parse(p) for p in decoder.feed(dev.poll(k * MS))]  # a ProtocolError fails the test
    c = decoder.counters()
    assert c["crc_errors"] == c["framing_errors"] == c["bytes_discarded"] == 0
    assert [m.seq for m in msgs] == list(range(len(msgs)))     # every packet the device made came through
    assert sum(isinstance(m, Sample) for m in msgs) > 60 * 49


@pytest.mark.parametrize("poll_ms", [10, 137, 450])
def test_a_late_poll_numbers_packets_in_the_order_they_go_out(poll_ms):
    """A loaded host polls the simulated line late: every packet falling due meanwhile (samples, a heartbeat, a
    TIME_REQ's answer) still goes out with its seq in due-time order, as a device sends (the checker counted seq
    gaps when an answer or a heartbeat took a seq below packets sent before it)."""
    dev = InjectorDevice("continuous", t0_ns=0, seed=6, retransmit=False)
    dev.connected(0)
    decoder, msgs = Decoder(), []
    for i, k in enumerate(range(0, 8_000, poll_ms)):
        if i % 2 == 1:      # the appliance asks the time between two polls
            dev.receive(TimeReq(0, 0, token=k).encode(), (k - poll_ms // 2) * MS)
        msgs += [parse(p) for p in decoder.feed(dev.poll(k * MS))]
    assert any(isinstance(m, TimeResp) for m in msgs)
    assert [m.seq for m in msgs] == list(range(len(msgs)))
    assert all(b.device_ms >= a.device_ms for a, b in pairwise(msgs))


def test_continuous_never_waits_for_the_appliance():
    """The appliance only acknowledges and asks the time; the injections run the same if it is silent."""
    def script(got):  # seq left out: an answered TIME_REQ takes one
        return [(m.TYPE, m.device_ms, {k: v for k, v in m.to_dict().items() if k != "seq"}) for m, _ in got
                if isinstance(m, (State, Sample, Xray, Summary))]

    sent = []
    _, answered = play(InjectorDevice("continuous", t0_ns=0, seed=7, boot_ms=0), 65, sent=sent)
    assert {parse(p).TYPE for f in sent for p in Decoder().feed(f)} == {MsgType.ACK, MsgType.TIME_REQ}
    assert all(m.TYPE < MsgType.ACK for m, _ in answered)       # device-to-appliance types only
    _, silent = play(InjectorDevice("continuous", t0_ns=0, seed=7, boot_ms=0), 65, ack=False)
    assert script(answered) == script(silent) and len(of(silent, Sample)) > 60 * 49


def test_injections_must_not_interleave():
    with pytest.raises(ValueError, match="before the one before it is back to idle"):
        next(Scenario("overlap", "the second arms before the first is idle", 20.0,
                      injections=(SimInjection(1.0, 5.0, 5.0), SimInjection(3.0, 5.0, 5.0))).events())
    with pytest.raises(ValueError, match="idle_after_s"):
        SimInjection(1.0, 5.0, 5.0, idle_after_s=0.05)


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
    assert parse_sim_url("injsim://?scenario=continuous")["scenario"] == "continuous"
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
        # in_waiting counts what the device has sent and nobody has read: that many bytes come without waiting.
        waiting = wait_for(lambda: port.in_waiting, 1)
        started = time.monotonic()
        data = port.read(waiting)
        assert len(data) == waiting and time.monotonic() - started < 0.1
        assert link.feed(data, time.monotonic_ns()).messages and port.cts
    finally:
        port.close()
    with pytest.raises(serial.PortNotOpenError):
        port.read(1)


def _run_sim(port, scenario, seconds, **kw):
    out = io.StringIO()
    th = threading.Thread(target=simulate_main, args=(port, scenario), kwargs={"seconds": seconds, "out": out, **kw})
    th.start()
    m = wait_for(lambda: re.search(r" on (\S+)$", out.getvalue().strip()), 2, interval=0.01,
                 explain=lambda: "simulator did not print its port")
    return th, m.group(1)


@pytest.mark.parametrize("where", ["pty", "socket://127.0.0.1:0"])
def test_simulate_main_passes_serial_check(where):
    th, path = _run_sim(where, "nominal", 2.0)
    try:
        assert check_main(path, seconds=1.6, out=io.StringIO()) == 0
    finally:
        th.join(5)
    assert not th.is_alive()


def _samples_checked(port, seconds):
    out = io.StringIO()
    rc = check_main(port, seconds=seconds, as_json=True, out=out)
    return rc, out.getvalue().count('"type": "SAMPLE"')


def test_continuous_passes_serial_check_as_injsim_url():
    t0 = time.monotonic_ns() - int(0.45 * S)  # the first injection starts 50 ms from now
    rc, samples = _samples_checked(f"injsim://?scenario=continuous&t0_ns={t0}", 1.2)
    # 50 Hz while injecting: not more than the time since t0 allows (a loaded machine may read a little past
    # the 1.2 s, and the handler then delivers what fell due meanwhile), and most of the 1.15 s of injection.
    elapsed_injecting_s = (time.monotonic_ns() - t0) / S - 0.5
    assert rc == 0 and 45 <= samples <= 50 * elapsed_injecting_s + 2, (samples, elapsed_injecting_s)


def test_continuous_passes_serial_check_from_simulate_injector():
    th, path = _run_sim("pty", "continuous", 2.0)
    try:
        rc, samples = _samples_checked(path, 1.6)
    finally:
        th.join(5)
    assert rc == 0 and samples >= 40  # injecting from 0.5 s after the simulator started


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
        wait_for(lambda: links[-1:] == ["up"] and "down" in links and any(isinstance(m, Summary) for m in msgs),
                 4.5, explain=lambda: links)
    finally:
        bridge.stop()
        th.join(3)
    assert links[:5] == ["silent", "up", "down", "silent", "up"]
    assert [m.delivered_volume for m in msgs if isinstance(m, Summary)] == [1000]


def test_the_cli_offers_every_scenario_and_refuses_others(capsys):
    from api.cli.main import build_parser

    parser = build_parser()
    for name in SCENARIOS:
        assert parser.parse_args(["simulate-injector", "--port", "pty", "--scenario", name]).scenario == name
    with pytest.raises(SystemExit):
        parser.parse_args(["simulate-injector", "--port", "pty", "--scenario", "nope"])
    assert "continuous" in capsys.readouterr().err


def test_every_frame_has_a_zero_before_it_as_well_as_after():
    dev = InjectorDevice("nominal", t0_ns=0, seed=3)
    dev.connected(0)
    wire = b"".join(dev.poll(k * 10 * MS) for k in range(300))  # 3 s: HELLO, heartbeats, an injection
    pieces = wire.split(b"\x00")
    assert wire.startswith(b"\x00") and wire.endswith(b"\x00")
    # 0x00 frame 0x00 0x00 frame 0x00 ...: every frame sits between an empty piece before and after.
    assert pieces[0] == b"" and all(p == b"" for p in pieces[::2]) and all(pieces[1::2])
    packets = Decoder().feed(wire)
    assert len(packets) == len(pieces[1::2]) > 10
