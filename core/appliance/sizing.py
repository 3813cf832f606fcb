"""The appliance's vessel sizing: every contrast run labelled completion is measured (diameters, reference, %
stenosis, lesion length) on the analysis worker, and any kept run on request; the operator's calibration.

Each contrast run's peak-opacity image and contrast-free mask are kept (a bounded number, newest last) so a run
relabelled completion later, a request, or a catheter calibration can use them. The arrays and the calibration
belong to the worker thread; readers get the results published under this object's lock.
"""
from __future__ import annotations

import collections
import logging
import math
import threading

import numpy as np

from core.analysis.calibration import MAX_FRENCH, MIN_FRENCH, catheter_mm_per_px
from core.analysis.clearance.measure import check_operator_centerline, register_runs
from core.analysis.sizing import measure_sizing
from core.analysis.sizing_blur import ln_per_unit
from core.analysis.sizing_plot import profile_plot
from core.appliance.worker import AnalysisWorker
from core.store.eventlog import EventLog
from core.store.records import OPEN_PROCEDURE

log = logging.getLogger("cathlab.appliance")

KEPT_RUNS = 12          # peak and mask arrays kept for sizing (8 MB each at 1024x1024)
KEPT_RESULTS = 200      # sizing results served with their runs (a few kB each)
MAX_MM_PER_PX = 10.0    # as the command's --mm-per-px
SIZED_LABEL = "completion"
HEADLINE = ("run_id", "calibration", "mm_per_px", "reference_diameter_px", "reference_diameter_mm", "mld_px",
            "mld_mm", "diameter_stenosis_pct", "lesion_length_px", "lesion_length_mm", "residual_stenosis_ge_50",
            "warnings")
WAIT_S = 10.0
RESUMED_KINDS = ("vessel_sizing", "calibration_set", "centerline_set", "display_gain")
MAX_RESUMED_EVENTS = 1000   # of those kinds in one procedure: a handful, plus a display_gain per contrast run
MIN_REGISTRATION_SCORE = 0.35   # as clearance pairs a run with its baseline (ClearanceTracker.min_score)


class NotKept(LookupError):
    """The run's images are not (or no longer) kept: unknown, not a contrast run, or too old."""


class LiveSizing:
    def __init__(self, worker: AnalysisWorker, log: EventLog) -> None:
        self._worker = worker
        self._log = log
        self._lock = threading.Lock()
        # (peak, mask, the mask is ln of linear counts: 12/16-bit linear video, display video's LUT gain) per run
        self._images: collections.OrderedDict[str, tuple[np.ndarray, np.ndarray | None, bool, float | None]] = \
            collections.OrderedDict()                                     # worker thread
        self._calibration: dict | None = None                             # worker thread
        self._restored_gains: dict[str, float] = {}   # display gains the log kept, per run (worker thread)
        # The operator's centreline and the run it was drawn on (None: taken as this run's own).
        self._centerline: tuple[np.ndarray, str | None] | None = None     # worker thread
        self._results: collections.OrderedDict[str, dict] = collections.OrderedDict()
        self._latest: dict | None = None
        self._plot: dict | None = None        # the latest's diameter profile for the page, made once per result

    # -- from other threads ----------------------------------------------------------------------------
    def resume(self) -> None:
        """After a restart: the results, the latest one, the calibration and the centreline rebuilt from the
        event log as they stood. The open procedure's run images come back from the clearance side's files
        (``add_run`` from LiveClearance.resume, queued after this); other runs cannot be re-measured."""
        for event in self._log.latest_events(("vessel_sizing",), limit=KEPT_RESULTS):
            self._keep_result(event["data"]["run_id"], event["data"]["vessel"])
        # Since the newest procedure start (a new procedure forgets the calibration, centreline and latest).
        starts = self._log.latest_events(("procedure_start",), limit=1)
        since = starts[-1]["id"] if starts else 0
        calibration = centerline = latest = None
        gains: dict[str, float] = {}
        for event in self._log.latest_events(RESUMED_KINDS, after=since, limit=MAX_RESUMED_EVENTS):
            data = event["data"]
            if event["kind"] == "vessel_sizing":
                latest = dict(data["vessel"], run_id=data["run_id"])
            elif event["kind"] == "calibration_set":
                calibration = data
            elif event["kind"] == "centerline_set":
                centerline = (data.get("points"), data.get("baseline_run_id"))
            elif _positive(data.get("display_gain")):
                gains[str(data.get("run_id"))] = float(data["display_gain"])
        self._set_latest(latest)
        self._worker.submit(self._restore, calibration, centerline, gains)

    def new_procedure(self) -> None:
        self._set_latest(None)
        self._worker.submit(self._reset)

    def set_centerline(self, points: list[tuple[float, float]] | None, drawn_on: str | None = None) -> None:
        """The operator's centreline, in the image coordinates of run ``drawn_on`` (the clearance baseline it
        was drawn on): registered to each run measured later, as clearance registers its runs."""
        self._worker.submit(self._set_centerline, (points, drawn_on))

    def relabel(self, run_id: str, label: str, procedure_id: str | None) -> None:
        if label == SIZED_LABEL:
            self._worker.submit(self._measure_kept, run_id, procedure_id)

    def request(self, run_id: str) -> dict:
        """Measure a kept run now (behind the queued analyses): its result, NotKept, or ValueError with the
        reason it cannot be measured."""
        return self._worker.submit(self._measure_or_raise, run_id, OPEN_PROCEDURE).result(timeout=WAIT_S)

    def set_calibration(self, mm_per_px: float | None = None, catheter_french: float | None = None,
                        catheter: list[tuple[float, float]] | None = None, run_id: str | None = None) -> dict:
        """The operator's number, or a catheter of ``catheter_french`` between two points on ``run_id``'s mask.
        ValueError (or NotKept) with the reason when refused; recorded as a ``calibration_set`` event."""
        calibration = self._worker.submit(self._calibrate, mm_per_px, catheter_french, catheter,
                                          run_id).result(timeout=WAIT_S)
        self._log.record("calibration_set", calibration)
        return calibration

    def result(self, run_id: str) -> dict | None:
        with self._lock:
            return self._results.get(run_id)

    def headline(self) -> dict | None:
        """The numbers and the diameter profile (``plot``, core.analysis.sizing_plot) the status page shows."""
        with self._lock:
            latest, plot = self._latest, self._plot
        return None if latest is None else dict({k: latest.get(k) for k in HEADLINE}, plot=plot)

    def _set_latest(self, latest: dict | None) -> None:
        plot = None if latest is None else profile_plot(latest)
        with self._lock:
            self._latest, self._plot = latest, plot

    # -- worker thread ---------------------------------------------------------------------------------
    def add_run(self, run_id: str, peak: np.ndarray, mask: np.ndarray | None, label: str | None,
                ln_mask: bool = False, display_gain: float | None = None) -> None:
        """A contrast run's images, kept; measured now when it is labelled completion. ``ln_mask``: the mask is
        ln of linear counts (the catheter calibration then models the blur on the intensity); ``display_gain``:
        display video's levels per ln unit from the run's noise (core.analysis.display_gain), which gives a
        catheter calibration on it the same model (None: the linear model, blur on the levels)."""
        if display_gain is None:
            display_gain = self._restored_gains.get(run_id)     # restored after a restart: the gain it had
        self._images[run_id] = (peak, mask, bool(ln_mask), display_gain)
        while len(self._images) > KEPT_RUNS:
            self._images.popitem(last=False)
        if label == SIZED_LABEL:
            self._measure_kept(run_id, OPEN_PROCEDURE)

    def _measure_kept(self, run_id: str, procedure_id) -> None:
        try:
            self._measure_or_raise(run_id, procedure_id)
        except NotKept:
            pass                                 # not a contrast run with its images here: nothing to size
        except ValueError as exc:                # no vessel: said in the log, the run stays unsized
            self._log.record("vessel_sizing_failed", {"run_id": run_id, "reason": str(exc).splitlines()[0]},
                             procedure_id=procedure_id)
        except Exception:  # boundary: one unmeasurable run must not stop later ones
            log.exception("vessel sizing of run %s failed", run_id)

    def _measure_or_raise(self, run_id: str, procedure_id) -> dict:
        if run_id not in self._images:
            raise NotKept(f"no image kept for run {run_id!r}")
        peak, mask, ln_mask, gain = self._images[run_id]
        cal = self._calibration or {}
        line, how = self._operator_line(run_id, peak, mask)
        sizing = measure_sizing(peak, line, mm_per_px=cal.get("mm_per_px"), calibration=cal.get("calibration"),
                                mask=mask, ln_per_unit=ln_per_unit(ln_mask, gain))
        result = sizing.to_json()
        self._keep_result(run_id, result)
        self._set_latest(dict(result, run_id=run_id))
        self._log.record("vessel_sizing", {"run_id": run_id, **how, "vessel": result}, procedure_id=procedure_id)
        return result

    def _operator_line(self, run_id: str, peak: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray | None,
                                                                                                 dict]:
        """The operator's centreline moved onto this run (the table moves between runs), or None (found
        automatically) with the reason, for the log."""
        if self._centerline is None:
            return None, {"centerline": "automatic"}
        points, drawn_on = self._centerline
        note: dict = {}
        shift = np.zeros(2)
        if drawn_on is not None and drawn_on != run_id:
            if drawn_on not in self._images:
                return None, {"centerline": "automatic", "centerline_note": f"drawn on run {drawn_on}, whose image "
                              "is no longer kept: it cannot be registered to this run"}
            base_peak, base_mask = self._images[drawn_on][:2]
            if base_peak.shape != peak.shape:
                return None, {"centerline": "automatic", "centerline_note": f"drawn on run {drawn_on}, an image "
                              "of another size"}
            reg = register_runs(base_peak, peak, base_mask, mask)
            if reg.score < MIN_REGISTRATION_SCORE:
                return None, {"centerline": "automatic", "centerline_note": f"run {drawn_on} it was drawn on "
                              f"does not register to this run (score {reg.score:.2f})"}
            shift = np.array([reg.dx, reg.dy])
            note = {"registered_to": drawn_on, "centerline_shift_px": [round(reg.dx, 1), round(reg.dy, 1)],
                    "registration_score": round(reg.score, 3)}
        try:
            line = check_operator_centerline(points + shift, peak.shape)
        except ValueError as exc:
            return None, {"centerline": "automatic", "centerline_note": str(exc).splitlines()[0], **note}
        return line, {"centerline": "operator", **note}

    def _keep_result(self, run_id: str, result: dict) -> None:
        with self._lock:
            self._results[run_id] = result
            self._results.move_to_end(run_id)
            while len(self._results) > KEPT_RESULTS:
                self._results.popitem(last=False)

    def _restore(self, calibration: dict | None, centerline, gains: dict[str, float]) -> None:
        self._calibration = calibration
        self._restored_gains = gains
        self._set_centerline(centerline)

    def _calibrate(self, mm_per_px, french, catheter, run_id) -> dict:
        if mm_per_px is not None:
            if catheter is not None or french is not None or run_id is not None:
                raise ValueError("give mm_per_px, or catheter_french with catheter and run_id, not both")
            mm = _number(mm_per_px, "mm_per_px")
            if not 0.0 < mm <= MAX_MM_PER_PX:
                raise ValueError(f"mm_per_px must be in (0, {MAX_MM_PER_PX:g}] mm/px, got {mm:g}")
            calibration = {"calibration": "operator", "mm_per_px": mm}
        else:
            if french is None or catheter is None or run_id is None:
                raise ValueError("give mm_per_px, or catheter_french with catheter and run_id")
            french = _number(french, "catheter_french")
            if not MIN_FRENCH <= french <= MAX_FRENCH:
                raise ValueError(f"catheter_french must be in [{MIN_FRENCH:g}, {MAX_FRENCH:g}] F, got {french:g}")
            if run_id not in self._images:
                raise NotKept(f"no image kept for run {run_id!r}")
            peak, mask, ln_mask, gain = self._images[run_id]
            if mask is None:
                raise ValueError(f"run {run_id!r} has no contrast-free mask image to measure the catheter on")
            points = np.asarray(catheter, dtype=float)
            line = self._centerline[0] if self._centerline is not None and self._centerline[1] in (None, run_id) \
                else None
            gain = None if ln_mask else gain
            mm = catheter_mm_per_px(mask, points, french, opacity=peak, centerline=line, ln_mask=ln_mask,
                                    display_gain=gain)
            calibration = {"calibration": "catheter", "mm_per_px": mm, "catheter_french": french,
                           "catheter": points.tolist(), "run_id": run_id,
                           "display_gain": None if gain is None else round(float(gain), 2)}
        self._calibration = calibration
        return dict(calibration)

    def _set_centerline(self, centerline) -> None:
        points, drawn_on = centerline if centerline is not None else (None, None)
        self._centerline = None if points is None else (np.asarray(points, dtype=float), drawn_on)

    def _reset(self) -> None:
        # A new procedure is a new patient: a new magnification and a new vein.
        self._images.clear()
        self._restored_gains = {}
        self._calibration = None
        self._centerline = None


def _number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _positive(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value > 0
