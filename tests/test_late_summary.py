"""An injector SUMMARY that comes after its run ended: the run's record still gets the injector's figures.

The operator stops X-ray before the injection ends, and the SUMMARY follows the injection's end by a moment,
so the run has ended (and is often recorded) before the injector reports. Both simulators play one script:
X-ray 1.0-2.5 s, a 10 ml injection at 4 ml/s from 1.5 s that ends at ~4.15 s, its SUMMARY ~50 ms later.
"""
import threading
import time

import pytest

from core.analysis.runs import INJECTOR_FIGURES, Run, merge_injection
from core.appliance.appliance import Appliance
from core.ops.settings import Settings
from core.sources.phantom.config import PhantomConfig
from core.sources.phantom.video import PhantomSource, PhantomVideo
from core.vocab import NS
from firmware_bridge.messages import Summary
from firmware_bridge.scenarios import ScriptedRun
from firmware_bridge.simulator import SCENARIOS, Scenario, SimInjection
from tests.waiting import wait_for

XRAY_ON_S, XRAY_OFF_S, INJECT_S, VOLUME_ML, FLOW_ML_S = 1.0, 2.5, 1.5, 10.0, 4.0
SCRIPT = Scenario("late-summary", "X-ray stopped before the injection ends, so its SUMMARY comes after the run",
                  60.0, xray=((XRAY_ON_S, XRAY_OFF_S),), injections=(SimInjection(INJECT_S, VOLUME_ML, FLOW_ML_S),))
TIMELINE = (ScriptedRun("baseline", XRAY_ON_S, XRAY_OFF_S, INJECT_S, volume_ml=VOLUME_ML, flow_ml_s=FLOW_ML_S),)


@pytest.fixture
def appliance(tmp_path, monkeypatch):
    monkeypatch.setitem(SCENARIOS, SCRIPT.name, SCRIPT)   # a scenario of this test, served by the simulator
    t0 = time.monotonic_ns() + NS // 2
    video = PhantomVideo(PhantomConfig(size=(128, 128), intensity="log"), timeline=TIMELINE, period_s=60.0)
    device = Appliance(Settings(data_dir=tmp_path, phantom_size=128,
                                serial=f"injsim://?scenario={SCRIPT.name}&t0_ns={t0}"),
                       source=PhantomSource(video, t0_ns=t0))
    device.start()
    yield device
    device.stop()


def injections_counted(device: Appliance) -> int:
    return device.status()["procedure"]["totals"]["injections"]


def assert_has_the_injectors_figures(record: dict) -> None:
    assert record["contrast"] is True
    assert record["delivered_volume_ml"] == VOLUME_ML and record["peak_flow_ml_s"] == FLOW_ML_S
    assert record["peak_pressure_kpa"] > 0 and record["injection_duration_ms"] > 2000
    assert record["injector_xray_delay_ms"] == round((XRAY_ON_S - INJECT_S) * 1000)
    assert record["injections"] == 1 and record["injection_stop_ns"] > record["injection_start_ns"]
    assert record["injection_delay_s"] == pytest.approx(INJECT_S - XRAY_ON_S, abs=0.1)


def test_a_summary_after_the_run_was_recorded_completes_its_record(appliance):
    (run,) = wait_for(appliance.runs, 8)
    run_id, pid = run["run_id"], run["procedure_id"]
    assert run["delivered_volume_ml"] is None          # recorded before the injector reported
    assert run["injection_start_ns"] is not None        # the injection had started (STATE injecting)
    assert injections_counted(appliance) == 0

    record = wait_for(lambda: (r := appliance.run(run_id)) and r["delivered_volume_ml"] is not None and r, 8)
    assert_has_the_injectors_figures(record)
    assert record["injection_start_ns"] == run["injection_start_ns"] and record["procedure_id"] == pid
    assert {k: record[k] for k in ("start_ns", "end_ns", "duration_s", "frames", "rois")} == \
        {k: run[k] for k in ("start_ns", "end_ns", "duration_s", "frames", "rois")}
    assert [r["run_id"] for r in appliance.runs()] == [run_id]
    assert len([r for r in appliance.log.runs(pid) if r["run_id"] == run_id]) == 2

    status = appliance.status()
    (brief,) = status["last_runs"]
    assert brief["delivered_volume_ml"] == VOLUME_ML and brief["contrast"] is True
    # The volume is the injection's, counted once; the run is still one run.
    expected = {"runs": 1, "contrast_runs": 1, "contrast_ml": VOLUME_ML, "injections": 1}
    assert {k: status["procedure"]["totals"][k] for k in expected} == expected
    assert appliance.log.flush(5)
    assert {k: appliance.procedure(pid)["totals"][k] for k in expected} == expected
    assert status["counters"]["runs"] == 1 and status["counters"]["contrast_runs"] == 1

    # The device resends its SUMMARY: counted and matched once.
    (inj,) = appliance.log.injections(pid)
    resent = Summary(seq=inj["seq"], device_ms=inj["device_ms"],
                     programmed_volume=round(inj["programmed_volume_ml"] * 100),
                     delivered_volume=round(inj["delivered_volume_ml"] * 100),
                     programmed_flow=round(inj["programmed_flow_ml_s"] * 100),
                     peak_flow=round(inj["peak_flow_ml_s"] * 100), peak_pressure=inj["peak_pressure_kpa"],
                     pressure_limit=inj["pressure_limit_kpa"], duration_ms=inj["duration_ms"],
                     rise_ms=inj["rise_ms"], xray_delay_ms=inj["xray_delay_ms"])
    appliance._on_message(resent, time.monotonic_ns())   # as the bridge delivers a message
    appliance._worker.submit(lambda: None).result(timeout=10)
    assert appliance.log.flush(5)
    assert len([r for r in appliance.log.runs(pid) if r["run_id"] == run_id]) == 2
    assert {k: appliance.status()["procedure"]["totals"][k] for k in expected} == expected

    # A label given afterwards keeps the figures (it re-records the newest record).
    appliance.label_run(run_id, "baseline")
    assert appliance.log.flush(5)
    relabelled = appliance.run(run_id)
    assert relabelled["label"] == "baseline"
    assert_has_the_injectors_figures(relabelled)


def test_a_summary_while_the_run_waits_for_analysis_is_in_its_first_record(appliance):
    """Not the pipeline's doing: it matched the injection (without summary) when the run ended."""
    gate = threading.Event()
    appliance._worker.submit(gate.wait, 20)             # hold the analysis worker: the run ends, unanalysed
    try:
        (run_id,) = wait_for(lambda: set(appliance._finishing), 8)
        wait_for(lambda: injections_counted(appliance) == 1, 8)   # the SUMMARY came meanwhile
        assert appliance.runs() == []
    finally:
        gate.set()
    (record,) = wait_for(appliance.runs, 10)
    assert record["run_id"] == run_id
    assert_has_the_injectors_figures(record)
    appliance._worker.submit(lambda: None).result(timeout=10)
    assert appliance.log.flush(5)
    assert len(appliance.log.runs()) == 1                # complete when first recorded: no second record
    totals = appliance.status()["procedure"]["totals"]
    assert (totals["runs"], totals["contrast_runs"], totals["contrast_ml"]) == (1, 1, VOLUME_ML)


def test_merged_figures_are_the_ones_a_timely_summary_gives():
    """merge_injection puts the SUMMARY where Run.summary() puts it."""
    summary = {"delivered_volume_ml": 9.5, "peak_flow_ml_s": 4.0, "peak_pressure_kpa": 760, "duration_ms": 2650,
               "xray_delay_ms": -500, "programmed_volume_ml": 10.0, "seq": 7}
    start, stop = 2 * NS, 5 * NS
    timely = Run(index=0, start_ns=1 * NS, pulse_ns=[NS, 2 * NS], end_ns=3 * NS, contrast=True,
                 injection={"start_ns": start, "stop_ns": stop, "summary": summary, "count": 1}).summary()
    for before in ({"start_ns": start, "stop_ns": None, "summary": None, "count": 1}, None):
        late = Run(index=0, start_ns=1 * NS, pulse_ns=[NS, 2 * NS], end_ns=3 * NS, contrast=before is not None,
                   injection=before).summary()
        assert merge_injection(late, {"start_ns": start, "stop_ns": stop, "summary": summary}) == timely
    assert {key for key, _ in INJECTOR_FIGURES} <= set(timely)
