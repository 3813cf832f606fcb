"""The protocol document, serial-check and the appliance, judged by a device emulator written from the
document alone (tests/vendor_emulator.py imports nothing of firmware_bridge).

(1) the document's example hex dumps are what the emulator builds; (a) twelve kinds of line noise, each
followed by an intact packet that the appliance's decoder and Link take and count right, with and without
the recommended 0x00 before every frame; (b) a real `serial-check` subprocess against the emulator on a TCP
socket, a conforming session and one session per broken rule; (c) the live appliance raising and clearing
a FAULT alarm as section 13 promises.
"""
from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from firmware_bridge.framing import Decoder
from firmware_bridge.link import Link
from tests import vendor_emulator as ve
from tests.live import Live
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "serial-protocol.md").read_text()
MS, S = 1_000_000, 1_000_000_000


# ---- (1) the document's examples, rebuilt from its own text ------------------------------------------------

def doc_vectors():
    """(name, packet bytes from the offset columns, wire bytes) of every example in section 10."""
    out = []
    for name, body in re.findall(r"<!-- vector: (\w+) -->\n```\n(.*?)```", DOC, re.S):
        before, wire = body.split("wire:")
        packet = bytearray()
        for line in before.splitlines()[1:]:
            for token in line[7:].split():   # the offset column is 5 wide; the bytes follow
                if not re.fullmatch(r"[0-9a-f]{2}", token):
                    break
                packet.append(int(token, 16))
        head = re.match(r"(\w+) 0x([0-9a-f]{2}): (\d+) bytes before COBS", before, re.I)
        stated = re.match(r" (\d+) bytes", wire)
        out.append((name, bytes(packet), bytes.fromhex(" ".join(wire.splitlines()[1:])),
                    int(head.group(3)), int(stated.group(1))))
    return out


def test_crc_check_value_and_cobs_worked_example():
    assert ve.crc16_ccitt_false(b"123456789") == 0x29B1
    packet = bytes.fromhex("01 02 01 00 60 e4 01 00 01 40 b4")
    assert ve.frame(packet, leading_zero=False).hex(" ") == "04 01 02 01 04 60 e4 01 04 01 40 b4 00"
    assert ve.frame(packet).hex(" ") == "00 04 01 02 01 04 60 e4 01 04 01 40 b4 00"
    assert ve.packet(ve.HEARTBEAT, 1, 124000, ve.heartbeat_payload(ve.ARMED)) == packet


def test_every_example_is_what_the_emulator_builds():
    vectors = doc_vectors()
    assert len(vectors) == 16
    for name, packet, wire, stated_packet, stated_wire in vectors:
        assert len(packet) == stated_packet, name
        assert len(wire) == stated_wire, name
        assert ve.crc16_ccitt_false(packet[:-2]) == int.from_bytes(packet[-2:], "little"), name
        assert ve.frame(packet) == wire, name
        assert ve.cobs_decode(wire[1:-1]) == packet, name
        assert len(packet) - 10 == ve.PAYLOAD_SIZES.get(packet[1], len(packet) - 10), name


def test_examples_from_their_fields():
    """The builders (the payload tables of section 4) give the bytes of the examples."""
    wires = {name: wire for name, _, wire, _, _ in doc_vectors()}
    built = {
        "hello": ve.packet(ve.HELLO, 0, 123456, ve.hello_payload(51838, 1, "SIM-INJECTOR", "SN-0042", (1, 2, 3), 7)),
        "sample": ve.packet(ve.SAMPLE, 4, 125020, ve.sample_payload(500, 1234, 920, 1)),
        "summary": ve.packet(ve.SUMMARY, 5, 127200, ve.summary_payload(1000, 1000, 500, 500, 920, 2068, 2150, 300,
                                                                      -1000)),
        "fault_utf8": ve.packet(ve.FAULT, 9, 1, ve.fault_payload(770, 1, "Druck über Grenze")),
        "state": ve.packet(ve.STATE, 3, 125000, ve.state_payload(ve.INJECTING, 1)),
        "time_resp": ve.packet(ve.TIME_RESP, 2, 124010, ve.time_resp_payload(0xDEADBEEF)),
        "xray": ve.packet(ve.XRAY, 6, 126000, ve.xray_payload(True)),
    }
    for name, packet in built.items():
        assert ve.frame(packet) == wires[name], name
    # the host's packets, read back by the device's receiver
    assert ve.HostReader().feed(wires["ack"]) == [(ve.ACK, 5)]
    assert ve.HostReader().feed(wires["time_req"]) == [(ve.TIME_REQ, 0x12345678)]


# ---- (a) line noise, then an intact packet ------------------------------------------------------------------

def _damaged(rng):
    """A SAMPLE frame (seq 2) that noise will damage; seq 2 is then lost and the next packet is seq 3."""
    return ve.cobs_encode(ve.packet(ve.SAMPLE, 2, 1010, ve.sample_payload(500, 50, 900, 1)))


def _flip(frame: bytes, rng) -> bytes:
    b = bytearray(frame)
    i = rng.randrange(1, len(b))
    b[i] ^= 1 << rng.randrange(8)
    if b[i] == 0:
        b[i] = 0x5A
    return bytes(b)


def _no_zero(rng, n):
    return bytes(rng.randrange(1, 256) for _ in range(n))


# name -> (noise bytes, packets it consumed). A noise that ends a damaged frame with its own 0x00 says so.
NOISE = {
    "boot banner, 40 bytes, no 0x00": lambda r: (b"INJ-FW 2.1.0 boot ok; selftest pass; \r\n", 0),
    "idle-line garbage, no 0x00": lambda r: (_no_zero(r, 13), 0),
    "dropped delimiter": lambda r: (_damaged(r), 1),
    "frame cut short, no delimiter": lambda r: (_damaged(r)[:9], 1),
    "300 bytes of garbage": lambda r: (_no_zero(r, 300), 0),
    "bit flip": lambda r: (_flip(_damaged(r), r) + b"\x00", 1),
    "dropped bytes inside a frame": lambda r: (_damaged(r)[:5] + _damaged(r)[7:] + b"\x00", 1),
    "garbage ending in 0x00": lambda r: (_no_zero(r, 25) + b"\x00", 0),
    "break condition (0x00 run) mid-frame": lambda r: (_damaged(r)[:8] + bytes(24), 1),
    "duplicated byte": lambda r: (_damaged(r)[:6] + _damaged(r)[5:] + b"\x00", 1),
    "baud-rate mismatch burst": lambda r: (bytes(r.choice((0xFF, 0xFE, 0xF8, 0xE0)) for _ in range(37)), 0),
    "frame sent twice": lambda r: (_damaged(r) + b"\x00" + b"\x00" + _damaged(r) + b"\x00", 0),
}
assert len(NOISE) == 12


def _session(noise: bytes, consumed: int, leading_zero: bool, doubled: bool):
    """HELLO (seq 0), HEARTBEAT (seq 1, the Link's seq baseline: a HELLO may be a late copy and sets none),
    the noise, then the intact packet after it (a HEARTBEAT): the bytes and that packet."""
    start = ve.frame(ve.packet(ve.HELLO, 0, 1000, ve.hello_payload()), leading_zero)
    start += ve.frame(ve.packet(ve.HEARTBEAT, 1, 1001, ve.heartbeat_payload(ve.IDLE)), leading_zero)
    seq = 3 if consumed or doubled else 2
    after = ve.packet(ve.HEARTBEAT, seq, 1020, ve.heartbeat_payload(ve.IDLE))
    return start + noise + ve.frame(after, leading_zero), after


@pytest.mark.parametrize("leading_zero", [True, False], ids=["leading 0x00", "no leading 0x00"])
@pytest.mark.parametrize("kind", list(NOISE))
def test_the_packet_after_noise_is_decoded_and_counted(kind, leading_zero):
    for trial in range(20):
        rng = random.Random(f"{kind}/{trial}")
        noise, consumed = NOISE[kind](rng)
        doubled = kind == "frame sent twice"
        wire, after = _session(noise, consumed, leading_zero, doubled)
        for chunk in (len(wire), 1, 7):   # whole, byte by byte, and in pieces
            decoder = Decoder()
            got = [p for i in range(0, len(wire), chunk) for p in decoder.feed(wire[i:i + chunk])]
            assert got[-1] == after[:-2], (kind, trial, chunk)   # the decoder drops the crc

        # Section 2: a packet whose delimiter was lost survives when the next frame's leading 0x00 ends it.
        lost = consumed and not (kind == "dropped delimiter" and leading_zero)
        link = Link()
        link.port_opened(0)
        out = link.feed(wire, 1 * S)
        messages = [m for m, _ in out.messages]
        expected = ["Hello", "Heartbeat", "Heartbeat"]
        if not lost and (consumed or doubled):
            expected.insert(2, "Sample")
        assert [type(m).__name__ for m in messages] == expected, (kind, trial)
        assert messages[-1].seq == after[2] and messages[-1].device_ms == 1020
        c = link.counters()
        assert c["packets_by_type"]["HEARTBEAT"] == 2 and c["packets_by_type"]["HELLO"] == 1
        assert c["seq_gaps"] == lost and c["packets_missed"] == lost, (kind, trial, c)
        assert c["duplicates"] == (1 if doubled else 0), (kind, trial, c)


# ---- (b) serial-check against the emulator on a TCP socket ------------------------------------------------

BOOT_DELAY_S = 1.6   # silence before power-up: serial-check knows it listened from the start (section 11)


def run_check(script, seconds: float, **knobs):
    """(exit status, JSON lines, the emulator) of `cathlab-edge serial-check --json` against the emulator."""
    emu = ve.serve(script, **knobs)
    try:
        proc = subprocess.run([sys.executable, "-m", "api.cli", "serial-check", "--port",
                               f"socket://127.0.0.1:{emu.port}", "--seconds", str(seconds), "--json"],
                              capture_output=True, text=True, cwd=ROOT, timeout=seconds + 60)
    finally:
        emu.close()
    assert emu.error is None, emu.error
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()], emu


def idle(emu, seconds=120.0):
    emu.sleep(seconds)


def conforming(emu):
    emu.boot()
    emu.sleep(1.0)
    emu.send(ve.XRAY, ve.xray_payload(True), emu.now_ms() - 40)   # event 40 ms ago: within the 50 ms rule
    emu.injection(seconds=1.0)
    emu.sleep(0.3)
    emu.set_state(ve.IDLE)
    emu.send(ve.XRAY, ve.xray_payload(False))
    idle(emu)


def heartbeat_before_hello(emu):
    emu.start_heartbeats()
    emu.send(ve.HEARTBEAT, ve.heartbeat_payload(ve.IDLE))
    emu.sleep(0.2)
    emu.hello()
    idle(emu)


def device_ms_back(emu):
    emu.boot()
    emu.sleep(1.0)
    emu.send(ve.HEARTBEAT, ve.heartbeat_payload(ve.IDLE))
    emu.send(ve.XRAY, ve.xray_payload(True), emu.now_ms() - 80)
    idle(emu)


def slow_samples(emu):
    emu.boot()
    emu.sleep(0.5)
    emu.injection(seconds=1.0, sample_s=0.15)
    idle(emu)


def summary_then(resend_payload_changed: bool):
    def script(emu):
        emu.boot()
        emu.wait_acked()
        emu.honour_acks = False
        wire = emu.send(ve.SUMMARY, ve.summary_payload())
        if resend_payload_changed:   # "a resend" of seq n carrying other content
            emu.pending.clear()
            emu.sleep(0.5)
            emu.send(ve.SUMMARY, ve.summary_payload(delivered_volume=900), seq=ve.cobs_decode(wire[1:-1])[2])
        idle(emu)
    return script


BANNER = b"INJ-FW 2.1.0 (c) vendor\r\nselftest ok\r\n"


def banner_then_hello(emu):
    emu.boot(banner=BANNER)
    idle(emu)


def hello_damaged(emu):
    good = ve.packet(ve.HELLO, emu.seq, emu.now_ms(), ve.hello_payload())
    emu.write(b"\x00" + _flip(ve.cobs_encode(good), random.Random(1)) + b"\x00")   # the line hit the first HELLO
    emu.seq += 1
    emu.start_heartbeats()
    emu.send(ve.HEARTBEAT, ve.heartbeat_payload(ve.IDLE))
    emu.hello()
    idle(emu)


def injection_then_idle(emu):
    emu.boot()
    emu.sleep(0.3)
    emu.injection(seconds=0.5)
    idle(emu)


def restart_midway(emu):
    emu.boot()
    emu.sleep(1.2)
    emu.seq, emu._clock_start_ms = 0, emu._clock_start_ms - 3_600_000   # rebooted: clock from near 0
    emu.pending.clear()
    emu.hello()
    idle(emu)


def xray_twice(emu):
    emu.boot()
    emu.sleep(0.5)
    emu.send(ve.XRAY, ve.xray_payload(True))
    emu.sleep(0.3)
    emu.send(ve.XRAY, ve.xray_payload(True))
    idle(emu)


def heartbeat_twice(emu):
    emu.boot()
    emu.sleep(0.8)
    wire = emu.send(ve.HEARTBEAT, ve.heartbeat_payload(ve.IDLE))
    emu.write(wire)
    idle(emu)


# name -> (script, seconds, emulator knobs, the rule serial-check must list, the words of its message)
BROKEN = {
    "HELLO first": (heartbeat_before_hello, 4, dict(boot_delay_s=BOOT_DELAY_S), "first-hello",
                    "first packet was HEARTBEAT"),
    "heartbeat interval": (idle_boot := (lambda emu: (emu.boot(), idle(emu))), 5, dict(heartbeat_s=1.7),
                           "heartbeat-period", "HEARTBEAT came 1.7"),
    "device_ms back more than 50 ms": (device_ms_back, 3, {}, "device-time", "device_ms went back by"),
    "SAMPLE spacing": (slow_samples, 3.5, {}, "sample-slow", "ms apart while injecting (10-100 Hz"),
    "resend count": (idle_boot, 7.5, dict(honour_acks=False, max_resends=11), "retx-many",
                     "resent more than 10 times"),
    "resend too soon": (idle_boot, 3, dict(honour_acks=False, resend_s=0.1, max_resends=3), "retx-fast",
                        "resent after 1"),
    "resend not identical": (summary_then(True), 3, {}, "seq-reuse", "resent with different content"),
    "boot banner": (banner_then_hello, 3, dict(boot_delay_s=BOOT_DELAY_S), "banner", "INJ-FW 2.1.0"),
    "lost first HELLO": (hello_damaged, 3.5, dict(boot_delay_s=BOOT_DELAY_S), "first-hello",
                         "first HELLO was lost"),
    "frame sent twice": (heartbeat_twice, 3, {}, "repeat", "arrived twice (only HELLO, SUMMARY and FAULT are resent)"),
    "TIME_REQ unanswered": (idle_boot, 3, dict(answer_time_req=False), "time-sync",
                            "none of"),
    "TIME_RESP late": (idle_boot, 3, dict(time_resp_delay_s=0.6), "time-late", "ms after its TIME_REQ"),
    "TIME_RESP token not copied": (idle_boot, 3, dict(token_xor=0x5A5A), "time-token", "which no TIME_REQ"),
    "HELLO period": (idle_boot, 14, dict(hello_s=12.5), "hello-period", "after the previous one (every 10 s)"),
    "one seq counter for all packets": (injection_then_idle, 3, dict(own_seq_for_acked=True), "seq-behind",
                                        "SUMMARY seq 1 is new but behind seq"),
    "device restarted during the check": (restart_midway, 3.5, {}, "restart", "the device restarted during the check"),
    "XRAY repeated": (xray_twice, 3, {}, "xray-repeat", "repeated without a change"),
    "SAMPLE without capability bit0": (injection_then_idle, 3, dict(capabilities=0b110), "cap-SAMPLE",
                                       "capabilities lack bit0"),
}
CONFORMING = {
    "conforming, listened from power-up": (conforming, 12, dict(boot_delay_s=BOOT_DELAY_S)),
    "every ACK lost: 10 resends": (summary_then(False), 7, {}),
    "banner-free boot without leading 0x00": (conforming, 5, dict(boot_delay_s=BOOT_DELAY_S, leading_zero=False)),
    "device_ms and seq wrap": (conforming, 5, dict(clock_start_ms=(1 << 32) - 2500, first_seq=65530)),
}


@pytest.fixture(scope="module")
def sessions():
    """Every session at once (each is real time): name -> (exit status, JSON lines, emulator)."""
    jobs = {name: (script, seconds, knobs) for name, (script, seconds, knobs, *_) in BROKEN.items()}
    jobs.update(CONFORMING)
    # Mostly waiting on the line: the longest start first, so the 14 s and 12 s sessions bound the whole.
    longest_first = sorted(jobs.items(), key=lambda item: -item[1][1])
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = {name: pool.submit(run_check, *job[:2], **job[2]) for name, job in longest_first}
        return {name: f.result() for name, f in futures.items()}


def _summary(lines):
    (summary,) = [line["summary"] for line in lines if "summary" in line]
    return summary


@pytest.mark.parametrize("name", list(CONFORMING))
def test_conforming_session_passes(sessions, name):
    status, lines, emu = sessions[name]
    summary = _summary(lines)
    assert (status, summary["violations"]) == (0, []), summary
    assert summary["crc_errors"] == summary["framing_errors"] == summary["seq_gaps"] == 0
    sent = [line for line in lines if "sent" in line]
    acks = [line["sent"]["acked_seq"] for line in sent if line["sent"]["type"] == "ACK"]
    reqs = [line["sent"]["token"] for line in sent if line["sent"]["type"] == "TIME_REQ"]
    # what serial-check says it sent is what the device received (ACKs of every copy, TIME_REQ tokens)
    assert acks == [value for _, kind, value in emu.received if kind == ve.ACK]
    assert reqs == [value for _, kind, value in emu.received if kind == ve.TIME_REQ] and reqs
    assert all(line["t_s"] > 0 for line in sent)
    assert summary["by_type"]["TIME_RESP"] == len(reqs)


def test_conforming_session_is_judged_whole(sessions):
    status, lines, emu = sessions["conforming, listened from power-up"]
    summary = _summary(lines)
    assert summary["listened_from_start"] is True and summary["banner_bytes"] == 0
    assert summary["by_type"]["HELLO"] == 2            # at power-up and 10 s later
    assert summary["by_type"]["SAMPLE"] >= 40 and summary["by_type"]["SUMMARY"] == 1
    packets = [line for line in lines if "type" in line]
    assert packets[0]["type"] == "HELLO" and packets[0]["model"] == "VENDOR-EMU"


def test_all_acks_lost_is_legal_and_copies_are_counted_apart(sessions):
    status, lines, emu = sessions["every ACK lost: 10 resends"]
    summary = _summary(lines)
    assert summary["by_type"]["SUMMARY"] == 1 and summary["by_type"]["SUMMARY retransmitted"] == 10
    assert summary["duplicates"] >= 10
    copies = [line for line in lines if line.get("type") == "SUMMARY"]
    assert [c.get("retransmission", False) for c in copies] == [False] + [True] * 10


def test_leading_zero_omitted_costs_nothing(sessions):
    summary = _summary(sessions["banner-free boot without leading 0x00"][1])
    assert summary["recovered"] == 0 and summary["bytes_discarded"] == 0


@pytest.mark.parametrize("name", list(BROKEN))
def test_each_broken_rule_is_reported_with_its_own_message(sessions, name):
    status, lines, emu = sessions[name]
    *_, rule, words = BROKEN[name]
    summary = _summary(lines)
    assert status == 1, summary
    assert rule in summary["violation_counts"], summary
    others = set(summary["violation_counts"]) - {rule, rule + "-end"}
    assert not others, (name, summary["violations"])
    assert any(words in v for v in summary["violations"]), summary["violations"]


def test_banner_is_counted_and_shown(sessions):
    summary = _summary(sessions["boot banner"][1])
    assert summary["listened_from_start"] and summary["banner_bytes"] == len(BANNER)
    assert summary["banner"].startswith('"INJ-FW 2.1.0 (c) vendor\\r\\nselftest ok')


def test_a_damaged_first_hello_is_not_called_a_banner(sessions):
    summary = _summary(sessions["lost first HELLO"][1])
    assert summary["listened_from_start"] and summary["banner_bytes"] == 0 and summary["banner"] == ""
    assert summary["violation_counts"] == {"first-hello": 1}
    assert "bytes of a HELLO that did not arrive intact" in summary["violations"][0]


# ---- (c) the live appliance: an injection, a FAULT of severity 2, then idle (section 13) ----------------------

def test_live_appliance_alarms_a_fault_and_clears_it_on_idle(tmp_path):
    proceed = {name: threading.Event() for name in ("hello", "idle", "idle fault", "fault state", "restart")}

    def until(emu, event):
        while not event.is_set():
            emu.sleep(0.05)

    def script(emu):
        emu.boot()
        emu.send(ve.FAULT, ve.fault_payload(0x0300, 1, "contrast low"))   # a warning: recorded, no alarm
        emu.sleep(1.0)
        emu.injection(seconds=1.0, fault=(0x0101, 2, "pressure limit exceeded"))
        until(emu, proceed["hello"])
        emu.hello()                      # a periodic HELLO of the same session: the alarm stands
        until(emu, proceed["idle"])
        emu.set_state(ve.IDLE)
        until(emu, proceed["idle fault"])
        emu.send(ve.FAULT, ve.fault_payload(0x0202, 2, "air in line"))   # a fault while idle
        emu.send(ve.STATE, ve.state_payload(ve.IDLE))                     # idle again: not a change
        until(emu, proceed["fault state"])
        emu.set_state(ve.FAULTED)
        emu.sleep(0.3)
        emu.set_state(ve.IDLE)
        until(emu, proceed["restart"])
        emu.send(ve.FAULT, ve.fault_payload(0x0404, 2, "watchdog reset"))
        emu.sleep(0.3)
        emu.seq, emu._clock_start_ms = 0, emu._clock_start_ms - 3_600_000   # rebooted: clock from near 0
        emu.pending.clear()
        emu.hello()
        idle(emu)

    emu = ve.serve(script)
    live = Live(tmp_path / "data", "--serial", f"socket://127.0.0.1:{emu.port}", "--video", "none")
    try:
        def status(predicate):
            def poll():
                if live.proc.poll() is not None:
                    raise AssertionError(live.proc.communicate())
                try:
                    s = live.status()
                except OSError:
                    return None
                return s if predicate(s) else None
            return poll

        warned = wait_for(status(lambda s: s["counters"]["serial"]["packets_by_type"].get("FAULT", 0) >= 1), 30)
        assert warned["alarms"] == [] and warned["injector"]["fault"] is None   # severity 1: no alarm
        faulted = wait_for(status(lambda s: s["injector"]["fault"] is not None), 30)
        assert faulted["injector"]["fault"] == {"code": 0x0101, "severity": 2, "text": "pressure limit exceeded"}
        assert [a["kind"] for a in faulted["alarms"]] == ["injector_fault"]
        assert faulted["injector"]["flow_ml_s"] == 0.0 and faulted["injector"]["pressure_kpa"] == 0.0
        code, health = live.get("/healthz")
        assert code == 503 and health["reasons"] == ["injector fault 0x0101 (error): pressure limit exceeded"]
        aborted = wait_for(status(lambda s: s["injector"]["state"] == "aborted"), 5)
        assert aborted["injector"]["fault"] is not None      # aborted is no clearing state
        proceed["hello"].set()
        wait_for(lambda: any(t == ve.HELLO for _, t, _ in emu.sent[-3:]) and len(emu.received) > 0, 5)
        still = wait_for(status(lambda s: s["counters"]["serial"]["packets_by_type"].get("HELLO", 0) >= 2), 5)
        assert still["injector"]["fault"] is not None and still["alarms"], "a periodic HELLO cleared the alarm"
        proceed["idle"].set()
        cleared = wait_for(status(lambda s: s["injector"]["state"] == "idle"), 5)
        assert cleared["injector"]["fault"] is None and cleared["alarms"] == []
        assert wait_for(lambda: live.get("/healthz")[0] == 200, 5)
        # Section 13: a FAULT while idle stands until the state changes (a STATE repeating idle is no change);
        # the device reports state fault while the error lasts and idle when it is resolved.
        proceed["idle fault"].set()
        idle_fault = wait_for(status(lambda s: (s["injector"]["fault"] or {}).get("code") == 0x0202), 5)
        assert idle_fault["injector"]["state"] == "idle" and idle_fault["alarms"]
        proceed["fault state"].set()
        in_fault = wait_for(status(lambda s: s["injector"]["state"] == "fault"), 5)
        assert in_fault["alarms"]
        wait_for(status(lambda s: s["injector"]["state"] == "idle" and s["alarms"] == []), 5)
        # A HELLO of a restarted device (its clock went back by more than 60 s) starts a new session.
        proceed["restart"].set()
        wait_for(status(lambda s: (s["injector"]["fault"] or {}).get("code") == 0x0404), 5)
        restarted = wait_for(status(lambda s: s["injector"]["fault"] is None), 5)
        assert restarted["alarms"] == [] and restarted["injector"]["state"] == "idle"
    finally:
        live.stop()
        emu.close()
    assert emu.error is None, emu.error


def test_json_lines_have_the_fields_section_11_shows(sessions):
    """The examples of section 11 name the fields a vendor's script will read: the check prints those."""
    status, lines, emu = sessions["conforming, listened from power-up"]
    examples = []
    for line in re.findall(r"^(\{.*\})$", DOC, re.M):
        try:
            examples.append(json.loads(line))
        except json.JSONDecodeError:
            pass   # the summary's example has N and ... for values
    sample_ex = next(e for e in examples if e.get("type") == "SAMPLE")
    sent_ex = next(e for e in examples if "sent" in e)
    summary_keys = set(re.findall(r'"(\w+)": ', re.search(r'\{"summary": \{(.*)\}\}', DOC).group(1)))
    summary_keys -= set(re.findall(r'"(\w+)": ', re.search(r'"by_type": \{(.*?)\}', DOC).group(0))) - {"by_type"}
    sample = next(line for line in lines if line.get("type") == "SAMPLE")
    assert set(sample) == set(sample_ex)
    sent = next(line for line in lines if line.get("sent", {}).get("type") == "ACK")
    assert set(sent) == set(sent_ex) and set(sent["sent"]) == set(sent_ex["sent"])
    assert set(_summary(lines)) == summary_keys
