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


def v1_packet_lengths() -> bytes:
    """The decoders' ``recover_lengths`` table: for each type code, the smallest then the largest packet
    length (header + payload, crc excluded) a version-1 packet of that type has (docs/serial-protocol.md
    section 4); unknown types get (255, 0) and are never recovered from the tail of a failed frame."""
    global _V1_LENGTHS
    if _V1_LENGTHS is None:
        import struct

        from .messages import _FORMATS, FAULT_TEXT_MAX, HEADER, MESSAGE_CLASSES  # they import this module
        lo, hi = bytearray([255] * 256), bytearray(256)
        for type_code, cls in MESSAGE_CLASSES.items():
            fixed = variable = 0
            for kind in cls.KINDS.values():
                if kind in _FORMATS:
                    fixed += struct.calcsize("<" + _FORMATS[kind][0])
                elif kind.startswith("char["):
                    fixed += int(kind[5:-1])
                else:  # "text": the rest of the packet
                    variable += FAULT_TEXT_MAX
            lo[type_code], hi[type_code] = HEADER.size + fixed, HEADER.size + fixed + variable
        _V1_LENGTHS = bytes(lo + hi)
    return _V1_LENGTHS


_V1_LENGTHS: bytes | None = None


class RefDecoder:
    """Pure-Python reference of ``ext._cobs.CobsDecoder``: same packets, same counters."""

    def __init__(self, recover: bool = True) -> None:
        self._lengths = v1_packet_lengths() if recover else None
        self._version = 1
        self._buf = bytearray()
        self._dropped = 0
        self.frames = self.crc_errors = self.framing_errors = self.oversized = self.bytes_discarded = 0
        self.recovered = 0

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
                self._buf.append(b)
                if len(self._buf) > MAX_FRAME:  # keep the frame's last MAX_FRAME bytes
                    del self._buf[0]
                    self._dropped += 1
                continue
            frame, dropped = bytes(self._buf), self._dropped
            self._buf.clear()
            self._dropped = 0
            if frame:
                packet = self._end_frame(frame, dropped)
                if packet is not None:
                    packets.append(packet)
        return packets

    def _end_frame(self, frame: bytes, dropped: int) -> bytes | None:
        if dropped:
            self.framing_errors += 1
            self.oversized += 1
            first = 0  # only the frame's tail is held: every start is a candidate
        else:
            try:
                body = cobs_decode(frame)
            except ValueError:
                body = b""
            if len(body) < MIN_PACKET:
                self.framing_errors += 1
            elif crc16_ref(body[:-2]) != int.from_bytes(body[-2:], "little"):
                self.crc_errors += 1
            else:
                self.frames += 1
                return body[:-2]
            first = 1
        found = self._recover(frame, first) if self._lengths is not None else None
        if found is None:
            self.bytes_discarded += len(frame) + dropped
            return None
        start, body = found
        self.bytes_discarded += start + dropped
        self.recovered += 1
        self.frames += 1
        return body[:-2]

    def _recover(self, frame: bytes, first: int) -> tuple[int, bytes] | None:
        """(start, decoded body) of the longest tail ``frame[start:]`` that is a complete COBS encoding of a
        version-1 packet whose length fits its type and whose crc is right; None if there is none."""
        n = len(frame)
        for start in range(first, n - MIN_PACKET):
            # Version and a known type are non-zero bytes: they sit in the first COBS block (code >= 3).
            if frame[start] < 3 or frame[start + 1] != self._version or self._lengths[256 + frame[start + 2]] == 0:
                continue
            try:
                body = cobs_decode(frame[start:])
            except ValueError:
                continue
            if not MIN_PACKET <= len(body) <= MAX_PACKET or body[0] != self._version:
                continue
            if not self._lengths[body[1]] <= len(body) - 2 <= self._lengths[256 + body[1]]:
                continue
            if crc16_ref(body[:-2]) == int.from_bytes(body[-2:], "little"):
                return start, body
        return None


class Decoder:
    """Bytes in, CRC-verified packets out (compiled kernel). Never raises on any input, holds at most
    MAX_FRAME bytes, resyncs at the next 0x00 after damage, and recovers an intact version-1 packet from
    the tail of a failed frame (``recover=False``: the plain decoder, which loses it)."""

    def __init__(self, recover: bool = True) -> None:
        self._k = _cobs.CobsDecoder(v1_packet_lengths() if recover else None)

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

    @property
    def recovered(self) -> int:
        return self._k.recovered

    def counters(self) -> dict[str, int]:
        return {"frames": self.frames, "crc_errors": self.crc_errors, "framing_errors": self.framing_errors,
                "oversized": self.oversized, "bytes_discarded": self.bytes_discarded, "recovered": self.recovered}
