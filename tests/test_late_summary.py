"""An injector SUMMARY that comes after its run ended: the run's record still gets the injector's figures.

The operator stops X-ray before the injection ends, and the SUMMARY follows the injection's end by a moment,
so the run has ended (and is often recorded) before the injector reports. The script: X-ray 1.0-2.5 s, a
10 ml injection at 4 ml/s from 1.5 s that ends at ~4.0 s, its SUMMARY 50 ms later. The books run in
simulated time (tests/desk.py); one test runs the whole appliance on its simulators.
"""
import time

import pytest

from core.analysis.runs import INJECTOR_FIGURES, Run, merge_injection
from core.appliance.appliance import Appliance
from core.appliance.books import procedure_totals
from core.ops.settings import Settings
from core.sources.phantom.config import PhantomConfig
from core.sources.phantom.video import PhantomSource, PhantomVideo
from core.vocab import NS
from firmware_bridge.messages import InjectorState, Sample, State, Summary, Xray
from firmware_bridge.scenarios import LATE_SUMMARY, LATE_SUMMARY_PERIOD_S, SCENARIOS
from tests.desk import Desk
from tests.waiting import wait_for

(RUN,) = TIMELINE = LATE_SUMMARY
XRAY_ON_S, XRAY_OFF_S, INJECT_S, VOLUME_ML, FLOW_ML_S = RUN.xray_on_s, RUN.xray_off_s, RUN.inject_start_s, \
    RUN.volume_ml, RUN.flow_ml_s
INJECTION_MS = round(VOLUME_ML / FLOW_ML_S * 1000)
SCRIPT = SCENARIOS["late-summary"]          # the injector's side of the timeline, served by the simulator
SUMMARY = Summary(seq=7, device_ms=4050, programmed_volume=1000, delivered_volume=round(VOLUME_ML * 100),
                  programmed_flow=round(FLOW_ML_S * 100), peak_flow=round(FLOW_ML_S * 100), peak_pressure=640,
                  pressure_limit=2000, duration_ms=INJECTION_MS, rise_ms=120,
                  xray_delay_ms=round((XRAY_ON_S - INJECT_S) * 1000))
EXPECTED = {"runs": 1, "contrast_runs": 1, "contrast_ml": VOLUME_ML, "injections": 1}


def assert_has_the_injectors_figures(record: dict) -> None:
    assert record["contrast"] is True
    assert record["delivered_volume_ml"] == VOLUME_ML and record["peak_flow_ml_s"] == FLOW_ML_S
    assert record["peak_pressure_kpa"] > 0 and record["injection_duration_ms"] > 2000
    assert record["injector_xray_delay_ms"] == round((XRAY_ON_S - INJECT_S) * 1000)
    assert record["injections"] == 1 and record["injection_stop_ns"] > record["injection_start_ns"]
    assert record["injection_delay_s"] == pytest.approx(INJECT_S - XRAY_ON_S, abs=0.1)


def play_until_the_summary(desk: Desk, *, analyse_before_it: bool) -> int:
    """The script on the desk: device X-ray edges and SAMPLEs with flow, the frames, then the SUMMARY.
    Returns when the injection started."""
    desk.frames(XRAY_ON_S, xray=False)
    desk.message(Xray(seq=1, device_ms=1000, on=1))
    desk.frames(INJECT_S, xray=True)
    started_ns = desk.now
    desk.message(State(seq=2, device_ms=1500, state=InjectorState.INJECTING))
    desk.message(Sample(seq=3, device_ms=1500, flow=400, volume=0, pressure=300))
    desk.frames(XRAY_OFF_S, xray=True)
    desk.message(Xray(seq=4, device_ms=2500, on=0))
    desk.frames(XRAY_OFF_S + 1.0, xray=False)      # the run ends after its last pulse
    if analyse_before_it:
        desk.work()
    desk.frames(INJECT_S + INJECTION_MS / 1000 + 0.05, xray=False)
    desk.message(SUMMARY)
    return started_ns


def test_a_summary_after_the_run_was_recorded_completes_its_record():
    desk = Desk()
    started_ns = play_until_the_summary(desk, analyse_before_it=True)
    ((run_id, first),) = [(w.run_id, w.record) for w in desk.written]
    assert first["delivered_volume_ml"] is None          # recorded before the injector reported
    assert first["injection_start_ns"] == started_ns      # the injection had started (STATE injecting)
    assert desk.written[0].procedure_id == "p1"
    desk.work()

    (record,) = desk.records(run_id)[1:]
    assert_has_the_injectors_figures(record)
    assert record["injection_start_ns"] == first["injection_start_ns"] and desk.written[1].procedure_id == "p1"
    assert {k: record[k] for k in ("start_ns", "end_ns", "duration_s", "frames", "rois")} == \
        {k: first[k] for k in ("start_ns", "end_ns", "duration_s", "frames", "rois")}
    assert len({w.key for w in desk.written}) == 2         # two records of one run, both kept by the log

    (brief,) = desk.runs.last_runs()
    assert brief["run_id"] == run_id and brief["delivered_volume_ml"] == VOLUME_ML and brief["contrast"] is True
    # The volume is the injection's, counted once; the run is still one run.
    assert {k: desk.runs.totals.to_dict()[k] for k in EXPECTED} == EXPECTED
    injection = dict(SUMMARY.to_dict(), start_ns=first["injection_start_ns"], stop_ns=desk.now)
    assert {k: procedure_totals({}, [record], [injection]).to_dict()[k] for k in EXPECTED} == EXPECTED
    assert (desk.runs.runs_total, desk.runs.contrast_runs_total) == (1, 1)

    # The device resends its SUMMARY: counted and matched once.
    desk.frames(INJECT_S + INJECTION_MS / 1000 + 0.5, xray=False)
    desk.message(SUMMARY)
    desk.work()
    assert len(desk.written) == 2 and desk.queue == []
    assert {k: desk.runs.totals.to_dict()[k] for k in EXPECTED} == EXPECTED

    # A label given afterwards keeps the figures (it re-records the newest record).
    pid, write = desk.runs.label(run_id, "baseline", committed=None, current=False, open_procedure_id="p1")
    assert pid == "p1" and write.procedure_id == "p1" and write.key == f"run:{run_id}:label:{desk.now}"
    assert write.record["label"] == "baseline"
    assert_has_the_injectors_figures(write.record)


def test_a_summary_while_the_run_waits_for_analysis_is_in_its_first_record():
    """Not the pipeline's doing: it matched the injection (without summary) when the run ended."""
    desk = Desk()
    play_until_the_summary(desk, analyse_before_it=False)   # the worker is busy: the run ends, unanalysed
    assert desk.runs.analysing("s1-0")
    assert desk.runs.totals.injections == 1                 # the SUMMARY came meanwhile
    assert desk.written == []
    desk.work()
    (write,) = desk.written                                 # complete when first recorded: no second record
    assert write.run_id == "s1-0" and not desk.runs.analysing("s1-0")
    assert_has_the_injectors_figures(write.record)
    totals = desk.runs.totals
    assert (totals.runs, totals.contrast_runs, totals.contrast_ml) == (1, 1, VOLUME_ML)


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


# -- the whole appliance, on its simulators -------------------------------------------------------------------
@pytest.fixture
def appliance(tmp_path):
    t0 = time.monotonic_ns() + NS // 2
    video = PhantomVideo(PhantomConfig(size=(128, 128), intensity="log"), timeline=TIMELINE,
                         period_s=LATE_SUMMARY_PERIOD_S)
    device = Appliance(Settings(data_dir=tmp_path, phantom_size=128,
                                serial=f"injsim://?scenario={SCRIPT.name}&t0_ns={t0}"),
                       source=PhantomSource(video, t0_ns=t0))
    device.start()
    yield device
    device.stop()


def test_the_appliance_records_a_late_summary_in_the_runs_own_procedure(appliance):
    (run,) = wait_for(appliance.runs, 8)
    run_id, pid = run["run_id"], run["procedure_id"]
    assert run["delivered_volume_ml"] is None and run["injection_start_ns"] is not None
    record = wait_for(lambda: (r := appliance.run(run_id)) and r["delivered_volume_ml"] is not None and r, 8)
    assert_has_the_injectors_figures(record)
    assert record["injection_start_ns"] == run["injection_start_ns"] and record["procedure_id"] == pid
    assert [r["run_id"] for r in appliance.runs()] == [run_id]
    assert appliance.log.flush(5)
    assert len([r for r in appliance.log.runs(pid) if r["run_id"] == run_id]) == 2
    status = appliance.status()
    assert {k: status["procedure"]["totals"][k] for k in EXPECTED} == EXPECTED
    assert {k: appliance.procedure(pid)["totals"][k] for k in EXPECTED} == EXPECTED
    assert status["last_runs"][0]["delivered_volume_ml"] == VOLUME_ML
    assert status["counters"]["runs"] == 1 and status["counters"]["contrast_runs"] == 1
    appliance.label_run(run_id, "baseline")
    assert appliance.log.flush(5)
    assert appliance.run(run_id)["label"] == "baseline"
    assert_has_the_injectors_figures(appliance.run(run_id))
