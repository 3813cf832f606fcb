"""What the injector's own reports say now: its state, the live sample, an active fault.

A pure book: no I/O, no threads, host monotonic ns passed in; the appliance holds it under its lock. The rules
are the ones docs/serial-protocol.md states in "What the appliance does with a FAULT":
- a FAULT of severity 2 (error) is an alarm until the injector's state changes to idle or complete, or a HELLO
  starts a new session (the first after the link was down or silent, one from another device, or one whose
  clock went back by more than 60 s: a restarted device); while the injector reports state fault, that is an
  alarm too;
- when the injector stops pumping (abort, fault, complete, any state but injecting or hold) or reports a FAULT
  of severity 2, live flow and pressure are 0 at once instead of the last sample until it goes stale.
"""
from __future__ import annotations

from core.vocab import NS

SAMPLE_STALE_NS = 1 * NS          # live values go stale without a SAMPLE (they stream at 10-100 Hz)
FAULT_ALARM_SEVERITY = 2          # error; 0 info and 1 warning are logged, not alarmed
PUMPING_STATES = frozenset({"injecting", "hold"})
CLEARING_STATES = frozenset({"idle", "complete"})
RESTART_BACKSTEP_MS = 60_000      # as the link's clock: device time this far back is a restarted device
_WRAP = 1 << 32


class InjectorCondition:
    def __init__(self, sample_stale_ns: int = SAMPLE_STALE_NS) -> None:
        if sample_stale_ns <= 0:
            raise ValueError(f"sample_stale_ns must be positive, got {sample_stale_ns}")
        self._stale_ns = sample_stale_ns
        self.state: str | None = None
        self.fault: dict | None = None          # the active FAULT of severity 2, with since_ns
        self._sample: dict | None = None
        self._sample_ns = 0
        self._identity: dict | None = None
        self._hello_ms: int | None = None
        self._session_open = False              # False until a HELLO after (re)connection

    # -- reports --------------------------------------------------------------------------------------
    def on_state(self, state: str) -> tuple[str | None, str | None]:
        """A state from STATE or HEARTBEAT: (the previous state, why the fault alarm cleared or None)."""
        old, self.state = self.state, state
        cleared = None
        if state != old:
            if state not in PUMPING_STATES:
                self._stop_pumping()
            if state in CLEARING_STATES and self.fault is not None:
                cleared = f"injector state {state}"
                self.fault = None
        return old, cleared

    def on_sample(self, data: dict, t_ns: int, *, volume_doubted: bool = False) -> None:
        """A SAMPLE's units (flow_ml_s, volume_ml, pressure_kpa); a doubted volume is shown as unknown."""
        self._sample = dict(data, volume_ml=None) if volume_doubted else dict(data)
        self._sample_ns = t_ns

    def on_fault(self, data: dict, t_ns: int) -> bool:
        """A FAULT's units (code, severity, text); True when it raises the alarm."""
        if data["severity"] < FAULT_ALARM_SEVERITY:
            return False
        self.fault = {"code": data["code"], "severity": data["severity"], "text": data["text"], "since_ns": t_ns}
        self._stop_pumping()
        return True

    def on_hello(self, identity: dict, device_ms: int) -> tuple[bool, str | None]:
        """A HELLO: (the identity is new, why the fault alarm cleared or None)."""
        new_identity = identity != self._identity
        restarted = self._hello_ms is not None and _ms_behind(device_ms, self._hello_ms) > RESTART_BACKSTEP_MS
        new_session = not self._session_open or new_identity or restarted
        self._identity, self._hello_ms, self._session_open = identity, device_ms, True
        cleared = None
        if new_session and self.fault is not None:
            cleared = "a new session (HELLO)"
            self.fault = None
        return new_identity, cleared

    def on_link(self, state: str) -> None:
        if state != "up":
            self._session_open = False          # the next HELLO starts a new session

    # -- read side ------------------------------------------------------------------------------------
    def live(self, now_ns: int) -> dict:
        sample = self._sample if self._sample and now_ns - self._sample_ns < self._stale_ns else None
        return {"flow_ml_s": sample["flow_ml_s"] if sample else 0.0,
                "volume_ml": sample["volume_ml"] if sample else None,
                "pressure_kpa": sample["pressure_kpa"] if sample else 0.0}

    def active_fault(self) -> dict | None:
        return None if self.fault is None else {k: v for k, v in self.fault.items() if k != "since_ns"}

    def alarms(self) -> list[dict]:
        if self.fault is not None:
            f = self.fault
            text = f": {f['text']}" if f["text"] else ""
            return [{"kind": "injector_fault", "message": f"injector fault 0x{f['code']:04X} (error){text}"}]
        if self.state == "fault":
            return [{"kind": "injector_fault", "message": "injector reports state fault"}]
        return []

    def _stop_pumping(self) -> None:
        if self._sample is not None:
            self._sample = dict(self._sample, flow_ml_s=0.0, pressure_kpa=0.0)


def _ms_behind(newer: int, older: int) -> int:
    """How far ``newer`` is behind ``older`` on a wrapping u32 ms clock (0 when it is ahead)."""
    back = (older - newer) % _WRAP
    return back if back < _WRAP // 2 else 0
