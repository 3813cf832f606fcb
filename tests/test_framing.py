"""Framing: compiled decoder against the pure-Python reference, whole / split / byte-by-byte, damage."""
import os
import random

import pytest
from hypothesis import assume, given, settings, strategies as st

from ext import _cobs
from firmware_bridge.framing import (MAX_FRAME, Decoder, RefDecoder, cobs_decode, cobs_encode, crc16,
                                     crc16_ref, encode_frame)

COUNTERS = ("frames", "crc_errors", "framing_errors", "oversized", "bytes_discarded")


@pytest.fixture(scope="module", params=["compiled", "reference"])
def make_decoder(request):
    return Decoder if request.param == "compiled" else RefDecoder


def counters(d):
    return {k: getattr(d, k) for k in COUNTERS}


packets = st.binary(min_size=8, max_size=252)


def test_compiled_module_is_used():
    assert Decoder()._k.__class__ is _cobs.CobsDecoder
    assert _cobs.__file__.endswith((".so", ".pyd"))


def test_crc_check_value():
    assert crc16(b"123456789") == crc16_ref(b"123456789") == 0x29B1
    assert crc16(b"") == crc16_ref(b"") == 0xFFFF


@given(st.binary(max_size=300))
def test_crc_compiled_matches_reference(data):
    assert crc16(data) == crc16_ref(data)


@given(st.binary(max_size=254))
def test_cobs_roundtrip_and_bounds(data):
    enc = cobs_encode(data)
    assert 0 not in enc
    assert len(enc) == len(data) + 1  # at most 254 bytes: exactly one overhead byte
    assert cobs_decode(enc) == data


def test_cobs_known_vectors():
    assert cobs_encode(b"\x00") == b"\x01\x01"
    assert cobs_encode(b"\x11\x22\x00\x33") == b"\x03\x11\x22\x02\x33"
    assert cobs_encode(bytes(range(1, 255))) == b"\xff" + bytes(range(1, 255))
    with pytest.raises(ValueError, match="past the frame end"):
        cobs_decode(b"\x05\x11")


def test_encode_frame_rejects_bad_sizes():
    with pytest.raises(ValueError, match="exceeds"):
        encode_frame(bytes(253))
    with pytest.raises(ValueError, match="shorter"):
        encode_frame(bytes(7))


def test_feed_type_errors():
    with pytest.raises(TypeError):
        Decoder().feed("text")


@given(st.lists(packets, max_size=6), st.data())
def test_whole_split_bytewise_agree(make_decoder, pkts, data):
    wire = b"".join(encode_frame(p) for p in pkts)
    for chunks in (
        [wire],
        [wire[: len(wire) // 2], wire[len(wire) // 2:]],
        [wire[i:i + 1] for i in range(len(wire))],
        _random_chunks(wire, data.draw(st.randoms(use_true_random=False))),
    ):
        d = make_decoder()
        got = [p for c in chunks for p in d.feed(c)]
        assert got == pkts
        assert d.pending == 0


def _random_chunks(wire, rnd):
    out, i = [], 0
    while i < len(wire):
        n = rnd.randint(1, 40)
        out.append(wire[i:i + n])
        i += n
    return out


@settings(max_examples=300)
@given(st.binary(max_size=2000), st.lists(st.integers(1, 64), max_size=50))
def test_compiled_equals_reference_on_anything(data, cuts):
    a, b = Decoder(), RefDecoder()
    pos, got_a, got_b = 0, [], []
    for n in cuts + [len(data)]:
        chunk = data[pos:pos + n]
        pos += n
        got_a += a.feed(chunk)
        got_b += b.feed(chunk)
        assert a.pending <= MAX_FRAME and b.pending <= MAX_FRAME
    assert got_a == got_b
    assert counters(a) == counters(b)


@given(st.binary(max_size=600), st.lists(packets, min_size=1, max_size=4))
def test_garbage_then_delimiter_costs_nothing(make_decoder, garbage, pkts):
    d = make_decoder()
    got = d.feed(garbage + b"\x00" + b"".join(encode_frame(p) for p in pkts))
    assert got[-len(pkts):] == pkts


@given(packets, packets, st.integers(0, 10_000), st.integers(0, 7))
def test_bit_flip_loses_only_the_damaged_packet(make_decoder, p1, p2, where, bit):
    assume(p1 != p2)
    f1 = bytearray(encode_frame(p1))
    i = where % len(f1)
    f1[i] ^= 1 << bit
    d = make_decoder()
    got = d.feed(bytes(f1) + encode_frame(p2))
    # The flip may turn a byte into a delimiter (splitting the frame) or remove one (merging into p2):
    # p1 is never accepted damaged; p2 survives unless the flip ate p1's final delimiter.
    assert p1 not in got
    if i != len(f1) - 1:
        assert got[-1:] == [p2]
    assert d.crc_errors + d.framing_errors >= 1


@given(packets, packets, st.integers(1, 300))
def test_truncated_frame_then_packet(make_decoder, p1, p2, cut):
    f1 = encode_frame(p1)[:-1]  # the delimiter is always lost with a truncation
    f1 = f1[: max(1, len(f1) - cut)]
    d = make_decoder()
    # A truncated frame glues onto the next one; the sender's next packet after that survives.
    got = d.feed(f1 + encode_frame(p2) + encode_frame(p2))
    assert got[-1] == p2
    assert p1 not in got or p1 == p2


@pytest.mark.parametrize("size", [256, 257, 1000, 100_000])
def test_oversized_frame_is_counted_and_bounded(make_decoder, size):
    d = make_decoder()
    junk = bytes(b or 1 for b in random.Random(size).randbytes(size))
    assert d.feed(junk) == []
    assert d.pending == MAX_FRAME
    p = b"\x01\x11\x05\x00\x10\x00\x00\x00abc"
    assert d.feed(b"\x00" + encode_frame(p)) == [p]
    assert d.oversized == d.framing_errors == 1
    assert d.bytes_discarded == size


def test_missing_delimiter_between_two_packets(make_decoder):
    p = [b"\x01\x02\x03\x00\x04\x00\x00\x00" + bytes([i]) for i in range(3)]
    wire = encode_frame(p[0])[:-1] + encode_frame(p[1]) + encode_frame(p[2])
    d = make_decoder()
    assert d.feed(wire) == [p[2]]
    assert d.crc_errors + d.framing_errors == 1


def test_short_and_empty_frames(make_decoder):
    d = make_decoder()
    assert d.feed(b"\x00\x00\x00") == []
    assert counters(d) == dict.fromkeys(COUNTERS, 0)  # empty frames are padding
    assert d.feed(cobs_encode(b"\x01\x02\x03") + b"\x00") == []
    assert d.framing_errors == 1 and d.bytes_discarded == 4


def test_crc_error_counted(make_decoder):
    body = b"\x01\x02\x03\x00\x04\x00\x00\x00" + b"\xaa\xbb"  # wrong crc
    d = make_decoder()
    assert d.feed(cobs_encode(body) + b"\x00") == []
    assert d.crc_errors == 1 and d.framing_errors == 0


def test_reset_discards_partial_frame(make_decoder):
    d = make_decoder()
    f = encode_frame(b"\x01\x02\x03\x00\x04\x00\x00\x00")
    d.feed(f[:5])
    d.reset()
    assert d.pending == 0 and d.bytes_discarded == 5
    assert d.feed(f) == [b"\x01\x02\x03\x00\x04\x00\x00\x00"]


def test_random_stream_never_raises_and_stays_bounded():
    d = Decoder()
    rnd = random.Random(1)
    for _ in range(200):
        d.feed(os.urandom(rnd.randint(0, 3000)))
        assert d.pending <= MAX_FRAME
