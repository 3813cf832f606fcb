"""Typed messages of wire protocol version 1 (docs/serial-protocol.md).

Each message is a frozen dataclass holding wire units (integers); ``to_dict()`` gives the serial-check
JSON: field names and units as in the protocol document. ``pack()`` gives header + payload (framing adds
crc and COBS); ``parse(packet)`` is the inverse and raises a ``ProtocolError`` subclass for anything a
version-1 receiver must not accept.
"""
from __future__ import annotations

import struct
from dataclasses import asdict, dataclass, fields
from enum import IntEnum
from typing import ClassVar

from .wire import MAX_PACKET, encode_frame

PROTOCOL_VERSION = 1
HEADER = struct.Struct("<BBHI")  # version, type, seq, device_ms
FAULT_TEXT_MAX = 64
CAP_SAMPLES, CAP_XRAY, CAP_TIME_SYNC = 0x01, 0x02, 0x04


class MsgType(IntEnum):
    HELLO = 0x01
    HEARTBEAT = 0x02
    TIME_RESP = 0x03
    STATE = 0x10
    SAMPLE = 0x11
    SUMMARY = 0x12
    XRAY = 0x20
    FAULT = 0x30
    ACK = 0x80
    TIME_REQ = 0x81


class InjectorState(IntEnum):
    IDLE = 0
    ARMED = 1
    INJECTING = 2
    HOLD = 3
    COMPLETE = 4
    ABORTED = 5
    FAULT = 6


class Severity(IntEnum):
    INFO = 0
    WARNING = 1
    ERROR = 2


# The device must resend these until acknowledged; the receiver delivers each once.
RELIABLE_TYPES = frozenset({MsgType.HELLO, MsgType.SUMMARY, MsgType.FAULT})


class ProtocolError(ValueError):
    """The device broke the protocol (a packet that passed the crc but is not acceptable)."""


class UnsupportedVersion(ProtocolError):
    def __init__(self, version: int):
        super().__init__(f"protocol version {version} is not supported (this receiver speaks {PROTOCOL_VERSION})")
        self.version = version


class UnknownType(ProtocolError):
    def __init__(self, type_code: int):
        super().__init__(f"unknown message type 0x{type_code:02X}")
        self.type_code = type_code


class MalformedPacket(ProtocolError):
    """Known type, wrong payload: length, enum value or text encoding."""


def _check_uint(name: str, value: int, bits: int) -> None:
    if not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if not 0 <= value < (1 << bits):
        raise ValueError(f"{name}={value} does not fit in u{bits}")


def _check_int(name: str, value: int, bits: int) -> None:
    if not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if not -(1 << (bits - 1)) <= value < (1 << (bits - 1)):
        raise ValueError(f"{name}={value} does not fit in i{bits}")


def _check_text(name: str, value: str, size: int) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a str, got {value!r}")
    raw = value.encode("utf-8")
    if len(raw) > size:
        raise ValueError(f"{name} is {len(raw)} bytes of UTF-8, at most {size} allowed")
    if "\x00" in value:
        raise ValueError(f"{name} must not contain NUL")


def _text_from(raw: bytes, name: str) -> str:
    raw = raw.rstrip(b"\x00")
    if b"\x00" in raw:
        raise MalformedPacket(f"{name}: NUL inside the text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedPacket(f"{name}: not UTF-8 ({exc.reason} at byte {exc.start})") from None


_FORMATS = {"u8": ("B", 8, False), "u16": ("H", 16, False), "u32": ("I", 32, False), "i32": ("i", 32, True)}


@dataclass(frozen=True)
class Message:
    """Common header fields. Subclasses declare TYPE and their payload fields with wire kinds."""
    seq: int
    device_ms: int

    TYPE: ClassVar[MsgType]
    KINDS: ClassVar[dict[str, str]] = {}  # payload field -> "u8" | "u16" | "u32" | "i32" | "char[N]" | "text"

    def __post_init__(self) -> None:
        _check_uint("seq", self.seq, 16)
        _check_uint("device_ms", self.device_ms, 32)
        for name, kind in self.KINDS.items():
            value = getattr(self, name)
            if kind in _FORMATS:
                fmt, bits, signed = _FORMATS[kind]
                (_check_int if signed else _check_uint)(name, value, bits)
            elif kind.startswith("char["):
                _check_text(name, value, int(kind[5:-1]))
            else:  # "text": the rest of the packet
                _check_text(name, value, FAULT_TEXT_MAX)
        self._validate()

    def _validate(self) -> None:
        """Per-message range checks beyond the field widths."""

    @property
    def type(self) -> MsgType:
        return self.TYPE

    def payload(self) -> bytes:
        out = bytearray()
        for name, kind in self.KINDS.items():
            value = getattr(self, name)
            if kind in _FORMATS:
                out += struct.pack("<" + _FORMATS[kind][0], value)
            elif kind.startswith("char["):
                out += value.encode("utf-8").ljust(int(kind[5:-1]), b"\x00")
            else:
                out += value.encode("utf-8")
        return bytes(out)

    def pack(self) -> bytes:
        """Header + payload (no crc)."""
        return HEADER.pack(PROTOCOL_VERSION, self.TYPE, self.seq, self.device_ms) + self.payload()

    def encode(self) -> bytes:
        """Wire bytes: COBS(header | payload | crc) + 0x00."""
        return encode_frame(self.pack())

    @classmethod
    def _from_payload(cls, seq: int, device_ms: int, payload: bytes) -> "Message":
        values: dict[str, object] = {}
        pos = 0
        for name, kind in cls.KINDS.items():
            if kind in _FORMATS:
                fmt = "<" + _FORMATS[kind][0]
                size = struct.calcsize(fmt)
                if pos + size > len(payload):
                    raise MalformedPacket(f"{cls.TYPE.name}: payload of {len(payload)} bytes is too short")
                (values[name],) = struct.unpack_from(fmt, payload, pos)
                pos += size
            elif kind.startswith("char["):
                size = int(kind[5:-1])
                if pos + size > len(payload):
                    raise MalformedPacket(f"{cls.TYPE.name}: payload of {len(payload)} bytes is too short")
                values[name] = _text_from(payload[pos:pos + size], f"{cls.TYPE.name}.{name}")
                pos += size
            else:
                rest = payload[pos:]
                if len(rest) > FAULT_TEXT_MAX:
                    raise MalformedPacket(f"{cls.TYPE.name}.{name}: {len(rest)} bytes, at most {FAULT_TEXT_MAX}")
                values[name] = _text_from(rest, f"{cls.TYPE.name}.{name}")
                pos = len(payload)
        if pos != len(payload):
            raise MalformedPacket(f"{cls.TYPE.name}: payload is {len(payload)} bytes, expected {pos}")
        try:
            return cls(seq=seq, device_ms=device_ms, **values)
        except ValueError as exc:
            raise MalformedPacket(f"{cls.TYPE.name}: {exc}") from None

    def fields_dict(self) -> dict:
        """Raw wire values by field name."""
        return asdict(self)

    def to_dict(self) -> dict:
        """serial-check JSON: type name, header, fields scaled to units."""
        return {"type": self.TYPE.name, "seq": self.seq, "device_ms": self.device_ms, **self._units()}

    def _units(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("seq", "device_ms")}


def _state_name(value: int) -> str:
    return InjectorState(value).name.lower()


def _check_state(state: int) -> None:
    if state not in InjectorState._value2member_map_:
        raise ValueError(f"state={state} is not one of {[s.value for s in InjectorState]}")


@dataclass(frozen=True)
class Hello(Message):
    TYPE: ClassVar[MsgType] = MsgType.HELLO
    KINDS: ClassVar[dict[str, str]] = {
        "vendor_id": "u16", "product_id": "u16", "model": "char[16]", "serial_no": "char[16]",
        "fw_major": "u8", "fw_minor": "u8", "fw_patch": "u16", "protocol_version": "u8", "capabilities": "u8"}
    vendor_id: int = 0
    product_id: int = 0
    model: str = ""
    serial_no: str = ""
    fw_major: int = 0
    fw_minor: int = 0
    fw_patch: int = 0
    protocol_version: int = PROTOCOL_VERSION
    capabilities: int = 0

    def _units(self) -> dict:
        return {"vendor_id": self.vendor_id, "product_id": self.product_id, "model": self.model,
                "serial_no": self.serial_no, "fw_version": f"{self.fw_major}.{self.fw_minor}.{self.fw_patch}",
                "protocol_version": self.protocol_version, "capabilities": self.capabilities}

    @property
    def has_samples(self) -> bool:
        return bool(self.capabilities & CAP_SAMPLES)

    @property
    def has_xray(self) -> bool:
        return bool(self.capabilities & CAP_XRAY)

    @property
    def has_time_sync(self) -> bool:
        return bool(self.capabilities & CAP_TIME_SYNC)


@dataclass(frozen=True)
class Heartbeat(Message):
    TYPE: ClassVar[MsgType] = MsgType.HEARTBEAT
    KINDS: ClassVar[dict[str, str]] = {"state": "u8"}
    state: int = 0

    def _validate(self) -> None:
        _check_state(self.state)

    def _units(self) -> dict:
        return {"state": _state_name(self.state)}


@dataclass(frozen=True)
class TimeResp(Message):
    TYPE: ClassVar[MsgType] = MsgType.TIME_RESP
    KINDS: ClassVar[dict[str, str]] = {"token": "u32"}
    token: int = 0


@dataclass(frozen=True)
class State(Message):
    TYPE: ClassVar[MsgType] = MsgType.STATE
    KINDS: ClassVar[dict[str, str]] = {"state": "u8", "phase": "u8"}
    state: int = 0
    phase: int = 0

    def _validate(self) -> None:
        _check_state(self.state)

    def _units(self) -> dict:
        return {"state": _state_name(self.state), "phase": self.phase}


@dataclass(frozen=True)
class Sample(Message):
    TYPE: ClassVar[MsgType] = MsgType.SAMPLE
    KINDS: ClassVar[dict[str, str]] = {"flow": "u16", "volume": "u32", "pressure": "u16", "phase": "u8"}
    flow: int = 0       # 0.01 ml/s
    volume: int = 0     # 0.01 ml, this injection so far
    pressure: int = 0   # kPa
    phase: int = 0

    def _units(self) -> dict:
        return {"flow_ml_s": self.flow / 100, "volume_ml": self.volume / 100, "pressure_kpa": self.pressure,
                "phase": self.phase}


@dataclass(frozen=True)
class Summary(Message):
    TYPE: ClassVar[MsgType] = MsgType.SUMMARY
    KINDS: ClassVar[dict[str, str]] = {
        "programmed_volume": "u32", "delivered_volume": "u32", "programmed_flow": "u16", "peak_flow": "u16",
        "peak_pressure": "u16", "pressure_limit": "u16", "duration_ms": "u32", "rise_ms": "u16",
        "xray_delay_ms": "i32"}
    programmed_volume: int = 0  # 0.01 ml
    delivered_volume: int = 0   # 0.01 ml
    programmed_flow: int = 0    # 0.01 ml/s
    peak_flow: int = 0          # 0.01 ml/s
    peak_pressure: int = 0      # kPa
    pressure_limit: int = 0     # kPa
    duration_ms: int = 0
    rise_ms: int = 0
    xray_delay_ms: int = 0      # X-ray on minus injection start; negative: X-ray came first

    def _units(self) -> dict:
        return {"programmed_volume_ml": self.programmed_volume / 100,
                "delivered_volume_ml": self.delivered_volume / 100,
                "programmed_flow_ml_s": self.programmed_flow / 100, "peak_flow_ml_s": self.peak_flow / 100,
                "peak_pressure_kpa": self.peak_pressure, "pressure_limit_kpa": self.pressure_limit,
                "duration_ms": self.duration_ms, "rise_ms": self.rise_ms, "xray_delay_ms": self.xray_delay_ms}


@dataclass(frozen=True)
class Xray(Message):
    TYPE: ClassVar[MsgType] = MsgType.XRAY
    KINDS: ClassVar[dict[str, str]] = {"on": "u8"}
    on: int = 0

    def _validate(self) -> None:
        if self.on not in (0, 1):
            raise ValueError(f"on={self.on!r} must be 0 or 1")

    def _units(self) -> dict:
        return {"on": bool(self.on)}


@dataclass(frozen=True)
class Fault(Message):
    TYPE: ClassVar[MsgType] = MsgType.FAULT
    KINDS: ClassVar[dict[str, str]] = {"code": "u16", "severity": "u8", "text": "text"}
    code: int = 0
    severity: int = 0
    text: str = ""

    def _validate(self) -> None:
        if self.severity not in Severity._value2member_map_:
            raise ValueError(f"severity={self.severity} is not 0 (info), 1 (warning) or 2 (error)")

    def _units(self) -> dict:
        return {"code": self.code, "severity": self.severity, "text": self.text}


@dataclass(frozen=True)
class Ack(Message):
    TYPE: ClassVar[MsgType] = MsgType.ACK
    KINDS: ClassVar[dict[str, str]] = {"acked_seq": "u16"}
    acked_seq: int = 0


@dataclass(frozen=True)
class TimeReq(Message):
    TYPE: ClassVar[MsgType] = MsgType.TIME_REQ
    KINDS: ClassVar[dict[str, str]] = {"token": "u32"}
    token: int = 0


MESSAGE_CLASSES: dict[MsgType, type[Message]] = {
    cls.TYPE: cls for cls in (Hello, Heartbeat, TimeResp, State, Sample, Summary, Xray, Fault, Ack, TimeReq)}
DEVICE_TYPES = frozenset(t for t in MsgType if t < 0x80)   # what a device may send; 0x80 up: the host


def parse(packet: bytes) -> Message:
    """Typed message from a crc-verified packet (header + payload).

    Raises UnsupportedVersion (version != 1), UnknownType, MalformedPacket; all are ProtocolError.
    """
    if len(packet) < HEADER.size:
        raise MalformedPacket(f"packet of {len(packet)} bytes is shorter than the {HEADER.size}-byte header")
    if len(packet) + 2 > MAX_PACKET:
        raise MalformedPacket(f"packet of {len(packet)} bytes exceeds {MAX_PACKET - 2} bytes")
    version, type_code, seq, device_ms = HEADER.unpack_from(packet)
    if version != PROTOCOL_VERSION:
        raise UnsupportedVersion(version)
    try:
        cls = MESSAGE_CLASSES[MsgType(type_code)]
    except ValueError:
        raise UnknownType(type_code) from None
    return cls._from_payload(seq, device_ms, bytes(packet[HEADER.size:]))


def header_of(packet: bytes) -> tuple[int, int, int, int]:
    """(version, type, seq, device_ms) of a packet of at least 8 bytes, without judging it."""
    return HEADER.unpack_from(packet)


def _packet_lengths() -> bytes:
    """The decoders' ``recover_lengths`` table: for each type code, the smallest then the largest packet
    length (header + payload, crc excluded) a version-1 packet of that type has (docs/serial-protocol.md
    section 4); unknown types get (255, 0) and are never recovered from the tail of a failed frame."""
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
    return bytes(lo + hi)


V1_PACKET_LENGTHS = _packet_lengths()
