"""Operator labels on runs: durable, shown once, kept in the run's own procedure, and refused for unknown runs
or labels. The run book in simulated time (tests/desk.py), then the appliance on its simulators."""
import logging
import threading
import time

import pytest

from core.appliance.appliance import Appliance
from core.appliance.books import procedure_totals
from core.appliance.worker import AnalysisWorker
from core.ops.settings import Settings
from core.sources.phantom.config import PhantomConfig
from core.sources.phantom.video import PhantomSource, PhantomVideo
from firmware_bridge.scenarios import ScriptedRun
from tests.desk import Desk
from tests.waiting import wait_for

SHORT_RUN = (ScriptedRun("fluoro", 0.3, 1.0, None),)


def one_run(desk: Desk, *, analysed: bool = True) -> str:
    desk.frames(0.5, xray=False)
    desk.frames(1.5, xray=True)
    desk.frames(2.5, xray=False)
    if analysed:
        desk.work()
    return "s1-0"


def test_label_a_recorded_run():
    desk = Desk()
    run_id = one_run(desk)
    (first,) = desk.written
    assert first.record["label"] is None
    desk.now += 10**9
    pid, write = desk.runs.label(run_id, "completion", committed=None, current=False, open_procedure_id="p1")
    assert pid == "p1" and write.run_id == run_id and write.record["label"] == "completion"
    assert write.key != first.key and write.key == f"run:{run_id}:label:{desk.now}"   # the newest record counts
    assert {k: v for k, v in write.record.items() if k != "label"} == \
        {k: v for k, v in first.record.items() if k != "label"}
    assert desk.runs.last_runs()[0]["label"] == "completion"
    # A relabelled run counts once in its procedure's totals (the newest record of each run).
    assert procedure_totals({}, [write.record], []).runs == 1 and desk.runs.totals.runs == 1
    with pytest.raises(LookupError):
        desk.runs.label("nosuchrun-1", "baseline", committed=None, current=False, open_procedure_id="p1")


def test_a_label_of_a_run_only_the_log_remembers_is_recorded_in_its_procedure():
    desk = Desk(procedure_id="p2")
    committed = {"run_id": "old-3", "procedure_id": "p1", "label": None, "recorded_wall": "x", "duration_s": 1.0,
                 "contrast": False}
    pid, write = desk.runs.label("old-3", "baseline", committed=committed, current=False, open_procedure_id="p2")
    assert pid == "p1" and write.procedure_id == "p1"
    assert write.record == {"run_id": "old-3", "label": "baseline", "duration_s": 1.0, "contrast": False}


def test_unknown_labels_are_refused_before_anything_is_recorded(tmp_path):
    device = Appliance(Settings(data_dir=tmp_path, video="none"))
    with pytest.raises(ValueError, match="label must be one of"):
        device.label_run("any-0", "final")


def test_a_label_given_while_the_run_is_analysed_is_in_its_record():
    desk = Desk()
    run_id = one_run(desk, analysed=False)          # the worker is busy: the run ended, unanalysed
    assert desk.runs.analysing(run_id) and desk.written == []
    pid, write = desk.runs.label(run_id, "baseline", committed=None, current=False, open_procedure_id="p1")
    assert (pid, write) == ("p1", None)             # nothing to re-record: its first record takes the label
    desk.work()
    (record,) = desk.written
    assert record.run_id == run_id and record.record["label"] == "baseline"


def test_a_label_of_the_current_run_waits_for_its_record():
    desk = Desk()
    desk.frames(0.5, xray=False)
    desk.frames(1.0, xray=True)                     # the run is going
    assert desk.runs.label("s1-0", "completion", committed=None, current=True, open_procedure_id="p1") == \
        ("p1", None)
    desk.frames(1.5, xray=True)
    desk.frames(2.5, xray=False)
    desk.work()
    assert desk.written[0].record["label"] == "completion"


def test_a_relabel_after_the_next_procedure_opened_stays_with_its_own_procedure():
    desk = Desk(procedure_id="p1")
    run_id = one_run(desk)
    (first,) = desk.written
    desk.runs.new_procedure()
    desk.open_procedure_id = "p2"
    pid, write = desk.runs.label(run_id, "intraprocedural", committed=None, current=False,
                                 open_procedure_id="p2")
    assert pid == "p1" and write.procedure_id == "p1" and write.record["label"] == "intraprocedural"
    assert procedure_totals({}, [write.record], []).runs == 1      # recorded twice, counted once
    assert desk.runs.totals.runs == 0                              # the open procedure has no run


# -- the appliance, through its public methods ----------------------------------------------------------------
def short_run_appliance(data_dir, **kw) -> Appliance:
    t0 = time.monotonic_ns() + 300_000_000
    video = PhantomVideo(PhantomConfig(size=(128, 128), intensity="log"), timeline=SHORT_RUN, period_s=60.0)
    return Appliance(Settings(data_dir=data_dir, phantom_size=128), source=PhantomSource(video, t0_ns=t0), **kw)


def test_a_label_survives_a_restart_and_the_run_counts_once(tmp_path):
    worker = AnalysisWorker()
    first = short_run_appliance(tmp_path, worker=worker)
    first.start()
    try:
        gate = threading.Event()
        worker.submit(gate.wait, 20)                 # hold the analysis: the label comes while the run is analysed
        wait_for(lambda: first.status()["counters"]["frames"] > 30 and first.status()["run"] is None
                 and first.events(limit=1000) and any(e["kind"] == "xray_off" for e in first.events(limit=1000)), 15)
        run_id = next(e["data"]["run_id"] for e in first.events(limit=1000) if e["kind"] == "xray_off")
        assert first.runs() == []
        first.label_run(run_id, "baseline")
        gate.set()
        (record,) = wait_for(first.runs, 10)
        assert record["run_id"] == run_id and record["label"] == "baseline"
        first.label_run(run_id, "completion")
        with pytest.raises(LookupError):
            first.label_run("nosuchrun-1", "baseline")
        assert first.log.flush(5)
        assert [r["run_id"] for r in first.runs()] == [run_id] and first.run(run_id)["label"] == "completion"
        assert first.status()["last_runs"][0]["label"] == "completion"
    finally:
        first.stop()
    second = Appliance(Settings(data_dir=tmp_path, video="none"))
    second.start()
    try:
        assert second.run(run_id)["label"] == "completion"
        # The resumed procedure counts the relabelled run once, though it has two records.
        assert second.status()["procedure"]["totals"]["runs"] == len(second.runs()) == 1
    finally:
        second.stop()


def test_an_earlier_procedures_run_is_never_paired_with_this_procedures_baseline(tmp_path, caplog):
    """Two venograms, one per procedure. Relabelling the first after the second procedure opened re-records
    its label, and clearance leaves it alone: it is not paired with the second procedure's baseline."""
    t0 = time.monotonic_ns() + 300_000_000
    timeline = (ScriptedRun("baseline", 0.5, 2.5, 0.8, volume_ml=10.0, flow_ml_s=5.0),
                ScriptedRun("completion", 5.5, 7.5, 5.8, volume_ml=10.0, flow_ml_s=5.0, thrombus_fraction=0.2))
    video = PhantomVideo(PhantomConfig(size=(128, 128), intensity="log"), timeline=timeline, period_s=60.0)
    worker = AnalysisWorker()
    device = Appliance(Settings(data_dir=tmp_path, phantom_size=128), source=PhantomSource(video, t0_ns=t0),
                       worker=worker)
    device.start()
    try:
        caplog.set_level(logging.INFO, logger="cathlab.appliance")
        (old,) = wait_for(lambda: [r for r in device.runs() if device.run_image_png(r["run_id"])], 10)
        assert old["contrast"]
        device.end_procedure()
        second = device.start_procedure("next")["id"]
        new = wait_for(lambda: [r for r in device.runs() if r["procedure_id"] == second
                                and device.run_image_png(r["run_id"])], 15)[0]
        device.label_run(old["run_id"], "completion")
        worker.submit(lambda: None).result(timeout=10)    # the relabel has been through the tracker
        assert device.log.flush(5)
        assert device.run(old["run_id"])["label"] == "completion"
        assert device.run(old["run_id"])["procedure_id"] == old["procedure_id"]
        in_second = [e["kind"] for e in device.log.events(limit=1000, procedure_id=second)]
        assert "run_label" not in in_second
        labels = [e["data"] for e in device.log.events(limit=1000, procedure_id=old["procedure_id"])
                  if e["kind"] == "run_label"]
        assert labels == [{"run_id": old["run_id"], "label": "completion"}]
        assert device.procedure(old["procedure_id"])["totals"]["runs"] == 1    # recorded twice, counted once
        assert device.status()["clearance"] is None      # the new run is this procedure's baseline, unpaired
        assert device.log.clearance_results() == []
        assert new["contrast"] and not [r for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        device.stop()
