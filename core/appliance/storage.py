"""Storage housekeeping: the low-space alarm and the recorder's own alarm, each raised and cleared once in the
event log. Below min_free_mb recordings pause: the event log has the better claim on what is left."""
from __future__ import annotations

import logging

from core.store.eventlog import EventLog
from core.store.recorder import ProcedureRecorder
from core.store.space import SpaceMonitor

log = logging.getLogger("cathlab.appliance")


class StorageWatch:
    def __init__(self, space: SpaceMonitor, log: EventLog, recorder: ProcedureRecorder | None,
                 min_free_mb: float) -> None:
        self.space = space
        self._log = log
        self._recorder = recorder
        self._min_free_mb = min_free_mb
        self._recorder_alarm: str | None = None

    def check(self) -> None:
        """Look at the free space and the recorder once (the housekeeping thread, and before the first frame)."""
        changed, alarm = self.space.check()
        if changed:
            if alarm is not None:
                log.warning("%s", alarm["message"])
                self._log.record("alarm", {"alarm": "disk_low", "message": alarm["message"],
                                           "free_mb": round(self.space.free / 2**20, 1)})
                if self._recorder is not None:
                    self._recorder.pause(f"less than min_free_mb ({self._min_free_mb} MB) free")
            else:
                log.warning("disk space is back: %.0f MB free", self.space.free / 2**20)
                self._log.record("alarm_cleared", {"alarm": "disk_low", "free_mb": round(self.space.free / 2**20, 1)})
                if self._recorder is not None:
                    self._recorder.resume()
        recorder_alarm = self._recorder.alarm if self._recorder is not None else None
        if recorder_alarm != self._recorder_alarm:
            if recorder_alarm is not None:
                self._log.record("alarm", {"alarm": "recording", "message": recorder_alarm})
            elif self._recorder_alarm is not None:
                self._log.record("alarm_cleared", {"alarm": "recording"})
            self._recorder_alarm = recorder_alarm

    def alarms(self) -> list[dict]:
        """The active ones, for the status."""
        alarms = [dict(self.space.alarm)] if self.space.alarm is not None else []
        recorder_alarm = self._recorder.alarm if self._recorder is not None else None
        if recorder_alarm is not None:
            alarms.append({"kind": "recording", "message": recorder_alarm})
        return alarms
