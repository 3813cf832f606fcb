"""Implausible values: packets that pass every framing and payload rule yet contradict what the same device
said before. No I/O: the link feeds each new (not duplicate) device message to ``Plausibility.check`` and hands
the verdicts on beside the message. The message is still delivered (its other fields are sound); the receiver
counts the violation, logs it and leaves the doubted field out instead of taking it.

Rules (docs/serial-protocol.md, "Implausible values"):
- ``volume_backwards``: a SAMPLE's volume below the previous SAMPLE's of the same injection (volume is what
  this injection delivered so far). An injection begins when the state enters injecting and ends when the
  state leaves injecting and hold or its SUMMARY arrives.
- ``stale_xray_delay``: a SUMMARY's negative ``xray_delay_ms`` says X-ray came on before the injection, but the
  device's own XRAY messages say X-ray went off between that moment and the injection's start: the delay was
  measured from a stale X-ray-on. Judged only from XRAY edges seen on this connection (a lost XRAY packet can
  hide a contradiction, never invent one).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .messages import Heartbeat, InjectorState, Message, Sample, State, Summary, Xray

XRAY_EDGES = 32              # the device's latest XRAY edges kept for judging a SUMMARY's delay
EDGE_TOLERANCE_MS = 250      # an edge this close to the claimed X-ray-on or the start proves nothing
_PUMPING = frozenset({InjectorState.INJECTING, InjectorState.HOLD})
_WRAP = 1 << 32


@dataclass(frozen=True)
class Violation:
    kind: str          # stable machine name: "volume_backwards", "stale_xray_delay"
    field: str         # the message field the receiver must not take
    text: str          # what is wrong, for people
    message: Message   # the message it was found in (delivered all the same)


class Plausibility:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """A new connection: nothing said before it is held against what comes next."""
        self._injecting = False
        self._last_volume: int | None = None
        self._edges: deque[tuple[int, bool]] = deque(maxlen=XRAY_EDGES)   # (device_ms, on)

    def check(self, msg: Message) -> list[Violation]:
        if isinstance(msg, (State, Heartbeat)):
            pumping = msg.state in _PUMPING
            if pumping and not self._injecting:
                self._last_volume = None       # a new injection counts from 0
            elif not pumping:
                self._last_volume = None
            self._injecting = pumping
        elif isinstance(msg, Sample):
            return self._sample(msg)
        elif isinstance(msg, Xray):
            self._edges.append((msg.device_ms, bool(msg.on)))
        elif isinstance(msg, Summary):
            self._injecting, self._last_volume = False, None
            return self._summary(msg)
        return []

    def _sample(self, msg: Sample) -> list[Violation]:
        last, self._last_volume = self._last_volume, msg.volume
        if last is None or msg.volume >= last:
            return []
        return [Violation("volume_backwards", "volume",
                          f"SAMPLE seq {msg.seq}: volume {msg.volume / 100:.2f} ml is below the previous sample's "
                          f"{last / 100:.2f} ml of the same injection", msg)]

    def _summary(self, msg: Summary) -> list[Violation]:
        if msg.xray_delay_ms >= 0:      # 0: unknown; positive: X-ray after the start, nothing stale about it
            return []
        # Times relative to the SUMMARY's device_ms, the injection's end.
        start = -msg.duration_ms
        claimed_on = start + msg.xray_delay_ms
        for t_ms, on in self._edges:
            t = _signed(t_ms - msg.device_ms)
            if not on and claimed_on + EDGE_TOLERANCE_MS < t < start - EDGE_TOLERANCE_MS:
                return [Violation("stale_xray_delay", "xray_delay_ms",
                                  f"SUMMARY seq {msg.seq}: xray_delay_ms {msg.xray_delay_ms} puts X-ray on "
                                  f"{-msg.xray_delay_ms} ms before the injection, but the device's XRAY went off "
                                  f"{start - t} ms before the injection started", msg)]
        return []


class ReportLimiter:
    """At most one report per key and period: the first at once, later ones at most once a period with the
    number held back since. For log lines and event-log entries; counters keep every occurrence."""

    def __init__(self, period_s: float = 60.0) -> None:
        if period_s <= 0:
            raise ValueError(f"period_s must be positive, got {period_s}")
        self._period_ns = int(period_s * 1e9)
        self._next_ns: dict[str, int] = {}
        self._held: dict[str, int] = {}

    def admit(self, key: str, now_ns: int) -> int | None:
        """None: hold this one back; else report it, with this many held back since the last report."""
        due = self._next_ns.get(key)
        if due is not None and now_ns < due:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._next_ns[key] = now_ns + self._period_ns
        return self._held.pop(key, 0)


def _signed(delta_ms: int) -> int:
    """A difference of two wrapping u32 ms times, in [-2**31, 2**31)."""
    delta_ms %= _WRAP
    return delta_ms - _WRAP if delta_ms >= _WRAP // 2 else delta_ms
