"""Live vessel sizing survives an appliance restart: the results, the latest one, the operator's calibration and
centreline, and display video's gain per run are rebuilt from the event log, the open procedure's run images from
the files clearance keeps."""
import time

import numpy as np
import pytest

from core.appliance.appliance import Appliance
from core.appliance.worker import AnalysisWorker
from core.ops.settings import Settings
from core.sources.phantom.config import PhantomConfig
from core.sources.phantom.video import PhantomSource, PhantomVideo
from firmware_bridge.scenarios import ScriptedRun
from tests.test_display_gain import GAIN_TOL
from tests.waiting import wait_for

GAIN = 90.0
COMPLETION = (ScriptedRun("completion", 0.5, 2.5, 0.8, volume_ml=10.0, flow_ml_s=5.0, thrombus_fraction=0.0),)


def tube(centreline: np.ndarray, width: float) -> np.ndarray:
    """A vein ``width`` px wide along ``centreline`` on a 256 x 256 peak-opacity image, as the phantom's."""
    ys, xs = np.mgrid[0:256, 0:256]
    pixels = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)
    near = np.full(len(pixels), np.inf, np.float32)
    for point in centreline[::2].astype(np.float32):     # points 1 px apart: every other one is close enough
        near = np.minimum(near, np.hypot(*(pixels - point).T))
    return (near <= width / 2).reshape(256, 256).astype(np.float32)


def test_sizing_results_and_calibration_survive_a_restart(tmp_path):
    worker = AnalysisWorker()
    t0 = time.monotonic_ns() + 300_000_000
    # Display video whose LUT's gain its noise gives (the default phantom's soft tissue spans too few levels).
    video = PhantomVideo(PhantomConfig(size=(256, 256), intensity="log", display_gain=GAIN), timeline=COMPLETION,
                         period_s=60.0)
    first = Appliance(Settings(data_dir=tmp_path, phantom_size=256), source=PhantomSource(video, t0_ns=t0),
                      worker=worker)
    first.start()
    try:
        proc = first.start_procedure("restart")
        first.set_calibration(mm_per_px=0.25)
        (run,) = wait_for(lambda: [r for r in first.runs() if r["contrast"] and first.run_image_png(r["run_id"])],
                          15, explain=first.runs)
        run_id = run["run_id"]
        first.label_run(run_id, "baseline")
        line = video.scene_truth(0).centreline_xy
        line = line[np.all((line > 24) & (line < 232), axis=1)]      # the part inside the collimated field
        drawn = [tuple(p) for p in np.vstack([line[::25], line[-1:]])]
        first.set_centerline(drawn, None)     # drawn on the baseline, after its relabel on the worker
        first.label_run(run_id, "completion")
        sized = wait_for(lambda: first.run(run_id)["vessel"], 30, explain=lambda: [(e["kind"], e["data"]) for e in
                         first.events(limit=1000) if e["kind"].startswith(("vessel", "run_", "center"))])
        assert sized["calibration"] == "operator" and sized["mm_per_px"] == 0.25
        headline = first.status()["vessel"]
        assert headline["run_id"] == run_id
        assert first.log.flush(5)
        (logged_gain,) = [e["data"] for e in first.events(limit=1000) if e["kind"] == "display_gain"]
        assert logged_gain["run_id"] == run_id and logged_gain["reason"] is None
        assert logged_gain["display_gain"] == pytest.approx(GAIN, rel=GAIN_TOL)
    finally:
        first.stop()

    worker = AnalysisWorker()
    second = Appliance(Settings(data_dir=tmp_path, video="none"), worker=worker)
    second.start()
    try:
        assert second.procs.current()["id"] == proc["id"]
        assert second.run(run_id)["vessel"] == sized
        assert second.status()["vessel"] == headline
        # Its images came back from the run images kept on disk (blanked of the burnt-in text): the same sizing.
        remeasured = second.measure_vessel(run_id)
        assert remeasured["mld_px"] == pytest.approx(sized["mld_px"], abs=0.2)
        assert remeasured["reference_diameter_px"] == pytest.approx(sized["reference_diameter_px"], abs=0.2)
        # ... with its display gain from the log, for a catheter calibration on it (the worker's own state).
        kept_gain = worker.submit(lambda: second.sizing._images[run_id][3]).result(timeout=10)
        assert kept_gain == logged_gain["display_gain"]
        # The next completion run (here the same anatomy again, as the kept baseline image) is measured with the
        # operator's calibration, and the centreline drawn on the baseline registered to it: that image is kept.
        planes = np.load(tmp_path / "run_images" / proc["id"] / f"{run_id}.npy")
        worker.submit(second.sizing.add_run, "after-1", planes[0], planes[1], "completion").result(timeout=10)
        after = second.sizing.result("after-1")
        assert after["calibration"] == "operator" and after["mm_per_px"] == 0.25
        assert after["mld_px"] == pytest.approx(sized["mld_px"], abs=0.2)
        assert second.log.flush(5)
        logged = [e["data"] for e in second.log.events(limit=1000) if e["kind"] == "vessel_sizing"]
        assert logged[-1]["centerline"] == "operator" and logged[-1]["registered_to"] == run_id
        assert logged[-1]["centerline_shift_px"] == pytest.approx([0, 0], abs=0.5)
        assert second.status()["vessel"]["run_id"] == "after-1"
    finally:
        second.stop()

    # A new procedure after a restart forgets the calibration and the latest, as it does without one.
    worker = AnalysisWorker()
    third = Appliance(Settings(data_dir=tmp_path, video="none"), worker=worker)
    third.start()
    try:
        assert third.status()["vessel"]["run_id"] == "after-1"
        third.end_procedure()
        third.start_procedure("next")
        assert third.status()["vessel"] is None
        worker.submit(third.sizing.add_run, "after-2", tube(line, 16), None, "completion").result(timeout=10)
        assert third.sizing.result("after-2")["calibration"] is None
        assert third.sizing.result(run_id) == sized      # a run of an earlier procedure keeps its result
    finally:
        third.stop()
