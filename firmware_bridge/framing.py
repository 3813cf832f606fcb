"""Framing: packet <-> wire bytes (CRC-16/CCITT-FALSE, COBS, 0x00 delimiter).

``Decoder`` wraps the compiled ``ext._cobs.CobsDecoder``; ``RefDecoder`` is the pure-Python
reference with the same behaviour, kept for tests and as executable documentation.
A packet here is ``header | payload`` (the crc is added by ``encode_frame`` and checked and stripped
by the decoders).
"""
from __future__ import annotations

from ext import _cobs

MAX_PACKET = 254  # header + payload + crc, before COBS
MAX_FRAME = 255   # COBS adds one byte to a packet of at most 254 bytes
MIN_PACKET = 10   # header (8) + crc (2)
DELIMITER = b"\x00"

assert (_cobs.MAX_PACKET, _cobs.MAX_FRAME, _cobs.MIN_PACKET) == (MAX_PACKET, MAX_FRAME, MIN_PACKET)


def crc16_ref(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, not reflected, xorout 0 ("123456789" -> 0x29B1)."""
    crc = 0xFFFF
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE through the compiled kernel (reference: ``crc16_ref``)."""
    return _cobs.crc16(bytes(data))


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode ``data`` (no trailing delimiter). A full 254-byte block at the end gets no extra code
    byte, so a 254-byte packet encodes to 255 bytes."""
    out = bytearray(b"\x00")
    code_at, code = 0, 1
    last = len(data) - 1
    for i, b in enumerate(data):
        if b == 0:
            out[code_at] = code
            code_at, code = len(out), 1
            out.append(0)
        else:
            out.append(b)
            code += 1
            if code == 0xFF and i < last:
                out[code_at] = code
                code_at, code = len(out), 1
                out.append(0)
    out[code_at] = code
    return bytes(out)


def cobs_decode(frame: bytes) -> bytes:
    """Decode one COBS frame (no delimiter). Raises ValueError on a zero byte or a code past the end."""
    out = bytearray()
    i, n = 0, len(frame)
    while i < n:
        code = frame[i]
        if code == 0:
            raise ValueError("COBS frame contains a zero byte")
        i += 1
        if i + code - 1 > n:
            raise ValueError(f"COBS code {code} at offset {i - 1} runs past the frame end ({n} bytes)")
        block = frame[i:i + code - 1]
        if 0 in block:
            raise ValueError("COBS frame contains a zero byte")
        out += block
        i += code - 1
        if code < 0xFF and i < n:
            out.append(0)
    return bytes(out)


def encode_frame(packet: bytes) -> bytes:
    """Wire bytes of one packet (header + payload): append crc (LE), COBS-encode, add the delimiter."""
    if len(packet) + 2 > MAX_PACKET:
        raise ValueError(f"packet of {len(packet)} bytes + crc exceeds {MAX_PACKET} bytes")
    if len(packet) + 2 < MIN_PACKET:
        raise ValueError(f"packet of {len(packet)} bytes is shorter than the 8-byte header")
    body = bytes(packet) + crc16(packet).to_bytes(2, "little")
    return cobs_encode(body) + DELIMITER


class RefDecoder:
    """Pure-Python reference of ``ext._cobs.CobsDecoder``: same packets, same counters."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._dropped = 0
        self.frames = self.crc_errors = self.framing_errors = self.oversized = self.bytes_discarded = 0

    @property
    def pending(self) -> int:
        return len(self._buf)

    def reset(self) -> None:
        self.bytes_discarded += len(self._buf) + self._dropped
        self._buf.clear()
        self._dropped = 0

    def feed(self, data: bytes) -> list[bytes]:
        packets = []
        for b in bytes(data):
            if b != 0:
                if len(self._buf) < MAX_FRAME:
                    self._buf.append(b)
                else:
                    self._dropped += 1
                continue
            frame, dropped = bytes(self._buf), self._dropped
            self._buf.clear()
            self._dropped = 0
            if not frame:
                continue
            if dropped:
                self.framing_errors += 1
                self.oversized += 1
                self.bytes_discarded += len(frame) + dropped
                continue
            try:
                body = cobs_decode(frame)
            except ValueError:
                body = b""
            if len(body) < MIN_PACKET:
                self.framing_errors += 1
                self.bytes_discarded += len(frame)
                continue
            if crc16_ref(body[:-2]) != int.from_bytes(body[-2:], "little"):
                self.crc_errors += 1
                self.bytes_discarded += len(frame)
                continue
            self.frames += 1
            packets.append(body[:-2])
        return packets


class Decoder:
    """Bytes in, CRC-verified packets out (compiled kernel). Never raises on any input, holds at most
    MAX_FRAME bytes, and resyncs at the next 0x00 after damage."""

    def __init__(self) -> None:
        self._k = _cobs.CobsDecoder()

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"Decoder.feed takes bytes, not {type(data).__name__}")
        if isinstance(data, memoryview) and not data.c_contiguous:
            data = bytes(data)
        return self._k.feed(data)

    def reset(self) -> None:
        self._k.reset()

    @property
    def pending(self) -> int:
        return self._k.pending

    @property
    def frames(self) -> int:
        return self._k.frames

    @property
    def crc_errors(self) -> int:
        return self._k.crc_errors

    @property
    def framing_errors(self) -> int:
        return self._k.framing_errors

    @property
    def oversized(self) -> int:
        return self._k.oversized

    @property
    def bytes_discarded(self) -> int:
        return self._k.bytes_discarded

    def counters(self) -> dict[str, int]:
        return {"frames": self.frames, "crc_errors": self.crc_errors, "framing_errors": self.framing_errors,
                "oversized": self.oversized, "bytes_discarded": self.bytes_discarded}
