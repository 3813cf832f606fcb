"""X-ray on/off arbitration: the device's XRAY message wins over the image heuristic. Pure, no I/O.

The image heuristic (frames changing) lags the beam by a few pulse intervals and can be fooled by a grabber
fault; a device that reports XRAY knows. When both speak and disagree for longer than ``alarm_after_s`` one of
them is wrong (cable, grabber, wrong video input), which the operator should hear about.
"""
from __future__ import annotations

from core.vocab import NS


class XrayArbiter:
    """Feed ``image(on, t_ns)`` and ``device(on, t_ns)`` (``device_lost(t_ns)`` when the link drops).

    ``on`` is the arbitrated state; each feed returns the arbitrated edges it caused as
    ``[(on, t_ns, source)]``.
    """

    def __init__(self, alarm_after_s: float = 2.0) -> None:
        if not alarm_after_s > 0:
            raise ValueError(f"alarm_after_s must be positive, got {alarm_after_s}")
        self._alarm_ns = int(alarm_after_s * NS)
        self.image_on = False
        self.device_on: bool | None = None      # None: no device report (or the link is down)
        self._since_ns: int | None = None       # when the two began to disagree
        self._last_ns: int | None = None
        self.on = False

    @property
    def source(self) -> str:
        return "image" if self.device_on is None else "device"

    def image(self, on: bool, t_ns: int) -> list[tuple[bool, int, str]]:
        self.image_on = self._flag(on)
        return self._update(t_ns)

    def device(self, on: bool, t_ns: int) -> list[tuple[bool, int, str]]:
        self.device_on = self._flag(on)
        return self._update(t_ns)

    def device_lost(self, t_ns: int) -> list[tuple[bool, int, str]]:
        """The device's word is stale (link down): the image decides again."""
        self.device_on = None
        return self._update(t_ns)

    def disagreement_s(self, now_ns: int) -> float:
        return 0.0 if self._since_ns is None else max(0, now_ns - self._since_ns) / NS

    def alarms(self, now_ns: int) -> list[dict]:
        if self._since_ns is None or now_ns - self._since_ns <= self._alarm_ns:
            return []
        img = "on" if self.image_on else "off"
        dev = "on" if self.device_on else "off"
        return [{"kind": "xray_disagreement",
                 "message": f"X-ray signal from the device says {dev} but the images say {img} "
                            f"for {self.disagreement_s(now_ns):.1f} s"}]

    @staticmethod
    def _flag(on) -> bool:
        if not isinstance(on, bool):
            raise ValueError(f"X-ray state must be True or False, got {on!r}")
        return on

    def _update(self, t_ns: int) -> list[tuple[bool, int, str]]:
        if not isinstance(t_ns, int) or isinstance(t_ns, bool):
            raise ValueError(f"t_ns must be an integer monotonic time, got {t_ns!r}")
        # Frames and serial messages come from two threads: a report a little older than the last one
        # counts as happening at the last one's time.
        if self._last_ns is not None and t_ns < self._last_ns:
            t_ns = self._last_ns
        self._last_ns = t_ns
        disagree = self.device_on is not None and self.device_on != self.image_on
        if not disagree:
            self._since_ns = None
        elif self._since_ns is None:
            self._since_ns = t_ns
        on = self.image_on if self.device_on is None else self.device_on
        if on == self.on:
            return []
        self.on = on
        return [(on, t_ns, self.source)]
