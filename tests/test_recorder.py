"""Record a procedure (contrast-run pulses + raw serial bytes) and replay it: same messages, same frames."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from core.analysis.pipeline import FramePipeline
from core.appliance.replay import replay
from core.sources.frames import Frame
from core.sources.phantom.config import PhantomConfig
from core.sources.phantom.render import render_run
from core.sources.recording import SERIAL_MAGIC, RecordingSource, load_runs, read_serial
from core.store.recorder import ProcedureRecorder
from core.vocab import NS
from firmware_bridge.link import Link
from firmware_bridge.simulator import InjectorDevice


@pytest.fixture(scope="module")
def phantom():
    return render_run(PhantomConfig(size=(96, 96), intensity="log", xray_s=2.0, lih_before_s=0.3,
                                    lih_after_s=0.3, inject_at_s=0.3))


def device_bytes(seconds: float, step_ms: int = 10) -> list[tuple[int, bytes]]:
    """What the simulated injector puts on the wire, chunked as a reader would receive it."""
    dev = InjectorDevice("procedure", t0_ns=0, seed=3)
    out = []
    for ms in range(0, int(seconds * 1000), step_ms):
        t = ms * 1_000_000 + 12345
        data = dev.poll(t)
        if data:
            out.append((t, data))
    return out


def live(rec: ProcedureRecorder | None, run, chunks, t0_ns=10 * NS):
    """The live path: link over the chunks, pipeline over every video frame, recorder taps on both."""
    link = Link(3.0)
    messages = []
    opened = False
    for t, data in chunks:
        if rec is not None:
            rec.serial(data, t)
        if not opened:
            link.port_opened(t)
            opened = True
        messages += link.feed(data, t).messages
    pipeline = FramePipeline("log")
    events, pulses, video = [], [], []
    period = NS / run.fps
    for i, pixels in enumerate(run.frames):
        frame = Frame(pixels, t0_ns + int(i * period), i)
        video.append(frame)
        new_events = pipeline.process(frame)
        new_pulse = pipeline.pulses > len(pulses)       # the pipeline counted this frame as a new pulse
        if new_pulse:
            pulses.append(frame)
        if rec is not None:
            rec.frame(frame, new_pulse)
        for ev in new_events:
            events.append(ev)
            if rec is not None:
                if ev.kind == "run_start":
                    rec.run_started(f"s1-{ev.run.index}", ev.run.start_ns, run.fps, "log")
                else:
                    rec.run_ended(f"s1-{ev.run.index}", ev.run.end_ns, contrast=True,
                                  summary={"pulses": ev.run.pulses})
    end = t0_ns + int(len(run.frames) * period)
    for ev in pipeline.close(end):
        events.append(ev)
        if rec is not None and ev.kind == "run_end":
            rec.run_ended(f"s1-{ev.run.index}", ev.run.end_ns, contrast=True)
    return messages, events, pulses, video


def test_record_then_replay_gives_the_same_messages_and_frames(tmp_path, phantom):
    chunks = device_bytes(25.0)
    rec = ProcedureRecorder(tmp_path, retention_bytes=10**9, preroll_s=1.0, keep_raw=True)
    messages, events, pulses, video = live(rec, phantom, chunks)
    assert rec.drain()
    rec.close()
    assert len(messages) > 100 and {m.to_dict()["type"] for m, _ in messages} >= {"XRAY", "SAMPLE", "SUMMARY"}
    assert [e.kind for e in events] == ["run_start", "run_end"]

    runs = load_runs(tmp_path)
    assert len(runs) == 1
    meta = runs[0].meta
    assert meta["run_id"] == "s1-0" and meta["intensity"] == "log" and meta["fps"] == phantom.fps
    assert meta["shape"] == [96, 96] and meta["dtype"] == "uint8" and meta["summary"] == {"pulses": events[1].run.pulses}
    # Pulses only: every recorded frame is one live pulse, in order, bit for bit, with its time and index.
    recorded = list(runs[0].pulses)
    live_by_index = {f.index: f for f in pulses}
    assert len(recorded) >= events[1].run.pulses
    for f in recorded:
        assert np.array_equal(f.pixels, live_by_index[f.index].pixels) and f.t_ns == live_by_index[f.index].t_ns

    got = []
    result = replay(tmp_path, on_frame=got.append)
    assert [(m.to_dict(), t) for m, t in result.messages] == [(m.to_dict(), t) for m, t in messages]
    assert result.frames == len(got) > len(recorded)
    # The replayed video line is the live one: pulses and their repeats, same pixels, same times (+-1 ns).
    assert got[0].index == recorded[0].index and got[-1].index >= recorded[-1].index
    for f in got:
        if f.index < len(video):
            assert np.array_equal(f.pixels, video[f.index].pixels) and abs(f.t_ns - video[f.index].t_ns) <= 1
    # The same pipeline finds the same run: same first pulse, same pulses, same end.
    replay_runs = [e.run for e in result.run_events if e.kind == "run_end"]
    assert len(replay_runs) == 1
    assert replay_runs[0].start_ns == events[1].run.start_ns
    assert replay_runs[0].pulses == events[1].run.pulses
    assert replay_runs[0].end_ns == events[1].run.end_ns


def test_serial_file_format_and_truncation(tmp_path):
    rec = ProcedureRecorder(tmp_path, retention_bytes=10**9, keep_raw=True)
    rec.serial(b"abc", 5)
    rec.serial(b"", 6)                        # nothing arrived: nothing recorded
    rec.serial(bytes(range(256)), 7)
    rec.close()
    (path,) = tmp_path.glob("serial-*.bin")
    raw = path.read_bytes()
    assert raw.startswith(SERIAL_MAGIC)
    assert read_serial(tmp_path).records == [(5, b"abc"), (7, bytes(range(256)))]
    path.write_bytes(raw[:-10])               # power cut mid-record
    cut = read_serial(tmp_path)
    assert cut.records == [(5, b"abc")] and cut.truncated == 1
    path.write_bytes(b"garbage!" + raw[8:])
    with pytest.raises(ValueError, match="bad magic"):
        read_serial(tmp_path)


def test_runs_without_contrast_are_discarded_and_stale_parts_removed(tmp_path):
    (tmp_path / "run-000007-x.part").write_bytes(b"half")
    rec = ProcedureRecorder(tmp_path, retention_bytes=10**9, keep_raw=True)
    assert not list(tmp_path.glob("*.part"))
    pixels = np.full((16, 16), 7, np.uint8)
    rec.run_started("r1", 0, 15.0, "log")
    for i in range(5):
        rec.frame(Frame(pixels + i, i * NS // 15, i), new_pulse=True)
    rec.run_ended("r1", NS, contrast=False)
    assert rec.drain()
    assert not list(tmp_path.glob("run-*")) and rec.stats()["runs_discarded"] == 1
    # Sequence numbers continue after the highest one found (7), so retention order survives restarts.
    rec.run_started("r2", 0, 15.0, "log")
    rec.frame(Frame(pixels, 0, 0), new_pulse=True)
    rec.frame(Frame(pixels, 1, 1), new_pulse=False)     # a repeat of the pulse: not kept
    rec.run_ended("r2", NS, contrast=True)
    rec.close()
    (npy,) = tmp_path.glob("run-*.npy")
    assert npy.name == "run-000009-r2.npy"
    assert np.load(npy).shape == (1, 16, 16)


def test_retention_deletes_the_oldest_runs_first(tmp_path):
    frame_bytes = 64 * 64
    rec = ProcedureRecorder(tmp_path, retention_bytes=int(3.5 * 10 * frame_bytes), serial_chunk_bytes=4096, keep_raw=True)
    for r in range(8):
        rec.serial(b"x" * 100, r)
        rec.run_started(f"r{r}", r * NS, 15.0, "log")
        for i in range(10):
            rec.frame(Frame(np.full((64, 64), r, np.uint8), r * NS + i, i), new_pulse=True)
        rec.run_ended(f"r{r}", r * NS + 10, contrast=True)
        assert rec.drain()
    stats = rec.stats()
    rec.close()
    kept = [run.meta["run_id"] for run in load_runs(tmp_path)]
    assert kept == ["r5", "r6", "r7"]
    assert stats["bytes_on_disk"] <= 3.5 * 10 * frame_bytes and stats["files_deleted"] > 0
    assert list(tmp_path.glob("serial-*.bin"))          # the chunk being written is never deleted
    assert all(int(run.frames[0, 0, 0]) == int(run.meta["run_id"][1:]) for run in load_runs(tmp_path))


def test_geometry_change_mid_run_abandons_that_run(tmp_path):
    rec = ProcedureRecorder(tmp_path, retention_bytes=10**9, keep_raw=True)
    rec.run_started("r1", 0, 15.0, "log")
    rec.frame(Frame(np.zeros((16, 16), np.uint8), 0, 0), True)
    rec.frame(Frame(np.zeros((32, 16), np.uint8), 1, 1), True)
    rec.run_ended("r1", 2, contrast=True)
    rec.close()
    assert not list(tmp_path.glob("run-*"))


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="retention"):
        ProcedureRecorder(tmp_path, 0)
    rec = ProcedureRecorder(tmp_path, 10**6)
    with pytest.raises(ValueError, match="run id"):
        rec.run_started("../etc", 0, 15.0, "log")
    with pytest.raises(ValueError, match="not being recorded"):
        rec.run_ended("nope", 0, contrast=True)
    rec.close()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="nothing recorded"):
        replay(empty)
    with pytest.raises(ValueError, match="no recorded runs"):
        RecordingSource(tmp_path)


def test_sidecar_mismatch_is_reported(tmp_path):
    rec = ProcedureRecorder(tmp_path, 10**9, keep_raw=True)
    rec.run_started("r1", 0, 15.0, "log")
    rec.frame(Frame(np.zeros((16, 16), np.uint8), 0, 0), True)
    rec.run_ended("r1", 1, contrast=True)
    rec.close()
    (sidecar,) = tmp_path.glob("run-*.json")
    meta = json.loads(sidecar.read_text())
    meta["pulse_t_ns"].append(5)
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="pulse times"):
        load_runs(tmp_path)


def test_recording_source_fast_and_paced(tmp_path):
    rec = ProcedureRecorder(tmp_path, 10**9, keep_raw=True)
    rec.run_started("r1", 0, 20.0, "lin")           # a 20 fps line, a pulse on every second frame
    for i in range(5):
        rec.frame(Frame(np.full((16, 16), i, np.uint16), i * NS // 10, 2 * i), True)
    rec.run_ended("r1", NS, contrast=True)
    rec.close()
    fast = RecordingSource(tmp_path)
    frames = iter(fast.read, None)
    got = list(frames)
    # Pulses on frames 0, 2, ..., 8, each repeated on the frame after it, then 1 s (20 frames) of hold.
    assert [f.index for f in got] == list(range(29))
    assert [int(f.pixels[0, 0]) for f in got] == [i // 2 for i in range(9)] + [4] * 20
    assert [f.t_ns for f in got[:9]] == [i * NS // 20 for i in range(9)]
    assert fast.intensity == "lin" and fast.shape == (16, 16) and fast.dtype == np.uint16
    paced = RecordingSource(tmp_path, speed=4.0)       # 1.4 s of recording in 0.35 s
    start = time.monotonic()
    times = [f.t_ns for f in iter(paced.read, None)]
    assert 0.3 <= time.monotonic() - start < 1.5
    assert times == sorted(times)


def test_replay_command_prints_runs_and_messages(tmp_path, phantom):
    import io

    rec = ProcedureRecorder(tmp_path, retention_bytes=10**9, keep_raw=True)
    live(rec, phantom, device_bytes(6.0))
    rec.close()
    out = io.StringIO()
    from api.cli.replay import replay_main

    assert replay_main(tmp_path, out) == 0
    report = json.loads(out.getvalue())
    assert len(report["runs"]) == 1 and report["frames"] > 0 and report["messages"]["XRAY"] == 2
    bad = io.StringIO()
    assert replay_main(tmp_path / "missing", bad) == 2 and "cannot replay" in bad.getvalue()


# -- privacy: recordings are blanked outside the field and in the text boxes -------------------------------------
def _keep_mask(shape=(16, 16)) -> np.ndarray:
    keep = np.zeros(shape, dtype=bool)
    keep[4:12, 4:12] = True
    return keep


def test_recordings_are_blanked_outside_the_mask_by_default(tmp_path):
    rec = ProcedureRecorder(tmp_path, 10**9)
    rec.set_mask(_keep_mask())
    rec.run_started("r1", 0, 15.0, "log")
    for i in range(3):
        rec.frame(Frame(np.full((16, 16), 200 + i, np.uint8), i, i), True)
    rec.run_ended("r1", 10, contrast=True)
    rec.close()
    (run,) = load_runs(tmp_path)
    assert run.meta["blanked"] is True
    assert not run.frames[:, ~_keep_mask()].any()
    assert [int(v) for v in run.frames[:, 8, 8]] == [200, 201, 202]      # the field is kept as captured


def test_pulses_queued_before_the_field_was_found_are_blanked_when_the_run_closes(tmp_path):
    rec = ProcedureRecorder(tmp_path, 10**9)
    rec.frame(Frame(np.full((16, 16), 90, np.uint8), 0, 0), True)          # pre-roll, no field known yet
    rec.run_started("r1", 0, 15.0, "log")
    rec.frame(Frame(np.full((16, 16), 91, np.uint8), 1, 1), True)
    assert rec.drain()                                                      # written raw, for now
    rec.set_mask(_keep_mask())
    rec.frame(Frame(np.full((16, 16), 92, np.uint8), 2, 2), True)
    rec.run_ended("r1", 10, contrast=True)
    rec.close()
    (run,) = load_runs(tmp_path)
    assert len(run.frames) == 3 and not run.frames[:, ~_keep_mask()].any()
    assert [int(v) for v in run.frames[:, 8, 8]] == [90, 91, 92]


def test_a_run_that_could_not_be_blanked_is_discarded_not_kept_raw(tmp_path, caplog):
    rec = ProcedureRecorder(tmp_path, 10**9)
    rec.run_started("r1", 0, 15.0, "log")
    rec.frame(Frame(np.full((16, 16), 7, np.uint8), 0, 0), True)
    rec.run_ended("r1", 10, contrast=True)
    assert rec.drain()
    stats = rec.stats()
    rec.close()
    assert not list(tmp_path.glob("run-*"))
    assert stats["runs_unblankable"] == 1 and stats["runs_recorded"] == 0
    assert "could not be blanked" in caplog.text


def test_keep_raw_is_explicit_and_marked(tmp_path):
    rec = ProcedureRecorder(tmp_path, 10**9, keep_raw=True)
    rec.set_mask(_keep_mask())
    rec.run_started("r1", 0, 15.0, "log")
    rec.frame(Frame(np.full((16, 16), 7, np.uint8), 0, 0), True)
    rec.run_ended("r1", 10, contrast=True)
    rec.close()
    (run,) = load_runs(tmp_path)
    assert run.meta["blanked"] is False and (run.frames == 7).all()


def test_privacy_mask_blanks_whole_text_boxes():
    from core.sources.collimator import FieldGeometry
    from core.store.recorder import privacy_mask

    field = np.zeros((20, 20), dtype=bool)
    field[2:18, 2:18] = True
    field[3, 3] = False                                     # a glyph pixel the field mask already leaves out
    geometry = FieldGeometry("rect", (2, 2, 16, 16), field, None, ((2, 2, 5, 3),))
    keep = privacy_mask(geometry)
    assert not keep[2:5, 2:7].any() and keep[10, 10] and not keep[0, 0]
    assert keep.sum() == field.sum() - (5 * 3 - 1)


@pytest.mark.parametrize("crop", [None, (64, 48, 128, 160)])
def test_the_appliance_records_the_phantom_with_its_burnt_in_text_blanked(tmp_path, crop):
    """--record on the phantom with corner text (where C-arms print the patient): the recorded pulses keep the
    collimated field (or the configured crop) and are 0 in every text box and outside it."""
    from core.appliance.appliance import Appliance
    from core.ops.settings import Settings
    from core.sources.phantom.scene import collimator_circle
    from core.sources.phantom.video import PhantomSource, PhantomVideo
    from firmware_bridge.scenarios import ScriptedRun
    from tests.waiting import wait_for

    size = (256, 256)
    config = PhantomConfig(size=size, intensity="log")
    boxes = render_run(PhantomConfig(size=size, intensity="log", xray_s=0.5, lih_before_s=0.1,
                                     lih_after_s=0.1)).truth.text_boxes
    assert boxes                                             # the phantom does burn text in
    timeline = (ScriptedRun("baseline", 0.5, 3.0, 0.8, volume_ml=10.0, flow_ml_s=5.0),)
    video = PhantomVideo(config, timeline=timeline, period_s=60.0)
    shown, _ = video.frame_at(2.0)
    assert all(shown[y:y + h, x:x + w].max() >= 200 for x, y, w, h in boxes)   # text pixels are on screen
    t0 = time.monotonic_ns() + 300_000_000
    device = Appliance(Settings(data_dir=tmp_path, phantom_size=256, record=True, video_crop=crop),
                       source=PhantomSource(video, t0_ns=t0))
    device.start()
    try:
        wait_for(lambda: device.recorder.stats()["runs_recorded"], 15)
    finally:
        device.stop()
    (run,) = load_runs(tmp_path / "recordings")
    assert run.meta["blanked"] is True and len(run.frames) > 20
    for x, y, w, h in boxes:
        assert not run.frames[:, y:y + h, x:x + w].any(), (x, y, w, h)
    cx, cy, r = collimator_circle(size)
    yy, xx = np.mgrid[:size[0], :size[1]]
    outside = (xx - cx) ** 2 + (yy - cy) ** 2 > r * r
    inside = (xx - cx) ** 2 + (yy - cy) ** 2 < (0.8 * r) ** 2
    if crop is not None:
        x, y, w, h = crop
        in_crop = (xx >= x) & (xx < x + w) & (yy >= y) & (yy < y + h)
        outside, inside = ~in_crop, in_crop
    assert not run.frames[:, outside].any()
    lit = [f for f in run.frames if f.any()]                  # the pre-roll may hold the dark screen before X-ray
    assert len(lit) > 20 and all((f[inside] > 0).mean() > 0.99 for f in lit)    # the anatomy is kept


def test_a_replayed_recording_pairs_runs_and_injections_as_the_appliance_did_live(tmp_path):
    """X-ray edges and injections reach the replay's pipeline through the appliance's dispatcher, and a SUMMARY
    that came after its run ended completes the run in the replay as it did live."""
    from core.appliance.appliance import Appliance
    from core.ops.settings import Settings
    from core.sources.phantom.video import PhantomSource, PhantomVideo
    from firmware_bridge.scenarios import LATE_SUMMARY, LATE_SUMMARY_PERIOD_S, SCENARIOS
    from tests.waiting import wait_for

    t0 = time.monotonic_ns() + NS // 2
    script = SCENARIOS["late-summary"]
    video = PhantomVideo(PhantomConfig(size=(96, 96), intensity="log"), timeline=LATE_SUMMARY,
                         period_s=LATE_SUMMARY_PERIOD_S)
    device = Appliance(Settings(data_dir=tmp_path, phantom_size=96, record=True, record_raw=True,
                                serial=f"injsim://?scenario={script.name}&t0_ns={t0}"),
                       source=PhantomSource(video, t0_ns=t0))
    device.start()
    try:
        (run,) = wait_for(lambda: [r for r in device.runs() if r["delivered_volume_ml"] is not None], 10)
        wait_for(lambda: device.recorder.stats()["runs_recorded"], 5)
    finally:
        device.stop()
    result = replay(tmp_path / "recordings")
    (replayed,) = result.runs
    assert {m.to_dict()["type"] for m, _ in result.messages} >= {"XRAY", "SAMPLE", "SUMMARY"}
    same = ("start_ns", "end_ns", "pulses", "contrast", "injections", "delivered_volume_ml", "peak_flow_ml_s",
            "injection_duration_ms", "injector_xray_delay_ms", "xray_source")
    assert {k: replayed[k] for k in same} == {k: run[k] for k in same}
    for key in ("injection_start_ns", "injection_stop_ns"):      # the link's clock mapping, within its error
        assert abs(replayed[key] - run[key]) < 50_000_000, key
    assert replayed["delivered_volume_ml"] == script.injections[0].volume_ml
