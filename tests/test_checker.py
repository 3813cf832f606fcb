"""serial-check: the judge's rules on crafted streams (no I/O) and the command body on injsim://."""
import io
import json
import socket
import struct
import threading
import time

import pytest

from api.cli.check import check_main
from firmware_bridge.checker import StreamCheck
from firmware_bridge.framing import Decoder
from firmware_bridge.messages import Ack, Heartbeat, Hello, Sample, State, Summary, TimeReq, TimeResp, Xray, parse
from firmware_bridge.wire import encode_frame

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
    assert "time-sync" not in summary2["violation_counts"]
    # Tokens are random per check: those of the first judgement were never sent by the second.
    assert summary2["violation_counts"]["time-token"] == len(reqs)


def test_time_resp_in_time_with_its_token_passes_and_a_foreign_token_is_flagged():
    check = StreamCheck(0)
    check.feed(Hello(0, 0, protocol_version=1, capabilities=0b111).encode(), 1 * MS)
    seq = 1
    for k in range(4):
        t = 2 * MS + k * 300 * MS
        reqs = [parse(p) for f in check.tick(t) for p in Decoder().feed(f)]
        for r in (m for m in reqs if isinstance(m, TimeReq)):
            token = r.token if k < 3 else r.token ^ 1
            check.feed(TimeResp(seq, t // MS + 3, token=token).encode(), t + 5 * MS)
            seq += 1
        check.feed(Heartbeat(seq, t // MS + 10, state=0).encode(), t + 10 * MS)
        seq += 1
    counts = check.summary(int(1.2 * S))["violation_counts"]
    assert counts == {"time-token": 1}, counts
    # An answer 500 ms after its request is late (100 ms, and 250 ms for the line and the check's loop).
    late = StreamCheck(0)
    late.feed(Hello(0, 0, protocol_version=1, capabilities=0b111).encode(), 1 * MS)
    (req,) = [parse(p) for f in late.tick(2 * MS) for p in Decoder().feed(f)]
    late.feed(TimeResp(1, 502, token=req.token).encode(), 502 * MS)
    late.feed(Heartbeat(2, 600, state=0).encode(), 600 * MS)
    counts = late.summary(int(0.9 * S))["violation_counts"]
    assert counts == {"time-late": 1}, late.summary(int(0.9 * S))["violations"]


def test_one_partial_frame_at_the_start_is_forgiven_when_joining_mid_stream():
    stream = good_stream()
    stream[0] = (0, b"\x17\x42\x99" + stream[0][1][5:])  # joined mid-frame: HELLO lost
    summary, _, _ = judge(stream)
    assert summary["framing_errors"] + summary["crc_errors"] == 1
    assert summary["violations"] == [] and not summary["listened_from_start"]
    # Two damaged frames are more than a join costs.
    stream.insert(1, (1, b"\x05\x01\x02\x00"))
    summary, _, _ = judge(stream)
    counts = summary["violation_counts"]
    assert len(summary["violations"]) == 1 and counts.get("crc", 0) + counts.get("framing", 0) == 1


BOOT_S = 2 * S  # the device powers up 2 s into the check: the check was listening before its first byte
BANNER = b"\r\nACME injector boot v2.1\r\nself test ok\r\n"


def booted(stream, before=b""):
    """The stream of a device powering up at BOOT_S, ``before`` its first frame (a banner, say)."""
    out = [(t + BOOT_S, b) for t, b in stream]
    if before:
        out[0] = (BOOT_S, before + out[0][1])
    return out


def test_boot_banner_is_counted_shown_and_the_hello_after_it_kept():
    summary, records, _ = judge(booted(good_stream(), BANNER), end_ns=BOOT_S + 3 * S)
    assert records[0]["type"] == "HELLO"  # recovered from the tail of the banner's frame
    assert summary["listened_from_start"] and summary["banner_bytes"] == len(BANNER)
    assert summary["banner"] == '"\\r\\nACME injector boot v2.1\\r\\nself test ok\\r\\n"'
    assert summary["violation_counts"] == {"banner": 1}
    (v,) = summary["violations"]
    assert f"{len(BANNER)} bytes before the first frame" in v and "ACME injector boot" in v
    assert summary["recovered"] == 1


def test_long_banner_is_truncated_in_the_report():
    banner = bytes(range(1, 256)) * 2
    summary, _, _ = judge(booted(good_stream(), banner), end_ns=BOOT_S + 3 * S)
    assert summary["banner_bytes"] == len(banner)
    assert summary["banner"].startswith('"\\x01\\x02') and summary["banner"].endswith("... (510 bytes)")


def test_a_banner_followed_by_a_zero_is_still_reported():
    summary, records, _ = judge(booted(good_stream(), BANNER + b"\x00"), end_ns=BOOT_S + 3 * S)
    assert records[0]["type"] == "HELLO" and summary["recovered"] == 0
    assert summary["violation_counts"] == {"banner": 1}


def test_first_packet_not_hello_after_boot_is_a_lost_hello():
    stream = booted(good_stream())[1:]  # HELLO never arrived
    summary, _, _ = judge(stream, end_ns=BOOT_S + 3 * S)
    assert "first-hello" in summary["violation_counts"]
    assert any("first packet was HEARTBEAT" in v and "not HELLO" in v for v in summary["violations"])
    # Joining a running device mid-stream, a first packet other than HELLO is normal.
    summary, _, _ = judge(good_stream()[1:])
    assert "first-hello" not in summary["violation_counts"]


def test_damaged_first_hello_then_its_resend_is_a_lost_hello():
    stream = booted(good_stream())
    t, frame = stream[0]
    damaged = frame[:20] + bytes([frame[20] ^ 0x10]) + frame[21:]
    stream[0] = (t, damaged)
    stream.insert(1, (t, frame))  # the resend arrives
    stream.sort(key=lambda e: e[0])
    summary, records, _ = judge(stream, end_ns=BOOT_S + 3 * S)
    assert records[0]["type"] == "HELLO"
    assert summary["violation_counts"].get("first-hello") == 1 and summary["crc_errors"] == 1
    assert any("start of a HELLO" in v for v in summary["violations"])


def test_a_partial_frame_is_not_forgiven_when_listening_from_before_boot():
    stream = booted(good_stream())
    stream.insert(1, (BOOT_S + 1, b"\x05\x01\x02\x00"))  # a damaged frame right after the HELLO
    summary, _, _ = judge(stream, end_ns=BOOT_S + 3 * S)
    assert summary["violation_counts"] == {"framing": 1}


def test_device_ms_may_go_back_at_most_50_ms():
    base = good_stream()
    seq = len(base)

    def with_packets(*pkts):
        return sorted(base + [(2 * S + k, p.encode()) for k, p in enumerate(pkts)], key=lambda e: e[0])

    # A SAMPLE stamped 1 ms (and 50 ms) before the HEARTBEAT sent just ahead of it is fine.
    ok = with_packets(Heartbeat(seq, 2000, state=0), Sample(seq + 1, 1999, flow=1, volume=1, pressure=1, phase=0),
                      Sample(seq + 2, 1950, flow=1, volume=1, pressure=1, phase=0))
    summary, _, _ = judge(ok)
    assert "device-time" not in summary["violation_counts"]
    bad = with_packets(Heartbeat(seq, 2000, state=0), Sample(seq + 1, 1949, flow=1, volume=1, pressure=1, phase=0))
    summary, _, _ = judge(bad)
    assert summary["violation_counts"]["device-time"] == 1
    assert any("went back by 51 ms" in v for v in summary["violations"])
    # Small steps back add up: judged against the latest device_ms, not the previous packet's.
    creep = with_packets(Heartbeat(seq, 2000, state=0),
                         *[Xray(seq + 1 + k, 1970 - 30 * k, on=k % 2) for k in range(3)])
    summary, _, _ = judge(creep)
    assert summary["violation_counts"]["device-time"] == 1  # 1940 is 60 ms behind 2000
    assert any("went back by 60 ms" in v and "1940 after 2000" in v for v in summary["violations"])


def _resent(copies, gap_ms=500):
    base = good_stream()
    t, frame, _ = find(base, Summary)
    return sorted(base + [(t + k * gap_ms * MS, frame) for k in range(1, copies)], key=lambda e: e[0])


def test_resends_after_an_ack_are_legal_up_to_ten():
    summary, _, _ = judge(_resent(11), end_ns=int(6.5 * S))
    assert not any(k.startswith("retx") for k in summary["violation_counts"])
    assert summary["by_type"]["SUMMARY"] == 1 and summary["by_type"]["SUMMARY retransmitted"] == 10
    assert summary["duplicates"] == 10
    summary, _, _ = judge(_resent(12), end_ns=int(7 * S))
    assert summary["violation_counts"]["retx-many"] == 1
    assert any("resent more than 10 times (at most 10 resends: 11 sends in all)" in v
               for v in summary["violations"])


def test_every_rule_is_listed_with_its_own_count_and_message():
    base = good_stream()
    stream = base + [(1600 * MS, Xray(len(base), 1600, on=0).encode()),
                     (1700 * MS, Xray(len(base) + 1, 1700, on=0).encode()),
                     (2 * S, encode_frame(struct.pack("<BBHI", 1, 0x42, len(base) + 2, 2000))),
                     (2 * S + 1, encode_frame(struct.pack("<BBHI", 1, 0x43, len(base) + 3, 2000)))]
    summary, _, _ = judge(stream)
    v = summary["violations"]
    assert sum("repeated without a change" in x for x in v) == 1
    assert any(x.endswith("[2 times]") and "XRAY on=False repeated" in x for x in v)
    assert any("unknown message type 0x42" in x for x in v) and any("unknown message type 0x43" in x for x in v)
    # The HELLO rule judged twice, differently: mid-stream and at the end, each with its own line.
    hellos = [(0, Hello(0, 0, protocol_version=1, capabilities=3).encode()),
              (12 * S, Hello(1, 12000, protocol_version=1, capabilities=3).encode())]
    summary, _, _ = judge(hellos, end_ns=24 * S)
    assert summary["violation_counts"]["hello-period"] == 1 and summary["violation_counts"]["hello-period-end"] == 1
    seqs = [(k * 100 * MS, Heartbeat(k * 2, k * 100, state=0).encode()) for k in range(5)]
    summary, _, _ = judge(seqs, end_ns=S // 2)
    assert summary["violations"] == ["4 seq gaps (4 packets missing; +1 per new packet)"]


def test_check_main_json_on_the_simulator():
    out = io.StringIO()
    assert check_main("injsim://?scenario=nominal&seed=31", seconds=1.5, as_json=True, out=out) == 0
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert set(lines[-1]) == {"summary"}
    s = lines[-1]["summary"]
    received = [x for x in lines[:-1] if "type" in x]
    sent = [x for x in lines[:-1] if "sent" in x]
    assert s["violations"] == [] and s["packets"] == len(received) == len(lines) - 1 - len(sent)
    assert {"packets", "by_type", "crc_errors", "framing_errors", "unknown_types", "seq_gaps", "violations"} <= set(s)
    hello = next(x for x in received if x["type"] == "HELLO")
    assert hello["fw_version"] == "1.0.0" and hello["capabilities"] == 7
    # What the check sent, with its time: the ACK of that HELLO, then the TIME_REQ burst 250 ms apart.
    assert all(set(x) == {"sent", "t_s"} for x in sent)
    acks = [x for x in sent if x["sent"]["type"] == "ACK"]
    reqs = [x for x in sent if x["sent"]["type"] == "TIME_REQ"]
    assert acks[0]["sent"]["acked_seq"] == hello["seq"]
    assert len(reqs) >= 4 and all(0.2 < b["t_s"] - a["t_s"] < 0.4 for a, b in zip(reqs, reqs[1:]))
    assert [x["t_s"] for x in sent] == sorted(x["t_s"] for x in sent)


def test_check_main_fails_a_noisy_line_and_reports_text():
    out = io.StringIO()
    assert check_main("injsim://?scenario=noisy&seed=32&ber=0.002", seconds=1.5, out=out) == 1
    text = out.getvalue()
    assert "DOES NOT CONFORM" in text and ("CRC" in text or "not valid COBS" in text)


def test_check_main_unusable_port(capsys):
    assert check_main("/nonexistent/ttyUSB9", seconds=0.5) == 2
    assert check_main("injsim://", seconds=0) == 2
    assert "cannot open" in capsys.readouterr().err


def _booting_device(server, before: bytes, hello: bool, boot_after_s: float, received: list):
    """A device on a TCP serial server that powers up ``boot_after_s`` after the check connects."""
    conn, _ = server.accept()
    with conn:
        time.sleep(boot_after_s)   # the device is silent until it powers up: the case under test
        frames = [Hello(0, 0, protocol_version=1, capabilities=0b011).encode()] if hello else []
        frames += [Heartbeat(len(frames) + k, 300 * k, state=0).encode() for k in range(4)]
        conn.sendall(before + frames[0])
        for f in frames[1:]:
            time.sleep(0.3)          # the device's heartbeat period
            conn.sendall(f)
        conn.settimeout(1.0)
        try:
            while chunk := conn.recv(4096):
                received.append(chunk)
        except OSError:
            pass


@pytest.mark.parametrize("before, hello, rules", [
    (BANNER, True, {"banner": 1}),
    (b"", False, {"first-hello": 1}),
], ids=["banner-then-hello", "hello-lost"])
def test_check_main_hears_a_device_start_on_a_socket(before, hello, rules):
    server = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []
    th = threading.Thread(target=_booting_device, args=(server, before, hello, 1.6, received))
    th.start()
    out = io.StringIO()
    try:
        rc = check_main(f"socket://127.0.0.1:{server.getsockname()[1]}", seconds=3.0, as_json=True, out=out)
    finally:
        th.join(10)
        server.close()
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    s = lines[-1]["summary"]
    assert rc == 1 and s["listened_from_start"]
    assert s["violation_counts"] == rules, s["violations"]
    assert s["banner_bytes"] == len(before)
    first = next(x for x in lines if "type" in x)
    assert first["type"] == ("HELLO" if hello else "HEARTBEAT")
    if hello:
        assert "ACME injector boot" in s["banner"] and s["recovered"] == 1
        # The ACK went out on the line and was printed with its time.
        acks = [x for x in lines if x.get("sent", {}).get("type") == "ACK"]
        assert acks and acks[0]["sent"]["acked_seq"] == 0 and acks[0]["t_s"] > 1.5
        assert [parse(p).acked_seq for p in Decoder().feed(b"".join(received))] == [0]


def test_only_a_skipped_seq_may_come_late():
    """A late first copy of a lost SUMMARY (its seq was skipped) is legal; a new SUMMARY whose seq another
    packet already had is a second seq counter (section 3: +1 for every new packet, whatever its type)."""
    check = StreamCheck(0)
    lost = Summary(2, 1000, programmed_volume=1, delivered_volume=1)
    for t, packet in [(1, Hello(0, 0, protocol_version=1, capabilities=0).encode()),
                      (2, Heartbeat(1, 100, state=0).encode()), (3, Heartbeat(3, 1100, state=0).encode()),
                      (4, lost.encode()),
                      (5, Heartbeat(4, 1900, state=0).encode())]:
        check.feed(packet, t * 400 * MS)
    assert "seq-behind" not in check.summary(int(2.1 * S))["violation_counts"]
    check.feed(Summary(1, 2000, programmed_volume=2, delivered_volume=2).encode(), int(2.2 * S))
    check.feed(Heartbeat(5, 2300, state=0).encode(), int(2.3 * S))
    counts = check.summary(int(2.4 * S))["violation_counts"]
    assert counts["seq-behind"] == 1


def test_a_late_copy_from_before_the_check_started_is_legal_while_copies_may_come():
    """Joined mid-stream, the first HELLO's copies (seq behind the first packet seen) may come for 5.75 s."""
    def run(late_at_s):
        check = StreamCheck(0)
        check.feed(Heartbeat(3, 400, state=0).encode(), 100 * MS)
        t = 100 * MS
        seq = 4
        while t < late_at_s * S:
            t += 400 * MS
            check.feed(Heartbeat(seq, t // MS + 300, state=0).encode(), t)
            seq += 1
        check.feed(Hello(1, 0, protocol_version=1, capabilities=0).encode(), t + 1)
        return check.summary(t + 2)["violation_counts"]
    assert "seq-behind" not in run(0.5)
    assert run(7.0)["seq-behind"] == 1
