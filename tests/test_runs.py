"""Run detection from new-pulse flags on a video line."""
import pytest

from core.runs import NS, RunDetector


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
