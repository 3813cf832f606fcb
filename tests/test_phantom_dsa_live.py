"""The live phantom's DSA timeline (firmware_bridge.scenarios.DSA_VENOGRAM): a fluoroscopy run, then a
hand-injected venogram at 4 then 1 frames/s. The live pipeline sees the DSA run as one run, logs it as DSA (not a
replayed loop), and the whole appliance times it from the hand injection staff enter."""
import logging
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from core.analysis.pipeline import FramePipeline
from core.appliance.appliance import Appliance
from core.ops.settings import Settings
from core.sources.frames import Frame
from core.sources.phantom.config import PhantomConfig
from core.sources.phantom.video import PhantomSource, PhantomVideo
from core.vocab import NS
from firmware_bridge.scenarios import DSA_VENOGRAM, DSA_VENOGRAM_PERIOD_S
from tests.waiting import wait_for

FLUORO, DSA = DSA_VENOGRAM
CONFIG = PhantomConfig(size=(128, 128), intensity="log")


def dsa_exposure_times(run) -> list[float]:
    """The DSA program's exposures: every 1/4 s for 3 s, then every 1 s until X-ray off."""
    (_, fast), (change, slow) = run.frame_rates
    times = list(np.arange(0.0, change - 1e-9, 1 / fast)) + list(np.arange(change, run.xray_off_s - run.xray_on_s
                                                                           - 1e-9, 1 / slow))
    return [run.xray_on_s + t for t in times]


def test_the_phantom_exposes_at_the_programs_rates():
    video = PhantomVideo(CONFIG, DSA_VENOGRAM, DSA_VENOGRAM_PERIOD_S)
    fps = CONFIG.fps
    new, prev = [], None
    for i in range(int(DSA.xray_on_s * fps), int(DSA.xray_off_s * fps)):
        frame, on = video.frame_at(i / fps)
        assert on
        if prev is None or not np.array_equal(frame, prev):
            new.append(i / fps)
        prev = frame
    # Each exposure lands on the video frame nearest its programmed time.
    assert new == pytest.approx(dsa_exposure_times(DSA), abs=0.5 / fps + 1e-9)
    held, on = video.frame_at(DSA.xray_off_s + 1.0)       # last-image-hold of the last exposure
    assert not on and np.array_equal(held, prev)


def test_the_live_pipeline_keeps_one_dsa_run_and_logs_it_as_dsa(caplog):
    video = PhantomVideo(CONFIG, DSA_VENOGRAM, DSA_VENOGRAM_PERIOD_S)
    pipeline = FramePipeline("log")
    ended = []
    with caplog.at_level(logging.INFO, logger="cathlab.pipeline"):
        for i in range(int(DSA_VENOGRAM_PERIOD_S * CONFIG.fps)):
            frame, _ = video.frame_at(i / CONFIG.fps)
            ended += [e.run for e in pipeline.process(Frame(frame, round(i * NS / CONFIG.fps), i))
                      if e.kind == "run_end"]
    fluoro, dsa = ended
    assert fluoro.pulse_rate == pytest.approx(15.0, abs=0.1)
    assert dsa.pulses == len(dsa_exposure_times(DSA)) and not dsa.replay and dsa.repeats == 0
    assert dsa.start_ns / NS == pytest.approx(DSA.xray_on_s, abs=1e-6)
    # X-ray off is declared about 2.5 intervals of the current (1 s) rate after the last exposure.
    assert DSA.xray_off_s <= dsa.end_ns / NS <= DSA.xray_off_s + 1.0
    assert dsa.summary()["contrast"] is True                     # opacity rose: no injector told it
    dsa_logs = [m for m in caplog.messages if f"run {dsa.index}:" in m]
    assert any("a DSA (or slow fluoroscopy) run" in m for m in dsa_logs), caplog.messages
    assert not any("replayed" in m for m in caplog.messages)


@pytest.fixture
def appliance(tmp_path):
    t0 = time.monotonic_ns() + NS // 2
    video = PhantomVideo(CONFIG, DSA_VENOGRAM, DSA_VENOGRAM_PERIOD_S)
    device = Appliance(Settings(data_dir=tmp_path, phantom_size=128, phantom_timeline="dsa",
                                serial=f"injsim://?scenario=dsa&t0_ns={t0}"),
                       source=PhantomSource(video, t0_ns=t0))
    device.start()
    yield device, video, t0
    device.stop()


def test_the_appliance_times_the_dsa_run_from_a_hand_injection(appliance):
    device, video, t0 = appliance
    runs = wait_for(lambda: (r := device.runs()) and len(r) >= 2 and r, 25)
    record = runs[1]
    assert record["contrast"] is True and record["pulses"] == len(dsa_exposure_times(DSA))
    assert record["xray_source"] == "device"                    # the injector simulator's X-ray signal
    roi = record["rois"][0]
    assert roi["mtt_s"] is None and roi["centroid_s"] is not None   # no injector: no injection start yet
    # Staff enter the hand injection after the run, with the wall time it was given.
    given_mono = t0 + round(DSA.inject_start_s * NS)
    at = datetime.now(timezone.utc) - timedelta(seconds=(time.monotonic_ns() - given_mono) / NS)
    totals = device.add_hand_injection(DSA.volume_ml, None, at.isoformat())
    assert totals["contrast_ml_hand"] == DSA.volume_ml
    timed = wait_for(lambda: (r := device.run(record["run_id"])) and r["injection_source"] == "hand" and r, 10)
    assert timed["injection_delay_s"] == pytest.approx(DSA.inject_start_s - DSA.xray_on_s, abs=0.05)
    roi = timed["rois"][0]
    truth = video.timing_truth(1, tuple(roi["roi"]))
    print("live DSA run, hand injection: mtt_s", roi["mtt_s"], "truth", truth.mtt_s)
    assert abs(roi["mtt_s"] - truth.mtt_s) < 0.25, (roi, truth)
