"""The scripted procedure shared by the injector simulator and the fluoroscopy phantom.

Both simulators play the same timeline from the same origin, so a simulated injection overlaps the
simulated contrast run exactly as it would in the room. Times are seconds from the origin.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScriptedRun:
    label: str                 # "baseline", "intraprocedural", "completion" or "fluoro"
    xray_on_s: float
    xray_off_s: float
    inject_start_s: float | None  # None: fluoroscopy only, no contrast
    volume_ml: float = 0.0
    flow_ml_s: float = 0.0
    thrombus_fraction: float = 1.0  # thrombus left, relative to the baseline (phantom ground truth)

    @property
    def inject_stop_s(self) -> float | None:
        if self.inject_start_s is None or self.flow_ml_s <= 0:
            return None
        return self.inject_start_s + self.volume_ml / self.flow_ml_s


# A compressed venous DVT procedure: baseline venogram, two thrombectomy passes with a
# fluoroscopy-only positioning run and an intraprocedural venogram each, completion venogram.
PROCEDURE: tuple[ScriptedRun, ...] = (
    ScriptedRun("fluoro", 2.0, 5.0, None),
    ScriptedRun("baseline", 8.0, 14.0, 9.0, volume_ml=10.0, flow_ml_s=5.0, thrombus_fraction=1.0),
    ScriptedRun("fluoro", 18.0, 20.0, None, thrombus_fraction=0.55),
    ScriptedRun("intraprocedural", 23.0, 29.0, 24.0, volume_ml=10.0, flow_ml_s=5.0, thrombus_fraction=0.55),
    ScriptedRun("fluoro", 33.0, 35.0, None, thrombus_fraction=0.15),
    ScriptedRun("completion", 38.0, 44.0, 39.0, volume_ml=12.0, flow_ml_s=6.0, thrombus_fraction=0.15),
)
PROCEDURE_PERIOD_S = 50.0  # the live demo repeats the procedure with this period

