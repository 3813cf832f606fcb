"""The appliance's clearance side: the tracker that pairs each contrast run with the procedure's baseline, the
pictures readers ask for, and the results published to the event log.

The tracker belongs to the analysis worker: every use of it runs there, in order behind the run-end analyses,
and is looked up when the task runs, so a task queued behind a new procedure's reset meets the new tracker.
Readers get copies published under this object's lock.

Each measured run's images (peak opacity and mask, blanked of burnt-in text) are also kept on disk for the open
procedure (core.store.run_images), so a restart rebuilds the tracker as it stood: the same runs in the same
order with their newest labels, and the operator's centrelines on the baselines they were drawn on.
"""
from __future__ import annotations

import collections
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

from core.analysis.clearance.grading import DEFAULT_GRADES
from core.analysis.clearance.tracker import ClearanceTracker
from core.analysis.images import opacity_png
from core.appliance.worker import AnalysisWorker
from core.store.eventlog import EventLog
from core.store.procedures import Procedures
from core.store.records import OPEN_PROCEDURE
from core.store.run_images import RunImages

log = logging.getLogger("cathlab.appliance")

KEEP_RUN_IMAGES = 50              # peak-opacity PNGs served by the API (a few hundred kB each)
TRACKED_RUNS = 12                 # contrast runs the clearance tracker keeps (a procedure has a handful)
HEADLINE = ("run_id", "baseline_run_id", "label", "burden_baseline_pct", "burden_post_pct", "clearance_pct",
            "grade", "removal_ge_75", "shift_px", "registration_score", "notes", "gradable", "progression",
            "warnings", "residual_defects", "grade_thresholds")
MAX_RESUMED_EVENTS = 1000         # centreline and clearance events of one procedure: a procedure has a handful


class LiveClearance:
    def __init__(self, worker: AnalysisWorker, log: EventLog, procs: Procedures,
                 grade_thresholds: tuple[float, float] = DEFAULT_GRADES, images: RunImages | None = None,
                 blank: Callable[[np.ndarray], np.ndarray | None] | None = None) -> None:
        """``images``: where runs' images are kept for a restart (None: not kept); ``blank`` makes the copy
        written there (None from it: not written, the burnt-in text is not known yet)."""
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
        self._images = images
        self._blank = blank
        self.unsaved = 0      # measured runs whose images could not be kept for a restart (worker thread)

    # -- from other threads: queued on the worker --------------------------------------------------------
    def resume(self, on_restored: Callable[[str, np.ndarray, np.ndarray | None], None] | None = None) -> None:
        """After a restart: the open procedure's latest result from the log at once, then (on the worker) the
        tracker rebuilt from the kept images, the runs' newest labels and the operator's centrelines.
        ``on_restored(run_id, peak, mask)`` is called on the worker for each run restored (vessel sizing's)."""
        procedure = self._procs.current()
        if procedure is None:
            self._worker.submit(self._keep_open_only)
            return
        starts = self._log.latest_events(("procedure_start",), limit=1)
        since = starts[-1]["id"] if starts else 0
        logged = [e for e in self._log.latest_events(("clearance",), after=since, limit=1)
                  if e["procedure_id"] == procedure["id"]]
        if logged:
            with self._lock:
                self._latest = logged[-1]["data"]
        self._worker.submit(self._restore, procedure["id"], since, on_restored)

    def procedure_ended(self) -> None:
        """A closed procedure's images go (a restart resumes only an open one)."""
        self._worker.submit(self._keep_open_only)

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
        try:
            self._keep_on_disk(run_id, peak, mask)
        except Exception:  # boundary: keeping it for a restart must never cost the result
            self.unsaved += 1
            log.exception("run %s: image not kept for a restart", run_id)
        self._publish(result)

    def _keep_on_disk(self, run_id: str, peak: np.ndarray, mask: np.ndarray | None) -> None:
        """The run's images, blanked, for a restart; the files of runs the tracker has let go are deleted."""
        procedure = self._procs.current()
        if self._images is None or procedure is None:
            return      # no open procedure: a restart has nothing to resume them into
        planes = [self._blank(p) if self._blank is not None else None for p in (peak, mask) if p is not None]
        if not planes or any(p is None for p in planes):
            self.unsaved += 1    # the text is not known yet: never written unblanked
            log.info("run %s: image not kept for a restart (collimated field not found yet)", run_id)
        elif not self._images.save(procedure["id"], run_id, planes):
            self.unsaved += 1
        for gone in self._images.run_ids(procedure["id"]) - set(self.tracker.run_ids):
            self._images.discard(procedure["id"], gone)

    def _restore(self, procedure_id: str, since: int, on_restored) -> None:
        images = self._images
        if images is None:
            return
        t0 = time.monotonic()
        images.keep_only(procedure_id)
        kept = images.run_ids(procedure_id)
        restored, missing = [], []
        for record in self._log.latest_runs(procedure_id, limit=10_000):
            run_id = record["run_id"]
            if not record.get("contrast"):
                continue
            planes = images.load(procedure_id, run_id) if run_id in kept else None
            if planes is None:
                missing.append(run_id)
                continue
            try:
                self.tracker.add_run(run_id, planes[0], record.get("label"),
                                     mask=planes[1] if len(planes) > 1 else None)
            except Exception:  # boundary: one bad file must not stop the others
                log.exception("run %s: not restored for clearance", run_id)
                continue
            self._measured.append(run_id)
            restored.append(run_id)
            self.keep_image(run_id, planes[0])
            if on_restored is not None:
                on_restored(run_id, planes[0], planes[1] if len(planes) > 1 else None)
        # The operator's centrelines, in order, each on the baseline it was drawn on.
        for event in self._log.latest_events(("centerline_set",), after=since, limit=MAX_RESUMED_EVENTS):
            data = event["data"]
            if data.get("baseline_run_id") is None:
                continue
            try:
                self.tracker.set_centerline(data.get("points"), data.get("diameter_px"), data["baseline_run_id"])
            except ValueError as exc:
                log.warning("centreline not restored: %s", str(exc).splitlines()[0])
        latest = self.tracker.latest()
        if latest is not None:
            with self._lock:
                self._latest = latest
        self._log.record("clearance_resumed", {"runs": restored, "not_kept": missing[-TRACKED_RUNS:],
                                               "baseline_run_ids": list(self.tracker.baselines),
                                               "took_s": round(time.monotonic() - t0, 3)})

    def _publish(self, result: dict | None, procedure_id: str | None = OPEN_PROCEDURE) -> None:
        if result is None:
            return
        with self._lock:
            procedure = self._procs.current()
            if procedure_id is OPEN_PROCEDURE or procedure is None or procedure["id"] == procedure_id:
                self._latest = result   # the page shows the open procedure's clearance
        self._log.record_clearance(result, key=result_key(result), procedure_id=procedure_id)
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
        self._keep_open_only()

    def _keep_open_only(self) -> None:
        if self._images is not None:
            procedure = self._procs.current()
            self._images.keep_only(None if procedure is None else procedure["id"])

    # -- read side -------------------------------------------------------------------------------------
    def disk_stats(self) -> dict:
        """The run images kept for a restart: written, failed, skipped for low space, not kept, bytes."""
        if self._images is None:
            return {}
        return dict(self._images.stats(), not_kept=self.unsaved, bytes=self._images.bytes_used())

    def headline(self) -> dict | None:
        """The numbers a room display shows; stations and centreline stay in the event log and the API."""
        with self._lock:
            result = self._latest
        return None if result is None else {k: result.get(k) for k in HEADLINE}

    def run_png(self, run_id: str) -> bytes | None:
        with self._lock:
            return self._run_pngs.get(run_id)

    def png(self) -> bytes | None:
        """The latest clearance picture; None before the first result (or when its runs' images are not kept).
        Rendered once per result, on the worker behind any run-end analysis; concurrent callers share that
        render. TimeoutError when it takes > 10 s."""
        with self._lock:
            result = self._latest
            if result is None:
                return None
            cached = self._png
            if cached is None or cached[0] is not result:
                cached = self._png = (result, self._worker.submit_on_demand(self._render, result))
        return cached[1].result(timeout=10)

    def _render(self, result: dict) -> bytes | None:
        try:
            return self.tracker.render_png(result)    # the tracker belongs to the worker thread
        except ValueError:
            return None     # a result read back from the log whose runs' images were not kept


def result_key(result: dict) -> str:
    """The idempotency key of a clearance result: the same result published twice (a restart's rebuild) is
    logged once; a re-measurement that changed anything (a relabel, a new centreline) is a new event."""
    digest = hashlib.sha256(json.dumps(result, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"clearance:{result['run_id']}:{result.get('baseline_run_id')}:{digest}"
