"""One packet on the wire: CRC-16/CCITT-FALSE, COBS, the 0x00 delimiter and the frame limits.

A packet here is ``header | payload``: ``encode_frame`` adds the crc, COBS-encodes and delimits it; the stream
decoders of ``firmware_bridge.framing`` check and strip it. Below the message table (``messages`` encodes
through it) and below the decoders (which recover packets by the message table's lengths).
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
