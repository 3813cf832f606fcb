"""Replay a recorded procedure as the appliance runs live: the serial bytes through ``firmware_bridge.link.Link``,
its messages through the appliance's dispatcher (X-ray edges and injections reach the pipeline), the pulses
through ``core.analysis.pipeline.FramePipeline``, in arrival order; ended runs take their injection and are
recorded by the same books, so a replay pairs runs and injections as the appliance did."""
from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.analysis.pipeline import FramePipeline
from core.analysis.runs import RunEvent
from core.appliance.books import InjectionBook, RunBook
from core.appliance.dispatch import Dispatcher
from core.sources.frames import Frame
from core.sources.recording import load_runs, read_serial, video_line
from core.vocab import NS
from firmware_bridge.link import Link


@dataclass
class ReplayResult:
    messages: list[tuple[object, int]]     # (decoded message, host ns), as the link delivered them live
    run_events: list[RunEvent]             # from the pipeline
    frames: int
    link_events: list[tuple[str, str, str]]
    runs: list[dict] = field(default_factory=list)   # each run's newest record, as the appliance keeps it


def replay(directory: Path | str, *, on_frame: Callable[[Frame], None] | None = None,
           silent_s: float = 3.0) -> ReplayResult:
    """Feed a recording through the same link, dispatcher, pipeline and books as the live appliance."""
    serial = read_serial(directory)
    runs = load_runs(directory)
    if not serial.records and not runs:
        raise ValueError(f"{directory}: nothing recorded")
    link = Link(silent_s)
    pipeline = FramePipeline(runs[0].meta["intensity"], defer_finish=True) if runs else None
    result = ReplayResult([], [], 0, [])
    now = [0]
    injections, book = InjectionBook(), RunBook(lambda: now[0], recent=len(runs) + 1)
    records: dict[str, dict] = {}

    def to_pipeline(task) -> None:
        if pipeline is not None:
            task(pipeline)

    def device() -> dict | None:
        return None if link.device is None else link.device.to_dict()

    dispatcher = Dispatcher(injections, to_pipeline, device)

    def on_run_event(event: RunEvent) -> None:
        result.run_events.append(event)
        if event.kind != "run_end":
            return
        injections.complete(event.run)
        if event.finish is not None:
            event.finish()
        run_id = f"replay-{event.run.index}"
        records[run_id] = book.recorded(run_id, event.run.summary(), None).record

    stream_frames = ((f.t_ns, 1, f) for f in video_line(runs))
    stream_bytes = ((t, 0, b) for t, b in serial.records)
    opened = False
    last_t = 0
    for t_ns, kind, item in heapq.merge(stream_bytes, stream_frames, key=lambda e: (e[0], e[1])):
        now[0] = t_ns
        if kind == 0:
            if not opened:
                result.link_events += link.port_opened(t_ns).events
                opened = True
            out = link.feed(item, t_ns)
            result.messages += out.messages
            result.link_events += out.events
            for old, new, _ in out.events:
                dispatcher.link_changed(new, t_ns)
            for msg, host_ns in out.messages:
                injection = dispatcher.dispatch(msg, host_ns).injection
                if injection is not None and book.count_injection(injection):
                    injections.remember(injection)
                    for write in book.take_injection(injection, None):
                        records[write.run_id] = write.record
        else:
            frame = Frame(np.array(item.pixels), item.t_ns, item.index)
            result.frames += 1
            last_t = frame.t_ns
            if on_frame is not None:
                on_frame(frame)
            for event in pipeline.process(frame):
                on_run_event(event)
    if pipeline is not None and result.frames:
        for event in pipeline.close(last_t + NS):
            on_run_event(event)
    result.runs = list(records.values())
    return result
