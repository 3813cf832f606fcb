"""Live clearance survives an appliance restart within an open procedure: the baseline's images (kept on disk,
blanked of burnt-in text) and the operator's centreline come back, so a completion run after the restart is
measured against the baseline of before, along the operator's line."""
import time

import numpy as np
import pytest

from core.appliance.appliance import Appliance
from core.appliance.worker import AnalysisWorker
from core.ops.settings import Settings
from core.sources.phantom.config import PhantomConfig
from core.sources.phantom.video import PhantomSource, PhantomVideo
from firmware_bridge.scenarios import ScriptedRun
from tests.waiting import wait_for


def one_run(label: str, thrombus: float) -> tuple[ScriptedRun, ...]:
    return (ScriptedRun(label, 0.5, 6.5, 1.5, volume_ml=10.0, flow_ml_s=5.0, thrombus_fraction=thrombus),)


def start(tmp_path, config: PhantomConfig, timeline) -> tuple[Appliance, PhantomVideo]:
    video = PhantomVideo(config, timeline=timeline, period_s=60.0)
    source = PhantomSource(video, t0_ns=time.monotonic_ns() + 300_000_000)
    device = Appliance(Settings(data_dir=tmp_path, phantom_size=config.size[0]), source=source,
                       worker=AnalysisWorker())
    device.start()
    return device, video


def contrast_run(device: Appliance) -> str:
    """The run this appliance (its session) recorded, once its image is kept."""
    (run,) = wait_for(lambda: [r for r in device.runs() if r["contrast"] and r["run_id"].startswith(device.session)
                               and device.run_image_png(r["run_id"])], 15, explain=device.runs)
    return run["run_id"]


def off_polyline(point: np.ndarray, line: np.ndarray) -> float:
    """Distance from ``point`` to the polyline ``line`` (N, 2)."""
    a, b = line[:-1], line[1:]
    a, b = a[np.any(a != b, axis=1)], b[np.any(a != b, axis=1)]     # no zero-length segment
    t = np.clip(np.einsum("ij,ij->i", point - a, b - a) / np.einsum("ij,ij->i", b - a, b - a), 0, 1)
    return float(np.min(np.hypot(*(a + t[:, None] * (b - a) - point).T)))


def logged(device: Appliance, kind: str) -> list[dict]:
    assert device.log.flush(5)
    return [e["data"] for e in device.log.events(limit=1000) if e["kind"] == kind]


@pytest.mark.parametrize("seed", [3, 11])
def test_a_completion_run_after_a_restart_is_measured_against_the_baseline_along_the_operators_line(tmp_path,
                                                                                                    seed):
    config = PhantomConfig(size=(384, 384), intensity="log", seed=seed, diameter_px=14.0)
    first, video = start(tmp_path, config, one_run("baseline", 1.0))
    try:
        proc = first.start_procedure("restart")
        baseline = contrast_run(first)
        first.label_run(baseline, "baseline")
        line = video.scene_truth(0).centreline_xy
        line = line[np.all((line > 24) & (line < config.size[0] - 24), axis=1)]      # the part inside the collimated field
        drawn = [tuple(float(v) for v in p) for p in np.vstack([line[::12], line[-1:]])]
        first.set_centerline(drawn, None)
        assert logged(first, "centerline_set")[-1]["baseline_run_id"] == baseline
        stored = tmp_path / "run_images" / proc["id"] / f"{baseline}.npy"
        assert wait_for(stored.exists, 10)
    finally:
        first.stop()

    second, video2 = start(tmp_path, config, one_run("completion", 0.4))
    try:
        assert second.procs.current()["id"] == proc["id"]
        resumed = wait_for(lambda: logged(second, "clearance_resumed"), 10)[-1]
        assert resumed["runs"] == [baseline] and resumed["baseline_run_ids"] == [baseline]
        assert second.run_image_png(baseline) is not None     # the run's picture is served again
        completion = contrast_run(second)
        second.label_run(completion, "completion")
        result = wait_for(lambda: (second.status()["clearance"] or {}).get("label") == "completion"
                          and second.status()["clearance"], 20, explain=second.status)
        assert result["run_id"] == completion and result["baseline_run_id"] == baseline
        full = [r for r in logged(second, "clearance") if r["run_id"] == completion][-1]
        # Along the operator's line (in the baseline's pixels): it ends where it was drawn and follows it.
        used = np.asarray(full["centerline"])
        assert used[0] == pytest.approx(drawn[0], abs=0.5) and used[-1] == pytest.approx(drawn[-1], abs=0.5)
        assert max(off_polyline(p, np.asarray(drawn)) for p in used) < 0.1
        b0, b1 = video.scene_truth(0).burden, video2.scene_truth(0).burden
        assert result["clearance_pct"] == pytest.approx(100 * (b0 - b1) / b0, abs=8.0)
        assert second.clearance_png()[:8] == b"\x89PNG\r\n\x1a\n"
        counters = second.status()["counters"]["run_images"]
        assert counters["saved"] >= 1 and counters["failed"] == 0 and counters["bytes"] > 0
    finally:
        second.stop()

    # Another restart: the result comes back as it was (the tracker rebuilt from both runs, not re-logged);
    # then a closed procedure's images go.
    third = Appliance(Settings(data_dir=tmp_path, video="none"), worker=AnalysisWorker())
    third.start()
    try:
        wait_for(lambda: len(logged(third, "clearance_resumed")) == 2, 10)     # this start's, after the second's
        assert third.status()["clearance"] == result
        assert third.clearance_png()[:8] == b"\x89PNG\r\n\x1a\n"
        third.end_procedure()
        wait_for(lambda: not any((tmp_path / "run_images").rglob("*.npy")), 10,
                 explain=lambda: list((tmp_path / "run_images").rglob("*")))
    finally:
        third.stop()


def test_the_stored_images_are_blanked_in_the_burnt_in_text(tmp_path):
    # No collimator: the text sits over the image, where a run image holds anatomy between the glyphs.
    config = PhantomConfig(size=(256, 256), intensity="log", seed=5, diameter_px=14.0, collimator=False)
    device, _ = start(tmp_path, config, one_run("baseline", 1.0))
    try:
        proc = device.start_procedure("text")
        run_id = contrast_run(device)
        path = tmp_path / "run_images" / proc["id"] / f"{run_id}.npy"
        wait_for(path.exists, 10)
        (field,) = logged(device, "video_field")
    finally:
        device.stop()
    planes = np.load(path)
    assert planes.shape == (2, 256, 256) and planes.dtype == np.float32     # peak opacity and mask
    assert field["text_boxes"], "the phantom prints text: the field detection must find it"
    for x, y, w, h in field["text_boxes"]:
        assert np.isnan(planes[:, y:y + h, x:x + w]).all(), (x, y, w, h)
    assert np.isfinite(planes[0]).mean() > 0.3       # the field itself is kept


@pytest.mark.parametrize("crop", [None, (16, 8, 224, 240)])
def test_a_run_image_is_blanked_like_a_recording_before_it_is_written(tmp_path, crop):
    """FieldWatch.blanked: NaN in every burnt-in text box (whole boxes, as privacy_mask blanks recordings) and
    outside the field; nothing before the field is known. On an image with no NaN of its own (a finite
    image like the ones a device whose text changes gives), so only the blanking can put them there."""
    from core.appliance.field import FieldWatch
    from core.sources.collimator import detect_field
    from core.store.eventlog import EventLog
    from core.store.recorder import privacy_mask

    video = PhantomVideo(PhantomConfig(size=(256, 256), intensity="log", seed=7, collimator=False, counter=True),
                         timeline=one_run("baseline", 1.0), period_s=60.0)
    frames = [video.frame_at(1.0 + k / 15)[0] for k in range(8)]
    log = EventLog(tmp_path)
    log.start()
    worker = AnalysisWorker()
    try:
        watch = FieldWatch(crop, worker, log, None)
        x, y, w, h = crop or (0, 0, 256, 256)
        image = np.ones((h, w), np.float32)
        assert watch.blanked(image) is None           # the text is not known yet: never written raw
        for pixels in frames:
            watch.add(pixels)
        worker.submit(lambda: None).result(timeout=10)  # the detection queued before it is done
        blanked = watch.blanked(image)
        assert blanked is not None
    finally:
        worker.shutdown()
        log.close()
    geometry = detect_field(np.stack(frames), crop=crop)
    assert geometry.text_boxes, "the phantom prints text over the image: it must be found"
    keep = privacy_mask(geometry)[y:y + h, x:x + w]
    assert np.array_equal(np.isnan(blanked), ~keep)
    for bx, by, bw, bh in geometry.text_boxes:
        inside = blanked[max(0, by - y):by - y + bh, max(0, bx - x):bx - x + bw]
        assert np.isnan(inside).all()
    assert np.isfinite(blanked).mean() > 0.5


def test_run_images_are_written_atomically_and_a_failing_disk_is_counted_not_raised(tmp_path, caplog):
    from core.store.run_images import RunImages

    images = RunImages(tmp_path / "run_images")
    peak = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert images.save("p1", "s-1", [peak, peak + 1])
    assert np.array_equal(images.load("p1", "s-1"), np.stack([peak, peak + 1]))
    assert not list((tmp_path / "run_images").rglob("*.tmp"))
    assert images.run_ids("p1") == {"s-1"} and images.load("p1", "s-2") is None
    with pytest.raises(ValueError):
        images.save("../p1", "s-1", [peak])          # only generated ids name files
    images.save("p2", "s-2", [peak])
    images.keep_only("p2")
    assert images.run_ids("p1") == set() and images.run_ids("p2") == {"s-2"}

    low = RunImages(tmp_path / "low", low_space=lambda: True)
    assert not low.save("p1", "s-1", [peak]) and low.stats()["skipped_low_space"] == 1

    (tmp_path / "blocked").write_bytes(b"")          # a file where the folder should be: every write fails
    broken = RunImages(tmp_path / "blocked")
    with caplog.at_level("WARNING", logger="cathlab.storage"):
        assert not broken.save("p1", "s-1", [peak]) and not broken.save("p1", "s-2", [peak])
    assert broken.stats()["failed"] == 2 and "s-2" in broken.stats()["error"]      # the last failure
    assert sum("not kept" in r.getMessage() for r in caplog.records) == 1      # said once, then counted


@pytest.mark.parametrize("disk", ["refuses", "low"])
def test_an_appliance_whose_disk_refuses_the_images_still_measures_clearance(tmp_path, disk):
    if disk == "refuses":
        (tmp_path / "run_images").write_bytes(b"")   # every image write fails, as on a full disk
    config = PhantomConfig(size=(256, 256), intensity="log", seed=4, diameter_px=14.0)
    video = PhantomVideo(config, timeline=one_run("baseline", 1.0) + (
        ScriptedRun("completion", 7.5, 13.5, 8.5, volume_ml=10.0, flow_ml_s=5.0, thrombus_fraction=0.4),),
        period_s=60.0)
    # "low": below min_free_mb (the free-space alarm): the event log has the better claim, nothing is written.
    device = Appliance(Settings(data_dir=tmp_path, phantom_size=256),
                       source=PhantomSource(video, t0_ns=time.monotonic_ns() + 300_000_000), worker=AnalysisWorker(),
                       free_bytes=(lambda path: 0) if disk == "low" else (lambda path: 2**40))
    device.start()
    try:
        device.start_procedure("full disk")
        result = wait_for(lambda: device.status()["clearance"], 30, explain=device.status)
        assert result["baseline_run_id"] != result["run_id"]
        counters = device.status()["counters"]["run_images"]
        assert counters["not_kept"] == 2 and counters["saved"] == 0 and counters["bytes"] == 0
        counted = "failed" if disk == "refuses" else "skipped_low_space"
        assert counters[counted] == 2 and device.metrics()[f"run_images_{counted}"] == 2
    finally:
        device.stop()
