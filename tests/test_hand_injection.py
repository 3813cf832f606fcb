"""A hand injection's time reaches the live timing: ``mtt_s`` is measured from it whenever staff enter it.

The phantom's hand-injected DSA run (2 frames/s on a 30 fps display line) plays through the live pipeline and
the appliance's books in simulated time, as tests/desk.py drives them for the injector: the entry is matched
while the run goes on (the pipeline), after it ended but before its analysis (the injection book), or after
its record was written (the run book records it again). Each way the run's ``mtt_s`` is the truth's.
"""
from datetime import datetime, timedelta, timezone

import pytest

from core.analysis.pipeline import FramePipeline
from core.appliance.books import InjectionBook, RunBook, hand_injection, monotonic_at
from core.sources.frames import Frame
from core.sources.phantom.dsa import dsa_config
from core.sources.phantom.render import render_run
from core.vocab import NS

VOLUME_ML = 8.0


class HandDesk:
    """The frame thread (``frames``), the API's hand entry (``enter``) and the analysis worker (``work``)."""

    def __init__(self, seed: int, intensity: str) -> None:
        self.phantom = render_run(dsa_config(seed, rates=((0.0, 2.0),), intensity=intensity, lih_after_s=3.0))
        self.truth = self.phantom.truth
        self.pipeline = FramePipeline(intensity, defer_finish=True)
        self.injections = InjectionBook()
        self.runs = RunBook(lambda: self.now)
        self.now = 0
        self.inbox: list = []
        self.queue: list = []
        self.written = []
        self._next = 0

    def frames(self, until_s: float | None = None) -> None:
        frames = self.phantom.frames
        while self._next < len(frames) and (until_s is None or self._next / self.phantom.fps <= until_s):
            self.now = round(self._next * NS / self.phantom.fps)
            for task in self.inbox:
                task(self.pipeline)
            self.inbox.clear()
            for event in self.pipeline.process(Frame(frames[self._next], self.now, self._next)):
                if event.kind == "run_end":
                    self.runs.ended(f"s1-{event.run.index}")
                    self.queue.append(lambda e=event: self._finish(e))
            self._next += 1

    def enter(self, at_s: float) -> None:
        """What Appliance.add_hand_injection does with an entry given at ``at_s`` video seconds."""
        start_ns = round(at_s * NS)
        entry = {"source": "hand", "delivered_volume_ml": VOLUME_ML, "concentration_mg_ml": 300.0,
                 "start_ns": start_ns}
        injection = hand_injection(entry, start_ns, f"hand:{len(self.queue)}")
        assert self.runs.totals.add_injection(entry)
        self.injections.remember(injection)
        self.inbox.append(lambda pipeline: pipeline.injection(start_ns, start_ns, entry))
        self.queue.append(lambda: self.written.extend(self.runs.take_injection(injection, "p1")))

    def _finish(self, event) -> None:
        self.injections.complete(event.run)
        event.finish()
        self.written.append(self.runs.recorded(f"s1-{event.run.index}", event.run.summary(), "p1"))

    def work(self) -> None:
        while self.queue:
            self.queue.pop(0)()


def assert_timed_from_the_hand_injection(desk: HandDesk, record: dict) -> None:
    truth = desk.truth
    assert record["contrast"] is True and record["injection_source"] == "hand"
    assert record["delivered_volume_ml"] == VOLUME_ML and record["injections"] == 1
    assert record["injection_delay_s"] == pytest.approx(truth.injection_delay_s, abs=1e-3)
    (roi,) = record["rois"]
    t = truth.truth_timing(roi["roi"])
    assert roi["mtt_s"] is not None and abs(roi["mtt_s"] - t.mtt_s) < 0.15, (roi, t)
    assert roi["mtt_s"] == pytest.approx(roi["centroid_s"] - truth.injection_delay_s, abs=2e-3)
    assert roi["arrival_after_injection_s"] == pytest.approx(roi["arrival_s"] - truth.injection_delay_s, abs=2e-3)


@pytest.mark.parametrize("seed,intensity", [(1, "log"), (4, "lin")])
def test_hand_injection_entered_during_the_run_times_it(seed, intensity):
    desk = HandDesk(seed, intensity)
    desk.frames(desk.truth.inject_start_s + 0.5)        # staff enter it just after giving it
    desk.enter(desk.truth.inject_start_s)
    desk.frames()
    desk.work()
    (write,) = desk.written
    assert_timed_from_the_hand_injection(desk, write.record)


def test_hand_injection_entered_before_the_analysis_is_in_the_first_record():
    desk = HandDesk(2, "log")
    desk.frames()                                       # the run ended; the worker has not analysed it yet
    assert desk.runs.analysing("s1-0")
    desk.enter(desk.truth.inject_start_s)
    desk.work()
    (write,) = desk.written                             # no second record: the first had it
    assert_timed_from_the_hand_injection(desk, write.record)


def test_hand_injection_entered_after_the_record_records_the_run_again():
    desk = HandDesk(3, "log")
    desk.frames()
    desk.work()
    (first,) = desk.written
    assert first.record["injection_source"] is None and first.record["rois"][0]["mtt_s"] is None
    assert first.record["rois"][0]["centroid_s"] is not None
    desk.enter(desk.truth.inject_start_s)
    desk.work()
    first_record, second = (w.record for w in desk.written)
    assert first_record is first.record and second["run_id"] == first.record["run_id"]
    assert_timed_from_the_hand_injection(desk, second)
    (brief,) = desk.runs.last_runs()
    assert brief["mtt_s"] == second["rois"][0]["mtt_s"]
    totals = desk.runs.totals.to_dict()
    assert (totals["contrast_ml_hand"], totals["contrast_runs"], totals["injections"]) == (VOLUME_ML, 1, 1)


def test_hand_injection_outside_every_run_times_none():
    desk = HandDesk(1, "log")
    desk.frames()
    desk.work()
    desk.enter(desk.truth.run_end_s + 2.0)              # after the run: it is counted, it times nothing
    desk.frames()
    desk.work()
    (write,) = desk.written
    assert write.record["rois"][0]["mtt_s"] is None and desk.runs.totals.contrast_ml_hand == VOLUME_ML


def test_wall_time_of_an_entry_on_the_monotonic_clock():
    wall_now = datetime(2026, 12, 4, 10, 0, 30, tzinfo=timezone.utc)
    now_ns, wall_ns = 5_000 * NS, round(wall_now.timestamp() * 1e9)
    ten_s_ago = (wall_now - timedelta(seconds=10.25)).astimezone(timezone(timedelta(hours=1))).isoformat()
    assert monotonic_at(ten_s_ago, now_ns, wall_ns) == now_ns - 10_250_000_000
    assert monotonic_at(None, now_ns, wall_ns) == now_ns
    with pytest.raises(ValueError):
        monotonic_at("2026-12-04T10:00:00", now_ns, wall_ns)     # no offset: ambiguous
    with pytest.raises(ValueError, match="future"):
        monotonic_at((wall_now + timedelta(minutes=5)).isoformat(), now_ns, wall_ns)
    soon = (wall_now + timedelta(seconds=20)).isoformat()       # another clock a little ahead of this one
    assert monotonic_at(soon, now_ns, wall_ns) == now_ns + 20 * NS
