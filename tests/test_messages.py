"""Typed messages: pack/parse round trips, JSON names and units, and every rejection."""
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge.framing import Decoder
from firmware_bridge.messages import (MESSAGE_CLASSES, Ack, Fault, Heartbeat, Hello, MalformedPacket, MsgType, Sample,
                                      State, Summary, TimeReq, TimeResp, UnknownType, UnsupportedVersion, Xray, parse)

u8, u16, u32 = st.integers(0, 255), st.integers(0, 65535), st.integers(0, 2**32 - 1)
i32 = st.integers(-2**31, 2**31 - 1)
states = st.integers(0, 6)


def text(max_bytes):
    return st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=max_bytes) \
        .filter(lambda s: len(s.encode()) <= max_bytes)


messages = st.one_of(
    st.builds(Hello, u16, u32, vendor_id=u16, product_id=u16, model=text(16), serial_no=text(16), fw_major=u8,
              fw_minor=u8, fw_patch=u16, protocol_version=st.just(1), capabilities=u8),
    st.builds(Heartbeat, u16, u32, state=states),
    st.builds(TimeResp, u16, u32, token=u32),
    st.builds(State, u16, u32, state=states, phase=u8),
    st.builds(Sample, u16, u32, flow=u16, volume=u32, pressure=u16, phase=u8),
    st.builds(Summary, u16, u32, programmed_volume=u32, delivered_volume=u32, programmed_flow=u16, peak_flow=u16,
              peak_pressure=u16, pressure_limit=u16, duration_ms=u32, rise_ms=u16, xray_delay_ms=i32),
    st.builds(Xray, u16, u32, on=st.integers(0, 1)),
    st.builds(Fault, u16, u32, code=u16, severity=st.integers(0, 2), text=text(64)),
    st.builds(Ack, u16, u32, acked_seq=u16),
    st.builds(TimeReq, u16, u32, token=u32),
)


@given(messages)
def test_roundtrip_through_the_wire(msg):
    (packet,) = Decoder().feed(msg.encode())
    assert parse(packet) == msg
    assert packet[0] == 1 and packet[1] == msg.TYPE
    assert struct.unpack_from("<HI", packet, 2) == (msg.seq, msg.device_ms)


def test_every_type_has_a_class():
    assert set(MESSAGE_CLASSES) == set(MsgType)


def test_payload_sizes_match_the_protocol_document():
    sizes = {Hello: 42, Heartbeat: 1, TimeResp: 4, State: 2, Sample: 9, Summary: 26, Xray: 1, Ack: 2, TimeReq: 4}
    for cls, n in sizes.items():
        assert len(cls(0, 0).payload()) == n, cls.__name__
    assert len(Fault(0, 0, code=1, severity=0, text="ab").payload()) == 5


def test_to_dict_units_and_names():
    assert Sample(12, 34567, flow=512, volume=1025, pressure=800, phase=1).to_dict() == {
        "type": "SAMPLE", "seq": 12, "device_ms": 34567, "flow_ml_s": 5.12, "volume_ml": 10.25,
        "pressure_kpa": 800, "phase": 1}
    s = Summary(1, 2, programmed_volume=1000, delivered_volume=995, programmed_flow=500, peak_flow=503,
                peak_pressure=920, pressure_limit=2068, duration_ms=2150, rise_ms=300, xray_delay_ms=-1000).to_dict()
    assert s == {"type": "SUMMARY", "seq": 1, "device_ms": 2, "programmed_volume_ml": 10.0,
                 "delivered_volume_ml": 9.95, "programmed_flow_ml_s": 5.0, "peak_flow_ml_s": 5.03,
                 "peak_pressure_kpa": 920, "pressure_limit_kpa": 2068, "duration_ms": 2150, "rise_ms": 300,
                 "xray_delay_ms": -1000}
    h = Hello(0, 0, vendor_id=1, product_id=2, model="M", serial_no="S", fw_major=1, fw_minor=2, fw_patch=30,
              capabilities=5).to_dict()
    assert h["fw_version"] == "1.2.30" and h["model"] == "M" and h["capabilities"] == 5 and "fw_major" not in h
    assert Xray(0, 0, on=1).to_dict()["on"] is True
    assert State(0, 0, state=3, phase=1).to_dict()["state"] == "hold"
    assert Heartbeat(0, 0, state=6).to_dict()["state"] == "fault"
    assert Fault(0, 0, code=7, severity=2, text="x").to_dict() == {
        "type": "FAULT", "seq": 0, "device_ms": 0, "code": 7, "severity": 2, "text": "x"}


def test_isinstance_and_type_attribute():
    m = parse(Sample(1, 2).pack())
    assert isinstance(m, Sample) and m.type is MsgType.SAMPLE and Sample.TYPE is MsgType.SAMPLE


@pytest.mark.parametrize("make, match", [
    (lambda: Sample(70000, 0), "seq"),
    (lambda: Sample(0, -1), "device_ms"),
    (lambda: Sample(0, 0, flow=65536), "flow"),
    (lambda: Summary(0, 0, xray_delay_ms=2**31), "xray_delay_ms"),
    (lambda: Xray(0, 0, on=2), "on="),
    (lambda: State(0, 0, state=7), "state=7"),
    (lambda: Fault(0, 0, severity=3), "severity"),
    (lambda: Fault(0, 0, text="x" * 65), "at most 64"),
    (lambda: Hello(0, 0, model="é" * 9), "at most 16"),
    (lambda: Hello(0, 0, serial_no="a\x00b"), "NUL"),
    (lambda: Sample(0, 0, flow=1.5), "int"),
])
def test_constructor_rejects_bad_fields(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def _raw(type_code, payload, version=1):
    return struct.pack("<BBHI", version, type_code, 1, 2) + payload


@pytest.mark.parametrize("packet, exc, match", [
    (_raw(0x11, b"\x00" * 9, version=2), UnsupportedVersion, "version 2"),
    (_raw(0x42, b""), UnknownType, "0x42"),
    (_raw(0x11, b"\x00" * 8), MalformedPacket, "too short"),
    (_raw(0x11, b"\x00" * 10), MalformedPacket, "expected 9"),
    (_raw(0x10, b"\x09\x00"), MalformedPacket, "state=9"),
    (_raw(0x20, b"\x02"), MalformedPacket, "on="),
    (_raw(0x30, b"\x01\x00\x00" + b"a" * 65), MalformedPacket, "at most 64"),
    (_raw(0x30, b"\x01\x00\x00\xff\xfe"), MalformedPacket, "not UTF-8"),
    (_raw(0x01, b"\x00" * 4 + b"a\x00b" + b"\x00" * 35), MalformedPacket, "NUL inside"),
    (b"\x01\x11\x00", MalformedPacket, "shorter than the 8-byte header"),
])
def test_parse_rejections(packet, exc, match):
    with pytest.raises(exc, match=match):
        parse(packet)


def test_text_fields_are_nul_padded_utf8():
    h = Hello(0, 0, model="Ström", serial_no="")
    p = h.payload()
    assert p[4:20] == "Ström".encode() + b"\x00" * 10
    assert parse(h.pack()).model == "Ström"
    f = Fault(0, 0, code=1, severity=1, text="")
    assert parse(f.pack()).text == ""
