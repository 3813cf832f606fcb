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
