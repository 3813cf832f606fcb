"""Live run detection at DSA rates on a video line: 0.5-6 frames/s, a rate change inside one run, the slow
run's late end (logged), a burnt-in clock that is no run, and a replayed loop told from an exposure."""
import logging

import numpy as np
import pytest

from core.analysis.pipeline import FramePipeline
from core.sources.frames import Frame
from core.sources.phantom.config import PhantomConfig
from core.sources.phantom.dsa import dsa_config
from core.sources.phantom.render import render_run
from core.vocab import NS


def play(pipeline, frames, fps, t0_ns=0, index0=0):
    ended = []
    for i, f in enumerate(frames):
        t = t0_ns + int(round(i * NS / fps))
        ended += [e.run for e in pipeline.process(Frame(f, t, index0 + i)) if e.kind == "run_end"]
    return ended


def close(pipeline, t_ns):
    return [e.run for e in pipeline.close(t_ns)]


@pytest.mark.parametrize("rate,intensity", [(0.5, "lin"), (1.0, "log"), (2.0, "lin"), (6.0, "log")])
def test_dsa_rates_are_runs(rate, intensity, caplog):
    cfg = dsa_config(3, rates=((0.0, rate),), intensity=intensity, lih_after_s=6.0)
    run = render_run(cfg)
    p = FramePipeline(intensity)
    with caplog.at_level(logging.INFO, logger="cathlab.pipeline"):
        ended = play(p, run.frames, run.fps)
    assert len(ended) == 1
    r = ended[0]
    assert r.pulses == len(run.truth.pulse_times_s) and not r.replay
    assert abs(r.start_ns / NS - run.truth.run_start_s) < 1e-6
    assert abs(r.end_ns / NS - run.truth.run_end_s) <= 1 / rate
    assert abs(r.pulse_rate - rate) < 0.05 * rate
    if rate < 7.5:
        assert any("DSA" in m for m in caplog.messages)


def test_rate_change_keeps_one_run_with_its_washout():
    cfg = dsa_config(2, rates=((0.0, 4.0), (4.0, 1.0)), lih_after_s=4.0)
    run = render_run(cfg)
    truth = run.truth
    inj_ns = int(round(truth.inject_start_s * NS))
    p = FramePipeline("lin")
    p.injection(inj_ns)
    ended = play(p, run.frames, run.fps)
    assert len(ended) == 1
    r = ended[0]
    assert r.pulses == len(truth.pulse_times_s)
    assert abs(r.end_ns / NS - truth.run_end_s) <= 1.0
    roi = r.summary()["rois"][0]
    t = truth.truth_timing(roi["roi"])
    assert roi["washout_s"] is not None and abs(roi["washout_s"] - t.washout_s) < 0.5
    assert abs(roi["peak_s"] - t.peak_s) < 0.25 and abs(roi["mtt_s"] - t.mtt_s) < 0.2
    assert r.summary()["timing_version"] == 2


def test_slow_burnt_in_clock_is_no_run():
    rng = np.random.default_rng(0)
    base = rng.integers(20, 230, (128, 128), dtype=np.uint8)
    p = FramePipeline("log")
    events = []
    for i in range(30 * 10):                       # 10 s of last-image-hold, a clock box ticking every second
        f = base.copy()
        f[4:12, 4:30] = (i // 30) * 20 % 255
        events += p.process(Frame(f, int(i * NS / 30), i))
    assert events == [] and p.runs.current is None


def test_replayed_loop_is_told_from_an_exposure(caplog):
    cfg = dsa_config(1, rates=((0.0, 2.0),), intensity="log", lih_before_s=0.0, lih_after_s=0.0,
                     inject_at_s=None, xray_s=3.0)
    run = render_run(cfg)
    loop = np.concatenate([run.frames] * 3)        # the stored loop played three times on the monitor
    p = FramePipeline("log")
    with caplog.at_level(logging.INFO, logger="cathlab.pipeline"):
        ended = play(p, loop, run.fps) + close(p, int(len(loop) * NS / run.fps))
    assert len(ended) == 1 and ended[0].replay and ended[0].summary()["replay"]
    assert any("replayed" in m for m in caplog.messages)


def test_subtracted_dsa_with_a_flat_background_is_a_run():
    # A subtracted (DISP) run on the monitor: flat grey where nothing changes, the vessel across the field
    # darkening, a new image every 0.5 s; no quantum noise on the background.
    h = w = 128
    yy, xx = np.mgrid[0:h, 0:w]
    vessel = np.abs(xx - (20 + 0.7 * yy)) < 4
    p = FramePipeline("log")
    events = []
    t = 0
    for k in range(12):
        f = np.full((h, w), 128, np.uint8)
        f[vessel] = 128 - 6 * (k + 1)
        for _ in range(15):                               # 0.5 s of video at 30 fps
            events += p.process(Frame(f, t, t // (NS // 30)))
            t += NS // 30
    events += p.close(t)
    ends = [e.run for e in events if e.kind == "run_end"]
    assert len(ends) == 1 and ends[0].pulses == 12 and ends[0].start_ns == 0 and not ends[0].replay


def play_with_device(pipeline, run, device_edges_s):
    """The frames with the device's X-ray edges ((on, video s), in order) applied as they come; returns the
    ended runs with the video time each end was declared."""
    edges = list(device_edges_s)
    ended = []
    for i, f in enumerate(run.frames):
        t = int(round(i * NS / run.fps))
        while edges and edges[0][1] * NS <= t:
            on, at = edges.pop(0)
            pipeline.xray_signal(on, int(round(at * NS)))
        ended += [(e.run, t / NS) for e in pipeline.process(Frame(f, t, i)) if e.kind == "run_end"]
    return ended


@pytest.mark.parametrize("seed", [0, 1])
def test_slow_fluoroscopy_ends_soon_after_the_devices_xray_off(seed):
    """3.75 pulses/s cannot be told from DSA by its rate: from the images alone its end waits for a 1 s
    program step (2.5 s); when the device's X-ray signal went off, 2.5 of its own intervals (0.67 s)."""
    cfg = PhantomConfig(size=(64, 64), intensity="log", seed=seed, pulse_rate=3.75, xray_s=4.0, inject_at_s=None,
                        lih_before_s=0.5, lih_after_s=4.0)
    run = render_run(cfg)
    truth = run.truth
    last_pulse = truth.pulse_times_s[-1]
    ((image_only, declared_image),) = play_with_device(FramePipeline("log"), run, [])
    assert declared_image - last_pulse == pytest.approx(2.5, abs=1 / run.fps + 1e-9)
    ((with_device, declared),) = play_with_device(FramePipeline("log"), run,
                                                  [(True, truth.run_start_s), (False, truth.run_end_s)])
    assert declared - last_pulse == pytest.approx(2.5 / 3.75, abs=1 / run.fps + 1e-9)
    assert with_device.device_off and not image_only.device_off
    assert with_device.pulses == image_only.pulses == len(truth.pulse_times_s)
    assert with_device.end_ns == image_only.end_ns          # the exposure's end is the same; only its news is sooner


def test_a_dsa_program_under_the_devices_xray_on_keeps_its_washout():
    """The device's signal stays on for the whole program: the slow step does not end the run."""
    cfg = dsa_config(2, rates=((0.0, 4.0), (4.0, 1.0)), lih_after_s=4.0, size=(96, 96))
    run = render_run(cfg)
    truth = run.truth
    ((dsa, declared),) = play_with_device(FramePipeline("lin"), run,
                                          [(True, truth.run_start_s), (False, truth.run_end_s)])
    assert dsa.pulses == len(truth.pulse_times_s) and dsa.device_off
    assert declared - truth.pulse_times_s[-1] == pytest.approx(2.5, abs=1 / run.fps + 1e-9)   # 1 s intervals
