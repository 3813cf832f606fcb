"""The live path end to end: the phantom's scripted procedure (baseline, intraprocedural and completion
venograms between fluoroscopy runs, the table moved between them) as display video through the frame
pipeline, each contrast run's peak-opacity map into the ClearanceTracker with no labels: the first contrast
run must become the baseline, the others must be registered to it and measured against the truth."""
from __future__ import annotations

import numpy as np
import pytest

from core.analysis.clearance.tracker import ClearanceTracker
from core.analysis.pipeline import FramePipeline
from core.sources.frames import Frame
from core.sources.phantom.config import PhantomConfig
from core.sources.phantom.video import PhantomVideo
from firmware_bridge.scenarios import PROCEDURE

FPS = 30.0
SHIFTS = ((0.0, 0.0), (0.0, 0.0), (12.0, -9.0), (12.0, -9.0), (-20.0, 15.0), (-20.0, 15.0))


@pytest.fixture(scope="module")
def procedure():
    video = PhantomVideo(PhantomConfig(size=(384, 384), intensity="log", seed=2, diameter_px=14.0), shifts=SHIFTS)
    pipe = FramePipeline("log")
    tracker = ClearanceTracker()
    runs = []
    # From just before the baseline venogram to just after the completion venogram.
    for k in range(int(7 * FPS), int(46 * FPS)):
        t = k / FPS
        pixels, _ = video.frame_at(t)
        for event in pipe.process(Frame(pixels, int(t * 1e9), k)):
            run = getattr(event, "run", None)
            if event.kind == "run_end" and run is not None and run.peak_opacity is not None:
                scripted = next(i for i, r in enumerate(PROCEDURE) if r.xray_on_s <= t <= r.xray_off_s + 1.0)
                # The pipeline keeps each contrast run's mask beside its peak: the tracker registers on it.
                assert run.mask_log is not None and run.mask_log.shape == run.peak_opacity.shape
                runs.append((scripted, f"run{run.index}", tracker.add_run(f"run{run.index}", run.peak_opacity, None,
                                                                          mask=run.mask_log)))
    return video, tracker, runs


def test_contrast_runs_reach_the_tracker_and_the_first_is_the_baseline(procedure):
    _, tracker, runs = procedure
    assert [PROCEDURE[i].label for i, _, _ in runs] == ["baseline", "intraprocedural", "completion"]
    assert runs[0][2] is None and tracker.baselines == (runs[0][1],)


def test_live_clearance_against_truth(procedure):
    video, tracker, runs = procedure
    b0 = video.scene_truth(runs[0][0]).burden
    for scripted, run_id, res in runs[1:]:
        assert res["baseline_run_id"] == runs[0][1] and res["run_id"] == run_id
        assert res["shift_px"] == pytest.approx(list(SHIFTS[scripted]), abs=1.5)
        b1 = video.scene_truth(scripted).burden
        # Automatic vessel (the tracker has no operator centreline): the clearance requirement's +-8 points.
        assert res["clearance_pct"] == pytest.approx(100 * (b0 - b1) / b0, abs=8.0)
    assert tracker.latest() is runs[-1][2]
    png = tracker.render_png()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert np.isfinite(runs[-1][2]["burden_post_pct"])


def test_a_centreline_set_right_after_a_new_procedure_lands_on_the_new_tracker(tmp_path):
    """The tracker is looked up when the worker runs the task, not when it is queued: a centreline queued
    behind a new procedure's reset is drawn on the new (empty) tracker, never on the one being discarded."""
    import threading

    from core.appliance.appliance import Appliance
    from core.appliance.worker import AnalysisWorker
    from core.ops.settings import Settings
    from tests.test_clearance import synthetic_vessel
    from tests.waiting import wait_for

    worker = AnalysisWorker()
    device = Appliance(Settings(data_dir=tmp_path, video="none"), worker=worker)
    device.start()
    try:
        image, _ = synthetic_vessel(size=(128, 128))
        worker.submit(lambda: device.clearance.tracker.add_run("old-0", image, "baseline")).result(timeout=10)
        gate = threading.Event()
        busy = worker.submit(gate.wait, 10)       # the worker is busy: what follows queues behind it
        wait_for(busy.running, 5)
        device.start_procedure("next")            # queues the reset of the tracker (and of the other live analyses)
        queued = worker.pending()[0]
        refused: list[str] = []

        def draw() -> None:
            try:
                device.set_centerline([(64.0, 10.0 + 5 * i) for i in range(20)], None)
            except ValueError as exc:
                refused.append(str(exc))

        drawer = threading.Thread(target=draw)
        drawer.start()
        wait_for(lambda: worker.pending()[0] == queued + 1, 5)   # the resets, then the centreline
        gate.set()
        drawer.join(10)
        assert refused and "no baseline yet" in refused[0]
        assert device.clearance.tracker.baseline_id is None and device.status()["clearance"] is None
    finally:
        device.stop()


class _Log:
    def __init__(self):
        self.events = []

    def record(self, kind, data, *, key=None, procedure_id=None):
        self.events.append((kind, data, key))

    def record_clearance(self, result, *, key, procedure_id=None):
        self.events.append(("clearance", result, key))


class _Procs:
    def current(self):
        return None


def test_live_clearance_passes_the_mask_logs_revisions_and_takes_the_settings_grades(tmp_path):
    from core.appliance.appliance import Appliance
    from core.appliance.clearance import LiveClearance
    from core.appliance.worker import AnalysisWorker
    from core.ops.settings import Settings

    device = Appliance(Settings(data_dir=tmp_path, video="none", grade_thresholds="40,90"))
    assert device.clearance.tracker.grade_thresholds == (40.0, 90.0)

    log, worker = _Log(), AnalysisWorker("test")
    live = LiveClearance(worker, log, _Procs(), (40.0, 90.0))
    seen = {}

    def add_run(run_id, peak, label, mask=None):
        seen["mask"] = mask
        return {"run_id": run_id, "baseline_run_id": "r0", "label": label, "clearance_pct": 12.0, "grade": None,
                "gradable": False, "progression": False, "warnings": ["weak registration"],
                "residual_defects": [{"start_frac": 0.2, "end_frac": 0.3}],
                "revisions": [{"run_id": "r1", "burden_post_pct_was": 10.0, "burden_post_pct": 12.5}]}
    live.tracker.add_run = add_run
    mask = np.ones((32, 32), np.float32)
    live.measure("r2", np.zeros((32, 32), np.float32), None, mask)
    assert seen["mask"] is mask
    kinds = [k for k, _, _ in log.events]
    assert kinds == ["clearance", "clearance_revised"]
    assert log.events[1][1]["run_id"] == "r1" and log.events[1][1]["by_run_id"] == "r2"
    head = live.headline()
    assert head["gradable"] is False and head["warnings"] == ["weak registration"]
    assert head["residual_defects"] and head["progression"] is False
    worker.shutdown()
    live._reset()
    assert live.tracker.grade_thresholds == (40.0, 90.0)


@pytest.mark.parametrize("extra, shown", [({"gradable": False, "grade": None, "warnings": ["weak registration"]},
                                           "NOT GRADABLE"),
                                          ({"progression": True, "grade": None, "clearance_pct": -12.0},
                                           "PROGRESSION"),
                                          ({"grade": "II"}, "grade II")])
def test_the_status_page_says_not_gradable_and_progression_plainly(extra, shown):
    from api.routes.page import render
    clearance = {"run_id": "r2", "baseline_run_id": "r0", "clearance_pct": 60.0, "grade": "II", "gradable": True,
                 "progression": False, "warnings": [], "residual_defects": [{"start_frac": 0.2, "end_frac": 0.3}]}
    status = {"injector": {"link": "down"}, "xray": {}, "run": None, "procedure": None,
              "clearance": {**clearance, **extra}}
    page = render(status)
    assert f">{shown}<" in page
    assert "residual defects: 1" in page
    if extra.get("warnings"):
        assert "not gradable: weak registration" in page


def test_a_re_measurement_is_logged_and_a_repeated_result_is_not(tmp_path):
    """A run relabelled after it was measured is measured again: the new result is an event of its own (the log's
    newest clearance of the run says what the page shows); the same result published again is logged once."""
    from core.appliance.clearance import LiveClearance
    from core.appliance.worker import AnalysisWorker
    from core.store.eventlog import EventLog

    log, worker = EventLog(tmp_path), AnalysisWorker("test")
    log.start()
    try:
        live = LiveClearance(worker, log, _Procs(), (50.0, 95.0))
        result = {"run_id": "r2", "baseline_run_id": "r0", "label": None, "clearance_pct": 40.0, "grade": "I",
                  "gradable": True, "progression": False, "warnings": [], "residual_defects": []}
        relabelled = dict(result, label="completion")
        live.tracker.add_run = lambda run_id, peak, label, mask=None: dict(result)
        live.tracker.relabel = lambda run_id, label: dict(relabelled)
        peak = np.zeros((32, 32), np.float32)
        live.measure("r2", peak, None)
        live.measure("r2", peak, None)                    # the same result again (a rebuild): not a new event
        worker.submit(live._relabel, "r2", "completion", None).result(timeout=10)
        assert log.flush(5)
        logged = [e["data"] for e in log.events(limit=100) if e["kind"] == "clearance"]
        assert [e["label"] for e in logged] == [None, "completion"]
    finally:
        worker.shutdown()
        log.close()
