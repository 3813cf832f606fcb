"""serial-check: the judge's rules on crafted streams (no I/O) and the command body on injsim://."""
import io
import json
import struct

import pytest

from firmware_bridge.checker import StreamCheck, check_main
from firmware_bridge.framing import encode_frame
from firmware_bridge.messages import (Ack, Heartbeat, Hello, Sample, State, Summary, TimeReq, TimeResp,
                                      Xray, parse)
from firmware_bridge.framing import Decoder

MS = 1_000_000
S = 1_000_000_000


def good_stream(seconds=3.0, caps=0b011):
    """(t_ns, bytes) of a conforming device: HELLO, heartbeats, an injection at 50 Hz, its SUMMARY."""
    ev = [(0, Hello, dict(protocol_version=1, capabilities=caps))]
    ev += [(k * S + 1, Heartbeat, dict(state=0)) for k in range(int(seconds))]
    ev += [(300 * MS, Xray, dict(on=1)), (400 * MS, State, dict(state=2, phase=1))]
    ev += [(400 * MS + (k + 1) * 20 * MS, Sample, dict(flow=500, volume=10 * k, pressure=900, phase=1))
           for k in range(30)]
    ev += [(1100 * MS, State, dict(state=4, phase=0)), (1150 * MS, Summary, dict(programmed_volume=300,
                                                                                 delivered_volume=300)),
           (1500 * MS, Xray, dict(on=0))]
    ev.sort(key=lambda e: e[0])
    return [(t, cls(seq=i, device_ms=t // MS, **kw).encode()) for i, (t, cls, kw) in enumerate(ev)]


def find(stream, cls):
    """(t, bytes, message) of the first packet of a type in a stream."""
    for t, b in stream:
        m = parse(Decoder().feed(b)[0])
        if isinstance(m, cls):
            return t, b, m
    raise LookupError(cls)


def judge(stream, end_ns=3 * S):
    check = StreamCheck(0)
    records, sent = [], []
    for t, data in stream:
        recs, send = check.feed(data, t)
        records += recs
        sent += send + check.tick(t)
    return check.summary(end_ns), records, sent


def test_conforming_stream_passes_and_is_acked():
    summary, records, sent = judge(good_stream())
    assert summary["violations"] == []
    assert summary["packets"] == len(records) and summary["by_type"]["SAMPLE"] == 30
    acks = [parse(p) for f in sent for p in Decoder().feed(f)]
    expected = [find(good_stream(), Hello)[2].seq, find(good_stream(), Summary)[2].seq]
    assert sorted(a.acked_seq for a in acks if isinstance(a, Ack)) == expected


def test_json_records_name_fields_in_units():
    _, records, _ = judge(good_stream())
    sample = next(r for r in records if r["type"] == "SAMPLE")
    assert set(sample) == {"type", "seq", "device_ms", "flow_ml_s", "volume_ml", "pressure_kpa", "phase"}
    assert sample["flow_ml_s"] == 5.0
    assert next(r for r in records if r["type"] == "XRAY")["on"] is True
    assert next(r for r in records if r["type"] == "STATE")["state"] == "injecting"


def _replace(stream, index, data):
    s = list(stream)
    s[index] = (s[index][0], data)
    return s


def _mutations():
    base = good_stream()
    yield "crc", _replace(base, 5, base[5][1][:-3] + bytes([base[5][1][-3] ^ 1]) + base[5][1][-2:]), "CRC"
    yield "gap", [x for i, x in enumerate(base) if i != 8], "seq gaps"
    yield "unknown", base + [(2 * S, encode_frame(struct.pack("<BBHI", 1, 0x42, 99, 2000)))], "unknown message type"
    yield "version", base + [(2 * S, encode_frame(struct.pack("<BBHI", 2, 0x02, 99, 2000) + b"\x00"))], "version 2"
    yield "xray-repeat", base + [(1600 * MS, Xray(len(base), 1600, on=0).encode())], "repeated without a change"
    slow = [(t, b) for t, b in base if not (t > 400 * MS and t < 1100 * MS and parse(Decoder().feed(b)[0]).TYPE == 0x11
                                            and (t // MS) % 200 != 0)]
    yield "sample-slow", slow, "SAMPLEs"
    hb = [(t, b) for t, b in base if t != 1 * S + 1]
    yield "heartbeat", hb, "HEARTBEAT came"
    t, frame, summ = find(base, Summary)
    yield "resend-fast", base + [(t + 10 * MS, frame)], "resent after"
    changed = Summary(summ.seq, summ.device_ms, programmed_volume=300, delivered_volume=299)
    yield "seq-reuse", base + [(t + 500 * MS, changed.encode())], "different content"
    yield "caps", judge_caps(), "capabilities lack"
    yield "malformed", base + [(2 * S, encode_frame(struct.pack("<BBHI", 1, 0x10, 99, 2000) + b"\x09\x00"))], "state=9"


def judge_caps():
    stream = good_stream(caps=0b001)  # claims no X-ray signal, then sends XRAY
    return stream


@pytest.mark.parametrize("name, stream, phrase", list(_mutations()), ids=[m[0] for m in _mutations()])
def test_each_rule_flags_its_violation(name, stream, phrase):
    summary, _, _ = judge(stream)
    assert any(phrase in v for v in summary["violations"]), summary["violations"]


def test_hello_and_heartbeat_that_stop_are_flagged():
    stream = good_stream(seconds=13)  # heartbeats until 12 s, one HELLO at 0 s
    summary, _, _ = judge(stream, end_ns=int(12.5 * S))
    assert any("no HELLO in the last 12.5 s" in v for v in summary["violations"])
    summary, _, _ = judge(stream[:-3], end_ns=int(12.5 * S))
    assert any("no HEARTBEAT in the last" in v for v in summary["violations"])


def test_silence_and_empty_streams():
    summary, _, _ = judge([], end_ns=2 * S)
    assert summary["violations"] == ["no valid packet decoded in 2.0 s"]
    stream = good_stream()
    summary, _, _ = judge(stream, end_ns=8 * S)
    assert any("no packet for the last" in v for v in summary["violations"])


def test_time_sync_capable_device_must_answer():
    stream = good_stream(caps=0b111)
    summary, _, sent = judge(stream)
    reqs = [m for f in sent for p in Decoder().feed(f) for m in [parse(p)] if isinstance(m, TimeReq)]
    assert reqs and any("TIME_REQ" in v for v in summary["violations"])
    # Answering every request with its token passes.
    answered = list(stream)
    for i, r in enumerate(reqs):
        answered.append((answered[-1][0] + 1, TimeResp(200 + i, 0, token=r.token).encode()))
    summary2, _, _ = judge(answered)
    assert not any("TIME_REQ" in v for v in summary2["violations"])


def test_one_partial_frame_at_the_start_is_forgiven():
    stream = good_stream()
    stream[0] = (0, b"\x17\x42\x99" + stream[0][1][5:])  # joined mid-frame: HELLO lost
    summary, _, _ = judge(stream)
    assert summary["framing_errors"] + summary["crc_errors"] == 1
    assert summary["violations"] in ([], ["1 frames failed the CRC-16/CCITT-FALSE check"])


def test_check_main_json_on_the_simulator():
    out = io.StringIO()
    assert check_main("injsim://?scenario=nominal&seed=31", seconds=1.5, as_json=True, out=out) == 0
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert set(lines[-1]) == {"summary"}
    s = lines[-1]["summary"]
    assert s["violations"] == [] and s["packets"] == len(lines) - 1
    assert {"packets", "by_type", "crc_errors", "framing_errors", "unknown_types", "seq_gaps", "violations"} <= set(s)
    hello = next(x for x in lines if x["type"] == "HELLO")
    assert hello["fw_version"] == "1.0.0" and hello["capabilities"] == 7


def test_check_main_fails_a_noisy_line_and_reports_text():
    out = io.StringIO()
    assert check_main("injsim://?scenario=noisy&seed=32&ber=0.002", seconds=1.5, out=out) == 1
    text = out.getvalue()
    assert "DOES NOT CONFORM" in text and ("CRC" in text or "not valid COBS" in text)


def test_check_main_unusable_port(capsys):
    assert check_main("/nonexistent/ttyUSB9", seconds=0.5) == 2
    assert check_main("injsim://", seconds=0) == 2
    assert "cannot open" in capsys.readouterr().err
