"""The injector simulator: a scripted device that speaks protocol v1 exactly as firmware should.

``InjectorDevice`` is the device side with no I/O: ``poll(now_ns)`` returns the wire bytes due by then
(scenario events, HEARTBEAT every second, HELLO on connect and every 10 s, unacknowledged HELLO /
SUMMARY / FAULT resent every 500 ms at most 10 times), ``receive(bytes, now_ns)`` takes ACK and
TIME_REQ. Scenario times are seconds from ``t0_ns`` (host monotonic); device_ms is the event's
scheduled time on the device's own clock, which starts at an arbitrary boot value.

``play`` runs it on a pty, a TCP socket (``socket://host:port`` is served) or any pyserial URL that
``open_line`` opens (``cathlab-edge simulate-injector``); ``protocol_injsim`` plays it as a pyserial URL handler.
"""
from __future__ import annotations

import math
import os
import random
import select
import socket
import time
import tty
from dataclasses import dataclass
from itertools import count, pairwise
from typing import Iterator
from urllib.parse import urlsplit

from .framing import Decoder
from .messages import (
    CAP_SAMPLES,
    CAP_TIME_SYNC,
    CAP_XRAY,
    Ack,
    Fault,
    Heartbeat,
    Hello,
    InjectorState,
    Message,
    ProtocolError,
    Sample,
    State,
    Summary,
    TimeReq,
    TimeResp,
    Xray,
    parse,
)
from .scenarios import PROCEDURE, PROCEDURE_PERIOD_S

SAMPLE_PERIOD_S = 0.02    # 50 Hz while injecting
HEARTBEAT_PERIOD_S = 1.0
HELLO_PERIOD_S = 10.0
RETRANSMIT_S = 0.5
ARM_LEAD_S = 0.5          # STATE armed this long before an injection starts
SUMMARY_AFTER_S = 0.05    # SUMMARY this long after the injection ends
MAX_RETRANSMITS = 10
FAULT_PRESSURE_LIMIT = 0x0101


@dataclass(frozen=True)
class SimInjection:
    start_s: float
    volume_ml: float
    flow_ml_s: float
    rise_ms: int = 300
    pressure_limit_kpa: int = 2068   # 300 psi
    hold_at_s: float | None = None   # seconds after start: the operator holds ...
    hold_s: float = 0.0              # ... for this long, then resumes
    abort_at_s: float | None = None  # seconds after start: pressure limit exceeded, injection aborted
    idle_after_s: float = 1.0        # seconds after the end: STATE idle (after the SUMMARY)

    def __post_init__(self) -> None:
        if self.volume_ml <= 0 or self.flow_ml_s <= 0:
            raise ValueError("injection volume and flow must be positive")
        if self.idle_after_s <= SUMMARY_AFTER_S:
            raise ValueError(f"idle_after_s must be over {SUMMARY_AFTER_S} s: the SUMMARY comes before idle")


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    period_s: float                                   # the script repeats with this period
    xray: tuple[tuple[float, float], ...] = ()        # (on_s, off_s)
    injections: tuple[SimInjection, ...] = ()
    faults: tuple[tuple[float, int, int, str], ...] = ()  # (t_s, code, severity, text) outside injections
    disconnects: tuple[tuple[float, float], ...] = ()  # (start_s, end_s): the line is unplugged
    bit_error_rate: float = 0.0                       # default when the caller gives none

    def events(self) -> Iterator[tuple[float, str, dict]]:
        """(t_s, kind, fields) in time order, forever (cycle after cycle)."""
        cycle = _cycle_events(self)
        for k in count():
            base = k * self.period_s
            for t, kind, f in cycle:
                yield base + t, kind, f

    def disconnected(self, t_s: float) -> bool:
        local = t_s % self.period_s if t_s >= 0 else t_s
        return any(a <= local < b for a, b in self.disconnects)


def _pressure(flow_ml_s: float) -> int:
    return int(round(120 + 160 * flow_ml_s))  # a catheter's resistance, roughly linear at these flows


def _injection_events(inj: SimInjection, xray: tuple[tuple[float, float], ...]) -> list[tuple[float, str, dict]]:
    ev: list[tuple[float, str, dict]] = [
        (inj.start_s - ARM_LEAD_S, "state", {"state": InjectorState.ARMED, "phase": 0}),
        (inj.start_s, "state", {"state": InjectorState.INJECTING, "phase": 1})]
    rise_s = inj.rise_ms / 1000
    vol = peak_flow = peak_p = 0.0
    t = 0.0          # injection clock, holds included
    pumping = 0.0    # time actually pumping (for the rise ramp)
    held = aborted = False
    hold_end = None if inj.hold_at_s is None else inj.hold_at_s + inj.hold_s
    while vol < inj.volume_ml:
        t = round(t + SAMPLE_PERIOD_S, 6)
        if inj.abort_at_s is not None and t >= inj.abort_at_s:
            aborted = True
            break
        holding = inj.hold_at_s is not None and inj.hold_at_s <= t < hold_end
        if holding and not held:
            held = True
            ev.append((inj.start_s + t, "state", {"state": InjectorState.HOLD, "phase": 1}))
        if held and not holding and hold_end is not None and t >= hold_end and t - SAMPLE_PERIOD_S < hold_end:
            ev.append((inj.start_s + t, "state", {"state": InjectorState.INJECTING, "phase": 1}))
        flow = 0.0
        if not holding:
            pumping += SAMPLE_PERIOD_S
            flow = inj.flow_ml_s * min(1.0, pumping / rise_s) if rise_s > 0 else inj.flow_ml_s
            vol = min(inj.volume_ml, vol + flow * SAMPLE_PERIOD_S)
        p = _pressure(flow) if flow else 120
        peak_flow, peak_p = max(peak_flow, flow), max(peak_p, p)
        ev.append((inj.start_s + t, "sample", {"flow": int(round(flow * 100)), "volume": int(round(vol * 100)),
                                                "pressure": p, "phase": 1}))
    end = inj.start_s + t
    if aborted:
        ev.append((end, "fault", {"code": FAULT_PRESSURE_LIMIT, "severity": 2,
                                  "text": f"pressure limit {inj.pressure_limit_kpa} kPa exceeded"}))
        ev.append((end + 0.001, "state", {"state": InjectorState.ABORTED, "phase": 0}))
    else:
        ev.append((end, "state", {"state": InjectorState.COMPLETE, "phase": 0}))
    # The X-ray exposure overlapping this injection (the one starting nearest to it).
    on = sorted((a for a, b in xray if a <= end and b >= inj.start_s), key=lambda a: abs(a - inj.start_s))
    ev.append((end + SUMMARY_AFTER_S, "summary", {
        "programmed_volume": int(round(inj.volume_ml * 100)), "delivered_volume": int(round(vol * 100)),
        "programmed_flow": int(round(inj.flow_ml_s * 100)), "peak_flow": int(round(peak_flow * 100)),
        "peak_pressure": int(peak_p), "pressure_limit": inj.pressure_limit_kpa,
        "duration_ms": int(round(t * 1000)), "rise_ms": inj.rise_ms,
        "xray_delay_ms": int(round((on[0] - inj.start_s) * 1000)) if on else 0}))
    ev.append((end + inj.idle_after_s, "state", {"state": InjectorState.IDLE, "phase": 0}))
    return ev  # first ARMED, last IDLE: _cycle_events relies on it


def _cycle_events(sc: Scenario) -> list[tuple[float, str, dict]]:
    ev: list[tuple[float, str, dict]] = []
    for on, off in sc.xray:
        ev += [(on, "xray", {"on": 1}), (off, "xray", {"on": 0})]
    spans = sorted((_injection_events(inj, sc.xray) for inj in sc.injections), key=lambda e: e[0][0])
    for before, after in pairwise(spans):
        # Interleaved states would put SAMPLEs under STATE idle; back to back is the closest allowed.
        if after[0][0] <= before[-1][0]:
            raise ValueError(f"scenario {sc.name}: an injection arms at {after[0][0]:.2f} s, before the one "
                             f"before it is back to idle at {before[-1][0]:.2f} s")
    for span in spans:
        ev += span
    for t, code, sev, text in sc.faults:
        ev.append((t, "fault", {"code": code, "severity": sev, "text": text}))
    ev.sort(key=lambda e: e[0])
    if ev and (ev[0][0] < 0 or ev[-1][0] >= sc.period_s):
        raise ValueError(f"scenario {sc.name}: events must lie within [0, period_s)")
    return ev


def _procedure() -> Scenario:
    return Scenario(
        "procedure", "the shared DVT procedure timeline (firmware_bridge.scenarios.PROCEDURE), repeating",
        PROCEDURE_PERIOD_S,
        xray=tuple((r.xray_on_s, r.xray_off_s) for r in PROCEDURE),
        injections=tuple(SimInjection(r.inject_start_s, r.volume_ml, r.flow_ml_s)
                         for r in PROCEDURE if r.inject_start_s is not None))


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    _procedure(),
    Scenario("nominal", "one iliofemoral venogram: X-ray on, 10 ml at 5 ml/s, X-ray off; every 12 s",
             12.0, xray=((1.0, 7.0),), injections=(SimInjection(2.0, 10.0, 5.0),)),
    Scenario("repeated", "three short injections in one run, every 20 s", 20.0, xray=((1.0, 15.0),),
             injections=(SimInjection(2.0, 5.0, 5.0), SimInjection(6.0, 5.0, 5.0), SimInjection(10.0, 8.0, 4.0))),
    Scenario("hold-resume", "a 10 ml injection held for 1.5 s after 1 s, then resumed; every 15 s", 15.0,
             xray=((1.0, 9.0),), injections=(SimInjection(2.0, 10.0, 5.0, hold_at_s=1.0, hold_s=1.5),)),
    Scenario("faults", "an injection aborted by the pressure limit, then an informational and a warning "
             "fault; every 15 s", 15.0, xray=((1.0, 6.0),),
             injections=(SimInjection(2.0, 10.0, 5.0, abort_at_s=0.8),),
             faults=((8.0, 0x0201, 0, "syringe heater ready"), (10.0, 0x0302, 1, "air detector check due"))),
    Scenario("noisy", "the nominal venogram on a line with bit errors (default rate 1e-4)", 12.0,
             xray=((1.0, 7.0),), injections=(SimInjection(2.0, 10.0, 5.0),), bit_error_rate=1e-4),
    Scenario("disconnects", "the nominal venogram; the line is unplugged 4.1-6.5 s of every 15 s, as the "
             "injection ends, so its SUMMARY is only delivered by retransmission", 15.0, xray=((1.0, 7.0),),
             injections=(SimInjection(2.0, 10.0, 5.0),), disconnects=((4.1, 6.5),)),
    # The busiest the line ever is, for soak and load tests (volumes are not clinical). 296 ml ends the
    # injection at 59.86 s; idle 0.1 s later lets the next one arm at 60 s: 0.66 s without SAMPLE a minute.
    Scenario("continuous", "back-to-back 296 ml injections at 5 ml/s under X-ray, one a minute: SAMPLE at "
             "50 Hz all the time but for a 0.66 s changeover; for soak and load tests", 60.0, xray=((0.2, 59.9),),
             injections=(SimInjection(0.5, 296.0, 5.0, idle_after_s=0.1),)),
)}

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
        self._replies: list[tuple[int, bytes]] = []
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
        due += [t for t, _ in self._replies]
        return min(due) if due else self.t0_ns + 10**12

    def poll(self, now_ns: int) -> bytes:
        """Wire bytes due by ``now_ns``, in device time order."""
        out: list[tuple[int, int, bytes]] = []  # (due ns, order, frame)
        order = count()
        for t, frame in self._replies:
            out.append((t, next(order), frame))
        self._replies = []
        while self._pending_event and self._t_ns(self._pending_event[0]) <= now_ns:
            t_s, kind, f = self._pending_event
            t = self._t_ns(t_s)
            out.append((t, next(order), self._event_frame(kind, f, t)))
            self._pending_event = next(self._events, None)
        while self._next_hello_ns is not None and self._next_hello_ns <= now_ns:
            t = self._next_hello_ns
            out.append((t, next(order), self._new(Hello, t, **self._hello)))
            self._next_hello_ns = t + int(HELLO_PERIOD_S * 1e9)
        while self._next_hb_ns is not None and self._next_hb_ns <= now_ns:
            t = self._next_hb_ns
            out.append((t, next(order), self._new(Heartbeat, t, state=self._state)))
            self._next_hb_ns = t + int(HEARTBEAT_PERIOD_S * 1e9)
        for seq, u in list(self._unacked.items()):
            while u.next_ns <= now_ns:
                if u.sent > MAX_RETRANSMITS:
                    del self._unacked[seq]
                    self.unacked_given_up += 1
                    break
                out.append((u.next_ns, next(order), u.frame))
                u.sent += 1
                self.retransmissions += 1
                u.next_ns += int(RETRANSMIT_S * 1e9)
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
                self._replies.append((now_ns, self._new(TimeResp, now_ns, token=msg.token)))


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


# -- command line body: cathlab-edge simulate-injector ------------------------------------------------

class _PtyLine:
    """The device end of a new pty pair; the appliance opens ``path``."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line discipline: a clean 8-bit line
        self.path = os.ttyname(slave)
        self._slave = slave  # keep it open so the pair survives the appliance closing its end
        os.set_blocking(self.master, False)

    def write(self, data: bytes) -> None:
        try:
            os.write(self.master, data)
        except BlockingIOError:
            pass  # nobody reads: a real UART drops bytes the same way

    def read(self) -> bytes:
        try:
            return os.read(self.master, 4096)
        except (BlockingIOError, OSError):
            return b""

    def fileno(self) -> int:
        return self.master

    def close(self) -> None:
        os.close(self.master)
        os.close(self._slave)


class _SocketLine:
    """A TCP server for ``socket://host:port``: one appliance connection at a time."""

    def __init__(self, host: str, port: int) -> None:
        self._srv = socket.create_server((host, port))
        self._srv.setblocking(False)
        self.path = f"socket://{host}:{self._srv.getsockname()[1]}"
        self._conn: socket.socket | None = None

    def accept(self) -> bool:
        if self._conn is not None:
            return False
        try:
            self._conn, _ = self._srv.accept()
        except BlockingIOError:
            return False
        self._conn.setblocking(False)
        return True

    def drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def write(self, data: bytes) -> None:
        if self._conn is None:
            return
        try:
            self._conn.sendall(data)
        except BlockingIOError:
            pass
        except OSError:
            self.drop()

    def read(self) -> bytes:
        if self._conn is None:
            return b""
        try:
            data = self._conn.recv(4096)
        except BlockingIOError:
            return b""
        except OSError:
            data = b""
        if not data:
            self.drop()
        return data

    def fileno(self) -> int:
        return self._conn.fileno() if self._conn is not None else self._srv.fileno()

    def close(self) -> None:
        self.drop()
        self._srv.close()


class _SerialLine:
    """Any pyserial URL the device end can open (a real cable's tty, rfc2217://, an existing pty)."""

    def __init__(self, url: str) -> None:
        import serial
        self._port = serial.serial_for_url(url, baudrate=115200, timeout=0, write_timeout=0.5)
        self.path = url

    def write(self, data: bytes) -> None:
        import serial
        try:
            self._port.write(data)
        except serial.SerialTimeoutException:
            pass

    def read(self) -> bytes:
        return self._port.read(self._port.in_waiting or 1)

    def fileno(self) -> int | None:
        return getattr(self._port, "fd", None)

    def close(self) -> None:
        self._port.close()


def open_line(port: str):
    """The device end of ``port``: "pty" creates a pty pair (its ``path`` is the appliance's end),
    ``socket://host:port`` serves TCP, anything else is a device path or pyserial URL. Raises OSError,
    ValueError or pyserial's SerialException when the port cannot be used."""
    if port == "pty":
        return _PtyLine()
    if port.startswith("socket://"):
        parts = urlsplit(port)
        return _SocketLine(parts.hostname or "127.0.0.1", parts.port or 0)
    return _SerialLine(port)


def play(line, dev: InjectorDevice, start_ns: int, end_ns: int | None = None) -> None:
    """Play ``dev`` on ``line`` (from ``open_line``) from ``start_ns`` until ``end_ns`` (None: until
    interrupted), then close the line. A socket line connects the device when a client connects."""
    is_socket = isinstance(line, _SocketLine)
    if not is_socket:
        dev.connected(start_ns)
    was_unplugged = False
    try:
        while end_ns is None or time.monotonic_ns() < end_ns:
            now = time.monotonic_ns()
            unplugged = dev.disconnected(now)
            if is_socket:
                if unplugged:
                    line.drop()
                elif line.accept():
                    dev.connected(now)
            elif was_unplugged and not unplugged:
                dev.poll(now)       # what was due while unplugged is lost on the floor
                dev.connected(now)  # a pty or cable line back: HELLO again
            was_unplugged = unplugged
            data = dev.poll(now)
            if not unplugged:
                line.write(data)
                incoming = line.read()
                if incoming:
                    dev.receive(incoming, time.monotonic_ns())
            wait = min(max(dev.next_due_ns() - time.monotonic_ns(), 0) / 1e9, 0.05)
            fd = line.fileno()
            if fd is not None and not unplugged:
                select.select([fd], [], [], wait)
            else:
                time.sleep(wait)
    finally:
        line.close()
