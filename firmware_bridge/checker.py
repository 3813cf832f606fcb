"""serial-check: decode a vendor's stream, answer it like the appliance, and judge it against v1.

``Judge`` holds the rules and no I/O; ``StreamCheck`` feeds it and answers like the appliance; ``listen``
runs one on an open port (``cathlab-edge serial-check --port URL [--seconds N] [--json]`` prints it).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import serial

from .framing import Decoder
from .link import Link, PacketInfo
from .messages import (
    CAP_SAMPLES,
    CAP_TIME_SYNC,
    CAP_XRAY,
    PROTOCOL_VERSION,
    RELIABLE_TYPES,
    Heartbeat,
    Hello,
    InjectorState,
    Sample,
    State,
    TimeReq,
    TimeResp,
    Xray,
    parse,
)

HELLO_PERIOD_S = 10.0
HEARTBEAT_MAX_S = 1.0
SILENT_S = 3.0
RETRANSMIT_S = 0.5
MAX_RETRANSMITS = 10
SAMPLE_MIN_MS, SAMPLE_MAX_MS = 10, 100   # 10-100 Hz while injecting
TOLERANCE_S = 0.25                        # arrival jitter allowed on host-timed rules
TIME_RESP_MAX_S = 0.1                     # answer each TIME_REQ within 100 ms
TIME_RESP_SLACK_S = TOLERANCE_S           # judged on the host's round trip: the line and this loop add to it
MAX_LISTED = 20                           # violations listed; the rest are counted
DEVICE_MS_BACK_MS = 50                    # device_ms is event time: new packets may be up to 50 ms out of order
QUIET_START_S = HEARTBEAT_MAX_S + TOLERANCE_S  # nothing this long after opening: the device was not running
RESTART_BACK_MS = 60_000                  # device_ms this far back in a HELLO: the device restarted (section 7)
MAX_MISSING = 256                         # skipped seqs remembered for late copies
LATE_COPY_S = (1 + MAX_RETRANSMITS) * RETRANSMIT_S + TOLERANCE_S  # a packet's last copy comes this late
BANNER_KEEP = 4096                        # bytes kept from before the first packet, to show
BANNER_SHOWN = 60                         # of which shown in the report
_HELLO_START = re.compile(rb"[\x03-\xff]\x01\x01")  # a COBS block starting version 1, type HELLO


@dataclass
class Judge:
    """Protocol rules over (packet verdict, arrival ns). Each rule broken is listed once, with its own count,
    its first occurrence and (when it differs) its last."""
    start_ns: int
    _rules: dict[str, list] = field(default_factory=dict)  # rule -> [occurrences, first sentence, last sentence]
    _first_ns: int | None = None
    _last_ns: int | None = None
    _last_hello_ns: int | None = None
    _last_hb_ns: int | None = None
    _last_sample_ms: int | None = None
    _injecting: bool = False
    _xray: int | None = None
    _latest_device_ms: int | None = None
    _last_seq: int | None = None
    _first_seq: int = 0
    _missing: dict = field(default_factory=dict)   # seqs skipped by the stream (oldest first): late copies
    _copies: dict = field(default_factory=dict)   # (type, seq) -> [payload, arrivals]
    by_type: dict[str, int] = field(default_factory=dict)  # new packets by type; copies as "TYPE retransmitted"
    hello: Hello | None = None
    first_message: object = None
    time_resps: int = 0

    def _flag(self, rule: str, text: str) -> None:
        rec = self._rules.get(rule)
        if rec is None:
            self._rules[rule] = [1, text, text]
        else:
            rec[0] += 1
            rec[2] = text

    @property
    def counts(self) -> dict[str, int]:
        """Occurrences by rule id."""
        return {rule: rec[0] for rule, rec in self._rules.items()}

    @property
    def violations(self) -> list[str]:
        out = []
        for n, first, last in self._rules.values():
            if n == 1:
                out.append(first)
            elif last == first:
                out.append(f"{first} [{n} times]")
            else:
                out.append(f"{first} [{n} times; the last: {last}]")
        return out if len(out) <= MAX_LISTED else out[:MAX_LISTED] + [f"... and {len(out) - MAX_LISTED} more rules"]

    def observe(self, info: PacketInfo, packet_payload: bytes | None, now_ns: int) -> None:
        if self._last_ns is not None and now_ns - self._last_ns > (SILENT_S) * 1e9:
            self._flag("silence", f"no packet for {(now_ns - self._last_ns) / 1e9:.1f} s (the link goes silent at 3 s)")
        if self._first_ns is None:
            self._first_ns = now_ns
        self._last_ns = now_ns
        if info.message is None:
            self._flag("rejected:" + (info.error or ""), f"packet rejected: {info.error}")
            return
        msg = info.message
        if self.first_message is None:
            self.first_message = msg
        name = msg.TYPE.name + (" retransmitted" if info.duplicate else "")
        self.by_type[name] = self.by_type.get(name, 0) + 1
        key = (msg.TYPE, msg.seq)
        if isinstance(msg, Hello) and not info.duplicate and self._restarted(msg):
            self._flag("restart", f"the device restarted during the check (HELLO seq {msg.seq}, its device_ms "
                       f"{msg.device_ms} went back by more than 60 s): judged anew from there")
        if msg.TYPE in RELIABLE_TYPES:
            if self._check_copies(key, msg, packet_payload, now_ns, info.duplicate):
                return  # a seq reused for other content: flagged as that, not judged as a new packet again
        elif info.duplicate:
            self._flag("repeat", f"{msg.TYPE.name} seq {msg.seq} arrived twice (only HELLO, SUMMARY and FAULT "
                       "are resent)")
        if info.duplicate:
            return
        if not self._late_copy(msg, now_ns):
            self._check_device_time(msg)
        if isinstance(msg, Hello):
            if msg.protocol_version != PROTOCOL_VERSION:
                self._flag("hello-version", f"HELLO announces protocol_version {msg.protocol_version}, this is v1")
            if self._last_hello_ns is not None and now_ns - self._last_hello_ns > (HELLO_PERIOD_S + 1) * 1e9:
                self._flag("hello-period", f"HELLO came {(now_ns - self._last_hello_ns) / 1e9:.1f} s after the previous "
                           "one (every 10 s)")
            self._last_hello_ns = now_ns
            self.hello = msg
        elif isinstance(msg, Heartbeat):
            if self._last_hb_ns is not None and now_ns - self._last_hb_ns > (HEARTBEAT_MAX_S + TOLERANCE_S) * 1e9:
                self._flag("heartbeat-period", f"HEARTBEAT came {(now_ns - self._last_hb_ns) / 1e9:.2f} s after the "
                           "previous one (at least once a second)")
            self._last_hb_ns = now_ns
        elif isinstance(msg, State):
            self._injecting = msg.state == InjectorState.INJECTING
            self._last_sample_ms = None
        elif isinstance(msg, Sample):
            self._need_cap(CAP_SAMPLES, "SAMPLE", "bit0 samples")
            if self._injecting and self._last_sample_ms is not None:
                gap = (msg.device_ms - self._last_sample_ms) % (1 << 32)
                if gap > SAMPLE_MAX_MS * 1.1:
                    self._flag("sample-slow", f"SAMPLEs {gap} ms apart while injecting (10-100 Hz: 10-100 ms)")
                elif gap < SAMPLE_MIN_MS * 0.9:
                    self._flag("sample-fast", f"SAMPLEs {gap} ms apart while injecting (10-100 Hz: 10-100 ms)")
            self._last_sample_ms = msg.device_ms
        elif isinstance(msg, Xray):
            self._need_cap(CAP_XRAY, "XRAY", "bit1 X-ray signal")
            if self._xray is not None and msg.on == self._xray:
                self._flag("xray-repeat", f"XRAY on={bool(msg.on)} repeated without a change (send on every change)")
            self._xray = msg.on
        elif isinstance(msg, TimeResp):
            self.time_resps += 1

    def _restarted(self, msg: Hello) -> bool:
        """A HELLO whose device_ms is more than 60 s behind the latest: a new start; forget the old seqs."""
        latest = self._latest_device_ms
        back = 0 if latest is None else (latest - msg.device_ms) % (1 << 32)
        if not RESTART_BACK_MS < back < (1 << 31):
            return False
        self._last_seq, self._latest_device_ms = None, None
        self._missing.clear()
        self._copies.clear()
        return True

    def _need_cap(self, bit: int, what: str, cap: str) -> None:
        if self.hello is not None and not self.hello.capabilities & bit:
            self._flag(f"cap-{what}", f"{what} sent but HELLO capabilities lack {cap}")

    def _late_copy(self, msg, now_ns: int) -> bool:
        """A first-seen copy of a HELLO / SUMMARY / FAULT whose seq is behind the latest: a resend of a packet
        whose earlier copies were lost, legitimately carrying its old device_ms. Other packets move the seq on.
        Only a seq the stream skipped can come late, or one from before the check's first packet while copies
        of it may still come; any other seq behind is a second seq counter."""
        if self._last_seq is not None:
            ahead = (msg.seq - self._last_seq) % 65536
            if ahead >= 32768 and msg.TYPE in RELIABLE_TYPES:
                before_first = (0 < (self._first_seq - msg.seq) % 65536 <= MAX_MISSING
                                and now_ns - self.start_ns <= LATE_COPY_S * 1e9)
                if self._missing.pop(msg.seq, False) is False and not before_first:
                    self._flag("seq-behind", f"{msg.TYPE.name} seq {msg.seq} is new but behind seq {self._last_seq}, "
                               "and no packet with that seq went missing (one seq for all packets, +1 for every new "
                               "one)")
                return True
            for k in range(1, min(ahead, MAX_MISSING)):   # seqs skipped: their packets may still come late
                self._missing[(self._last_seq + k) % 65536] = True
            while len(self._missing) > MAX_MISSING:
                del self._missing[next(iter(self._missing))]
        else:
            self._first_seq = msg.seq
        self._last_seq = msg.seq
        return False

    def _check_device_time(self, msg) -> None:
        """device_ms of a new packet is never more than DEVICE_MS_BACK_MS before the latest of those before it."""
        latest = self._latest_device_ms
        if latest is not None:
            back = (latest - msg.device_ms) % (1 << 32)
            if 0 < back < (1 << 31):
                if back <= DEVICE_MS_BACK_MS:
                    return  # event order, not send order: allowed, and the latest stays the latest
                self._flag("device-time", f"device_ms went back by {back} ms between new packets ({msg.TYPE.name} seq "
                           f"{msg.seq}: {msg.device_ms} after {latest}; at most {DEVICE_MS_BACK_MS} ms allowed)")
                # a reboot restarts the clock: judge from the new value on
        self._latest_device_ms = msg.device_ms

    def _check_copies(self, key, msg, payload: bytes | None, now_ns: int, duplicate: bool) -> bool:
        """Judge a copy of a reliable packet; True when its seq was reused for other content."""
        rec = self._copies.get(key)
        if rec is None or now_ns - rec[1][-1] > 30e9:
            self._copies[key] = [payload, [now_ns]]
            return False
        if payload != rec[0] and not duplicate:
            self._flag("seq-reuse", f"{msg.TYPE.name} seq {msg.seq} resent with different content (must be identical)")
            return True
        gap = now_ns - rec[1][-1]
        rec[1].append(now_ns)
        if gap < (RETRANSMIT_S - TOLERANCE_S) * 1e9:
            self._flag("retx-fast", f"{msg.TYPE.name} seq {msg.seq} resent after {gap / 1e6:.0f} ms (every 500 ms)")
        if len(rec[1]) == 2 + MAX_RETRANSMITS:  # once per packet, at the first copy too many
            self._flag("retx-many", f"{msg.TYPE.name} seq {msg.seq} resent more than {MAX_RETRANSMITS} times (at most "
                       f"{MAX_RETRANSMITS} resends: {1 + MAX_RETRANSMITS} sends in all)")
        return False

    def finish(self, link: Link, end_ns: int, errors_judged: int, time_reqs: int) -> list[str]:
        """``errors_judged``: crc and framing errors already judged (as a boot banner or a mid-stream join)."""
        c = link.counters()
        total = sum(c["packets_by_type"].values())
        if total == 0:
            self._flag("none", f"no valid packet decoded in {(end_ns - self.start_ns) / 1e9:.1f} s")
        crc, framing = c["crc_errors"], c["framing_errors"]
        judged_framing = min(framing, errors_judged)
        framing -= judged_framing
        crc -= min(crc, errors_judged - judged_framing)
        if crc:
            self._flag("crc", f"{crc} frames failed the CRC-16/CCITT-FALSE check")
        if framing > 0:
            self._flag("framing", f"{framing} frames were not valid COBS, too short or longer than 255 bytes")
        if c["seq_gaps"]:
            self._flag("seq", f"{c['seq_gaps']} seq gaps ({c['packets_missed']} packets missing; +1 per new packet)")
        run_s = (end_ns - self.start_ns) / 1e9
        if self.hello is None and run_s >= HELLO_PERIOD_S + 1:
            self._flag("no-hello", f"no HELLO in {run_s:.0f} s (on connect and every 10 s)")
        if self._last_hello_ns is not None and end_ns - self._last_hello_ns > (HELLO_PERIOD_S + 1) * 1e9:
            self._flag("hello-period-end", f"no HELLO in the last {(end_ns - self._last_hello_ns) / 1e9:.1f} s "
                       "(every 10 s)")
        if self._last_hb_ns is not None and end_ns - self._last_hb_ns > (HEARTBEAT_MAX_S + TOLERANCE_S) * 1e9:
            self._flag("heartbeat-period-end", f"no HEARTBEAT in the last {(end_ns - self._last_hb_ns) / 1e9:.2f} s "
                       "(at least once a second)")
        if total and self._last_hb_ns is None and run_s >= HEARTBEAT_MAX_S + 0.5:
            self._flag("no-heartbeat", f"no HEARTBEAT in {run_s:.1f} s (at least once a second)")
        if self._last_ns is not None and end_ns - self._last_ns > SILENT_S * 1e9:
            self._flag("silence-end", f"no packet for the last {(end_ns - self._last_ns) / 1e9:.1f} s")
        if self.hello is not None and self.hello.capabilities & CAP_TIME_SYNC and time_reqs >= 2 \
                and self.time_resps == 0:
            self._flag("time-sync", f"capability bit2 set but none of {time_reqs} TIME_REQs was answered")
        return self.violations


class StreamCheck:
    """The checker's core without I/O: feed received bytes, write back what it returns, ask for the summary.

    It tells a device that starts during the check from one it joins mid-stream by the silence at the start:
    nothing in the first QUIET_START_S (a running device sends a HEARTBEAT at least once a second) means the
    check was listening before the device's first byte. Then everything before the first packet is the
    device's (a boot banner: counted, shown and flagged) and the first packet must be a HELLO. Joining
    mid-stream, one damaged frame before the first packet is forgiven.
    """

    def __init__(self, start_ns: int) -> None:
        self.start_ns = start_ns
        self.link = Link(SILENT_S)
        self.judge = Judge(start_ns)
        self.link.port_opened(start_ns)
        self.from_start: bool | None = None  # listening before the device's first byte?
        self._before = bytearray()            # bytes received before the first packet (the first BANNER_KEEP)
        self._before_total = 0
        self.banner: bytes | None = None      # non-frame bytes before the first packet, once it arrived
        self.banner_bytes = 0
        self.damaged_hello_bytes = 0          # bytes of a damaged first HELLO before the first packet
        self._errors_before_first = 0
        self._decode_sent = Decoder()
        self._time_reqs: dict[int, int] = {}  # token -> ns sent, until answered

    def feed(self, data: bytes, now_ns: int) -> tuple[list[dict], list[bytes]]:
        """(one JSON-ready dict per decoded packet, bytes to send back: ACKs)."""
        if data and self.from_start is None:
            self.from_start = now_ns - self.start_ns >= QUIET_START_S * 1e9
        records, send = [], []
        if self.banner is None:
            # Until the first packet, feed frame by frame to know exactly which bytes came before it.
            pieces = [data[i:j + 1] for i, j in _frames_of(data)]
        else:
            pieces = [data]
        for piece in pieces:
            if self.banner is None:
                self._before_total += len(piece)
                room = BANNER_KEEP - len(self._before)
                if room > 0:
                    self._before += piece[:room]
            res = self.link.feed(piece, now_ns)
            send += res.send
            if self.link.last_packets and self.banner is None:
                self._first_packet()
            for info in self.link.last_packets:
                self.judge.observe(info, _payload_of(info), now_ns)
                if isinstance(info.message, TimeResp) and not info.duplicate:
                    self._judge_time_resp(info.message, now_ns)
                records.append(_json_of(info))
        return records, send

    def _first_packet(self) -> None:
        d = self.link.decoder
        self.banner_bytes = d.bytes_discarded
        self._errors_before_first = d.crc_errors + d.framing_errors
        # The decoder discarded exactly the first bytes_discarded non-zero bytes received (oversized excess too).
        self.banner = bytes(b for b in self._before if b)[:self.banner_bytes]
        # A damaged first HELLO among them is a frame, not a banner: only the bytes before it are the banner.
        hello = _HELLO_START.search(self.banner)
        if hello is not None:
            self.damaged_hello_bytes = self.banner_bytes - hello.start()
            self.banner, self.banner_bytes = self.banner[:hello.start()], hello.start()

    def sent_records(self, frames: list[bytes], now_ns: int) -> list[dict]:
        """One JSON-ready line per ACK / TIME_REQ sent: {"sent": {...}, "t_s": seconds since the start}."""
        out = []
        for frame in frames:
            for packet in self._decode_sent.feed(frame):
                out.append({"sent": parse(packet).to_dict(), "t_s": round((now_ns - self.start_ns) / 1e9, 6)})
        return out

    def tick(self, now_ns: int) -> list[bytes]:
        """Bytes to send now (TIME_REQ to devices with capability bit2)."""
        send = self.link.tick(now_ns).send
        for frame in send:
            for packet in Decoder().feed(frame):
                msg = parse(packet)
                if isinstance(msg, TimeReq):
                    self._time_reqs[msg.token] = now_ns
        return send

    def _judge_time_resp(self, msg: TimeResp, now_ns: int) -> None:
        """Section 5: the token copied from a TIME_REQ, the answer within 100 ms of it."""
        sent = self._time_reqs.pop(msg.token, None)
        if sent is None:
            self.judge._flag("time-token", f"TIME_RESP seq {msg.seq} carries token 0x{msg.token:08X}, which no "
                             "TIME_REQ carried (copy the TIME_REQ's token)")
        elif now_ns - sent > (TIME_RESP_MAX_S + TIME_RESP_SLACK_S) * 1e9:
            self.judge._flag("time-late", f"TIME_RESP came {(now_ns - sent) / 1e6:.0f} ms after its TIME_REQ "
                             f"(within {TIME_RESP_MAX_S * 1000:.0f} ms)")

    def _judge_start(self) -> int:
        """Flag what came before the first packet; returns how many crc / framing errors that accounts for."""
        if self.banner is None:
            return 0
        first = self.judge.first_message
        if self.from_start:
            if self.banner_bytes:
                self.judge._flag("banner", f"{self.banner_bytes} bytes before the first frame that are not frames "
                                 f"(a boot banner?): {_shown(self.banner, self.banner_bytes)} (send frames only, "
                                 "each after a 0x00)")
            damaged = (f"; {self.damaged_hello_bytes} bytes of a HELLO that did not arrive intact came before it"
                       if self.damaged_hello_bytes else "")
            if first is not None and not isinstance(first, Hello):
                self.judge._flag("first-hello", f"the device's first packet was {first.TYPE.name} seq {first.seq}, "
                                 "not HELLO: its first HELLO was lost or never sent (HELLO first on power-up)"
                                 + damaged)
            elif self.damaged_hello_bytes:
                self.judge._flag("first-hello", "the bytes before the first frame hold the start of a HELLO that "
                                 f"did not arrive intact: the first HELLO was lost ({self.damaged_hello_bytes} bytes)")
            return self._errors_before_first
        return min(self._errors_before_first, 1)  # joined mid-frame: costs one frame, no more

    def summary(self, end_ns: int, lost: str | None = None) -> dict:
        judged = self._judge_start()
        violations = self.judge.finish(self.link, end_ns, judged, self.link.time_requests_sent)
        if lost:
            violations.append(f"port lost during the check: {lost}")
        c = self.link.counters()
        return {"packets": sum(c["packets_by_type"].values()), "by_type": dict(self.judge.by_type),
                "crc_errors": c["crc_errors"], "framing_errors": c["framing_errors"],
                "recovered": self.link.decoder.recovered,
                "unknown_types": c["unknown_types"] + c["unsupported_versions"], "seq_gaps": c["seq_gaps"],
                "malformed": c["malformed"], "duplicates": c["duplicates"],
                "bytes_discarded": c["bytes_discarded"], "seconds": round((end_ns - self.start_ns) / 1e9, 3),
                "listened_from_start": bool(self.from_start),
                "banner_bytes": self.banner_bytes,
                "banner": _shown(self.banner, self.banner_bytes) if self.banner else "",
                "violation_counts": self.judge.counts, "violations": violations}


def _frames_of(data: bytes):
    """(start, end) of each piece of ``data`` that ends at a 0x00 (inclusive), and of the rest."""
    start = 0
    while start < len(data):
        z = data.find(0, start)
        end = len(data) - 1 if z < 0 else z
        yield start, end
        start = end + 1


def _shown(raw: bytes, total: int) -> str:
    """Printable ASCII as is, the rest escaped, truncated: what a person recognises of a boot banner."""
    text = raw[:BANNER_SHOWN].decode("latin-1").encode("unicode_escape").decode("ascii").replace('"', '\\"')
    more = f" ... ({total} bytes)" if total > BANNER_SHOWN else ""
    return f'"{text}"{more}'


def open_port(url: str) -> serial.SerialBase:
    """The line as the appliance opens it (raises SerialException, OSError or ValueError)."""
    return serial.serial_for_url(url, baudrate=115200, timeout=0.05, write_timeout=1.0)


def listen(ser: serial.SerialBase, check: StreamCheck, end_ns: int, on_record=None) -> str | None:
    """Feed what ``ser`` says into ``check`` and write its answers back until ``end_ns``; ``on_record`` gets
    each packet heard and sent as a dict. Returns why the port was lost, or None."""
    while time.monotonic_ns() < end_ns:
        try:
            data = ser.read(max(1, ser.in_waiting))
            now = time.monotonic_ns()
            send: list[bytes] = []
            if data:
                records, send = check.feed(data, now)
                if on_record is not None:
                    for rec in records:
                        on_record(rec)
            send += check.tick(now)
            for frame in send:
                ser.write(frame)
            if on_record is not None and send:
                for rec in check.sent_records(send, time.monotonic_ns()):
                    on_record(rec)
        except (serial.SerialException, OSError) as exc:
            return str(exc)
    return None


def _payload_of(info: PacketInfo) -> bytes | None:
    return info.message.payload() if info.message is not None else None


def _json_of(info: PacketInfo) -> dict:
    if info.message is None:
        return {"type": None, "error": info.error}
    d = info.message.to_dict()
    if info.duplicate:
        d["retransmission"] = True
    return d
