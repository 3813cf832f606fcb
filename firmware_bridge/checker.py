"""serial-check: decode a vendor's stream, answer it like the appliance, and judge it against v1.

``Judge`` holds the rules and no I/O; ``check_main`` is the command-line body
(``cathlab-edge serial-check --port URL [--seconds N] [--json]``).
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field

import serial

from .link import Link, PacketInfo
from .messages import (CAP_SAMPLES, CAP_TIME_SYNC, CAP_XRAY, PROTOCOL_VERSION, RELIABLE_TYPES, Hello,
                       Heartbeat, InjectorState, Sample, State, TimeResp, Xray)

HELLO_PERIOD_S = 10.0
HEARTBEAT_MAX_S = 1.0
SILENT_S = 3.0
RETRANSMIT_S = 0.5
MAX_RETRANSMITS = 10
SAMPLE_MIN_MS, SAMPLE_MAX_MS = 10, 100   # 10-100 Hz while injecting
TOLERANCE_S = 0.25                        # arrival jitter allowed on host-timed rules
MAX_LISTED = 20                           # violations listed; the rest are counted


@dataclass
class Judge:
    """Protocol rules over (packet verdict, arrival ns). ``violations`` are human-readable sentences."""
    start_ns: int
    _rules: dict[str, list] = field(default_factory=dict)  # rule -> [first sentence, occurrences]
    _first_ns: int | None = None
    _last_ns: int | None = None
    _last_hello_ns: int | None = None
    _last_hb_ns: int | None = None
    _last_sample_ms: int | None = None
    _injecting: bool = False
    _xray: int | None = None
    _last_device_ms: int | None = None
    _copies: dict = field(default_factory=dict)   # (type, seq) -> [payload, arrivals]
    hello: Hello | None = None
    time_resps: int = 0

    def _flag(self, rule: str, text: str) -> None:
        rec = self._rules.setdefault(rule, [text, 0])
        rec[1] += 1

    @property
    def violations(self) -> list[str]:
        out = [t if n == 1 else f"{t} (x{n})" for t, n in self._rules.values()]
        return out if len(out) <= MAX_LISTED else out[:MAX_LISTED] + [f"... and {len(out) - MAX_LISTED} more rules"]

    def observe(self, info: PacketInfo, packet_payload: bytes | None, now_ns: int) -> None:
        if self._last_ns is not None and now_ns - self._last_ns > (SILENT_S) * 1e9:
            self._flag("silence", f"no packet for {(now_ns - self._last_ns) / 1e9:.1f} s (the link goes silent at 3 s)")
        if self._first_ns is None:
            self._first_ns = now_ns
        self._last_ns = now_ns
        if info.message is None:
            self._flag("rejected:" + (info.error or "")[:20], f"packet rejected: {info.error}")
            return
        msg = info.message
        key = (msg.TYPE, msg.seq)
        if msg.TYPE in RELIABLE_TYPES:
            self._check_copies(key, msg, packet_payload, now_ns, info.duplicate)
        if info.duplicate:
            return
        if msg.TYPE not in RELIABLE_TYPES:
            self._check_device_time(msg.device_ms)
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

    def _need_cap(self, bit: int, what: str, cap: str) -> None:
        if self.hello is not None and not self.hello.capabilities & bit:
            self._flag(f"cap-{what}", f"{what} sent but HELLO capabilities lack {cap}")

    def _check_device_time(self, device_ms: int) -> None:
        if self._last_device_ms is not None:
            back = (self._last_device_ms - device_ms) % (1 << 32)
            if 0 < back < (1 << 31):
                self._flag("device-time", f"device_ms went back by {back} ms between new packets")
                # a reboot restarts the clock: judge from the new value on
        self._last_device_ms = device_ms

    def _check_copies(self, key, msg, payload: bytes | None, now_ns: int, duplicate: bool) -> None:
        rec = self._copies.get(key)
        if rec is None or now_ns - rec[1][-1] > 30e9:
            self._copies[key] = [payload, [now_ns]]
            return
        if payload != rec[0] and not duplicate:
            self._flag("seq-reuse", f"{msg.TYPE.name} seq {msg.seq} resent with different content (must be identical)")
            return
        gap = now_ns - rec[1][-1]
        rec[1].append(now_ns)
        if gap < (RETRANSMIT_S - TOLERANCE_S) * 1e9:
            self._flag("retx-fast", f"{msg.TYPE.name} seq {msg.seq} resent after {gap / 1e6:.0f} ms (every 500 ms)")
        if len(rec[1]) > 1 + MAX_RETRANSMITS:
            self._flag("retx-many", f"{msg.TYPE.name} seq {msg.seq} sent {len(rec[1])} times (at most 1 + 10)")
        elif len(rec[1]) >= 3:
            self._flag("retx-after-ack", f"{msg.TYPE.name} seq {msg.seq} resent {len(rec[1]) - 1} times although "
                       "acknowledged within milliseconds (stop when the ACK arrives)")

    def finish(self, link: Link, end_ns: int, forgiven_framing: int, time_reqs: int) -> list[str]:
        c = link.counters()
        total = sum(c["packets_by_type"].values())
        if total == 0:
            self._flag("none", f"no valid packet decoded in {(end_ns - self.start_ns) / 1e9:.1f} s")
        if c["crc_errors"]:
            self._flag("crc", f"{c['crc_errors']} frames failed the CRC-16/CCITT-FALSE check")
        framing = c["framing_errors"] - forgiven_framing
        if framing > 0:
            self._flag("framing", f"{framing} frames were not valid COBS, too short or longer than 255 bytes")
        if c["seq_gaps"]:
            self._flag("seq", f"{c['seq_gaps']} seq gaps ({c['packets_missed']} packets missing; +1 per new packet)")
        run_s = (end_ns - self.start_ns) / 1e9
        if self.hello is None and run_s >= HELLO_PERIOD_S + 1:
            self._flag("no-hello", f"no HELLO in {run_s:.0f} s (on connect and every 10 s)")
        if self._last_hello_ns is not None and end_ns - self._last_hello_ns > (HELLO_PERIOD_S + 1) * 1e9:
            self._flag("hello-period", f"no HELLO in the last {(end_ns - self._last_hello_ns) / 1e9:.1f} s "
                       "(every 10 s)")
        if self._last_hb_ns is not None and end_ns - self._last_hb_ns > (HEARTBEAT_MAX_S + TOLERANCE_S) * 1e9:
            self._flag("heartbeat-period", f"no HEARTBEAT in the last {(end_ns - self._last_hb_ns) / 1e9:.2f} s "
                       "(at least once a second)")
        if total and self._last_hb_ns is None and run_s >= HEARTBEAT_MAX_S + 0.5:
            self._flag("no-heartbeat", f"no HEARTBEAT in {run_s:.1f} s (at least once a second)")
        if self._last_ns is not None and end_ns - self._last_ns > SILENT_S * 1e9:
            self._flag("silence", f"no packet for the last {(end_ns - self._last_ns) / 1e9:.1f} s")
        if self.hello is not None and self.hello.capabilities & CAP_TIME_SYNC and time_reqs >= 2 \
                and self.time_resps == 0:
            self._flag("time-sync", f"capability bit2 set but none of {time_reqs} TIME_REQs was answered")
        return self.violations


class StreamCheck:
    """The checker's core without I/O: feed received bytes, write back what it returns, ask for the summary."""

    def __init__(self, start_ns: int) -> None:
        self.start_ns = start_ns
        self.link = Link(SILENT_S)
        self.judge = Judge(start_ns)
        self.link.port_opened(start_ns)
        self._forgiven: int | None = None

    def feed(self, data: bytes, now_ns: int) -> tuple[list[dict], list[bytes]]:
        """(one JSON-ready dict per decoded packet, bytes to send back: ACKs)."""
        res = self.link.feed(data, now_ns)
        records = []
        for info in self.link.last_packets:
            if self._forgiven is None and info.message is not None:
                # Joining a stream mid-frame costs exactly one frame; anything more is the device's.
                self._forgiven = min(self.link.decoder.framing_errors, 1)
            self.judge.observe(info, _payload_of(info), now_ns)
            records.append(_json_of(info))
        return records, res.send

    def tick(self, now_ns: int) -> list[bytes]:
        """Bytes to send now (TIME_REQ to devices with capability bit2)."""
        return self.link.tick(now_ns).send

    def summary(self, end_ns: int, lost: str | None = None) -> dict:
        violations = self.judge.finish(self.link, end_ns, self._forgiven or 0, self.link.time_requests_sent)
        if lost:
            violations.append(f"port lost during the check: {lost}")
        c = self.link.counters()
        return {"packets": sum(c["packets_by_type"].values()), "by_type": c["packets_by_type"],
                "crc_errors": c["crc_errors"], "framing_errors": c["framing_errors"],
                "unknown_types": c["unknown_types"] + c["unsupported_versions"], "seq_gaps": c["seq_gaps"],
                "malformed": c["malformed"], "duplicates": c["duplicates"],
                "bytes_discarded": c["bytes_discarded"], "seconds": round((end_ns - self.start_ns) / 1e9, 3),
                "violations": violations}


def check_main(port: str, seconds: float = 10.0, as_json: bool = False, out=sys.stdout) -> int:
    """Judge the stream on ``port`` for ``seconds``. 0: conforms, 1: does not, 2: the port cannot be used."""
    if not seconds > 0:
        print("serial-check: --seconds must be positive", file=sys.stderr)
        return 2
    try:
        ser = serial.serial_for_url(port, baudrate=115200, timeout=0.05, write_timeout=1.0)
    except (serial.SerialException, OSError, ValueError) as exc:
        print(f"serial-check: cannot open {port}: {exc}", file=sys.stderr)
        return 2
    start = time.monotonic_ns()
    check = StreamCheck(start)
    end = start + int(seconds * 1e9)
    lost = None
    try:
        while time.monotonic_ns() < end:
            try:
                data = ser.read(max(1, ser.in_waiting))
                now = time.monotonic_ns()
                send: list[bytes] = []
                if data:
                    records, send = check.feed(data, now)
                    if as_json:
                        for rec in records:
                            print(json.dumps(rec), file=out)
                for frame in send + check.tick(now):
                    ser.write(frame)
            except (serial.SerialException, OSError) as exc:
                lost = str(exc)
                break
    except KeyboardInterrupt:
        pass  # Ctrl-C ends the check early; judge what was seen
    finally:
        ser.close()
    summary = check.summary(min(time.monotonic_ns(), end), lost)
    if as_json:
        print(json.dumps({"summary": summary}), file=out)
    else:
        _print_report(port, summary, check.judge.hello, out)
    return 0 if not summary["violations"] else 1


def _payload_of(info: PacketInfo) -> bytes | None:
    return info.message.payload() if info.message is not None else None


def _json_of(info: PacketInfo) -> dict:
    if info.message is None:
        return {"type": None, "error": info.error}
    d = info.message.to_dict()
    if info.duplicate:
        d["retransmission"] = True
    return d


def _print_report(port: str, s: dict, hello: Hello | None, out) -> None:
    print(f"serial-check {port}: {s['packets']} packets in {s['seconds']} s", file=out)
    if hello is not None:
        h = hello.to_dict()
        print(f"  device: vendor 0x{h['vendor_id']:04X} product 0x{h['product_id']:04X} {h['model']!r} "
              f"serial {h['serial_no']!r} firmware {h['fw_version']} capabilities 0b{h['capabilities']:03b}", file=out)
    for name, n in sorted(s["by_type"].items()):
        print(f"  {name:<10} {n}", file=out)
    for key in ("crc_errors", "framing_errors", "unknown_types", "malformed", "seq_gaps", "duplicates"):
        print(f"  {key:<15} {s[key]}", file=out)
    if s["violations"]:
        print("DOES NOT CONFORM:", file=out)
        for v in s["violations"]:
            print(f"  - {v}", file=out)
    else:
        print("CONFORMS to serial protocol v1", file=out)
