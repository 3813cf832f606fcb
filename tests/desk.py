"""The appliance's books, dispatcher and pipeline driven from one thread in simulated time.

What the appliance's threads do, in an order the test chooses: ``message`` is the bridge's reader thread (the
dispatcher, then counting a SUMMARY), ``frames`` the frame thread (the pipeline, side inputs applied first
as its inbox does), ``work`` the analysis worker (ended runs and late SUMMARYs in the order they were queued).
The event log is a list of the run records written.
"""
from __future__ import annotations

import numpy as np

from core.analysis.pipeline import FramePipeline
from core.appliance.books import InjectionBook, RunBook, RunWrite
from core.appliance.dispatch import Dispatcher
from core.sources.frames import Frame
from core.vocab import NS

FPS = 15
DEVICE = {"serial_no": "SIM-0001"}


class Desk:
    def __init__(self, procedure_id: str | None = "p1") -> None:
        self.now = 0
        self.open_procedure_id = procedure_id
        self.injections = InjectionBook()
        self.runs = RunBook(lambda: self.now)
        self.pipeline = FramePipeline("lin", defer_finish=True)
        self.inbox: list = []
        self.dispatcher = Dispatcher(self.injections, self.inbox.append, lambda: DEVICE)
        self.written: list[RunWrite] = []
        self.queue: list = []                 # the worker's ordered tasks
        self._index = 0
        self._rng = np.random.default_rng(1)
        self._pixels = np.full((32, 32), 100, np.uint8)

    # -- reader thread
    def message(self, msg) -> None:
        injection = self.dispatcher.dispatch(msg, self.now).injection
        if injection is not None and self.runs.count_injection(injection):
            self.injections.remember(injection)
            self.queue.append(lambda: self._late(injection))

    def _late(self, injection: dict) -> None:
        self.written += self.runs.take_injection(injection, self.open_procedure_id)

    # -- frame thread
    def frames(self, until_s: float, *, xray: bool) -> None:
        """Frames at 15 fps up to ``until_s``: each a new pulse while X-ray is on, last-image-hold otherwise."""
        while self.now + NS // FPS <= until_s * NS:
            self.now += NS // FPS
            for task in self.inbox:
                task(self.pipeline)
            self.inbox.clear()
            if xray:
                self._pixels = self._rng.integers(80, 120, (32, 32), dtype=np.uint8)
            for event in self.pipeline.process(Frame(self._pixels.copy(), self.now, self._index)):
                if event.kind == "run_end":
                    run_id = f"s1-{event.run.index}"
                    self.runs.ended(run_id)
                    self.queue.append(lambda e=event, r=run_id: self._finish(e, r))
            self._index += 1

    def _finish(self, event, run_id: str) -> None:
        self.injections.complete(event.run)
        event.finish()
        self.written.append(self.runs.recorded(run_id, event.run.summary(), self.open_procedure_id))

    # -- analysis worker
    def work(self) -> None:
        while self.queue:
            self.queue.pop(0)()

    def records(self, run_id: str) -> list[dict]:
        return [w.record for w in self.written if w.run_id == run_id]
