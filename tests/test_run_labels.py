"""Operator labels on runs: durable, shown once, and refused for unknown runs or labels."""
import time

import pytest

from core.appliance import Appliance
from core.settings import Settings


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
    finally:
        second.stop()


def test_a_label_given_while_the_run_is_analysed_is_in_its_record(appliance):
    import threading

    gate = threading.Event()
    appliance._worker.submit(gate.wait, 20)            # hold the analysis worker: the run ends, unanalysed
    deadline = time.monotonic() + 15
    while not appliance._finishing and time.monotonic() < deadline:
        time.sleep(0.05)
    (run_id,) = appliance._finishing
    assert appliance.runs() == []
    appliance.label_run(run_id, "baseline")
    gate.set()
    deadline = time.monotonic() + 10
    while not appliance.runs() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert appliance.log.flush(5)
    (record,) = appliance.runs()
    assert record["run_id"] == run_id and record["label"] == "baseline"
