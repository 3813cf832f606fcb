"""Fuzzing the framing decoder: damaged streams never raise, never grow the buffer, never cost an intact
frame (an intact v1 packet's complete encoding and its delimiter), whatever came before it, and the
compiled decoder always equals the reference.

The default run is a smoke-sized version. The fuzz run at scale:
    CATHLAB_FUZZ=1 .venv/bin/python -m pytest tests/test_fuzz_framing.py -q
(CATHLAB_FUZZ_EXAMPLES sets the hypothesis examples, CATHLAB_FUZZ_STREAMS the seeded random streams.)
"""
import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge.framing import Decoder, RefDecoder
from firmware_bridge.wire import MAX_FRAME, encode_frame
from tests.v1_packets import packets as v1_packets
from tests.v1_packets import random_packet

AT_SCALE = os.environ.get("CATHLAB_FUZZ") == "1"
EXAMPLES = int(os.environ.get("CATHLAB_FUZZ_EXAMPLES", "20000")) if AT_SCALE else 150
STREAMS = int(os.environ.get("CATHLAB_FUZZ_STREAMS", "200000")) if AT_SCALE else 300
COUNTERS = ("frames", "crc_errors", "framing_errors", "oversized", "bytes_discarded", "recovered")


def build_stream(rnd: random.Random, n_segments: int):
    """A stream of valid frames and damage; returns (bytes, packets of frames that must survive)."""
    out = bytearray()
    must = []
    for _ in range(n_segments):
        op = rnd.random()
        if op < 0.55:  # an intact frame: it must survive whatever came before it
            packet = random_packet(rnd)
            must.append(packet)
            out += rnd.choice((b"", b"", b"\x00")) + encode_frame(packet)
        elif op < 0.65:  # garbage, with or without zeros, or a printable boot banner
            kind = rnd.randrange(3)
            junk = rnd.randbytes(rnd.randint(1, 1024))
            if kind == 1:
                junk = junk.replace(b"\x00", b"")
            elif kind == 2:
                junk = bytes(32 + b % 95 for b in junk)
            out += junk
        elif op < 0.75:  # a frame with bit flips
            f = bytearray(encode_frame(rnd.randbytes(rnd.randint(8, 252))))
            for _ in range(rnd.randint(1, 4)):
                f[rnd.randrange(len(f))] ^= 1 << rnd.randrange(8)
            out += f
        elif op < 0.85:  # a truncated frame (delimiter lost with it)
            f = encode_frame(rnd.randbytes(rnd.randint(8, 252)))
            out += f[: rnd.randrange(len(f) - 1)]
        elif op < 0.92:  # an oversized run without delimiter
            out += bytes(b or 1 for b in rnd.randbytes(rnd.randint(256, 2000)))
        elif op < 0.96:  # a missing delimiter: two frames glued; the second must survive
            a = encode_frame(random_packet(rnd))[:-1]
            packet = random_packet(rnd)
            must.append(packet)
            out += a + encode_frame(packet)
        else:  # bytes dropped inside a frame
            f = bytearray(encode_frame(rnd.randbytes(rnd.randint(8, 252))))
            for _ in range(rnd.randint(1, 3)):
                del f[rnd.randrange(len(f) - 1)]
            out += f
    return bytes(out), must


def chunks(data: bytes, rnd: random.Random):
    mode = rnd.randrange(3)
    if mode == 0:
        return [data]
    if mode == 1:
        return [data[i:i + 1] for i in range(len(data))]
    out, i = [], 0
    while i < len(data):
        n = rnd.randint(1, 300)
        out.append(data[i:i + n])
        i += n
    return out


RESULTS = dict.fromkeys(("streams", "intact", "decoded", "recovered", "garbage_examples", "seeded_bytes"), 0)


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    if AT_SCALE:
        r = RESULTS
        print(f"\nfuzz: {r['streams']} damaged streams ({r['seeded_bytes'] / 1e6:.1f} MB seeded), {r['intact']} intact "
              f"frames in them, every one decoded ({r['recovered']} recovered from the tail of a bad frame); "
              f"{r['garbage_examples']} garbage-before-packet examples, the packet decoded in each")


def is_subsequence(needles, haystack):
    it = iter(haystack)
    return all(any(n == h for h in it) for n in needles)


def run_one(rnd: random.Random, with_reference: bool):
    data, must = build_stream(rnd, rnd.randint(1, 12))
    pieces = chunks(data, rnd)
    d = Decoder()
    got = []
    for p in pieces:
        got += d.feed(p)  # must never raise
        assert d.pending <= MAX_FRAME
    assert is_subsequence(must, got), "an intact frame after the damage was lost"
    RESULTS["streams"] += 1
    RESULTS["intact"] += len(must)
    RESULTS["decoded"] += len(got)
    RESULTS["recovered"] += d.recovered
    if with_reference:
        r = RefDecoder()
        ref = [x for p in pieces for x in r.feed(p)]
        assert ref == got
        assert all(getattr(d, k) == getattr(r, k) for k in COUNTERS)
    return len(data)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.randoms(use_true_random=False))
def test_damaged_streams_hypothesis(rnd):
    run_one(rnd, with_reference=True)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=3000), st.integers(1, 64))
def test_raw_bytes_hypothesis(data, step):
    d, r = Decoder(), RefDecoder()
    for i in range(0, len(data), step):
        assert d.feed(data[i:i + step]) == r.feed(data[i:i + step])
        assert d.pending <= MAX_FRAME
    assert all(getattr(d, k) == getattr(r, k) for k in COUNTERS)


def test_seeded_random_streams():
    rnd = random.Random(20261126)
    total = 0
    for k in range(STREAMS):
        total += run_one(rnd, with_reference=(k % 20 == 0))
    RESULTS["seeded_bytes"] += total


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=1024), v1_packets, st.integers(0, 2048), st.booleans())
def test_garbage_before_an_intact_packet_hypothesis(garbage, packet, split, zero_free):
    """Any garbage up to 1 KB (with or without 0x00) before an intact packet: the packet is decoded by both
    decoders, fed whole, split and byte by byte."""
    if zero_free:
        garbage = garbage.replace(b"\x00", b"")
    wire = garbage + encode_frame(packet)
    k = split % (len(wire) + 1)
    for make in (Decoder, RefDecoder):
        for chunks in ([wire], [wire[:k], wire[k:]], [wire[i:i + 1] for i in range(len(wire))]):
            d = make()
            got = [p for c in chunks for p in d.feed(c)]
            assert got[-1:] == [packet]
            assert d.pending == 0
    RESULTS["garbage_examples"] += 1
