"""The appliance's clearance side: the tracker that pairs each contrast run with the procedure's baseline, the
pictures readers ask for, and the results published to the event log.

The tracker belongs to the analysis worker: every use of it runs there, in order behind the run-end analyses,
and is looked up when the task runs, so a task queued behind a new procedure's reset meets the new tracker.
Readers get copies published under this object's lock.
"""
from __future__ import annotations

import collections
import logging
import threading
from concurrent.futures import Future

import numpy as np

from core.analysis.clearance.grading import DEFAULT_GRADES
from core.analysis.clearance.tracker import ClearanceTracker
from core.analysis.images import opacity_png
from core.appliance.worker import AnalysisWorker
from core.store.eventlog import EventLog
from core.store.procedures import Procedures
from core.store.records import OPEN_PROCEDURE

log = logging.getLogger("cathlab.appliance")

KEEP_RUN_IMAGES = 50              # peak-opacity PNGs served by the API (a few hundred kB each)
TRACKED_RUNS = 12                 # contrast runs the clearance tracker keeps (a procedure has a handful)
HEADLINE = ("run_id", "baseline_run_id", "label", "burden_baseline_pct", "burden_post_pct", "clearance_pct",
            "grade", "removal_ge_75", "shift_px", "registration_score", "notes", "gradable", "progression",
            "warnings", "residual_defects", "grade_thresholds")


class LiveClearance:
    def __init__(self, worker: AnalysisWorker, log: EventLog, procs: Procedures,
                 grade_thresholds: tuple[float, float] = DEFAULT_GRADES) -> None:
        self._grades = tuple(grade_thresholds)
        self.tracker = self._new_tracker()   # worker thread only
        self._worker = worker
        self._log = log
        self._procs = procs
        self._lock = threading.Lock()
        self._run_pngs: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._latest: dict | None = None
        # The latest result's picture, rendered once per result (the result object is the key).
        self._png: tuple[dict, Future] | None = None
        # Runs measured by the tracker, that is of this procedure (worker thread; bounded like the images).
        self._measured: collections.deque[str] = collections.deque(maxlen=KEEP_RUN_IMAGES)

    # -- from other threads: queued on the worker --------------------------------------------------------
    def new_procedure(self) -> None:
        with self._lock:
            self._latest = None
        self._worker.submit(self._reset)

    def set_centerline(self, points: list[tuple[float, float]] | None, diameter_px: float | None) -> str | None:
        """Validated and applied on the worker; a bad centreline raises here. Answers the run it is drawn on
        (the baseline's image coordinates)."""
        def apply():
            drawn_on = self.tracker.baseline_id
            return self.tracker.set_centerline(points, diameter_px), drawn_on
        result, drawn_on = self._worker.submit(apply).result(timeout=10)
        self._log.record("centerline_set", {"points": points, "diameter_px": diameter_px,
                                            "baseline_run_id": drawn_on})
        self._publish(result)
        return drawn_on

    def relabel(self, run_id: str, label: str, procedure_id: str | None) -> None:
        self._worker.submit(self._relabel, run_id, label, procedure_id)

    # -- worker thread ---------------------------------------------------------------------------------
    def keep_image(self, run_id: str, peak: np.ndarray) -> None:
        """A contrast run's peak-opacity picture, kept for readers before the run is recorded: a run that
        /api/runs lists has its image."""
        png = opacity_png(peak)
        with self._lock:
            self._run_pngs[run_id] = png
            while len(self._run_pngs) > KEEP_RUN_IMAGES:
                self._run_pngs.popitem(last=False)

    def measure(self, run_id: str, peak: np.ndarray, label: str | None, mask: np.ndarray | None = None) -> None:
        """A contrast run's peak-opacity map measured by the tracker (``mask``: its contrast-free mask, for the
        registration on the anatomy and a device in the lumen), and the result published."""
        try:
            result = self.tracker.add_run(run_id, peak, label, mask=mask)
        except Exception:  # boundary: one unmeasurable run must not stop later ones
            log.exception("clearance of run %s failed", run_id)
            return
        self._measured.append(run_id)
        self._publish(result)

    def _publish(self, result: dict | None, procedure_id: str | None = OPEN_PROCEDURE) -> None:
        if result is None:
            return
        with self._lock:
            procedure = self._procs.current()
            if procedure_id is OPEN_PROCEDURE or procedure is None or procedure["id"] == procedure_id:
                self._latest = result   # the page shows the open procedure's clearance
        self._log.record_clearance(result, key=f"clearance:{result['run_id']}:{result.get('baseline_run_id')}",
                                   procedure_id=procedure_id)
        for rev in result.get("revisions") or ():
            # An earlier run's burden revised against the wider lumen this run showed: logged, never silent.
            self._log.record("clearance_revised", {**rev, "by_run_id": result["run_id"],
                                                   "baseline_run_id": result.get("baseline_run_id")},
                             key=f"clearance_revised:{rev.get('run_id')}:{result['run_id']}",
                             procedure_id=procedure_id)

    def _relabel(self, run_id: str, label: str, procedure_id: str | None) -> None:
        if run_id not in self._measured:
            # Not a measured contrast run of this procedure: nothing to re-pair. The tracker is new for each
            # procedure, so a run of an earlier one is never paired with this one's baseline.
            return
        try:
            self._publish(self.tracker.relabel(run_id, label), procedure_id)
        except Exception:  # boundary: a relabel the tracker refuses must not stop the worker
            log.exception("relabelling run %s for clearance failed", run_id)

    def _new_tracker(self) -> ClearanceTracker:
        return ClearanceTracker(max_runs=TRACKED_RUNS, grade_thresholds=self._grades)

    def _reset(self) -> None:
        self.tracker = self._new_tracker()   # a new procedure is new anatomy: no baseline yet
        self._measured.clear()

    # -- read side -------------------------------------------------------------------------------------
    def headline(self) -> dict | None:
        """The numbers a room display shows; stations and centreline stay in the event log and the API."""
        with self._lock:
            result = self._latest
        return None if result is None else {k: result.get(k) for k in HEADLINE}

    def run_png(self, run_id: str) -> bytes | None:
        with self._lock:
            return self._run_pngs.get(run_id)

    def png(self) -> bytes | None:
        """The latest clearance picture; None before the first result. Rendered once per result, on the worker
        behind any run-end analysis; concurrent callers share that render. TimeoutError when it takes > 10 s."""
        with self._lock:
            result = self._latest
            if result is None:
                return None
            cached = self._png
            if cached is None or cached[0] is not result:
                cached = self._png = (result, self._worker.submit_on_demand(self._render, result))
        return cached[1].result(timeout=10)

    def _render(self, result: dict) -> bytes:
        return self.tracker.render_png(result)    # the tracker belongs to the worker thread
