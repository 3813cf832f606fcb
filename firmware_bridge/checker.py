"""serial-check: decode a vendor's stream, answer it like the appliance, and judge it against v1.

``conformance.Judge`` holds the rules and no I/O; ``StreamCheck`` feeds it and answers like the appliance
(no I/O either); ``listen`` runs one on an open port (``cathlab-edge serial-check --port URL [--seconds N]
[--json]`` prints it).
"""
from __future__ import annotations

import re
import time

import serial

from .conformance import HEARTBEAT_MAX_S, SILENT_S, TOLERANCE_S, Judge
from .framing import Decoder
from .link import Link, PacketInfo
from .messages import Hello, TimeReq, TimeResp, parse

TIME_RESP_MAX_S = 0.1                     # answer each TIME_REQ within 100 ms
TIME_RESP_SLACK_S = TOLERANCE_S           # judged on the host's round trip: the line and this loop add to it
QUIET_START_S = HEARTBEAT_MAX_S + TOLERANCE_S  # nothing this long after opening: the device was not running
BANNER_KEEP = 4096                        # bytes kept from before the first packet, to show
BANNER_SHOWN = 60                         # of which shown in the report
_HELLO_START = re.compile(rb"[\x03-\xff]\x01\x01")  # a COBS block starting version 1, type HELLO


class StreamCheck:
    """The checker's core without I/O: feed received bytes, write back what it returns, ask for the summary.

    It tells a device that starts during the check from one it joins mid-stream by the silence at the start:
    nothing in the first QUIET_START_S (a running device sends a HEARTBEAT at least once a second) means the
    check was listening before the device's first byte. Then everything before the first packet is the
    device's (a boot banner: counted, shown and flagged) and the first packet must be a HELLO. Joining
    mid-stream, one damaged frame before the first packet is forgiven.
    """

    def __init__(self, start_ns: int) -> None:
        self.start_ns = start_ns
        self.link = Link(SILENT_S)
        self.judge = Judge(start_ns)
        self.link.port_opened(start_ns)
        self.from_start: bool | None = None  # listening before the device's first byte?
        self._before = bytearray()            # bytes received before the first packet (the first BANNER_KEEP)
        self._before_total = 0
        self.banner: bytes | None = None      # non-frame bytes before the first packet, once it arrived
        self.banner_bytes = 0
        self.damaged_hello_bytes = 0          # bytes of a damaged first HELLO before the first packet
        self._errors_before_first = 0
        self._decode_sent = Decoder()
        self._time_reqs: dict[int, int] = {}  # token -> ns sent, until answered

    def feed(self, data: bytes, now_ns: int) -> tuple[list[dict], list[bytes]]:
        """(one JSON-ready dict per decoded packet, bytes to send back: ACKs)."""
        if data and self.from_start is None:
            self.from_start = now_ns - self.start_ns >= QUIET_START_S * 1e9
        records, send = [], []
        if self.banner is None:
            # Until the first packet, feed frame by frame to know exactly which bytes came before it.
            pieces = [data[i:j + 1] for i, j in _frames_of(data)]
        else:
            pieces = [data]
        for piece in pieces:
            if self.banner is None:
                self._before_total += len(piece)
                room = BANNER_KEEP - len(self._before)
                if room > 0:
                    self._before += piece[:room]
            res = self.link.feed(piece, now_ns)
            send += res.send
            if self.link.last_packets and self.banner is None:
                self._first_packet()
            for info in self.link.last_packets:
                self.judge.observe(info, _payload_of(info), now_ns)
                if isinstance(info.message, TimeResp) and not info.duplicate:
                    self._judge_time_resp(info.message, now_ns)
                records.append(_json_of(info))
        return records, send

    def _first_packet(self) -> None:
        d = self.link.decoder
        self.banner_bytes = d.bytes_discarded
        self._errors_before_first = d.crc_errors + d.framing_errors
        # The decoder discarded exactly the first bytes_discarded non-zero bytes received (oversized excess too).
        self.banner = bytes(b for b in self._before if b)[:self.banner_bytes]
        # A damaged first HELLO among them is a frame, not a banner: only the bytes before it are the banner.
        hello = _HELLO_START.search(self.banner)
        if hello is not None:
            self.damaged_hello_bytes = self.banner_bytes - hello.start()
            self.banner, self.banner_bytes = self.banner[:hello.start()], hello.start()

    def sent_records(self, frames: list[bytes], now_ns: int) -> list[dict]:
        """One JSON-ready line per ACK / TIME_REQ sent: {"sent": {...}, "t_s": seconds since the start}."""
        out = []
        for frame in frames:
            for packet in self._decode_sent.feed(frame):
                out.append({"sent": parse(packet).to_dict(), "t_s": round((now_ns - self.start_ns) / 1e9, 6)})
        return out

    def tick(self, now_ns: int) -> list[bytes]:
        """Bytes to send now (TIME_REQ to devices with capability bit2)."""
        send = self.link.tick(now_ns).send
        for frame in send:
            for packet in Decoder().feed(frame):
                msg = parse(packet)
                if isinstance(msg, TimeReq):
                    self._time_reqs[msg.token] = now_ns
        return send

    def _judge_time_resp(self, msg: TimeResp, now_ns: int) -> None:
        """Section 5: the token copied from a TIME_REQ, the answer within 100 ms of it."""
        sent = self._time_reqs.pop(msg.token, None)
        if sent is None:
            self.judge.flag("time-token", f"TIME_RESP seq {msg.seq} carries token 0x{msg.token:08X}, which no "
                             "TIME_REQ carried (copy the TIME_REQ's token)")
        elif now_ns - sent > (TIME_RESP_MAX_S + TIME_RESP_SLACK_S) * 1e9:
            self.judge.flag("time-late", f"TIME_RESP came {(now_ns - sent) / 1e6:.0f} ms after its TIME_REQ "
                             f"(within {TIME_RESP_MAX_S * 1000:.0f} ms)")

    def _judge_start(self) -> int:
        """Flag what came before the first packet; returns how many crc / framing errors that accounts for."""
        if self.banner is None:
            return 0
        first = self.judge.first_message
        if self.from_start:
            if self.banner_bytes:
                self.judge.flag("banner", f"{self.banner_bytes} bytes before the first frame that are not frames "
                                 f"(a boot banner?): {_shown(self.banner, self.banner_bytes)} (send frames only, "
                                 "each after a 0x00)")
            damaged = (f"; {self.damaged_hello_bytes} bytes of a HELLO that did not arrive intact came before it"
                       if self.damaged_hello_bytes else "")
            if first is not None and not isinstance(first, Hello):
                self.judge.flag("first-hello", f"the device's first packet was {first.TYPE.name} seq {first.seq}, "
                                 "not HELLO: its first HELLO was lost or never sent (HELLO first on power-up)"
                                 + damaged)
            elif self.damaged_hello_bytes:
                self.judge.flag("first-hello", "the bytes before the first frame hold the start of a HELLO that "
                                 f"did not arrive intact: the first HELLO was lost ({self.damaged_hello_bytes} bytes)")
            return self._errors_before_first
        return min(self._errors_before_first, 1)  # joined mid-frame: costs one frame, no more

    def summary(self, end_ns: int, lost: str | None = None) -> dict:
        judged = self._judge_start()
        violations = self.judge.finish(self.link, end_ns, judged, self.link.time_requests_sent)
        if lost:
            violations.append(f"port lost during the check: {lost}")
        c = self.link.counters()
        return {"packets": sum(c["packets_by_type"].values()), "by_type": dict(self.judge.by_type),
                "crc_errors": c["crc_errors"], "framing_errors": c["framing_errors"],
                "recovered": self.link.decoder.recovered,
                "unknown_types": c["unknown_types"] + c["unsupported_versions"], "seq_gaps": c["seq_gaps"],
                "malformed": c["malformed"], "duplicates": c["duplicates"],
                "bytes_discarded": c["bytes_discarded"], "seconds": round((end_ns - self.start_ns) / 1e9, 3),
                "listened_from_start": bool(self.from_start),
                "banner_bytes": self.banner_bytes,
                "banner": _shown(self.banner, self.banner_bytes) if self.banner else "",
                "violation_counts": self.judge.counts, "violations": violations}


def _frames_of(data: bytes):
    """(start, end) of each piece of ``data`` that ends at a 0x00 (inclusive), and of the rest."""
    start = 0
    while start < len(data):
        z = data.find(0, start)
        end = len(data) - 1 if z < 0 else z
        yield start, end
        start = end + 1


def _shown(raw: bytes, total: int) -> str:
    """Printable ASCII as is, the rest escaped, truncated: what a person recognises of a boot banner."""
    text = raw[:BANNER_SHOWN].decode("latin-1").encode("unicode_escape").decode("ascii").replace('"', '\\"')
    more = f" ... ({total} bytes)" if total > BANNER_SHOWN else ""
    return f'"{text}"{more}'


def open_port(url: str) -> serial.SerialBase:
    """The line as the appliance opens it (raises SerialException, OSError or ValueError)."""
    return serial.serial_for_url(url, baudrate=115200, timeout=0.05, write_timeout=1.0)


def listen(ser: serial.SerialBase, check: StreamCheck, end_ns: int, on_record=None) -> str | None:
    """Feed what ``ser`` says into ``check`` and write its answers back until ``end_ns``; ``on_record`` gets
    each packet heard and sent as a dict. Returns why the port was lost, or None."""
    while time.monotonic_ns() < end_ns:
        try:
            data = ser.read(max(1, ser.in_waiting))
            now = time.monotonic_ns()
            send: list[bytes] = []
            if data:
                records, send = check.feed(data, now)
                if on_record is not None:
                    for rec in records:
                        on_record(rec)
            send += check.tick(now)
            for frame in send:
                ser.write(frame)
            if on_record is not None and send:
                for rec in check.sent_records(send, time.monotonic_ns()):
                    on_record(rec)
        except (serial.SerialException, OSError) as exc:
            return str(exc)
    return None


def _payload_of(info: PacketInfo) -> bytes | None:
    return info.message.payload() if info.message is not None else None


def _json_of(info: PacketInfo) -> dict:
    if info.message is None:
        return {"type": None, "error": info.error}
    d = info.message.to_dict()
    if info.duplicate:
        d["retransmission"] = True
    return d
