"""Operator labels on runs: durable, shown once, kept in the run's own procedure, and refused for unknown runs
or labels."""
import logging
import time

import pytest

from core.appliance.appliance import Appliance
from core.ops.settings import Settings
from core.sources.phantom.config import PhantomConfig
from core.sources.phantom.video import PhantomSource, PhantomVideo
from firmware_bridge.scenarios import ScriptedRun
from tests.waiting import wait_for


@pytest.fixture
def appliance(tmp_path):
    device = Appliance(Settings(data_dir=tmp_path, phantom_size=128))
    device.start()
    yield device
    device.stop()


def test_label_a_recorded_run(appliance, tmp_path):
    deadline = time.monotonic() + 15
    while not appliance.runs() and time.monotonic() < deadline:
        time.sleep(0.2)
    (first,) = appliance.runs()
    run_id = first["run_id"]
    assert first["label"] is None

    appliance.label_run(run_id, "completion")
    assert appliance.log.flush(5)
    runs = appliance.runs()
    assert [r["run_id"] for r in runs] == [run_id]
    assert runs[0]["label"] == "completion"
    assert appliance.run(run_id)["label"] == "completion"
    assert appliance.status()["last_runs"][0]["label"] == "completion"

    with pytest.raises(ValueError):
        appliance.label_run(run_id, "final")
    with pytest.raises(LookupError):
        appliance.label_run("nosuchrun-1", "baseline")


def test_a_label_survives_a_restart(tmp_path):
    first = Appliance(Settings(data_dir=tmp_path, phantom_size=128))
    first.start()
    try:
        deadline = time.monotonic() + 15
        while not first.runs() and time.monotonic() < deadline:
            time.sleep(0.2)
        run_id = first.runs()[0]["run_id"]
        first.label_run(run_id, "baseline")
    finally:
        first.stop()
    second = Appliance(Settings(data_dir=tmp_path, phantom_size=128))
    second.start()
    try:
        assert second.run(run_id)["label"] == "baseline"
        # The resumed procedure counts the relabelled run once, though it has two records.
        assert second.status()["procedure"]["totals"]["runs"] == len(second.runs())
    finally:
        second.stop()


def test_a_label_given_while_the_run_is_analysed_is_in_its_record(appliance):
    import threading

    gate = threading.Event()
    appliance._worker.submit(gate.wait, 20)            # hold the analysis worker: the run ends, unanalysed
    (run_id,) = wait_for(lambda: set(appliance._finishing), 15)
    assert appliance.runs() == []
    appliance.label_run(run_id, "baseline")
    gate.set()
    wait_for(appliance.runs, 10)
    assert appliance.log.flush(5)
    (record,) = appliance.runs()
    assert record["run_id"] == run_id and record["label"] == "baseline"


def test_a_relabel_after_the_next_procedure_opened_stays_with_its_own_procedure(appliance):
    (first_run,) = wait_for(appliance.runs, 15)
    run_id = first_run["run_id"]
    first = first_run["procedure_id"]
    appliance.end_procedure()
    second = appliance.start_procedure("next")["id"]
    appliance.label_run(run_id, "intraprocedural")
    assert appliance.log.flush(5)

    record = appliance.run(run_id)
    assert record["label"] == "intraprocedural" and record["procedure_id"] == first
    assert [r["run_id"] for r in appliance.runs()] == [run_id]
    assert appliance.procedure(first)["totals"]["runs"] == 1       # recorded twice, counted once
    assert appliance.procedure(second)["totals"]["runs"] == 0
    assert appliance.status()["procedure"]["totals"]["runs"] == 0
    in_second = [e["kind"] for e in appliance.log.events(limit=1000, procedure_id=second)]
    assert "run" not in in_second and "run_label" not in in_second
    labels = [e["data"] for e in appliance.log.events(limit=1000, procedure_id=first) if e["kind"] == "run_label"]
    assert labels == [{"run_id": run_id, "label": "intraprocedural"}]


def test_an_earlier_procedures_run_is_never_paired_with_this_procedures_baseline(tmp_path, caplog):
    """Two venograms, one per procedure. Relabelling the first after the second procedure opened re-records
    its label, and clearance leaves it alone: it is not paired with the second procedure's baseline."""
    t0 = time.monotonic_ns() + 300_000_000
    timeline = (ScriptedRun("baseline", 0.5, 2.5, 0.8, volume_ml=10.0, flow_ml_s=5.0),
                ScriptedRun("completion", 5.5, 7.5, 5.8, volume_ml=10.0, flow_ml_s=5.0, thrombus_fraction=0.2))
    video = PhantomVideo(PhantomConfig(size=(128, 128), intensity="log"), timeline=timeline, period_s=60.0)
    device = Appliance(Settings(data_dir=tmp_path, phantom_size=128), source=PhantomSource(video, t0_ns=t0))
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
        device._worker.submit(lambda: None).result(timeout=10)    # the relabel has been through the tracker
        assert device.log.flush(5)
        assert device.run(old["run_id"])["label"] == "completion"
        assert device.run(old["run_id"])["procedure_id"] == old["procedure_id"]
        assert device.status()["clearance"] is None      # the new run is this procedure's baseline, unpaired
        assert device.log.clearance_results() == []
        assert new["contrast"] and not [r for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        device.stop()
