"""Framing: compiled decoder against the pure-Python reference, whole / split / byte-by-byte, damage."""
import os
import random

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ext import _cobs
from firmware_bridge.framing import Decoder, RefDecoder
from firmware_bridge.messages import Heartbeat, Hello, Sample, Summary
from firmware_bridge.wire import MAX_FRAME, cobs_decode, cobs_encode, crc16, crc16_ref, encode_frame
from tests.v1_packets import packets as v1_packets

COUNTERS = ("frames", "crc_errors", "framing_errors", "oversized", "bytes_discarded", "recovered")


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
def test_oversized_frame_keeps_its_last_bytes_and_recovers_the_packet_there(make_decoder, size):
    junk = bytes(b or 1 for b in random.Random(size).randbytes(size))
    p = Sample(7, 70, flow=500, volume=1234, pressure=920, phase=1).pack()
    whole = make_decoder()
    assert whole.feed(junk + encode_frame(p)) == [p]
    bytewise = make_decoder()
    wire = junk + encode_frame(p)
    assert [x for i in range(len(wire)) for x in bytewise.feed(wire[i:i + 1])] == [p]
    for d in (whole, bytewise):
        assert d.oversized == d.framing_errors == 1 and d.recovered == 1
        assert d.bytes_discarded == size
    # The largest packet (a 75-byte FAULT) still fits behind 180 junk bytes in the 255 kept.
    f = encode_frame(Summary(1, 2, programmed_volume=1, delivered_volume=2).pack())
    d = make_decoder()
    assert len(d.feed(junk + f)) == 1 and d.pending == 0


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
    p = [Heartbeat(i, 1000 + i, state=i).pack() for i in range(3)]
    wire = encode_frame(p[0])[:-1] + encode_frame(p[1]) + encode_frame(p[2])
    d = make_decoder()
    assert d.feed(wire) == [p[1], p[2]]  # the packet before the lost delimiter is gone, not the one after
    assert d.crc_errors + d.framing_errors == 1 and d.recovered == 1
    assert d.bytes_discarded == len(encode_frame(p[0])) - 1


def test_without_recovery_the_packet_after_a_lost_delimiter_is_lost(make_decoder):
    # What the recovery is for: the plain decoder loses p[1] with p[0].
    p = [Heartbeat(i, 1000 + i, state=i).pack() for i in range(3)]
    wire = encode_frame(p[0])[:-1] + encode_frame(p[1]) + encode_frame(p[2])
    d = make_decoder(recover=False)
    assert d.feed(wire) == [p[2]]
    assert d.recovered == 0 and d.bytes_discarded == len(encode_frame(p[0])) + len(encode_frame(p[1])) - 2


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


def test_recovered_tail_must_be_a_known_v1_type_of_its_length(make_decoder):
    # A crc-valid tail is not enough: version 1, a known type, and that type's packet length.
    for packet in (b"\x02\x02" + bytes(6) + b"\x01",           # version 2
                   b"\x01\x42" + bytes(6) + b"\x01",           # unknown type
                   Heartbeat(1, 2, state=1).pack() + b"\x00"):  # HEARTBEAT one byte too long
        d = make_decoder()
        assert d.feed(b"\x17\x42" + encode_frame(packet)) == []
        assert d.recovered == 0 and d.bytes_discarded == 2 + len(encode_frame(packet)) - 1
        # ... while the same packet on its own frame is passed on (the link counts and skips it).
        assert d.feed(encode_frame(packet)) == [packet]


def test_earliest_valid_start_wins_and_counts_only_the_garbage(make_decoder):
    p = Hello(0, 5, model="X", capabilities=7).pack()
    d = make_decoder()
    garbage = b"BOOT v1.2\r\n"
    assert d.feed(garbage + encode_frame(p)) == [p]
    assert d.bytes_discarded == len(garbage) and d.framing_errors + d.crc_errors == 1 and d.recovered == 1


def test_random_stream_never_raises_and_stays_bounded():
    d = Decoder()
    rnd = random.Random(1)
    for _ in range(200):
        d.feed(os.urandom(rnd.randint(0, 3000)))
        assert d.pending <= MAX_FRAME


# -- the packet after damage ------------------------------------------------------------------------------


def _all_ways(wire: bytes, *splits: int):
    """The wire fed whole, split at each of ``splits``, and byte by byte, to both decoders; yields
    (decoder, packets) and checks that both decoders agree on packets and counters every way."""
    ways = [[wire], [wire[i:i + 1] for i in range(len(wire))]] + [[wire[:k], wire[k:]] for k in splits]
    for chunks in ways:
        runs = []
        for make in (Decoder, RefDecoder):
            d = make()
            runs.append((d, [p for c in chunks for p in d.feed(c)]))
        (a, got_a), (b, got_b) = runs
        assert got_a == got_b and counters(a) == counters(b)
        yield a, got_a


@settings(max_examples=400)
@given(st.binary(max_size=1024), v1_packets, v1_packets, st.integers(0, 2000))
def test_any_garbage_before_an_intact_packet_costs_nothing(garbage, packet, after, split):
    wire = garbage + encode_frame(packet) + encode_frame(after)
    for d, got in _all_ways(wire, split % (len(wire) + 1)):
        assert got[-2:] == [packet, after]
        assert d.pending == 0


@settings(max_examples=300)
@given(st.binary(max_size=1024).map(lambda b: b.replace(b"\x00", b"")), v1_packets, st.integers(0, 2000))
def test_garbage_without_a_zero_before_an_intact_packet_costs_nothing(garbage, packet, split):
    wire = garbage + encode_frame(packet)
    for d, got in _all_ways(wire, split % (len(wire) + 1)):
        assert got[-1:] == [packet]
        if garbage:
            assert d.bytes_discarded == len(garbage)


def _previous():
    return encode_frame(Sample(1, 1000, flow=500, volume=100, pressure=900, phase=1).pack())


_NEXT = [Heartbeat(2, 1001, state=2).pack(), Hello(3, 1002, model="INJ", serial_no="SN-7", capabilities=7).pack()]
_BANNER = b"\r\nInjector boot v2.1 (c) ACME 2026 ok!\r\n"  # 40 bytes, printable, no 0x00


def _drop(frame: bytes, at: int) -> bytes:
    return frame[:at] + frame[at + 1:]


def _flip(frame: bytes, at: int, bit: int) -> bytes:
    return frame[:at] + bytes([frame[at] ^ (1 << bit)]) + frame[at + 1:]


LINE_NOISE = {
    "boot_banner_40_bytes_no_zero": _BANNER,
    "idle_line_garbage_no_zero": _previous() + bytes([0xFF, 0xFE, 0xF8, 0xC0, 0x80] * 6),
    "dropped_delimiter": _previous()[:-1],
    "frame_cut_short_without_delimiter": _previous()[:9],
    "garbage_300_bytes": bytes(b or 0x55 for b in random.Random(300).randbytes(300)),
    "garbage_1k_bytes_no_zero": bytes(b or 0x55 for b in random.Random(1024).randbytes(1024)),
    "bit_flips": _flip(_flip(_previous(), 3, 2), 11, 7),
    "dropped_bytes_inside_a_frame": _drop(_drop(_previous(), 5), 9),
    "inserted_byte_inside_a_frame": _previous()[:6] + b"\x5a" + _previous()[6:],
    "garbage_ending_in_zero": bytes(random.Random(40).randbytes(40)) + b"\x00",
    "stray_zero_inside_a_frame": _previous()[:7] + b"\x00" + _previous()[8:],
    "delimiter_flipped_to_data": _previous()[:-1] + b"\x40",
}
assert len(_BANNER) == 40


@pytest.mark.parametrize("noise", LINE_NOISE.values(), ids=LINE_NOISE.keys())
@pytest.mark.parametrize("lead", [b"", b"\x00"], ids=["no-leading-zero", "leading-zero"])
def test_line_noise_never_costs_the_next_intact_packet(noise, lead):
    wire = noise + lead + encode_frame(_NEXT[0]) + lead + encode_frame(_NEXT[1])
    for d, got in _all_ways(wire, *range(1, len(wire), 7)):
        assert got[-2:] == _NEXT, got
        assert d.pending == 0
        if lead and noise == LINE_NOISE["dropped_delimiter"]:
            assert len(got) == 3 and d.framing_errors + d.crc_errors == 0  # the leading 0x00 saved it too
        else:
            assert d.framing_errors + d.crc_errors >= 1  # the damage is counted, never silent
