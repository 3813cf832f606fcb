"""Framing: a byte stream in, CRC-verified packets out (COBS frames between 0x00 delimiters).

``Decoder`` wraps the compiled ``ext._cobs.CobsDecoder``; ``RefDecoder`` is the pure-Python
reference with the same behaviour, kept for tests and as executable documentation. Both recover an intact
version-1 packet from the tail of a failed frame by the lengths of ``messages.V1_PACKET_LENGTHS``; one
packet's encoding is ``firmware_bridge.wire``.
"""
from __future__ import annotations

from ext import _cobs

from .messages import V1_PACKET_LENGTHS
from .wire import MAX_FRAME, MAX_PACKET, MIN_PACKET, cobs_decode, crc16_ref


class RefDecoder:
    """Pure-Python reference of ``ext._cobs.CobsDecoder``: same packets, same counters."""

    def __init__(self, recover: bool = True) -> None:
        self._lengths = V1_PACKET_LENGTHS if recover else None
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
        self._k = _cobs.CobsDecoder(V1_PACKET_LENGTHS if recover else None)

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
