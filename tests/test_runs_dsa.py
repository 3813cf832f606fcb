"""Live run detection at DSA rates on a video line: 0.5-6 frames/s, a rate change inside one run, the slow
run's late end (logged), a burnt-in clock that is no run, and a replayed loop told from an exposure."""
import logging

import numpy as np
import pytest

from core.analysis.pipeline import FramePipeline
from core.sources.frames import Frame
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
