# cython: language_level=3
"""COBS frame decoder with CRC-16/CCITT-FALSE check: the per-byte hot path of the serial bridge.

Pure-Python reference with the same behaviour: ``firmware_bridge.framing.RefDecoder`` (and
``firmware_bridge.framing.crc16_ref``); tests run both on the same inputs.

Wire rules (docs/serial-protocol.md): a frame is the COBS encoding of ``header | payload | crc16-LE``
followed by one 0x00. The decoder never holds more than MAX_FRAME bytes: the tail of an oversized
frame is discarded and counted, and the next 0x00 starts a fresh frame (resync).
"""
cimport cython
from libc.string cimport memchr, memcpy

cdef enum:
    _MAX_FRAME = 255   # COBS of a 254-byte packet: one overhead byte
    _MAX_PACKET = 254  # header + payload + crc, before COBS
    _MIN_PACKET = 10   # 8-byte header + 2-byte crc, empty payload

MAX_FRAME = _MAX_FRAME
MAX_PACKET = _MAX_PACKET
MIN_PACKET = _MIN_PACKET

cdef unsigned short _CRC_TABLE[256]


cdef void _init_table() noexcept:
    cdef unsigned int i, j, c
    for i in range(256):
        c = i << 8
        for j in range(8):
            c = ((c << 1) ^ 0x1021) if (c & 0x8000) else (c << 1)
        _CRC_TABLE[i] = c & 0xFFFF


_init_table()


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline unsigned short _crc16(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    cdef unsigned short crc = 0xFFFF
    cdef Py_ssize_t i
    for i in range(n):
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[((crc >> 8) ^ p[i]) & 0xFF]
    return crc


def crc16(const unsigned char[::1] data not None) -> int:
    """CRC-16/CCITT-FALSE of ``data`` (reference: ``firmware_bridge.framing.crc16_ref``)."""
    if data.shape[0] == 0:
        return 0xFFFF
    return _crc16(&data[0], data.shape[0])


@cython.boundscheck(False)
@cython.wraparound(False)
cdef Py_ssize_t _cobs_decode(const unsigned char* f, Py_ssize_t n, unsigned char* out) noexcept nogil:
    """Decode one COBS frame (no zeros inside); returns the decoded length or -1 if malformed."""
    cdef Py_ssize_t i = 0, o = 0
    cdef unsigned int code
    while i < n:
        code = f[i]
        i += 1
        if i + <Py_ssize_t>code - 1 > n:
            return -1  # the code byte points past the end of the frame
        memcpy(out + o, f + i, code - 1)
        o += code - 1
        i += code - 1
        if code < 0xFF and i < n:
            out[o] = 0
            o += 1
    return o


cdef class CobsDecoder:
    """Streaming decoder: ``feed(bytes) -> list[bytes]`` of CRC-verified packets (header + payload).

    Counters: ``frames`` (packets returned), ``crc_errors``, ``framing_errors`` (bad COBS, shorter than
    a header + crc, or oversized), ``oversized`` (subset of framing errors), ``bytes_discarded`` (wire
    bytes of every rejected frame, delimiter excluded). Empty frames (0x00 0x00) are padding: ignored.
    """
    cdef unsigned char buf[_MAX_FRAME]
    cdef unsigned char out[_MAX_FRAME]
    cdef Py_ssize_t n          # bytes held for the current frame
    cdef Py_ssize_t dropped    # bytes of the current frame beyond MAX_FRAME (not held)
    cdef public unsigned long long frames, crc_errors, framing_errors, oversized, bytes_discarded

    def __cinit__(self):
        self.n = 0
        self.dropped = 0
        self.frames = self.crc_errors = self.framing_errors = self.oversized = self.bytes_discarded = 0

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame held (never more than MAX_FRAME)."""
        return self.n

    def reset(self) -> None:
        """Forget a partial frame (after the port closed); its bytes count as discarded."""
        self.bytes_discarded += self.n + self.dropped
        self.n = 0
        self.dropped = 0

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def feed(self, const unsigned char[::1] data not None) -> list:
        cdef list packets = []
        cdef Py_ssize_t total = data.shape[0], pos = 0, run, room, m
        cdef const unsigned char* base
        cdef const unsigned char* z
        if total == 0:
            return packets
        base = &data[0]
        while pos < total:
            # Copy up to the next delimiter without the GIL; keep at most MAX_FRAME bytes.
            with nogil:
                z = <const unsigned char*>memchr(base + pos, 0, total - pos)
                run = (z - (base + pos)) if z != NULL else (total - pos)
                room = _MAX_FRAME - self.n
                if run <= room:
                    memcpy(self.buf + self.n, base + pos, run)
                    self.n += run
                else:
                    memcpy(self.buf + self.n, base + pos, room)
                    self.n = _MAX_FRAME
                    self.dropped += run - room
                pos += run
            if z == NULL:
                break
            pos += 1  # the delimiter
            m = self._end_frame()
            if m > 0:
                packets.append(self.out[:m])
        return packets

    cdef Py_ssize_t _end_frame(self) noexcept:
        """Judge the frame held in buf; returns the packet length in out (crc stripped) or 0."""
        cdef Py_ssize_t n = self.n, dropped = self.dropped, m
        cdef unsigned short crc
        self.n = 0
        self.dropped = 0
        if n == 0:
            return 0  # empty frame: padding between packets
        if dropped > 0:
            self.framing_errors += 1
            self.oversized += 1
            self.bytes_discarded += n + dropped
            return 0
        m = _cobs_decode(self.buf, n, self.out)
        if m < _MIN_PACKET:
            self.framing_errors += 1
            self.bytes_discarded += n
            return 0
        crc = _crc16(self.out, m - 2)
        if crc != (self.out[m - 2] | (self.out[m - 1] << 8)):
            self.crc_errors += 1
            self.bytes_discarded += n
            return 0
        self.frames += 1
        return m - 2
