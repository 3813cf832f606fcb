# cython: language_level=3
"""COBS frame decoder with CRC-16/CCITT-FALSE check: the per-byte hot path of the serial bridge.

Pure-Python reference with the same behaviour: ``firmware_bridge.framing.RefDecoder`` (and
``firmware_bridge.wire.crc16_ref``); tests run both on the same inputs.

Wire rules (docs/serial-protocol.md): a frame is the COBS encoding of ``header | payload | crc16-LE``
followed by one 0x00. The decoder never holds more than MAX_FRAME bytes: of an oversized frame it keeps
the last MAX_FRAME (the older bytes are discarded and counted). A frame that fails (bad COBS, too short,
crc, oversized) may still end with an intact packet whose start was glued to line noise (a boot banner,
a lost delimiter, a frame cut short): the decoder then recovers the longest tail of the frame that is a
complete COBS encoding ending at the delimiter, of a version-1 packet whose type and length agree with the
``recover_lengths`` table, with a valid crc.
"""
cimport cython
from libc.string cimport memchr, memcpy, memmove

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
    """CRC-16/CCITT-FALSE of ``data`` (reference: ``firmware_bridge.wire.crc16_ref``)."""
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

    ``recover_lengths``: 512 bytes, the smallest then the largest acceptable packet length (header +
    payload, crc excluded) for each type code 0-255 of version ``recover_version`` (0, 0: never
    recovered; version and type must be non-zero, as in v1). ``None`` turns recovery off. Only
    recovered tails are held to the table; a whole frame is returned whatever its type (the link counts
    unknown types and versions).

    Counters: ``frames`` (packets returned, recovered ones included), ``recovered`` (packets taken from
    the tail of a failed frame), ``crc_errors``, ``framing_errors`` (bad COBS, shorter than a header +
    crc, or oversized), ``oversized`` (subset of framing errors), ``bytes_discarded`` (wire bytes of every
    rejected frame, delimiter excluded; of a frame with a recovered tail, the bytes before the tail).
    Each failed frame counts once as a crc or framing error, whether or not a tail was recovered.
    Empty frames (0x00 0x00) are padding: ignored.
    """
    cdef unsigned char buf[_MAX_FRAME]
    cdef unsigned char out[_MAX_FRAME]
    cdef unsigned char reach[_MAX_FRAME + 1]
    cdef unsigned char min_len[256]
    cdef unsigned char max_len[256]
    cdef bint recover
    cdef int recover_version
    cdef Py_ssize_t n          # bytes held for the current frame: its last MAX_FRAME
    cdef Py_ssize_t dropped    # older bytes of the current frame pushed out of buf
    cdef Py_ssize_t _tail_start  # where the last recovered tail began in buf
    cdef public unsigned long long frames, crc_errors, framing_errors, oversized, bytes_discarded, recovered

    def __cinit__(self, recover_lengths=None, int recover_version=1):
        cdef const unsigned char[::1] table
        cdef int t
        self.n = 0
        self.dropped = 0
        self.frames = self.crc_errors = self.framing_errors = self.oversized = self.bytes_discarded = 0
        self.recovered = 0
        self.recover = recover_lengths is not None
        self.recover_version = recover_version
        for t in range(256):
            self.min_len[t] = 255
            self.max_len[t] = 0
        if self.recover:
            table = recover_lengths
            if table.shape[0] != 512:
                raise ValueError("recover_lengths must be 512 bytes: 256 minimum then 256 maximum lengths")
            for t in range(256):
                self.min_len[t] = table[t]
                self.max_len[t] = table[256 + t]

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
        cdef Py_ssize_t total = data.shape[0], pos = 0, run, room, shift, m
        cdef const unsigned char* base
        cdef const unsigned char* z
        if total == 0:
            return packets
        base = &data[0]
        while pos < total:
            # Copy up to the next delimiter without the GIL; keep the last MAX_FRAME bytes of the frame.
            with nogil:
                z = <const unsigned char*>memchr(base + pos, 0, total - pos)
                run = (z - (base + pos)) if z != NULL else (total - pos)
                room = _MAX_FRAME - self.n
                if run <= room:
                    memcpy(self.buf + self.n, base + pos, run)
                    self.n += run
                elif run >= _MAX_FRAME:
                    memcpy(self.buf, base + pos + run - _MAX_FRAME, _MAX_FRAME)
                    self.dropped += self.n + run - _MAX_FRAME
                    self.n = _MAX_FRAME
                else:
                    shift = self.n + run - _MAX_FRAME
                    memmove(self.buf, self.buf + shift, self.n - shift)
                    memcpy(self.buf + self.n - shift, base + pos, run)
                    self.dropped += shift
                    self.n = _MAX_FRAME
                pos += run
            if z == NULL:
                break
            pos += 1  # the delimiter
            m = self._end_frame()
            if m > 0:
                packets.append(self.out[:m])
        return packets

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef Py_ssize_t _end_frame(self) noexcept:
        """Judge the frame held in buf; returns the packet length in out (crc stripped) or 0."""
        cdef Py_ssize_t n = self.n, dropped = self.dropped, m, start
        self.n = 0
        self.dropped = 0
        if n == 0:
            return 0  # empty frame: padding between packets
        if dropped > 0:
            self.framing_errors += 1
            self.oversized += 1
            start = 0  # buf holds only the frame's tail: every start is a candidate
        else:
            m = _cobs_decode(self.buf, n, self.out)
            if m < _MIN_PACKET:
                self.framing_errors += 1
            elif _crc16(self.out, m - 2) != (self.out[m - 2] | (self.out[m - 1] << 8)):
                self.crc_errors += 1
            else:
                self.frames += 1
                return m - 2
            start = 1
        m = self._recover(n, start) if self.recover else -1
        if m < 0:
            self.bytes_discarded += n + dropped
            return 0
        self.bytes_discarded += self._tail_start + dropped
        self.recovered += 1
        self.frames += 1
        return m - 2

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef Py_ssize_t _recover(self, Py_ssize_t n, Py_ssize_t first) noexcept:
        """Decode into out the longest acceptable tail buf[s:n], s >= first; its decoded length or -1."""
        cdef Py_ssize_t i, s, m, code
        # reach[i]: the COBS code chain starting at i ends exactly at the delimiter.
        self.reach[n] = 1
        i = n - 1
        while i >= first:
            code = self.buf[i]
            self.reach[i] = 1 if (i + code <= n and self.reach[i + code]) else 0
            i -= 1
        for s in range(first, n - _MIN_PACKET):  # a packet of MIN_PACKET bytes encodes to MIN_PACKET + 1
            # Version and a known type are non-zero bytes: they sit in the first COBS block (code >= 3).
            if not self.reach[s] or self.buf[s] < 3 or self.buf[s + 1] != self.recover_version \
                    or self.max_len[self.buf[s + 2]] == 0:
                continue
            m = _cobs_decode(self.buf + s, n - s, self.out)
            if m < _MIN_PACKET or m > _MAX_PACKET or self.out[0] != self.recover_version:
                continue
            if not (self.min_len[self.out[1]] <= m - 2 <= self.max_len[self.out[1]]):
                continue
            if _crc16(self.out, m - 2) != (self.out[m - 2] | (self.out[m - 1] << 8)):
                continue
            self._tail_start = s
            return m
        return -1
