"""The injector simulator: a scripted device that speaks protocol v1 exactly as firmware should.

``InjectorDevice`` is the device side with no I/O: ``poll(now_ns)`` returns the wire bytes due by then
(scenario events, HEARTBEAT every second, HELLO on connect and every 10 s, unacknowledged HELLO /
SUMMARY / FAULT resent every 500 ms at most 10 times), ``receive(bytes, now_ns)`` takes ACK and
TIME_REQ. Scenario times are seconds from ``t0_ns`` (host monotonic); device_ms is the event's
scheduled time on the device's own clock, which starts at an arbitrary boot value. The scenarios are
``firmware_bridge.scenarios``; ``sim_lines.play`` runs a device on a pty, a TCP socket or a serial line
(``cathlab-edge simulate-injector``); ``protocol_injsim`` plays it as a pyserial URL handler.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from itertools import count
from urllib.parse import urlsplit

from .framing import Decoder
from .messages import (CAP_SAMPLES, CAP_TIME_SYNC, CAP_XRAY, Ack, Fault, Heartbeat, Hello, InjectorState, Message,
                       ProtocolError, Sample, State, Summary, TimeReq, TimeResp, Xray, parse)
from .scenarios import SCENARIOS, Scenario

HEARTBEAT_PERIOD_S = 1.0
HELLO_PERIOD_S = 10.0
RETRANSMIT_S = 0.5
MAX_RETRANSMITS = 10


DEFAULT_HELLO = dict(vendor_id=0xCA7E, product_id=0x0001, model="SIM-INJECTOR", serial_no="SIM-0001",
                     fw_major=1, fw_minor=0, fw_patch=0, protocol_version=1,
                     capabilities=CAP_SAMPLES | CAP_XRAY | CAP_TIME_SYNC)


@dataclass
class _Unacked:
    frame: bytes
    next_ns: int
    sent: int = 1


class InjectorDevice:
    """Device side of the protocol, no I/O. Not thread-safe: one owner calls poll/receive."""

    def __init__(self, scenario: Scenario | str = "procedure", *, t0_ns: int, seed: int = 0,
                 bit_error_rate: float | None = None, boot_ms: int | None = None,
                 hello: dict | None = None, retransmit: bool = True) -> None:
        if isinstance(scenario, str):
            if scenario not in SCENARIOS:
                raise ValueError(f"unknown scenario {scenario!r}; choose from {sorted(SCENARIOS)}")
            scenario = SCENARIOS[scenario]
        ber = scenario.bit_error_rate if bit_error_rate is None else bit_error_rate
        if not 0.0 <= ber < 1.0:
            raise ValueError(f"bit error rate must be in [0, 1), got {ber}")
        self.scenario = scenario
        self.t0_ns = int(t0_ns)
        self._rng = random.Random(seed)
        self._ber = ber
        self._next_flip = self._draw_flip()
        self.boot_ms = self._rng.randrange(1 << 32) if boot_ms is None else boot_ms
        self._hello = {**DEFAULT_HELLO, **(hello or {})}
        self._retransmit = retransmit
        self._events = scenario.events()
        self._pending_event = next(self._events, None)
        self._seq = 0
        self._unacked: dict[int, _Unacked] = {}
        self._ready: list[tuple[int, int, bytes]] = []   # (due ns, order, frame) made before a poll took them
        self._order = count()                            # ties in due time keep the order frames were made in
        self._decoder = Decoder()
        self._state = InjectorState.IDLE
        self._next_hb_ns: int | None = None
        self._next_hello_ns: int | None = None
        self.sent_by_type: dict[str, int] = {}
        self.acks_received = 0
        self.retransmissions = 0
        self.bits_flipped = 0
        self.bytes_sent = 0
        self.unacked_given_up = 0

    # -- clocks ----------------------------------------------------------------------------------------
    def device_ms(self, host_ns: int) -> int:
        return (self.boot_ms + (host_ns - self.t0_ns) // 1_000_000) & 0xFFFFFFFF

    def _t_ns(self, t_s: float) -> int:
        return self.t0_ns + int(round(t_s * 1e9))

    def disconnected(self, now_ns: int) -> bool:
        return self.scenario.disconnected((now_ns - self.t0_ns) / 1e9)

    # -- output --------------------------------------------------------------------------------------
    def connected(self, now_ns: int) -> None:
        """The line came (back) up: HELLO now, heartbeats from now on."""
        self._next_hello_ns = now_ns
        self._next_hb_ns = now_ns

    def next_due_ns(self) -> int:
        due = [self._t_ns(self._pending_event[0])] if self._pending_event else []
        due += [u.next_ns for u in self._unacked.values()]
        due += [t for t in (self._next_hb_ns, self._next_hello_ns) if t is not None]
        due += [t for t, _, _ in self._ready]
        return min(due) if due else self.t0_ns + 10**12

    def _due(self, now_ns: int) -> list[tuple[int, int, bytes]]:
        """Frames falling due by ``now_ns`` (events, HELLO, heartbeats, retransmissions) in due-time order, each
        given its seq in that order: a late poll (a loaded host) covers several and must not number a heartbeat
        after the samples it went out before."""
        out: list[tuple[int, int, bytes]] = []
        while True:
            due = [(self._t_ns(self._pending_event[0]), 0)] if self._pending_event else []
            due += [(t, k) for k, t in ((1, self._next_hello_ns), (2, self._next_hb_ns)) if t is not None]
            due += [(u.next_ns, 3) for u in self._unacked.values()]
            if not due or min(due)[0] > now_ns:
                return out
            t, kind = min(due)
            if kind == 0:
                _, what, f = self._pending_event
                out.append((t, next(self._order), self._event_frame(what, f, t)))
                self._pending_event = next(self._events, None)
            elif kind == 1:
                out.append((t, next(self._order), self._new(Hello, t, **self._hello)))
                self._next_hello_ns = t + int(HELLO_PERIOD_S * 1e9)
            elif kind == 2:
                out.append((t, next(self._order), self._new(Heartbeat, t, state=self._state)))
                self._next_hb_ns = t + int(HEARTBEAT_PERIOD_S * 1e9)
            else:
                seq, u = min(self._unacked.items(), key=lambda item: item[1].next_ns)
                if u.sent > MAX_RETRANSMITS:
                    del self._unacked[seq]
                    self.unacked_given_up += 1
                    continue
                out.append((t, next(self._order), u.frame))
                u.sent += 1
                self.retransmissions += 1
                u.next_ns += int(RETRANSMIT_S * 1e9)

    def poll(self, now_ns: int) -> bytes:
        """Wire bytes due by ``now_ns``, in device time order."""
        out = self._ready + self._due(now_ns)
        self._ready = []
        out.sort()
        # A 0x00 before every frame as well as after (docs/serial-protocol.md section 2): noise before a
        # frame then ends at that 0x00 instead of gluing onto the frame.
        return self._noise(b"".join(b"\x00" + f for _, _, f in out))

    def _event_frame(self, kind: str, f: dict, t_ns: int) -> bytes:
        if kind == "state":
            self._state = InjectorState(f["state"])
            return self._new(State, t_ns, **f)
        cls = {"sample": Sample, "summary": Summary, "xray": Xray, "fault": Fault}[kind]
        return self._new(cls, t_ns, **f)

    def _new(self, cls: type[Message], t_ns: int, **fields) -> bytes:
        msg = cls(seq=self._seq, device_ms=self.device_ms(t_ns), **fields)
        self._seq = (self._seq + 1) & 0xFFFF
        frame = msg.encode()
        self.sent_by_type[cls.TYPE.name] = self.sent_by_type.get(cls.TYPE.name, 0) + 1
        if self._retransmit and isinstance(msg, (Hello, Summary, Fault)):
            self._unacked[msg.seq] = _Unacked(frame, t_ns + int(RETRANSMIT_S * 1e9))
        return frame

    def _draw_flip(self) -> float:
        return self._rng.expovariate(self._ber) if self._ber > 0 else math.inf

    def _noise(self, data: bytes) -> bytes:
        """Flip bits at the configured rate (exponential gaps between errors, so cost is per error)."""
        nbits = len(data) * 8
        self.bytes_sent += len(data)
        if self._next_flip >= nbits:
            self._next_flip -= nbits
            return data
        buf = bytearray(data)
        pos = self._next_flip
        while pos < nbits:
            i = int(pos)
            buf[i // 8] ^= 1 << (i % 8)
            self.bits_flipped += 1
            pos += 1 + self._draw_flip()
        self._next_flip = pos - nbits
        return bytes(buf)

    # -- input ---------------------------------------------------------------------------------------
    def receive(self, data: bytes, now_ns: int) -> None:
        """Bytes from the appliance: ACK clears a pending retransmission, TIME_REQ is answered."""
        for packet in self._decoder.feed(data):
            try:
                msg = parse(packet)
            except ProtocolError:
                continue
            if isinstance(msg, Ack):
                if self._unacked.pop(msg.acked_seq, None) is not None:
                    self.acks_received += 1
            elif isinstance(msg, TimeReq):
                # What fell due before the request is sent before the answer, with the seqs it had then: a late
                # poll (a loaded host) must not hand the answer a seq below theirs.
                self._ready += self._due(now_ns)
                self._ready.append((now_ns, next(self._order), self._new(TimeResp, now_ns, token=msg.token)))


def parse_sim_url(url: str) -> dict:
    """Options of ``injsim://?scenario=NAME&t0_ns=INT&ber=FLOAT&seed=INT``; ValueError on anything else."""
    from urllib.parse import parse_qs
    parts = urlsplit(url)
    if parts.scheme != "injsim":
        raise ValueError(f"not an injsim:// URL: {url!r}")
    opts: dict = {"scenario": "procedure", "t0_ns": None, "ber": None, "seed": 0}
    for key, values in parse_qs(parts.query, keep_blank_values=True, strict_parsing=False).items():
        if key not in opts:
            raise ValueError(f"injsim URL option {key!r} unknown; use scenario, t0_ns, ber, seed")
        value = values[-1]
        try:
            opts[key] = {"scenario": str, "t0_ns": int, "ber": float, "seed": int}[key](value)
        except ValueError:
            raise ValueError(f"injsim URL option {key}={value!r} is not valid") from None
    if opts["scenario"] not in SCENARIOS:
        raise ValueError(f"unknown scenario {opts['scenario']!r}; choose from {sorted(SCENARIOS)}")
    if opts["ber"] is not None and not 0.0 <= opts["ber"] < 1.0:
        raise ValueError(f"ber must be in [0, 1), got {opts['ber']}")
    return opts
