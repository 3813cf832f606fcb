"""The appliance's books: what it knows of injections and run records. Pure: no threads, no I/O.

The appliance holds both under its lock and writes what they return to the event log; time comes from the
caller (host monotonic ns) or from the injected clock, so tests run them in simulated time.

- ``InjectionBook``: the injection going on (from the first SAMPLE with flow or STATE injecting to its
  SUMMARY) and the injections reported lately (the injector's and hand entries), to complete a run that ended
  before its injection's SUMMARY or before staff entered the hand injection.
- ``RunBook``: the records of this session's recent runs and the open procedure's totals: labels (given
  while a run is analysed, or after, in the run's own procedure), and the re-record a late SUMMARY asks for.
"""
from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from core.analysis.runs import Run, injection_overlaps, merge_injection, run_takes_injection
from core.analysis.totals import ProcedureTotals

Clock = Callable[[], int]        # host monotonic ns, e.g. time.monotonic_ns

INJECTION_MEMORY = 32            # injector summaries kept to complete runs that ended before them
RECENT_RUNS = 12                 # newest records of this session's last runs, kept for relabels
SHOWN_RUNS = 10                  # briefs of the last runs, for the status page
ENTRY_CLOCK_SLACK_NS = 60 * 1_000_000_000   # a hand entry's time may lead this box's wall clock by this much


class InjectionBook:
    def __init__(self, memory: int = INJECTION_MEMORY) -> None:
        self._since: int | None = None
        self._reported: collections.deque[dict] = collections.deque(maxlen=memory)

    @property
    def injecting(self) -> bool:
        return self._since is not None

    def start(self, host_ns: int) -> bool:
        """An injection starts at ``host_ns`` unless one is going already; whether it started."""
        if self._since is not None:
            return False
        self._since = host_ns
        return True

    def stop(self, summary: dict, host_ns: int, device: dict | None) -> dict:
        """The injection a SUMMARY ends: start_ns, stop_ns, the summary and the key of its log record."""
        # SUMMARY arrives after the injection; its duration dates the start when no sample did.
        start = self._since if self._since is not None else host_ns - summary["duration_ms"] * 1_000_000
        self._since = None
        serial = (device or {}).get("serial_no", "unknown")
        return {"start_ns": start, "stop_ns": host_ns, "summary": summary,
                "key": f"injection:{serial}:{summary['seq']}:{summary['duration_ms']}"}

    def remember(self, injection: dict) -> None:
        """An injection counted once (a resent SUMMARY is not): later runs may still take it."""
        self._reported.append(injection)

    def complete(self, run: Run) -> None:
        """The pipeline matched the run's injection when the run ended; a SUMMARY that came since (the
        operator stopped X-ray before the injection ended, or during the run's wait for analysis) is taken
        from here, before the analysis, which then times and classifies the run with it."""
        injection = run.injection
        if injection is not None and injection.get("summary") is not None:
            return
        known = sorted((s for s in self._reported if injection_overlaps(s, run.start_ns, run.end_ns)
                        and (injection is None or s["start_ns"] == injection["start_ns"])),
                       key=lambda s: s["start_ns"])
        if known:
            first = known[0]
            run.injection = dict(injection or {"count": len(known)}, start_ns=first["start_ns"],
                                 stop_ns=first["stop_ns"], summary=dict(first["summary"]))


def hand_injection(entry: dict, start_ns: int, key: str) -> dict:
    """A hand entry (``source: "hand"``) as an injection the pipeline and the books match to runs like the
    injector's: a moment at ``start_ns`` (host monotonic; how long it lasted nobody says), so it times the run
    whose exposure holds it, and the run's ``mtt_s`` is measured from it."""
    return {"start_ns": start_ns, "stop_ns": start_ns, "summary": dict(entry), "key": key}


def monotonic_at(at_wall: str | None, now_ns: int, wall_now_ns: int) -> int:
    """An entry's ISO-8601 wall time (with its offset; None: now) on the host monotonic clock, where runs
    are timed: as far before ``now_ns`` as it is before the wall clock's ``wall_now_ns``."""
    if at_wall is None:
        return now_ns
    when = datetime.fromisoformat(at_wall)
    if when.tzinfo is None:
        raise ValueError("at needs its UTC offset (a wall time alone is ambiguous)")
    at_ns = int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000
    if at_ns > wall_now_ns + ENTRY_CLOCK_SLACK_NS:
        # A contrast given later than now is a typing error: it would time a run that has not happened.
        raise ValueError(f"at {at_wall} is in the future")
    return now_ns - (wall_now_ns - at_ns)


@dataclass(frozen=True)
class RunWrite:
    """A run record for the event log: the newest record of a run is the one that counts."""
    run_id: str
    record: dict
    key: str
    procedure_id: str | None


class RunBook:
    def __init__(self, clock: Clock, *, recent: int = RECENT_RUNS, shown: int = SHOWN_RUNS,
                 concentration_mg_ml: float | None = None) -> None:
        self._clock = clock
        self._keep = recent
        self.concentration_mg_ml = concentration_mg_ml   # the injector's contrast (setting)
        self.totals = ProcedureTotals(concentration_mg_ml)   # the open procedure's
        self.runs_total = 0                       # this session's, for the counters
        self.contrast_runs_total = 0
        self._analysing: set[str] = set()         # ended runs whose record is not written yet
        # run id -> the newest record written for it, with its procedure_id: it may not be committed yet.
        self._recent: collections.OrderedDict[str, dict] = collections.OrderedDict()
        self._labels: dict[str, str] = {}
        self._briefs: collections.deque[dict] = collections.deque(maxlen=shown)

    # -- procedures -------------------------------------------------------------------------------------
    def new_procedure(self) -> None:
        self.totals = ProcedureTotals(self.concentration_mg_ml)

    def resume(self, fields: dict, runs: list[dict], injections: list[dict]) -> None:
        """An open procedure survives a restart: its totals from what it recorded (a run once)."""
        self.totals = procedure_totals(fields, runs, injections, self.concentration_mg_ml)

    def count_injection(self, injection: dict) -> bool:
        """An injection's SUMMARY into the totals; False for a resent one already counted."""
        return self.totals.add_injection(dict(injection["summary"], start_ns=injection["start_ns"],
                                              stop_ns=injection["stop_ns"]))

    # -- runs -------------------------------------------------------------------------------------------
    def ended(self, run_id: str) -> None:
        """The run ended; its record is written once analysed."""
        self._analysing.add(run_id)

    def analysing(self, run_id: str) -> bool:
        return run_id in self._analysing

    def recorded(self, run_id: str, summary: dict, procedure_id: str | None) -> RunWrite:
        """The analysed run's first record, in the open procedure, with a label given while it was analysed."""
        record = dict(summary, run_id=run_id, label=self._labels.get(run_id))
        self._analysing.discard(run_id)
        self._remember(run_id, record, procedure_id)
        self.totals.add_run(record)
        self.runs_total += 1
        self.contrast_runs_total += bool(record.get("contrast"))
        self._briefs.appendleft(brief(record))
        return RunWrite(run_id, record, f"run:{run_id}", procedure_id)

    def label(self, run_id: str, label: str, *, committed: dict | None, current: bool,
              open_procedure_id: str | None) -> tuple[str | None, RunWrite | None]:
        """A label for a run: (the procedure it is recorded in, the re-record it needs or None). A run being
        analysed or still going takes it in its first record; LookupError for a run nobody knows."""
        analysing = run_id in self._analysing
        # The newest record of a recent run may still be queued for the log: this one wins.
        record = None if analysing else self._recent.get(run_id, committed)
        if record is None and not current and not analysing:
            raise LookupError(f"no run {run_id!r}")
        self._labels[run_id] = label
        for shown in self._briefs:
            if shown["run_id"] == run_id:
                shown["label"] = label
        if record is None:
            return open_procedure_id, None     # its record will be written in the open procedure
        pid = record["procedure_id"]
        updated = {k: v for k, v in record.items() if k not in ("procedure_id", "recorded_wall")}
        updated["label"] = label
        if run_id in self._recent:
            self._remember(run_id, updated, pid)
        return pid, RunWrite(run_id, updated, f"run:{run_id}:label:{self._clock()}", pid)

    def take_injection(self, injection: dict, open_procedure_id: str | None) -> list[RunWrite]:
        """A SUMMARY that came after the run it overlapped was recorded: that run again, with the injector's
        figures, as a contrast run."""
        writes = []
        for run_id, record in list(self._recent.items()):
            if not run_takes_injection(record, injection):
                continue
            pid = record["procedure_id"]
            merged = merge_injection(record, injection)
            merged["label"] = self._labels.get(run_id, record.get("label"))
            updated = {k: v for k, v in merged.items() if k != "procedure_id"}
            self._remember(run_id, updated, pid)
            if pid == open_procedure_id:
                self.totals.replace_run(record, merged)   # contrast volume came with the injection
            self.contrast_runs_total += not record["contrast"]
            for i, shown in enumerate(self._briefs):
                if shown["run_id"] == run_id:
                    self._briefs[i] = brief(updated)
            writes.append(RunWrite(run_id, updated, f"run:{run_id}:{injection['key']}", pid))
        return writes

    def last_runs(self) -> list[dict]:
        """Briefs of the last runs, newest first."""
        return [dict(b) for b in self._briefs]

    def _remember(self, run_id: str, record: dict, procedure_id: str | None) -> None:
        """Keep the newest record of a recent run: it is what a relabel re-records."""
        self._recent[run_id] = dict(record, procedure_id=procedure_id)
        self._recent.move_to_end(run_id)
        while len(self._recent) > self._keep:
            self._recent.popitem(last=False)


def procedure_totals(fields: dict, runs: list[dict], injections: list[dict],
                     concentration_mg_ml: float | None = None) -> ProcedureTotals:
    """A procedure's totals from its fields, its runs (newest record of each) and its injections (the
    injector's and hand entries); ``concentration_mg_ml``: the injector's contrast."""
    totals = ProcedureTotals(concentration_mg_ml)
    totals.set_patient(fields.get("weight_kg"), fields.get("creatinine_mg_dl"))
    for run in runs:
        totals.add_run(run)
    for injection in injections:
        totals.add_injection(injection)
    return totals


def brief(summary: dict) -> dict:
    """What the status page shows of a run."""
    keys = ("run_id", "label", "contrast", "duration_s", "frames", "pulses", "pulse_rate",
            "injection_delay_s", "injection_source", "delivered_volume_ml")
    out = {k: summary.get(k) for k in keys}
    rois = summary.get("rois") or []
    if rois:
        out.update({k: rois[0].get(k) for k in ("arrival_s", "peak_s", "washout_s", "mtt_s")})
        # The ROI those times are of, and why the automatic one is where it is.
        out.update(roi=rois[0].get("roi"), roi_auto=rois[0].get("auto"), roi_reason=rois[0].get("reason"))
    return out
