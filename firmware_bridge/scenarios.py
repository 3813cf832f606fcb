"""Scripted timelines: the procedure shared by the injector simulator and the fluoroscopy phantom, and the
simulator's scenarios (X-ray edges, injections, faults and line outages, repeating with a period).

Both simulators play the same timeline from the same origin, so a simulated injection overlaps the
simulated contrast run exactly as it would in the room. Times are seconds from the origin. A scenario
expands into the device's events (``Scenario.events``); ``firmware_bridge.simulator`` sends them.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import count, pairwise
from typing import Iterator

from .messages import InjectorState

SAMPLE_PERIOD_S = 0.02    # 50 Hz while injecting
ARM_LEAD_S = 0.5          # STATE armed this long before an injection starts
SUMMARY_AFTER_S = 0.05    # SUMMARY this long after the injection ends
FAULT_PRESSURE_LIMIT = 0x0101


@dataclass(frozen=True)
class ScriptedRun:
    label: str                 # "baseline", "intraprocedural", "completion" or "fluoro"
    xray_on_s: float
    xray_off_s: float
    inject_start_s: float | None  # None: fluoroscopy only, no contrast
    volume_ml: float = 0.0
    flow_ml_s: float = 0.0
    thrombus_fraction: float = 1.0  # thrombus left, relative to the baseline (phantom ground truth)
    # A DSA program: (from X-ray on s, exposures/s) steps, e.g. ((0, 4), (3, 1)); empty: the phantom's pulse rate.
    frame_rates: tuple[tuple[float, float], ...] = ()
    by_hand: bool = False           # contrast injected by hand: the phantom shows it, the injector gives none

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

# A digital (DSA) venogram as the live phantom plays it: a fluoroscopy positioning run, then a hand-injected sheath
# venogram acquired at 4 frames/s for the inflow and 1 frame/s for the venous phase (one run across the change).
# The injector gives no contrast: only its X-ray signal. PROCEDURE stays the shared procedure the end-to-end and
# clearance tests follow; this one is chosen with the ``phantom_timeline`` setting.
DSA_VENOGRAM: tuple[ScriptedRun, ...] = (
    ScriptedRun("fluoro", 1.0, 3.0, None),
    ScriptedRun("baseline", 5.0, 13.0, 5.5, volume_ml=8.0, frame_rates=((0.0, 4.0), (3.0, 1.0)), by_hand=True),
)
DSA_VENOGRAM_PERIOD_S = 20.0

# X-ray stopped before the injection ends, so the injector's SUMMARY comes after the run ended (and often after
# it was recorded): X-ray 1.0-2.5 s, 10 ml at 4 ml/s from 1.5 s, ending at ~4.0 s, its SUMMARY 50 ms later.
LATE_SUMMARY: tuple[ScriptedRun, ...] = (ScriptedRun("baseline", 1.0, 2.5, 1.5, volume_ml=10.0, flow_ml_s=4.0),)
LATE_SUMMARY_PERIOD_S = 60.0


@dataclass(frozen=True)
class SimInjection:
    start_s: float
    volume_ml: float
    flow_ml_s: float
    rise_ms: int = 300
    pressure_limit_kpa: int = 2068   # 300 psi
    hold_at_s: float | None = None   # seconds after start: the operator holds ...
    hold_s: float = 0.0              # ... for this long, then resumes
    abort_at_s: float | None = None  # seconds after start: pressure limit exceeded, injection aborted
    idle_after_s: float = 1.0        # seconds after the end: STATE idle (after the SUMMARY)

    def __post_init__(self) -> None:
        if self.volume_ml <= 0 or self.flow_ml_s <= 0:
            raise ValueError("injection volume and flow must be positive")
        if self.idle_after_s <= SUMMARY_AFTER_S:
            raise ValueError(f"idle_after_s must be over {SUMMARY_AFTER_S} s: the SUMMARY comes before idle")


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    period_s: float                                   # the script repeats with this period
    xray: tuple[tuple[float, float], ...] = ()        # (on_s, off_s)
    injections: tuple[SimInjection, ...] = ()
    faults: tuple[tuple[float, int, int, str], ...] = ()  # (t_s, code, severity, text) outside injections
    disconnects: tuple[tuple[float, float], ...] = ()  # (start_s, end_s): the line is unplugged
    bit_error_rate: float = 0.0                       # default when the caller gives none

    def events(self) -> Iterator[tuple[float, str, dict]]:
        """(t_s, kind, fields) in time order, forever (cycle after cycle)."""
        cycle = _cycle_events(self)
        for k in count():
            base = k * self.period_s
            for t, kind, f in cycle:
                yield base + t, kind, f

    def disconnected(self, t_s: float) -> bool:
        local = t_s % self.period_s if t_s >= 0 else t_s
        return any(a <= local < b for a, b in self.disconnects)


def _pressure(flow_ml_s: float) -> int:
    return int(round(120 + 160 * flow_ml_s))  # a catheter's resistance, roughly linear at these flows


def _injection_events(inj: SimInjection, xray: tuple[tuple[float, float], ...]) -> list[tuple[float, str, dict]]:
    ev: list[tuple[float, str, dict]] = [
        (inj.start_s - ARM_LEAD_S, "state", {"state": InjectorState.ARMED, "phase": 0}),
        (inj.start_s, "state", {"state": InjectorState.INJECTING, "phase": 1})]
    rise_s = inj.rise_ms / 1000
    vol = peak_flow = peak_p = 0.0
    t = 0.0          # injection clock, holds included
    pumping = 0.0    # time actually pumping (for the rise ramp)
    held = aborted = False
    hold_end = None if inj.hold_at_s is None else inj.hold_at_s + inj.hold_s
    while vol < inj.volume_ml:
        t = round(t + SAMPLE_PERIOD_S, 6)
        if inj.abort_at_s is not None and t >= inj.abort_at_s:
            aborted = True
            break
        holding = inj.hold_at_s is not None and inj.hold_at_s <= t < hold_end
        if holding and not held:
            held = True
            ev.append((inj.start_s + t, "state", {"state": InjectorState.HOLD, "phase": 1}))
        if held and not holding and hold_end is not None and t >= hold_end and t - SAMPLE_PERIOD_S < hold_end:
            ev.append((inj.start_s + t, "state", {"state": InjectorState.INJECTING, "phase": 1}))
        flow = 0.0
        if not holding:
            pumping += SAMPLE_PERIOD_S
            flow = inj.flow_ml_s * min(1.0, pumping / rise_s) if rise_s > 0 else inj.flow_ml_s
            vol = min(inj.volume_ml, vol + flow * SAMPLE_PERIOD_S)
        p = _pressure(flow) if flow else 120
        peak_flow, peak_p = max(peak_flow, flow), max(peak_p, p)
        ev.append((inj.start_s + t, "sample", {"flow": int(round(flow * 100)), "volume": int(round(vol * 100)),
                                                "pressure": p, "phase": 1}))
    end = inj.start_s + t
    if aborted:
        ev.append((end, "fault", {"code": FAULT_PRESSURE_LIMIT, "severity": 2,
                                  "text": f"pressure limit {inj.pressure_limit_kpa} kPa exceeded"}))
        ev.append((end + 0.001, "state", {"state": InjectorState.ABORTED, "phase": 0}))
    else:
        ev.append((end, "state", {"state": InjectorState.COMPLETE, "phase": 0}))
    # The X-ray exposure overlapping this injection (the one starting nearest to it).
    on = sorted((a for a, b in xray if a <= end and b >= inj.start_s), key=lambda a: abs(a - inj.start_s))
    ev.append((end + SUMMARY_AFTER_S, "summary", {
        "programmed_volume": int(round(inj.volume_ml * 100)), "delivered_volume": int(round(vol * 100)),
        "programmed_flow": int(round(inj.flow_ml_s * 100)), "peak_flow": int(round(peak_flow * 100)),
        "peak_pressure": int(peak_p), "pressure_limit": inj.pressure_limit_kpa,
        "duration_ms": int(round(t * 1000)), "rise_ms": inj.rise_ms,
        "xray_delay_ms": int(round((on[0] - inj.start_s) * 1000)) if on else 0}))
    ev.append((end + inj.idle_after_s, "state", {"state": InjectorState.IDLE, "phase": 0}))
    return ev  # first ARMED, last IDLE: _cycle_events relies on it


def _cycle_events(sc: Scenario) -> list[tuple[float, str, dict]]:
    ev: list[tuple[float, str, dict]] = []
    for on, off in sc.xray:
        ev += [(on, "xray", {"on": 1}), (off, "xray", {"on": 0})]
    spans = sorted((_injection_events(inj, sc.xray) for inj in sc.injections), key=lambda e: e[0][0])
    for before, after in pairwise(spans):
        # Interleaved states would put SAMPLEs under STATE idle; back to back is the closest allowed.
        if after[0][0] <= before[-1][0]:
            raise ValueError(f"scenario {sc.name}: an injection arms at {after[0][0]:.2f} s, before the one "
                             f"before it is back to idle at {before[-1][0]:.2f} s")
    for span in spans:
        ev += span
    for t, code, sev, text in sc.faults:
        ev.append((t, "fault", {"code": code, "severity": sev, "text": text}))
    ev.sort(key=lambda e: e[0])
    if ev and (ev[0][0] < 0 or ev[-1][0] >= sc.period_s):
        raise ValueError(f"scenario {sc.name}: events must lie within [0, period_s)")
    return ev


def _from_timeline(name: str, description: str, timeline: tuple[ScriptedRun, ...], period_s: float) -> Scenario:
    """The injector's side of a timeline the phantom plays too."""
    return Scenario(name, description, period_s, xray=tuple((r.xray_on_s, r.xray_off_s) for r in timeline),
                    injections=tuple(SimInjection(r.inject_start_s, r.volume_ml, r.flow_ml_s)
                                     for r in timeline if r.inject_start_s is not None and not r.by_hand))


# The timelines the live phantom can play (setting ``phantom_timeline``), each with its injector scenario's name.
TIMELINES: dict[str, tuple[tuple[ScriptedRun, ...], float]] = {
    "procedure": (PROCEDURE, PROCEDURE_PERIOD_S), "dsa": (DSA_VENOGRAM, DSA_VENOGRAM_PERIOD_S)}

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    _from_timeline("procedure", "the shared DVT procedure timeline (firmware_bridge.scenarios.PROCEDURE), repeating",
                   PROCEDURE, PROCEDURE_PERIOD_S),
    _from_timeline("dsa", "a fluoroscopy run, then a hand-injected DSA venogram at 4 then 1 frames/s: the X-ray "
                   "signal only (firmware_bridge.scenarios.DSA_VENOGRAM); every 20 s", DSA_VENOGRAM,
                   DSA_VENOGRAM_PERIOD_S),
    _from_timeline("late-summary", "X-ray stopped before the injection ends, so its SUMMARY comes after the run "
                   "(firmware_bridge.scenarios.LATE_SUMMARY); every 60 s", LATE_SUMMARY, LATE_SUMMARY_PERIOD_S),
    Scenario("nominal", "one iliofemoral venogram: X-ray on, 10 ml at 5 ml/s, X-ray off; every 12 s",
             12.0, xray=((1.0, 7.0),), injections=(SimInjection(2.0, 10.0, 5.0),)),
    Scenario("repeated", "three short injections in one run, every 20 s", 20.0, xray=((1.0, 15.0),),
             injections=(SimInjection(2.0, 5.0, 5.0), SimInjection(6.0, 5.0, 5.0), SimInjection(10.0, 8.0, 4.0))),
    Scenario("hold-resume", "a 10 ml injection held for 1.5 s after 1 s, then resumed; every 15 s", 15.0,
             xray=((1.0, 9.0),), injections=(SimInjection(2.0, 10.0, 5.0, hold_at_s=1.0, hold_s=1.5),)),
    Scenario("faults", "an injection aborted by the pressure limit, then an informational and a warning "
             "fault; every 15 s", 15.0, xray=((1.0, 6.0),),
             injections=(SimInjection(2.0, 10.0, 5.0, abort_at_s=0.8),),
             faults=((8.0, 0x0201, 0, "syringe heater ready"), (10.0, 0x0302, 1, "air detector check due"))),
    Scenario("noisy", "the nominal venogram on a line with bit errors (default rate 1e-4)", 12.0,
             xray=((1.0, 7.0),), injections=(SimInjection(2.0, 10.0, 5.0),), bit_error_rate=1e-4),
    Scenario("disconnects", "the nominal venogram; the line is unplugged 4.1-6.5 s of every 15 s, as the "
             "injection ends, so its SUMMARY is only delivered by retransmission", 15.0, xray=((1.0, 7.0),),
             injections=(SimInjection(2.0, 10.0, 5.0),), disconnects=((4.1, 6.5),)),
    # The busiest the line ever is, for soak and load tests (volumes are not clinical). 296 ml ends the
    # injection at 59.86 s; idle 0.1 s later lets the next one arm at 60 s: 0.66 s without SAMPLE a minute.
    Scenario("continuous", "back-to-back 296 ml injections at 5 ml/s under X-ray, one a minute: SAMPLE at "
             "50 Hz all the time but for a 0.66 s changeover; for soak and load tests", 60.0, xray=((0.2, 59.9),),
             injections=(SimInjection(0.5, 296.0, 5.0, idle_after_s=0.1),)),
)}
