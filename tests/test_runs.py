"""Run detection from new-pulse flags on a video line."""
import pytest

from core.analysis.runs import RunDetector
from core.vocab import NS


def feed_line(detector, fps, pattern):
    """pattern: iterable of booleans (new pulse per frame); returns all events."""
    events = []
    for i, new in enumerate(pattern):
        events += detector.feed(int(i * NS / fps), i, new)
    return events


def pulsed(fps, pulse_rate, off_s, on_s, after_s):
    repeat = round(fps / pulse_rate)
    pattern = [False] * int(off_s * fps)
    on_frames = int(on_s * fps)
    pattern += [(k % repeat) == 0 for k in range(on_frames)]
    pattern += [False] * int(after_s * fps)
    return pattern, repeat


@pytest.mark.parametrize("fps,rate", [(30, 30), (30, 15), (30, 7.5), (30, 3.75), (60, 15), (60, 3.75)])
def test_run_edges_and_pulse_rate(fps, rate):
    pattern, repeat = pulsed(fps, rate, 1.0, 4.0, 2.0)
    detector = RunDetector()
    events = feed_line(detector, fps, pattern)
    assert [e.kind for e in events] == ["run_start", "run_end"]
    run = events[0].run
    assert run.first_frame == int(1.0 * fps)              # on edge on the first pulse's frame
    assert abs(run.pulse_rate - fps / repeat) < 0.1
    # the exposure ends one pulse interval after its last pulse, within one frame of the truth
    true_end_ns = (int(1.0 * fps) + int(4.0 * fps)) * NS / fps
    assert abs(run.end_ns - true_end_ns) <= NS / fps + 1
    assert run.pulses == len([p for p in pattern if p])


def test_isolated_changes_are_not_a_run():
    # A burnt-in clock ticking once a second on last-image-hold changes one frame per second.
    pattern = [(i % 30) == 0 for i in range(300)]
    assert feed_line(RunDetector(), 30, pattern) == []


def test_two_runs_are_separate():
    a, _ = pulsed(30, 15, 0.5, 2.0, 1.0)
    b, _ = pulsed(30, 15, 0.0, 2.0, 1.0)
    events = feed_line(RunDetector(), 30, a + b)
    assert [e.kind for e in events] == ["run_start", "run_end", "run_start", "run_end"]
    assert [e.run.index for e in events] == [0, 0, 1, 1]


def test_close_ends_an_open_run():
    pattern, _ = pulsed(30, 15, 0.0, 1.0, 0.0)
    detector = RunDetector()
    events = feed_line(detector, 30, pattern)
    assert [e.kind for e in events] == ["run_start"]
    ended = detector.close(int(2 * NS))
    assert [e.kind for e in ended] == ["run_end"] and detector.current is None


def test_bad_parameters():
    with pytest.raises(ValueError):
        RunDetector(confirm_pulses=0)


# --------------------------------------------------------------------------------------------- the pipeline

import json  # noqa: E402

import numpy as np  # noqa: E402

from core.analysis.pipeline import FramePipeline  # noqa: E402
from core.sources.frames import Frame  # noqa: E402
from core.sources.phantom.config import PhantomConfig  # noqa: E402
from core.sources.phantom.render import render_run  # noqa: E402


def play(pipeline, frames, fps, t0_ns=0, hook=None):
    """Feed frames at the video line rate; returns the runs that ended (closing the stream)."""
    ended = []
    for i, f in enumerate(frames):
        t = t0_ns + int(round(i * NS / fps))
        if hook is not None:
            hook(i, t)
        ended += [e.run for e in pipeline.process(Frame(f, t, i)) if e.kind == "run_end"]
    ended += [e.run for e in pipeline.close(t0_ns + int(round(len(frames) * NS / fps)))]
    return ended


@pytest.fixture(scope="module")
def contrast_run():
    return render_run(PhantomConfig(size=(128, 128), intensity="log", seed=9, i0=800.0, diameter_px=12.0))


def test_pipeline_run_summary_with_injection_and_device_xray(contrast_run):
    run = contrast_run
    fps = run.fps
    on_ns = int(round(run.truth.run_start_s * NS))
    off_ns = int(round(run.truth.run_end_s * NS))
    inj_ns = int(round(run.truth.inject_start_s * NS))
    p = FramePipeline("log")
    summary = {"delivered_volume_ml": 10.0, "peak_flow_ml_s": 5.0, "peak_pressure_kpa": 650.0,
               "duration_ms": 2000, "xray_delay_ms": -1000}

    def hook(i, t):
        if t == on_ns:
            p.xray_signal(True, t)
        if t == inj_ns:
            p.injection(inj_ns)
        if t == inj_ns + 2 * NS:
            p.injection(inj_ns, inj_ns + 2 * NS, summary)
        if t == off_ns:
            p.xray_signal(False, t)

    ended = play(p, run.frames, fps, hook=hook)
    assert len(ended) == 1 and ended[0].contrast
    s = ended[0].summary()
    assert json.loads(json.dumps(s)) == s                   # JSON-ready for the event log and the API
    assert s["frames"] == run.truth.xray_off_frame - run.truth.xray_on_frame
    assert s["pulses"] == int(run.truth.is_new_pulse.sum()) and s["pulse_rate"] == 15.0
    assert s["xray_source"] == "device" and s["device_start_ns"] == on_ns and s["device_end_ns"] == off_ns
    assert s["duration_s"] == pytest.approx(6.0, abs=1e-6)
    assert s["injection_delay_s"] == pytest.approx(1.0, abs=1e-6)
    assert s["delivered_volume_ml"] == 10.0 and s["peak_flow_ml_s"] == 5.0 and s["peak_pressure_kpa"] == 650.0
    assert s["injection_stop_ns"] == inj_ns + 2 * NS and s["injections"] == 1
    assert s["mask"]["reason"] == "pre-contrast" and len(s["mask_frames"]) == 2
    roi = s["rois"][0]
    assert roi["auto"] and roi["arrival_s"] < roi["peak_s"] and roi["mtt_s"] is not None
    assert roi["arrival_after_injection_s"] == pytest.approx(roi["arrival_s"] - 1.0, abs=1e-3)
    assert 0 < len(roi["curve"]) <= 200
    peak = ended[0].peak_opacity
    assert peak.shape == (128, 128) and peak.dtype == np.float32
    assert np.isnan(peak[0, 0]) and np.isnan(peak[-1, -1])            # outside the collimated field
    vessel = run.truth.scene.path_length_map() > 0.8 * run.truth.scene.path_length_map().max()
    assert np.nanmean(peak[vessel]) > 5 * np.nanmedian(peak)
    assert p.alarms(off_ns + 10 * NS) == []


def test_pipeline_configured_roi_and_live_curve(contrast_run):
    run = contrast_run
    p = FramePipeline("log")
    x, y = (int(v) for v in run.truth.centreline_xy[len(run.truth.centreline_xy) // 2])
    p.set_rois([(x - 8, y - 8, 16, 16)])
    seen = []

    def hook(i, t):
        cur = p.current_run(t)
        if cur is not None:
            seen.append(cur)

    ended = play(p, run.frames, run.fps, hook=hook)
    assert not seen[0]["contrast"] and seen[0]["tdc"] is None            # before the bolus: nothing yet
    last = seen[-1]
    assert json.loads(json.dumps(last)) == last
    assert last["contrast"] and last["tdc"]["roi"] == [x - 8, y - 8, 16, 16] and not last["tdc"]["auto"]
    assert 30 < len(last["tdc"]["curve"]) <= 200
    roi = ended[0].summary()["rois"][0]
    assert roi["roi"] == [x - 8, y - 8, 16, 16] and not roi["auto"]
    t = run.truth.truth_timing(roi["roi"])
    assert abs(roi["peak_s"] - t.peak_s) < 1 / 15


def test_fluoroscopy_only_run_is_not_a_contrast_run():
    run = render_run(PhantomConfig(size=(96, 96), intensity="lin", seed=4, inject_at_s=None, xray_s=2.0,
                                   diameter_px=10.0))
    ended = play(FramePipeline("lin"), run.frames, run.fps)
    assert len(ended) == 1
    assert not ended[0].contrast and ended[0].peak_opacity is None
    s = ended[0].summary()
    assert s["injection_start_ns"] is None and s["injection_delay_s"] is None and s["rois"][0]["arrival_s"] is None
    assert s["injections"] == 0


def test_device_and_image_disagree_raises_an_alarm():
    p = FramePipeline("log")
    frame = np.full((32, 32), 100, np.uint8)
    p.xray_signal(True, 0)                                   # the device says on, the image never changes
    for i in range(90):
        p.process(Frame(frame, int(i * NS / 30), i))
    alarms = p.alarms(3 * NS)
    assert [a["kind"] for a in alarms] == ["xray_disagreement"]
    assert p.xray_state() == {"on": True, "source": "device", "image_on": False, "device_on": True}
    p.xray_signal_lost(3 * NS)
    assert p.alarms(10 * NS) == []


def test_pipeline_rejects_bad_frames_and_inputs():
    p = FramePipeline("lin")
    with pytest.raises(ValueError):
        p.process(Frame(np.zeros((16, 16), np.float32), 0, 0))
    with pytest.raises(ValueError):
        p.process(Frame(np.zeros((2, 16, 16), np.uint16), 0, 0))
    with pytest.raises(ValueError, match="1x1 pixel frames are not fluoroscopy"):
        p.process(Frame(np.zeros((1, 1), np.uint16), 0, 0))
    p.process(Frame(np.zeros((16, 16), np.uint16), 10, 0))
    with pytest.raises(ValueError):
        p.process(Frame(np.zeros((16, 16), np.uint16), 5, 1))   # time went backwards
    assert p.rejected == 4 and p.frames == 1
    with pytest.raises(ValueError):
        p.set_rois([(0, 0, 32, 8)])                           # does not fit 16x16 frames
    with pytest.raises(ValueError):
        p.injection(1.5)
    with pytest.raises(ValueError):
        p.injection(10, 5)
    with pytest.raises(ValueError):
        p.injection(10, None, "summary")
    with pytest.raises(ValueError):
        FramePipeline("linear")


def test_geometry_change_ends_the_open_run():
    rng = np.random.default_rng(0)
    p = FramePipeline("log", crop=(0, 0, 48, 48))
    events = []
    for i in range(20):                                       # a run at 30 p/s on 48x48 frames
        events += p.process(Frame(rng.integers(0, 255, (48, 48), dtype=np.uint8), i * NS // 30, i))
    assert [e.kind for e in events] == ["run_start"]
    ended = p.process(Frame(rng.integers(0, 255, (32, 40), dtype=np.uint8), 20 * NS // 30, 20))
    assert [e.kind for e in ended] == ["run_end"] and ended[0].run.pulses == 20
    assert p.kernel.shape == (32, 40) and p.kernel.crop == (0, 0, 40, 32)   # the crop no longer fits
    assert p.rejected == 0


def test_deferred_finish_on_another_thread_gives_the_inline_result(contrast_run):
    """Live, the slow end-of-run analysis runs on a worker while the frame thread goes on: same result."""
    import threading

    run = contrast_run
    inline = play(FramePipeline("log"), run.frames, run.fps)
    p = FramePipeline("log", defer_finish=True)
    ended = []
    for i, f in enumerate(run.frames):
        ended += [e for e in p.process(Frame(f, int(round(i * NS / run.fps)), i)) if e.kind == "run_end"]
    assert len(ended) == 1 and ended[0].finish is not None
    assert ended[0].run.timing is None and ended[0].run.peak_opacity is None   # nothing slow done yet
    # The next run's pulses arrive meanwhile: they must not disturb what the ended run took with it.
    for i, f in enumerate(run.frames[:40]):
        p.process(Frame(f, int(round((len(run.frames) + 30 + i) * NS / run.fps)), len(run.frames) + 30 + i))
    worker = threading.Thread(target=ended[0].finish)
    worker.start()
    worker.join()
    deferred = ended[0].run
    assert deferred.summary() == inline[0].summary()
    np.testing.assert_array_equal(deferred.peak_opacity, inline[0].peak_opacity)
