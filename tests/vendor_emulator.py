"""A power injector written from docs/serial-protocol.md alone, as a device vendor's engineer would.

Nothing here imports firmware_bridge: COBS, CRC, the packet layouts, the timing and the resend rules are
taken from the document (sections 2-7), so a disagreement between the document and the appliance shows up
as a failing test instead of being hidden by shared code. `Emulator` serves one TCP connection (the
appliance or serial-check connects with `socket://127.0.0.1:PORT`) and plays a script in real time;
its knobs break single rules on purpose.
"""
from __future__ import annotations

import socket
import struct
import threading
import time

# section 4: message types and exact payload sizes (FAULT: 3 + text)
HELLO, HEARTBEAT, TIME_RESP, STATE, SAMPLE, SUMMARY, XRAY, FAULT = 0x01, 0x02, 0x03, 0x10, 0x11, 0x12, 0x20, 0x30
ACK, TIME_REQ = 0x80, 0x81
IDLE, ARMED, INJECTING, HOLD, COMPLETE, ABORTED, FAULTED = range(7)
ACKED_TYPES = (HELLO, SUMMARY, FAULT)


def crc16_ccitt_false(data: bytes) -> int:
    """Section 2, the C routine transcribed: poly 0x1021, init 0xFFFF, no reflection, xorout 0."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def cobs_encode(data: bytes) -> bytes:
    """Section 2's `cobs_encode`, line by line (n <= 254, no delimiter)."""
    assert len(data) <= 254
    out = bytearray(len(data) + 1)
    code_at, o, code = 0, 1, 1
    for i, byte in enumerate(data):
        if byte == 0:
            out[code_at] = code
            code_at, o, code = o, o + 1, 1
        else:
            out[o] = byte
            o += 1
            code += 1
            if code == 0xFF and i + 1 < len(data):
                out[code_at] = code
                code_at, o, code = o, o + 1, 1
    out[code_at] = code
    return bytes(out[:o])


def cobs_decode(frame: bytes) -> bytes:
    """Section 2's prose: read a code c, copy c - 1 bytes, add a 0x00 unless c is 0xFF or the frame ends."""
    out, i = bytearray(), 0
    while i < len(frame):
        code = frame[i]
        if code == 0 or i + code > len(frame):
            raise ValueError("bad COBS")
        out += frame[i + 1:i + code]
        i += code
        if code != 0xFF and i < len(frame):
            out.append(0)
    return bytes(out)


def packet(msg_type: int, seq: int, device_ms: int, payload: bytes = b"") -> bytes:
    """Section 3 header, payload, crc little-endian."""
    body = struct.pack("<BBHI", 1, msg_type, seq & 0xFFFF, device_ms & 0xFFFFFFFF) + payload
    return body + struct.pack("<H", crc16_ccitt_false(body))


def frame(pkt: bytes, leading_zero: bool = True) -> bytes:
    """The wire bytes: the recommended 0x00, the COBS encoding, the delimiter."""
    return (b"\x00" if leading_zero else b"") + cobs_encode(pkt) + b"\x00"


def _text16(text: str) -> bytes:
    raw = text.encode()
    assert len(raw) <= 16 and b"\x00" not in raw
    return raw.ljust(16, b"\x00")


def hello_payload(vendor_id=0x5644, product_id=7, model="VENDOR-EMU", serial_no="EMU-0001",
                  fw=(2, 1, 0), capabilities=0b111) -> bytes:
    return struct.pack("<HH16s16sBBHBB", vendor_id, product_id, _text16(model), _text16(serial_no),
                       fw[0], fw[1], fw[2], 1, capabilities)


def heartbeat_payload(state: int) -> bytes:
    return struct.pack("<B", state)


def time_resp_payload(token: int) -> bytes:
    return struct.pack("<I", token)


def state_payload(state: int, phase: int = 0) -> bytes:
    return struct.pack("<BB", state, phase)


def sample_payload(flow: int, volume: int, pressure: int, phase: int) -> bytes:
    return struct.pack("<HIHB", flow, volume, pressure, phase)


def summary_payload(programmed_volume=1000, delivered_volume=1000, programmed_flow=500, peak_flow=500,
                    peak_pressure=900, pressure_limit=2068, duration_ms=2000, rise_ms=300,
                    xray_delay_ms=0) -> bytes:
    return struct.pack("<IIHHHHIHi", programmed_volume, delivered_volume, programmed_flow, peak_flow,
                       peak_pressure, pressure_limit, duration_ms, rise_ms, xray_delay_ms)


def xray_payload(on: bool) -> bytes:
    return struct.pack("<B", 1 if on else 0)


def fault_payload(code: int, severity: int, text: str = "") -> bytes:
    raw = text.encode()
    assert len(raw) <= 64
    return struct.pack("<HB", code, severity) + raw


PAYLOAD_SIZES = {HELLO: 42, HEARTBEAT: 1, TIME_RESP: 4, STATE: 2, SAMPLE: 9, SUMMARY: 26, XRAY: 1}


class HostReader:
    """The device's receiver: frames up to each 0x00, ACK and TIME_REQ kept, anything else ignored."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, int]]:
        """(type, value): (ACK, acked_seq) or (TIME_REQ, token) for each valid host packet."""
        out = []
        for byte in data:
            if byte != 0:
                self._buf.append(byte)
                continue
            raw, self._buf = bytes(self._buf), bytearray()
            if not raw:
                continue  # the empty frame between two delimiters
            try:
                pkt = cobs_decode(raw)
            except ValueError:
                continue
            if len(pkt) < 10 or crc16_ccitt_false(pkt[:-2]) != struct.unpack("<H", pkt[-2:])[0]:
                continue
            version, msg_type = pkt[0], pkt[1]
            payload = pkt[8:-2]
            if version != 1:
                continue
            if msg_type == ACK and len(payload) == 2:
                out.append((ACK, struct.unpack("<H", payload)[0]))
            elif msg_type == TIME_REQ and len(payload) == 4:
                out.append((TIME_REQ, struct.unpack("<I", payload)[0]))
        return out


class _Pending:
    def __init__(self, wire: bytes, seq: int, now: float) -> None:
        self.wire, self.seq, self.sent, self.resends, self.acked = wire, seq, now, 0, False


class Emulator:
    """One injector on one TCP connection, run in real time by a script `script(emulator)`.

    Knobs (the defaults conform): `leading_zero` (section 2's recommended 0x00), `heartbeat_s`,
    `hello_s`, `resend_s`, `max_resends`, `honour_acks` (False: resend the full count, as if every ACK
    were lost), `answer_time_req`, `capabilities`.
    """

    def __init__(self, script, *, leading_zero=True, heartbeat_s=0.5, hello_s=10.0, resend_s=0.5,
                 max_resends=10, honour_acks=True, answer_time_req=True, capabilities=0b111,
                 clock_start_ms=7_000_000, boot_delay_s=0.0, first_seq=0, time_resp_delay_s=0.0,
                 token_xor=0, own_seq_for_acked=False) -> None:
        self.script = script
        self.leading_zero, self.heartbeat_s, self.hello_s = leading_zero, heartbeat_s, hello_s
        self.resend_s, self.max_resends, self.honour_acks = resend_s, max_resends, honour_acks
        self.answer_time_req, self.capabilities = answer_time_req, capabilities
        self.boot_delay_s = boot_delay_s
        self.time_resp_delay_s, self.token_xor = time_resp_delay_s, token_xor
        self._answers: list[tuple[float, int]] = []   # (when, token) of TIME_RESPs due
        self._clock0 = time.monotonic()
        self._clock_start_ms = clock_start_ms
        self.seq = first_seq
        self.last_ms = 0          # device_ms of the newest packet sent
        self._due_samples = None  # during an injection: sends the SAMPLEs due by now (a timer, not the loop)
        self.own_seq_for_acked, self.acked_seq = own_seq_for_acked, 0   # a second counter: a vendor's mistake
        self.state = IDLE
        self.heartbeats_on = False
        self.pending: list[_Pending] = []
        self.received: list[tuple[float, int, int]] = []  # (t, type, value) from the host
        self.sent: list[tuple[float, int, int]] = []  # (t, type, seq) of every new packet
        self.resent: list[tuple[float, int]] = []     # (t, seq) of every resend
        self._reader = HostReader()
        self._conn: socket.socket | None = None
        self._next_hb = self._next_hello = float("inf")
        self.error: BaseException | None = None
        self.finished = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)

    # ---- lifecycle
    def start(self) -> "Emulator":
        self._thread.start()
        return self

    def close(self) -> None:
        self.finished.set()
        self._server.close()
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
        self._thread.join(5)

    def _serve(self) -> None:
        try:
            self._server.settimeout(30)
            conn, _ = self._server.accept()
            conn.settimeout(0.005)
            self._conn = conn
            # pyserial's socket:// open() discards what arrived before it returned (reset_input_buffer):
            # a device that speaks the instant the TCP connection is up loses those bytes at any client.
            time.sleep(0.05)
            if self.boot_delay_s:
                self.sleep(self.boot_delay_s)
            self.script(self)
        except OSError:
            pass  # the other end closed the connection: the session is over
        except BaseException as exc:  # surfaced to the test through .error
            self.error = exc
        finally:
            self.finished.set()

    # ---- the device's clock and wire
    def now_ms(self) -> int:
        return self._clock_start_ms + int((time.monotonic() - self._clock0) * 1000)

    def write(self, data: bytes) -> None:
        self._conn.sendall(data)

    def send(self, msg_type: int, payload: bytes, device_ms: int | None = None, *, seq: int | None = None,
             leading_zero: bool | None = None) -> bytes:
        """A new packet: next seq, `device_ms` now unless given; HELLO/SUMMARY/FAULT wait for their ACK."""
        if seq is None and self.own_seq_for_acked and msg_type in ACKED_TYPES:
            seq, self.acked_seq = self.acked_seq, (self.acked_seq + 1) & 0xFFFF
        elif seq is None:
            seq, self.seq = self.seq, (self.seq + 1) & 0xFFFF
        ms = self.now_ms() if device_ms is None else device_ms
        self.last_ms = ms
        wire = frame(packet(msg_type, seq, ms, payload),
                     self.leading_zero if leading_zero is None else leading_zero)
        self.write(wire)
        now = time.monotonic()
        self.sent.append((now, msg_type, seq))
        if msg_type in ACKED_TYPES:
            self.pending.append(_Pending(wire, seq, now))
        return wire

    def hello(self) -> bytes:
        self._next_hello = time.monotonic() + self.hello_s
        return self.send(HELLO, hello_payload(capabilities=self.capabilities))

    def boot(self, banner: bytes = b"") -> None:
        """Power-up: optional junk, HELLO, then heartbeats and periodic HELLOs run by themselves."""
        if banner:
            self.write(banner)
        self.hello()
        self.start_heartbeats()

    def start_heartbeats(self) -> None:
        self.heartbeats_on = True
        self._next_hb = time.monotonic() + self.heartbeat_s

    def set_state(self, state: int, phase: int = 0) -> None:
        self.state = state
        self.send(STATE, state_payload(state, phase))

    # ---- time passes: answer the host, heartbeats, periodic HELLO, resends
    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            self._service()
            left = end - time.monotonic()
            if left <= 0 or self.finished.is_set():
                return
            time.sleep(min(left, 0.005))

    def _service(self) -> None:
        try:
            data = self._conn.recv(4096)
        except socket.timeout:
            data = b""
        except BlockingIOError:
            data = b""
        if data:
            for kind, value in self._reader.feed(data):
                self.received.append((time.monotonic(), kind, value))
                if kind == ACK and self.honour_acks:
                    for p in self.pending:
                        if p.seq == value:
                            p.acked = True
                elif kind == TIME_REQ and self.answer_time_req and self.capabilities & 0b100:
                    self._answers.append((time.monotonic() + self.time_resp_delay_s, value ^ self.token_xor))
        if self._due_samples is not None:
            # A device samples on a timer: a thread late by more than a period (a loaded machine) must not stamp
            # a heartbeat or answer with "now" ahead of the SAMPLEs due before it, or every one of them is pushed
            # to that stamp and the gap before them reads as a slow sampler.
            self._due_samples()
        now = time.monotonic()
        while self._answers and self._answers[0][0] <= now:
            self.send(TIME_RESP, time_resp_payload(self._answers.pop(0)[1]))
        if self.heartbeats_on and now >= self._next_hb:
            self.send(HEARTBEAT, heartbeat_payload(self.state))
            self._next_hb = now + self.heartbeat_s
        if self.heartbeats_on and now >= self._next_hello:
            self.hello()
        for p in list(self.pending):
            if p.acked or p.resends >= self.max_resends:
                self.pending.remove(p)
            elif now - p.sent >= self.resend_s:
                self.write(p.wire)
                p.sent, p.resends = now, p.resends + 1
                self.resent.append((now, p.seq))

    def wait_acked(self, timeout: float = 3.0) -> None:
        end = time.monotonic() + timeout
        while self.pending and time.monotonic() < end:
            self.sleep(0.01)

    # ---- a whole injection, section 5's typical one
    def injection(self, *, seconds=1.0, sample_s=0.02, flow=500, pressure=900, fault: tuple | None = None,
                  summary_kw: dict | None = None) -> None:
        """armed, injecting phase 1, SAMPLEs every `sample_s`, complete (or FAULT + aborted), SUMMARY."""
        self.set_state(ARMED)
        self.sleep(0.05)
        self.set_state(INJECTING, 1)
        start_ms = self.now_ms()
        t0, k, volume = time.monotonic(), 1, 0

        def send_due_samples() -> None:
            # Sampled on a timer, stamped with the sampling time: a late thread sends late, never off the grid,
            # and sends what is due before anything else (also from _service) so nothing newer goes out ahead.
            nonlocal k, volume
            while time.monotonic() >= t0 + k * sample_s and k * sample_s < seconds:
                volume += flow * sample_s
                # Never before a packet already sent (a heartbeat carries the time it went out).
                stamp = max(start_ms + round(k * sample_s * 1000), self.last_ms)
                self.send(SAMPLE, sample_payload(flow, int(volume), pressure, 1), stamp)
                k += 1

        self._due_samples = send_due_samples
        try:
            while k * sample_s < seconds:
                send_due_samples()
                self.sleep(min(0.005, max(0.0, t0 + k * sample_s - time.monotonic())))
        finally:
            self._due_samples = None
        if fault is not None:
            self.send(FAULT, fault_payload(*fault))
            self.set_state(ABORTED)
        else:
            self.set_state(COMPLETE)
        kw = dict(delivered_volume=int(volume), duration_ms=self.now_ms() - start_ms)
        kw.update(summary_kw or {})
        self.send(SUMMARY, summary_payload(**kw))


def serve(script, **knobs) -> Emulator:
    """An emulator listening on 127.0.0.1:PORT (`.port`), started."""
    return Emulator(script, **knobs).start()
