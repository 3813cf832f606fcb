"""The protocol rules serial-check judges a vendor's stream by (docs/serial-protocol.md), with no I/O.

``Judge`` takes each packet's verdict from the link with its arrival time and lists every rule broken once,
with its count, its first occurrence and (when it differs) its last; ``finish`` adds the rules judged over the
whole check. ``firmware_bridge.checker`` feeds it and answers the device like the appliance.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .link import Link, PacketInfo
from .messages import (CAP_SAMPLES, CAP_TIME_SYNC, CAP_XRAY, PROTOCOL_VERSION, RELIABLE_TYPES, Heartbeat, Hello,
                       InjectorState, Sample, State, TimeResp, Xray)

HELLO_PERIOD_S = 10.0
HEARTBEAT_MAX_S = 1.0
SILENT_S = 3.0
RETRANSMIT_S = 0.5
MAX_RETRANSMITS = 10
SAMPLE_MIN_MS, SAMPLE_MAX_MS = 10, 100   # 10-100 Hz while injecting
TOLERANCE_S = 0.25                        # arrival jitter allowed on host-timed rules
MAX_LISTED = 20                           # violations listed; the rest are counted
DEVICE_MS_BACK_MS = 50                    # device_ms is event time: new packets may be up to 50 ms out of order
RESTART_BACK_MS = 60_000                  # device_ms this far back in a HELLO: the device restarted (section 7)
MAX_MISSING = 256                         # skipped seqs remembered for late copies
LATE_COPY_S = (1 + MAX_RETRANSMITS) * RETRANSMIT_S + TOLERANCE_S  # a packet's last copy comes this late


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

    def flag(self, rule: str, text: str) -> None:
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
            self.flag("silence", f"no packet for {(now_ns - self._last_ns) / 1e9:.1f} s (the link goes silent at 3 s)")
        if self._first_ns is None:
            self._first_ns = now_ns
        self._last_ns = now_ns
        if info.message is None:
            self.flag("rejected:" + (info.error or ""), f"packet rejected: {info.error}")
            return
        msg = info.message
        if self.first_message is None:
            self.first_message = msg
        name = msg.TYPE.name + (" retransmitted" if info.duplicate else "")
        self.by_type[name] = self.by_type.get(name, 0) + 1
        key = (msg.TYPE, msg.seq)
        if isinstance(msg, Hello) and not info.duplicate and self._restarted(msg):
            self.flag("restart", f"the device restarted during the check (HELLO seq {msg.seq}, its device_ms "
                       f"{msg.device_ms} went back by more than 60 s): judged anew from there")
        if msg.TYPE in RELIABLE_TYPES:
            if self._check_copies(key, msg, packet_payload, now_ns, info.duplicate):
                return  # a seq reused for other content: flagged as that, not judged as a new packet again
        elif info.duplicate:
            self.flag("repeat", f"{msg.TYPE.name} seq {msg.seq} arrived twice (only HELLO, SUMMARY and FAULT "
                       "are resent)")
        if info.duplicate:
            return
        if not self._late_copy(msg, now_ns):
            self._check_device_time(msg)
        if isinstance(msg, Hello):
            if msg.protocol_version != PROTOCOL_VERSION:
                self.flag("hello-version", f"HELLO announces protocol_version {msg.protocol_version}, this is v1")
            if self._last_hello_ns is not None and now_ns - self._last_hello_ns > (HELLO_PERIOD_S + 1) * 1e9:
                self.flag("hello-period", f"HELLO came {(now_ns - self._last_hello_ns) / 1e9:.1f} s after the previous "
                           "one (every 10 s)")
            self._last_hello_ns = now_ns
            self.hello = msg
        elif isinstance(msg, Heartbeat):
            if self._last_hb_ns is not None and now_ns - self._last_hb_ns > (HEARTBEAT_MAX_S + TOLERANCE_S) * 1e9:
                self.flag("heartbeat-period", f"HEARTBEAT came {(now_ns - self._last_hb_ns) / 1e9:.2f} s after the "
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
                    self.flag("sample-slow", f"SAMPLEs {gap} ms apart while injecting (10-100 Hz: 10-100 ms)")
                elif gap < SAMPLE_MIN_MS * 0.9:
                    self.flag("sample-fast", f"SAMPLEs {gap} ms apart while injecting (10-100 Hz: 10-100 ms)")
            self._last_sample_ms = msg.device_ms
        elif isinstance(msg, Xray):
            self._need_cap(CAP_XRAY, "XRAY", "bit1 X-ray signal")
            if self._xray is not None and msg.on == self._xray:
                self.flag("xray-repeat", f"XRAY on={bool(msg.on)} repeated without a change (send on every change)")
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
            self.flag(f"cap-{what}", f"{what} sent but HELLO capabilities lack {cap}")

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
                    self.flag("seq-behind", f"{msg.TYPE.name} seq {msg.seq} is new but behind seq {self._last_seq}, "
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
                self.flag("device-time", f"device_ms went back by {back} ms between new packets ({msg.TYPE.name} seq "
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
            self.flag("seq-reuse", f"{msg.TYPE.name} seq {msg.seq} resent with different content (must be identical)")
            return True
        gap = now_ns - rec[1][-1]
        rec[1].append(now_ns)
        if gap < (RETRANSMIT_S - TOLERANCE_S) * 1e9:
            self.flag("retx-fast", f"{msg.TYPE.name} seq {msg.seq} resent after {gap / 1e6:.0f} ms (every 500 ms)")
        if len(rec[1]) == 2 + MAX_RETRANSMITS:  # once per packet, at the first copy too many
            self.flag("retx-many", f"{msg.TYPE.name} seq {msg.seq} resent more than {MAX_RETRANSMITS} times (at most "
                       f"{MAX_RETRANSMITS} resends: {1 + MAX_RETRANSMITS} sends in all)")
        return False

    def finish(self, link: Link, end_ns: int, errors_judged: int, time_reqs: int) -> list[str]:
        """``errors_judged``: crc and framing errors already judged (as a boot banner or a mid-stream join)."""
        c = link.counters()
        total = sum(c["packets_by_type"].values())
        if total == 0:
            self.flag("none", f"no valid packet decoded in {(end_ns - self.start_ns) / 1e9:.1f} s")
        crc, framing = c["crc_errors"], c["framing_errors"]
        judged_framing = min(framing, errors_judged)
        framing -= judged_framing
        crc -= min(crc, errors_judged - judged_framing)
        if crc:
            self.flag("crc", f"{crc} frames failed the CRC-16/CCITT-FALSE check")
        if framing > 0:
            self.flag("framing", f"{framing} frames were not valid COBS, too short or longer than 255 bytes")
        if c["seq_gaps"]:
            self.flag("seq", f"{c['seq_gaps']} seq gaps ({c['packets_missed']} packets missing; +1 per new packet)")
        run_s = (end_ns - self.start_ns) / 1e9
        if self.hello is None and run_s >= HELLO_PERIOD_S + 1:
            self.flag("no-hello", f"no HELLO in {run_s:.0f} s (on connect and every 10 s)")
        if self._last_hello_ns is not None and end_ns - self._last_hello_ns > (HELLO_PERIOD_S + 1) * 1e9:
            self.flag("hello-period-end", f"no HELLO in the last {(end_ns - self._last_hello_ns) / 1e9:.1f} s "
                       "(every 10 s)")
        if self._last_hb_ns is not None and end_ns - self._last_hb_ns > (HEARTBEAT_MAX_S + TOLERANCE_S) * 1e9:
            self.flag("heartbeat-period-end", f"no HEARTBEAT in the last {(end_ns - self._last_hb_ns) / 1e9:.2f} s "
                       "(at least once a second)")
        if total and self._last_hb_ns is None and run_s >= HEARTBEAT_MAX_S + 0.5:
            self.flag("no-heartbeat", f"no HEARTBEAT in {run_s:.1f} s (at least once a second)")
        if self._last_ns is not None and end_ns - self._last_ns > SILENT_S * 1e9:
            self.flag("silence-end", f"no packet for the last {(end_ns - self._last_ns) / 1e9:.1f} s")
        if self.hello is not None and self.hello.capabilities & CAP_TIME_SYNC and time_reqs >= 2 \
                and self.time_resps == 0:
            self.flag("time-sync", f"capability bit2 set but none of {time_reqs} TIME_REQs was answered")
        return self.violations
