"""Link state machine, dedup, acknowledgements, seq gaps, time sync and the device clock (no I/O)."""
import random

import pytest

from firmware_bridge.clock import DeviceClock
from firmware_bridge.framing import Decoder
from firmware_bridge.link import DOWN, SILENT, TRANSITIONS, UP, IllegalTransition, Link
from firmware_bridge.messages import Ack, Fault, Heartbeat, Hello, Sample, Summary, TimeReq, TimeResp, Xray, parse

MS = 1_000_000
S = 1_000_000_000


def opened(**kw):
    link = Link(**kw)
    link.port_opened(0)
    return link


def sent(out):
    return [parse(p) for frame in out.send for p in Decoder().feed(frame)]


def test_states_follow_the_line():
    link = Link(silent_s=3.0)
    assert link.state == DOWN
    ev = link.port_opened(0).events
    assert ev == [(DOWN, SILENT, "port opened")]
    ev = link.feed(Heartbeat(0, 0).encode(), 1 * S).events
    assert ev == [(SILENT, UP, "packets received")]
    assert link.tick(3 * S).events == []
    (ev,) = link.tick(int(4.1 * S)).events
    assert ev[:2] == (UP, SILENT) and "no packet for 3.1 s" in ev[2]
    assert link.feed(Heartbeat(1, 4000).encode(), 5 * S).events[0][:2] == (SILENT, UP)
    assert link.port_closed(6 * S, "port lost: EIO").events == [(UP, DOWN, "port lost: EIO")]
    assert link.port_closed(7 * S).events == []  # already down: nothing to report
    link.port_opened(8 * S)
    assert link.counters()["reconnects"] == 1


def test_illegal_transitions_are_rejected():
    link = opened()
    with pytest.raises(IllegalTransition, match="silent to silent"):
        link.port_opened(1)  # silent -> silent
    assert link.state == SILENT                  # a refused transition changes nothing
    link.port_closed(2)
    assert link.feed(Heartbeat(0, 0).encode(), 3).events == []   # no port: packets do not bring it up
    assert link.state == DOWN
    # Down never goes straight to up, nor up to up: every transition the link makes is one of these.
    assert TRANSITIONS == {(DOWN, SILENT), (SILENT, UP), (UP, SILENT), (UP, DOWN), (SILENT, DOWN)}
    assert (DOWN, UP) not in TRANSITIONS


def test_reliable_messages_acked_every_time_delivered_once():
    link = opened()
    s = Summary(7, 1000, programmed_volume=1000, delivered_volume=1000)
    delivered, acks = [], []
    for k in range(4):  # original + 3 retransmissions (ACKs lost on the way back)
        out = link.feed(s.encode(), (1 + k) * S // 2)
        delivered += [m for m, _ in out.messages]
        acks += sent(out)
    assert delivered == [s]
    assert [a.acked_seq for a in acks] == [7] * 4 and all(isinstance(a, Ack) for a in acks)
    c = link.counters()
    assert c["duplicates"] == 3 and c["packets_by_type"] == {"SUMMARY": 4} and c["seq_gaps"] == 0


def test_non_reliable_messages_are_not_acked():
    link = opened()
    out = link.feed(Sample(0, 0).encode() + Xray(1, 1, on=1).encode() + Heartbeat(2, 2).encode(), S)
    assert out.send == [] and len(out.messages) == 3


def test_dedup_expires_so_a_restarted_device_is_heard():
    link = opened(dedup_s=30.0)
    h = Hello(0, 100, vendor_id=1)
    assert len(link.feed(h.encode(), 1 * S).messages) == 1
    assert len(link.feed(h.encode(), 2 * S).messages) == 0
    assert len(link.feed(h.encode(), 40 * S).messages) == 1


def test_seq_gaps_and_late_retransmissions():
    link = opened()
    wire = b"".join(m.encode() for m in (Sample(10, 0), Sample(11, 20), Sample(14, 80)))
    link.feed(wire, S)
    assert (link.seq_gaps, link.packets_missed) == (1, 2)
    f = Fault(12, 40, code=1, severity=1, text="late")  # its first copy was lost; the resend is behind
    assert len(link.feed(f.encode(), 2 * S).messages) == 1
    link.feed(Sample(15, 100).encode(), 2 * S)
    assert link.seq_gaps == 1
    link.feed(Sample(0, 120).encode(), 3 * S)  # 15 -> 0: a device restart
    assert link.seq_gaps == 2


def test_seq_wraps_without_a_gap():
    link = opened()
    link.feed(Sample(65535, 0).encode() + Sample(0, 1).encode(), S)
    assert link.seq_gaps == 0


@pytest.mark.parametrize("bad, counter", [
    (b"\x02\x11\x00\x00\x00\x00\x00\x00" + bytes(9), "unsupported_versions"),
    (b"\x01\x55\x00\x00\x00\x00\x00\x00", "unknown_types"),
    (b"\x01\x80\x00\x00\x00\x00\x00\x00\x00\x00", "unknown_types"),  # an ACK is not a device message
    (b"\x01\x11\x00\x00\x00\x00\x00\x00" + bytes(3), "malformed"),
])
def test_bad_packets_counted_and_skipped(bad, counter):
    from firmware_bridge.wire import encode_frame
    link = opened()
    out = link.feed(encode_frame(bad) + Sample(1, 0).encode(), S)
    assert [type(m) for m, _ in out.messages] == [Sample]
    assert link.counters()[counter] == 1
    assert link.state == UP  # a crc-valid packet still proves the line is alive


def test_counters_include_decoder_errors():
    link = opened()
    frame = bytearray(Sample(0, 0).encode())
    frame[3] ^= 0x40
    link.feed(bytes(frame) + b"\x05\x01\x00", S)
    c = link.counters()
    assert c["crc_errors"] + c["framing_errors"] == 2 and c["bytes_discarded"] > 0
    assert set(c) >= {"packets_by_type", "crc_errors", "framing_errors", "bytes_discarded", "unknown_types",
                      "seq_gaps", "duplicates", "reconnects", "packets_recovered"}


def test_a_packet_recovered_from_a_damaged_frame_is_counted_on_the_link():
    link = opened()
    banner = b"BOOT v1.2 ready\r\n"   # no 0x00: the banner and the next frame arrive as one damaged frame
    frame = Sample(0, 0).encode()
    out = link.feed(banner + frame.lstrip(b"\x00"), S)
    assert [type(m) for m, _ in out.messages] == [Sample]
    assert link.counters()["packets_recovered"] == 1


def test_time_sync_requests_only_for_capable_devices():
    for caps, expect in ((0b011, False), (0b111, True)):
        link = Link(rng=random.Random(1))
        link.port_opened(0)
        link.feed(Hello(0, 0, capabilities=caps).encode(), S)
        reqs = [m for m in sent(link.tick(S + 1)) if isinstance(m, TimeReq)]
        assert bool(reqs) is expect


def test_time_sync_maps_device_time_to_host_time():
    # Device clock = host time - 5 s + 123456 ms; 2 ms each way on the wire.
    def dev_ms(host_ns):
        return (host_ns // MS - 5000 + 123_456) & 0xFFFFFFFF

    link = Link(rng=random.Random(2))
    link.port_opened(0)
    t = 10 * S
    link.feed(Hello(0, dev_ms(t - 2 * MS), capabilities=0b111).encode(), t)
    seq = 1
    for _ in range(8):
        t += 300 * MS
        for req in [m for m in sent(link.tick(t)) if isinstance(m, TimeReq)]:
            resp = TimeResp(seq, dev_ms(t + 2 * MS), token=req.token)
            seq += 1
            link.feed(resp.encode(), t + 4 * MS)
    assert link.clock.synced
    event_host = t + 50 * MS
    (msg, host_ns), = link.feed(Xray(seq, dev_ms(event_host), on=1).encode(), event_host + 30 * MS).messages
    assert abs(host_ns - event_host) <= 2 * MS  # within the ms quantisation, not the 30 ms delivery delay


def test_lower_envelope_without_time_sync():
    clock = DeviceClock()
    rnd = random.Random(3)
    offset = 7 * S
    for k in range(200):
        event = k * 20 * MS
        clock.observe((event // MS) & 0xFFFFFFFF, event + offset + rnd.randint(1, 40) * MS)
    assert 0 < clock.offset_ns - offset <= 2 * MS
    assert abs(clock.to_host_ns(5000, 0) - (5000 * MS + offset)) <= 2 * MS


def test_clock_unwraps_u32_and_detects_restart():
    clock = DeviceClock()
    near = 2**32 - 100
    clock.observe(near, 1 * S)
    assert clock.unwrap(50) == 2**32 + 50
    clock.observe(50, 1 * S + 150 * MS)
    assert clock.to_host_ns(60, 0) - clock.to_host_ns(near, 0) == 160 * MS
    assert clock.unwrap(near - 3000) == near - 3000  # a retransmission's older time stays older
    clock.observe((near + 5_000_000) % 2**32, 600 * S)
    clock.observe(10, 700 * S)  # a restart: time far behind, not a wrap
    assert clock.resets == 1
    assert clock.to_host_ns(10, 0) == 700 * S  # the envelope restarted with the new clock
    with pytest.raises(ValueError):
        clock.unwrap(2**32)
    with pytest.raises(ValueError):
        DeviceClock(window_s=0)


def test_a_resent_copy_seen_first_sets_no_seq_baseline():
    # Listening starts mid-stream: the first packet is HELLO seq 0 resent after 1..4 were sent.
    link = opened()
    link.feed(Hello(0, 0).encode() + Sample(5, 500).encode() + Sample(6, 520).encode(), S)
    assert link.seq_gaps == 0


def test_stale_time_sync_falls_back_to_the_envelope():
    clock = DeviceClock(sync_window_s=60.0)
    clock.time_sync(1000, 10 * S, 10 * S + 2 * MS)           # offset ~ 9 s
    assert clock.synced and abs(clock.offset_ns - 9 * S) <= 1 * MS
    clock.observe(200_000, 205 * S + 5 * MS)                 # 195 s later, no more round trips
    assert not clock.synced and clock.offset_ns == 5 * S + 5 * MS


def test_a_device_restarted_within_30_s_is_not_taken_for_a_copy():
    """Section 6: a copy is byte-identical. The HELLO of a device rebooted 5 s after its first one has the same
    seq and payload but a new device_ms: it is new (it starts a new session); the same bytes again are a copy."""
    link = opened()
    boot = Hello(0, 3_600_000, protocol_version=1, capabilities=0)
    reboot = Hello(0, 120, protocol_version=1, capabilities=0)
    assert [m for m, _ in link.feed(boot.encode(), 1 * S).messages] == [boot]
    assert [m for m, _ in link.feed(reboot.encode(), 6 * S).messages] == [reboot]
    assert link.feed(reboot.encode(), int(6.5 * S)).messages == []
    assert link.counters()["duplicates"] == 1


def test_a_restarted_device_counts_its_seq_anew():
    link = opened()
    link.feed(Hello(0, 3_600_000, protocol_version=1, capabilities=0).encode(), 1 * S)
    for k in range(1, 4):
        link.feed(Heartbeat(k, 3_600_000 + 1000 * k, state=0).encode(), (1 + k) * S)
    link.feed(Hello(0, 50, protocol_version=1, capabilities=0).encode(), 5 * S)   # rebooted: its clock near 0
    link.feed(Heartbeat(1, 1000, state=0).encode(), 6 * S)
    assert link.counters()["seq_gaps"] == 0
