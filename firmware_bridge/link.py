"""The link: bytes in, delivered messages, bytes to send and state changes out. No I/O, no threads.

Like asyncpg's CoreProtocol, the same core runs on a real port, the simulator or a recorded file: the
caller feeds bytes with the host monotonic time they arrived, calls ``tick()`` now and then, writes what
``LinkOutput.send`` holds and hands ``LinkOutput.messages`` on.

States: ``down`` (no port), ``silent`` (port open, no packet for ``silent_s``), ``up`` (packets flowing).
The device resends HELLO, SUMMARY and FAULT (same seq, same bytes) until acknowledged; each is delivered
once and acknowledged every time. Each new message is also judged for plausibility (firmware_bridge.plausibility):
a violation is counted and handed on in ``LinkOutput.violations``, and the message is delivered all the same.
"""
from __future__ import annotations

import logging
import random
from collections import OrderedDict
from dataclasses import dataclass, field

from .clock import DeviceClock
from .framing import Decoder
from .messages import (DEVICE_TYPES, RELIABLE_TYPES, Ack, Hello, MalformedPacket, Message, TimeReq, TimeResp,
                       UnknownType, UnsupportedVersion, header_of, parse)
from .plausibility import Plausibility, Violation

log = logging.getLogger(__name__)

UP, SILENT, DOWN = "up", "silent", "down"
TRANSITIONS = frozenset({(DOWN, SILENT), (SILENT, UP), (UP, SILENT), (UP, DOWN), (SILENT, DOWN)})


class IllegalTransition(RuntimeError):
    """A bug in the caller: the link was asked to move between states that are not connected."""


@dataclass
class LinkOutput:
    messages: list[tuple[Message, int]] = field(default_factory=list)  # (message, host ns of the device event)
    send: list[bytes] = field(default_factory=list)                    # wire bytes for the device
    events: list[tuple[str, str, str]] = field(default_factory=list)   # (old state, new state, reason)
    violations: list[Violation] = field(default_factory=list)          # implausible values, by message

    def extend(self, other: "LinkOutput") -> None:
        self.messages += other.messages
        self.send += other.send
        self.events += other.events
        self.violations += other.violations


@dataclass
class PacketInfo:
    """What the link concluded about one decoded packet (for the checker's judgement)."""
    message: Message | None
    duplicate: bool = False
    error: str | None = None
    violations: list[Violation] = field(default_factory=list)


class Link:
    def __init__(self, silent_s: float = 3.0, *, dedup_s: float = 30.0, time_sync_interval_s: float = 10.0,
                 rng: random.Random | None = None) -> None:
        if silent_s <= 0 or dedup_s <= 0 or time_sync_interval_s <= 0:
            raise ValueError("link timings must be positive")
        self._silent_ns = int(silent_s * 1e9)
        self._dedup_ns = int(dedup_s * 1e9)
        self._sync_interval_ns = int(time_sync_interval_s * 1e9)
        self._rng = rng or random.Random()
        self.decoder = Decoder()
        self.clock = DeviceClock()
        self.state = DOWN
        self.device: Hello | None = None
        self._opened_before = False
        self._last_rx_ns: int | None = None
        self._last_seq: int | None = None
        self._last_unreliable = b""   # the latest new HEARTBEAT / SAMPLE / ...: a repeat of it is a copy
        self._seen: OrderedDict[tuple[int, int, bytes], int] = OrderedDict()  # reliable packet -> host ns
        self._tx_seq = 0
        self._pending_sync: dict[int, int] = {}  # token -> sent ns
        self._next_sync_ns: int | None = None
        self.time_requests_sent = 0
        self.packets_by_type: dict[str, int] = {}
        self.unknown_types = self.unsupported_versions = self.malformed = 0
        self.seq_gaps = self.packets_missed = self.duplicates = self.reconnects = 0
        self.plausibility = Plausibility()
        self.protocol_violations: dict[str, int] = {}   # implausible values by kind
        self.last_packets: list[PacketInfo] = []  # verdicts of the latest feed() (checker)

    # -- state -------------------------------------------------------------------------------------
    def _set_state(self, new: str, reason: str, out: LinkOutput) -> None:
        old = self.state
        if (old, new) not in TRANSITIONS:
            raise IllegalTransition(f"link cannot go from {old} to {new} ({reason})")
        self.state = new
        out.events.append((old, new, reason))
        log.info("serial link %s -> %s: %s", old, new, reason)

    def port_opened(self, now_ns: int) -> LinkOutput:
        out = LinkOutput()
        if self._opened_before:
            self.reconnects += 1
        self._opened_before = True
        self._last_rx_ns = now_ns  # silence is measured from the open
        self._set_state(SILENT, "port opened", out)
        return out

    def port_closed(self, now_ns: int, reason: str = "port closed") -> LinkOutput:
        out = LinkOutput()
        self.decoder.reset()  # a partial frame cannot continue on a new connection
        self._pending_sync.clear()
        self.plausibility.reset()
        self._last_unreliable = b""
        if self.state != DOWN:
            self._set_state(DOWN, reason, out)
        return out

    # -- bytes in ----------------------------------------------------------------------------------
    def feed(self, data: bytes, now_ns: int) -> LinkOutput:
        """Bytes received at host time ``now_ns``."""
        out = LinkOutput()
        self.last_packets = []
        for packet in self.decoder.feed(data):
            self._receive(packet, now_ns, out)
        return out

    def _receive(self, packet: bytes, now_ns: int, out: LinkOutput) -> None:
        self._last_rx_ns = now_ns
        if self.state == SILENT:
            self._set_state(UP, "packets received", out)
        version, type_code, seq, device_ms = header_of(packet)
        try:
            msg = parse(packet)
            if msg.TYPE not in DEVICE_TYPES:
                raise UnknownType(type_code)
        except UnsupportedVersion as exc:
            self.unsupported_versions += 1
            self._reject(exc, out)
            return
        except UnknownType as exc:
            self.unknown_types += 1
            self._reject(exc, out)
            return
        except MalformedPacket as exc:
            self.malformed += 1
            self._reject(exc, out)
            return
        name = msg.TYPE.name
        self.packets_by_type[name] = self.packets_by_type.get(name, 0) + 1
        if msg.TYPE in RELIABLE_TYPES:
            out.send.append(self._host_packet(Ack, now_ns, acked_seq=seq))
            key = (type_code, seq, bytes(packet[4:]))   # a copy is byte-identical: device_ms and payload
            self._expire_seen(now_ns)
            if key in self._seen:
                self.duplicates += 1
                self.last_packets.append(PacketInfo(msg, duplicate=True))
                return
            self._seen[key] = now_ns
        elif packet == self._last_unreliable:
            # The same frame twice in a row (a serial server or the line repeating it): one packet, not two.
            self.duplicates += 1
            self.last_packets.append(PacketInfo(msg, duplicate=True))
            return
        else:
            self._last_unreliable = bytes(packet)
        if isinstance(msg, Hello) and self.clock.is_restart(device_ms):
            self._last_seq = None   # a restarted device counts its seq anew: no gap
        self._track_seq(seq, msg.TYPE in RELIABLE_TYPES)
        if msg.TYPE not in RELIABLE_TYPES:  # reliable ones may be late copies with an old device_ms
            self.clock.observe(device_ms, now_ns)
        if isinstance(msg, TimeResp):
            sent = self._pending_sync.pop(msg.token, None)
            if sent is not None:
                self.clock.time_sync(device_ms, sent, now_ns)
        if isinstance(msg, Hello):
            first = self.device is None or not self.clock.synced
            self.device = msg
            if msg.has_time_sync and first and self._next_sync_ns is None:
                self._next_sync_ns = now_ns
        found = self.plausibility.check(msg)
        for violation in found:
            self.protocol_violations[violation.kind] = self.protocol_violations.get(violation.kind, 0) + 1
        out.violations += found
        self.last_packets.append(PacketInfo(msg, violations=found))
        out.messages.append((msg, self.clock.to_host_ns(device_ms, now_ns)))

    def _reject(self, exc: Exception, out: LinkOutput) -> None:
        log.warning("serial packet skipped: %s", exc)
        self.last_packets.append(PacketInfo(None, error=str(exc)))

    def _track_seq(self, seq: int, reliable: bool) -> None:
        if self._last_seq is None and reliable:
            return  # may be a resent copy older than the packets that follow: no baseline from it
        if self._last_seq is not None:
            ahead = (seq - self._last_seq) % 65536
            if ahead >= 32768 and reliable:
                return  # a late first copy of a retransmitted packet: its seq is behind, not a gap
            if ahead != 1:
                self.seq_gaps += 1
                if 0 < ahead < 32768:   # ahead 0: the seq reused, nothing missed
                    self.packets_missed += ahead - 1
        self._last_seq = seq

    def _expire_seen(self, now_ns: int) -> None:
        while self._seen:
            key, t = next(iter(self._seen.items()))
            if t >= now_ns - self._dedup_ns:
                break
            self._seen.popitem(last=False)

    # -- time --------------------------------------------------------------------------------------
    def tick(self, now_ns: int) -> LinkOutput:
        """Silence detection and time-sync requests; call a few times a second."""
        out = LinkOutput()
        if self.state == UP and self._last_rx_ns is not None and now_ns - self._last_rx_ns > self._silent_ns:
            self._set_state(SILENT, f"no packet for {(now_ns - self._last_rx_ns) / 1e9:.1f} s", out)
        if (self.state == UP and self._next_sync_ns is not None and now_ns >= self._next_sync_ns
                and self.device is not None and self.device.has_time_sync):
            token = self._rng.getrandbits(32)
            self._pending_sync = {t: s for t, s in self._pending_sync.items() if now_ns - s < 2_000_000_000}
            self._pending_sync[token] = now_ns
            out.send.append(self._host_packet(TimeReq, now_ns, token=token))
            self.time_requests_sent += 1
            # A quick burst first (the best of several round trips), then a slow refresh for drift.
            self._next_sync_ns = now_ns + (250_000_000 if self.time_requests_sent < 8 else self._sync_interval_ns)
        return out

    def _host_packet(self, cls, now_ns: int, **fields) -> bytes:
        msg = cls(seq=self._tx_seq, device_ms=(now_ns // 1_000_000) & 0xFFFFFFFF, **fields)
        self._tx_seq = (self._tx_seq + 1) & 0xFFFF
        return b"\x00" + msg.encode()  # a 0x00 before the frame too: noise before it cannot cost it

    def counters(self) -> dict:
        d = self.decoder
        return {"packets_by_type": dict(self.packets_by_type), "crc_errors": d.crc_errors,
                "framing_errors": d.framing_errors, "bytes_discarded": d.bytes_discarded,
                "packets_recovered": d.recovered,   # intact packets taken from the tail of a damaged frame
                "unknown_types": self.unknown_types, "unsupported_versions": self.unsupported_versions,
                "malformed": self.malformed, "seq_gaps": self.seq_gaps, "packets_missed": self.packets_missed,
                "duplicates": self.duplicates, "reconnects": self.reconnects,
                "protocol_violations": sum(self.protocol_violations.values()),
                "protocol_violations_by_kind": dict(self.protocol_violations)}

