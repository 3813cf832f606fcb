"""One device-to-pipeline dispatcher: what the injector's messages mean for the frame pipeline, the same live
(the bridge's reader thread, through the frame thread's inbox) and in a replay (directly, in arrival order).

X-RAY edges become the pipeline's device X-ray signal; an injection starts at the first SAMPLE with flow or a
STATE changing to injecting, and its SUMMARY ends it with the injector's figures. The rest (the injector's
condition, faults, identity, logging) is the appliance's business: ``dispatch`` returns what it found.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from core.analysis.pipeline import FramePipeline
from core.appliance.books import InjectionBook
from firmware_bridge.messages import Message, MsgType

PipelineTask = Callable[[FramePipeline], None]


@dataclass(frozen=True)
class Dispatched:
    data: dict                      # the message's units; a doubted SUMMARY figure is None
    injection_started: bool = False
    injection: dict | None = None   # the injection a SUMMARY ended: start_ns, stop_ns, summary, key


class Dispatcher:
    """``to_pipeline(task)`` hands ``task(pipeline)`` to whoever owns the pipeline; ``device()`` is the
    injector's identity (HELLO's units) or None, which keys its injections."""

    def __init__(self, injections: InjectionBook, to_pipeline: Callable[[PipelineTask], None],
                 device: Callable[[], dict | None]) -> None:
        self.injections = injections
        self._to_pipeline = to_pipeline
        self._device = device
        self._state: str | None = None

    def dispatch(self, msg: Message, host_ns: int, doubted: frozenset[str] | set[str] = frozenset()) -> Dispatched:
        """One delivered message, at the host time of its device event; ``doubted``: its implausible fields."""
        data = msg.to_dict()
        match msg.TYPE:
            case MsgType.SAMPLE:
                if data["flow_ml_s"] > 0:
                    return Dispatched(data, injection_started=self._start(host_ns))
            case MsgType.STATE | MsgType.HEARTBEAT:
                old, self._state = self._state, data["state"]
                if old != data["state"] and data["state"] == "injecting":
                    return Dispatched(data, injection_started=self._start(host_ns))
            case MsgType.XRAY:
                on = data["on"]
                self._to_pipeline(lambda pipeline: pipeline.xray_signal(on, host_ns))
            case MsgType.SUMMARY:
                if "xray_delay_ms" in doubted:
                    data = dict(data, xray_delay_ms=None, implausible=sorted(doubted))
                injection = self.injections.stop(data, host_ns, self._device())
                start, summary = injection["start_ns"], data
                self._to_pipeline(lambda pipeline: pipeline.injection(start, host_ns, summary))
                return Dispatched(data, injection=injection)
        return Dispatched(data)

    def link_changed(self, state: str, host_ns: int) -> None:
        """The line went silent or down: the device's X-ray word is unknown from now on."""
        if state != "up":
            self._to_pipeline(lambda pipeline: pipeline.xray_signal_lost(host_ns))

    def _start(self, host_ns: int) -> bool:
        if not self.injections.start(host_ns):
            return False
        self._to_pipeline(lambda pipeline: pipeline.injection(host_ns, None, None))
        return True
