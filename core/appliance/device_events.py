"""The injector's word in the event log and in its condition (reader thread).

Each delivered message updates the ``InjectorCondition`` under the appliance's lock and records what changed:
state changes, X-ray edges, faults and their clearing, a new device identity; telemetry is summarised per
injection, not logged per sample. Protocol violations are logged at most once a kind a minute, and the fields
they doubt are handed to the dispatcher with their message, so it leaves them out.
"""
from __future__ import annotations

import threading

from core.appliance.injector import InjectorCondition
from core.store.eventlog import EventLog
from firmware_bridge.messages import MsgType
from firmware_bridge.plausibility import ReportLimiter, Violation

VIOLATION_LOG_PERIOD_S = 60.0     # one log entry per violation kind this often; the counters have them all


class DeviceEvents:
    def __init__(self, lock: threading.Lock, injector: InjectorCondition, log: EventLog) -> None:
        self._lock = lock
        self._injector = injector
        self._log = log
        self._doubted: tuple[object, set[str]] | None = None   # (message, fields not to take)
        self._violation_log = ReportLimiter(VIOLATION_LOG_PERIOD_S)

    def on_violation(self, violation: Violation, host_ns: int) -> None:
        # The bridge calls this just before it delivers the message: doubted() then hands the field out.
        if self._doubted is None or self._doubted[0] is not violation.message:
            self._doubted = (violation.message, set())
        self._doubted[1].add(violation.field)
        held = self._violation_log.admit(violation.kind, host_ns)
        if held is not None:   # one entry per kind a minute, with how many were held back; counters have all
            self._log.record("protocol_violation", {"kind": violation.kind, "text": violation.text,
                                                    "field": violation.field, "held_back": held},
                             t_mono_ns=host_ns)

    def doubted(self, msg) -> set[str]:
        """The fields of ``msg`` its violations doubt (once: the next message starts clean)."""
        doubted = self._doubted[1] if self._doubted is not None and self._doubted[0] is msg else set()
        self._doubted = None
        return doubted

    def on_message(self, msg_type: MsgType, data: dict, host_ns: int, doubted: set[str]) -> None:
        """``data``: the message's units as the dispatcher returned them."""
        match msg_type:
            case MsgType.SAMPLE:   # telemetry is summarised per injection, not logged per sample
                with self._lock:
                    self._injector.on_sample(data, host_ns, volume_doubted="volume" in doubted)
            case MsgType.STATE | MsgType.HEARTBEAT:
                with self._lock:
                    old, cleared = self._injector.on_state(data["state"])
                if old != data["state"]:
                    self._log.record("injector_state", {"from": old, "to": data["state"]}, t_mono_ns=host_ns)
                self._fault_cleared(cleared, host_ns)
            case MsgType.XRAY:
                self._log.record("xray_signal", {"on": data["on"]}, t_mono_ns=host_ns)
            case MsgType.FAULT:
                with self._lock:
                    alarm = self._injector.on_fault(data, host_ns)
                self._log.record("injector_fault", dict(data, alarm=alarm), t_mono_ns=host_ns)
            case MsgType.HELLO:
                # Devices repeat HELLO every 10 s; the log wants the device's identity when it changes.
                identity = {k: v for k, v in data.items() if k not in ("seq", "device_ms")}
                with self._lock:
                    new_identity, cleared = self._injector.on_hello(identity, data["device_ms"])
                if new_identity:
                    self._log.record("injector_hello", data, t_mono_ns=host_ns)
                self._fault_cleared(cleared, host_ns)

    def _fault_cleared(self, reason: str | None, host_ns: int) -> None:
        if reason is not None:
            self._log.record("injector_fault_cleared", {"reason": reason}, t_mono_ns=host_ns)
