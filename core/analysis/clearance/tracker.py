"""Live clearance over a procedure: which run is the baseline of which anatomy, and each run against it."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from core.analysis.clearance.figure import render_clearance_png
from core.analysis.clearance.grading import DEFAULT_GRADES, check_thresholds
from core.analysis.clearance.measure import check_operator_centerline, check_peak_image, measure_runs, register_runs
from core.analysis.registration import Registration
from core.analysis.vessel_find import find_vessel
from core.vocab import RUN_LABELS

# What a later run's wider lumen can change in an earlier result.
REVISED_KEYS = ("burden_baseline_pct", "burden_post_pct", "clearance_pct", "grade", "gradable", "progression",
                "warnings", "removal_ge_75", "residual_defects")


@dataclass
class _Run:
    run_id: str
    peak: np.ndarray
    label: str | None
    mask: np.ndarray | None = None


@dataclass
class ClearanceTracker:
    """Live clearance over a procedure: pure state, no I/O, no threads (the appliance serialises calls).

    Every baseline stands for one anatomy (one vein segment under the C-arm). A new run is registered to
    each baseline and belongs to the best match if its score reaches ``min_score``.
    Labels: "baseline" makes the run the baseline of its anatomy (replacing the one it matches, if any);
    "intraprocedural" / "completion" are measured against the matching baseline, or not paired if none
    matches; None (automatic) is measured like them, except that a run with an opacified vessel that
    matches no baseline is the first run of a new anatomy, so it becomes that anatomy's baseline.
    ``add_run`` returns the result against the baseline (the ``measure_runs`` dict plus ``run_id``,
    ``baseline_run_id``, ``label``), or None for a baseline or an unpaired run. Relabelling replays the
    runs in order with their labels, so the state is always what those labels imply.

    Every run paired with a baseline shares one reference lumen with it and the other runs of its anatomy:
    a later run that shows a wider lumen revises the burden (and clearance) of the earlier ones. The result
    then lists them in ``revisions`` (run_id, the burden and clearance before and after) for the log, and
    ``result(run_id)`` of an earlier run reads the revised values.
    """
    min_score: float = 0.35
    grade_thresholds: tuple[float, float] = DEFAULT_GRADES
    max_runs: int = 32
    unpaired: int = field(default=0, init=False)     # runs that matched no baseline
    _runs: dict[str, _Run] = field(default_factory=dict, init=False, repr=False)
    _order: list[str] = field(default_factory=list, init=False, repr=False)
    _baselines: list[str] = field(default_factory=list, init=False)
    _results: dict[str, dict] = field(default_factory=dict, init=False, repr=False)
    _registrations: dict[tuple[str, str], Registration] = field(default_factory=dict, init=False, repr=False)
    _vessels: dict[str, tuple[np.ndarray, float] | None] = field(default_factory=dict, init=False, repr=False)
    _centerlines: dict[str, tuple[np.ndarray, float | None]] = field(default_factory=dict, init=False, repr=False)
    _latest: dict | None = field(default=None, init=False, repr=False)
    _paired: dict[str, list[str]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.grade_thresholds = check_thresholds(self.grade_thresholds)
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score must be in [0, 1], got {self.min_score}")
        if not (isinstance(self.max_runs, int) and self.max_runs >= 2):
            raise ValueError(f"max_runs must be an integer >= 2, got {self.max_runs!r}")

    # -- inputs
    def add_run(self, run_id: str, peak_opacity: np.ndarray, label: str | None = None,
                mask: np.ndarray | None = None) -> dict | None:
        """A finished contrast run: its clearance against its anatomy's baseline, or None. ``mask``: the run's
        contrast-free mask image (core.analysis.peak.peak_and_mask), for registration on the anatomy."""
        run_id = self._check_id(run_id)
        if run_id in self._runs:
            raise ValueError(f"run {run_id!r} was already added")
        _check_label(label)
        peak = check_peak_image(peak_opacity, f"run {run_id}").copy()
        if mask is not None:
            mask = np.asarray(mask, dtype=np.float32)
            if mask.shape != peak.shape:
                raise ValueError(f"run {run_id!r}: mask {mask.shape} and peak {peak.shape} differ in size")
        self._runs[run_id] = _Run(run_id, peak, label, mask)
        self._order.append(run_id)
        self._forget_old()
        return self._place(run_id)

    def set_centerline(self, points, diameter_px: float | None, baseline_id: str | None = None) -> dict | None:
        """Operator's centreline and reference diameter for the current anatomy, in the image coordinates of
        its baseline (``baseline_id``); None clears them (automatic again). Other anatomies are unaffected;
        a new baseline for this anatomy starts automatic again. Returns the new latest result.
        ``baseline_id`` given: the one it was drawn on (a restart restoring what the operator set), if kept."""
        if baseline_id is not None and baseline_id not in self._runs:
            raise ValueError(f"run {baseline_id!r} is not kept: the centreline drawn on it cannot be restored")
        base = baseline_id if baseline_id is not None else self.baseline_id
        if base is None:
            if points is None:
                return self._latest     # nothing drawn, nothing to clear
            raise ValueError("no baseline yet: a centreline is drawn on the baseline image")
        if points is None:
            self._centerlines.pop(base, None)
        else:
            line = check_operator_centerline(points, self._runs[base].peak.shape).copy()
            if diameter_px is not None and not (isinstance(diameter_px, numbers.Real) and
                                                math.isfinite(diameter_px) and diameter_px >= 1):
                raise ValueError(f"diameter_px must be a number >= 1, got {diameter_px!r}")
            self._centerlines[base] = (line, None if diameter_px is None else float(diameter_px))
        self._replay()
        return self._latest

    def relabel(self, run_id: str, label: str | None) -> dict | None:
        """Change a run's label and replay the procedure; returns the new latest result."""
        run_id = self._check_id(run_id)
        if run_id not in self._runs:
            raise ValueError(f"unknown run {run_id!r}")
        _check_label(label)
        self._runs[run_id].label = label
        self._replay()
        return self._latest

    # -- outputs
    def latest(self) -> dict | None:
        return self._latest

    def result(self, run_id: str) -> dict | None:
        """The result of a run against its baseline (None for a baseline or an unpaired run)."""
        return self._results.get(run_id)

    @property
    def baseline_id(self) -> str | None:
        """The baseline of the latest result, else the most recent baseline."""
        if self._latest is not None:
            return self._latest["baseline_run_id"]
        return self._baselines[-1] if self._baselines else None

    @property
    def baselines(self) -> tuple[str, ...]:
        return tuple(self._baselines)

    @property
    def run_ids(self) -> tuple[str, ...]:
        """The runs kept, oldest first (at most ``max_runs``)."""
        return tuple(self._order)

    def render_png(self, result: dict | None = None) -> bytes:
        """Side-by-side PNG of a result's two runs (default: the latest result)."""
        result = result if result is not None else self._latest
        if result is None:
            raise ValueError("no clearance result to draw yet")
        try:
            b = self._runs[result["baseline_run_id"]].peak
            p = self._runs[result["run_id"]].peak
        except KeyError:
            raise ValueError("the runs of this result are no longer kept") from None
        label = (result.get("label") or "run").capitalize()
        return render_clearance_png(b, p, result, titles=(f"Baseline {result['baseline_run_id']}",
                                                          f"{label} {result['run_id']}"))

    # -- internals
    @staticmethod
    def _check_id(run_id) -> str:
        if not isinstance(run_id, str) or not run_id:
            raise ValueError(f"run_id must be a non-empty string, got {run_id!r}")
        return run_id

    def _vessel(self, run_id: str) -> tuple[np.ndarray, float] | None:
        if run_id not in self._vessels:
            try:
                v = find_vessel(self._runs[run_id].peak)
                self._vessels[run_id] = (v.centerline, v.diameter_px)
            except ValueError:
                self._vessels[run_id] = None
        return self._vessels[run_id]

    def _registration(self, base_id: str, run_id: str) -> Registration | None:
        key = (base_id, run_id)
        if key not in self._registrations:
            a, b = self._runs[base_id], self._runs[run_id]
            self._registrations[key] = (register_runs(a.peak, b.peak, a.mask, b.mask)
                                        if a.peak.shape == b.peak.shape else None)
        return self._registrations[key]

    def _best_baseline(self, run_id: str) -> tuple[str, Registration] | None:
        best = None
        for base_id in self._baselines:
            reg = self._registration(base_id, run_id)
            if reg is not None and reg.score >= self.min_score and (best is None or reg.score > best[1].score):
                best = (base_id, reg)
        return best

    def _place(self, run_id: str) -> dict | None:
        run = self._runs[run_id]
        match = self._best_baseline(run_id)
        if run.label == "baseline":
            if match is not None:
                self._baselines.remove(match[0])      # the operator restarts this anatomy's reference
            self._baselines.append(run_id)
            return None
        if match is None:
            if run.label is None and self._vessel(run_id) is not None:
                self._baselines.append(run_id)          # first contrast run of a new anatomy
            else:
                self.unpaired += 1
            return None
        base_id, reg = match
        if base_id in self._centerlines:
            line, diameter = self._centerlines[base_id]
        else:
            found = self._vessel(base_id)
            if found is None:
                return None
            line, diameter = found
        paired = [r for r in self._paired.get(base_id, []) if r in self._runs] + [run_id]
        runs = [self._runs[r] for r in paired]
        masks = None
        if self._runs[base_id].mask is not None and all(r.mask is not None for r in runs):
            masks = [self._runs[base_id].mask] + [r.mask for r in runs]
        operator = diameter if base_id in self._centerlines else None
        try:
            res = measure_runs(self._runs[base_id].peak, [r.peak for r in runs], centerline=line,
                               diameter_px=operator, grade_thresholds=self.grade_thresholds,
                               registrations=[self._registration(base_id, r) for r in paired], masks=masks)
        except ValueError:
            self.unpaired += 1
            return None
        self._paired[base_id] = paired
        revisions = []
        for rid, entry in zip(paired[:-1], res["runs"][:-1]):
            old = self._results.get(rid)
            if old is None:
                continue
            changed = {k: entry[k] for k in REVISED_KEYS if k in entry and old.get(k) != entry[k]}
            if changed:
                revisions.append({"run_id": rid, **{f"{k}_was": old.get(k) for k in changed}, **changed})
                old.update({k: entry[k] for k in REVISED_KEYS if k in entry})
        result = {k: v for k, v in res.items() if k != "runs"}
        result.update(run_id=run_id, baseline_run_id=base_id, label=run.label, revisions=revisions)
        self._results[run_id] = result
        self._latest = result
        return result

    def _replay(self) -> None:
        self._baselines, self._results, self._latest, self.unpaired = [], {}, None, 0
        self._paired = {}
        for run_id in self._order:
            self._place(run_id)

    def _forget_old(self) -> None:
        # Bounded memory over a long procedure: drop the oldest runs that are not a baseline.
        while len(self._order) > self.max_runs:
            victim = next((r for r in self._order if r not in self._baselines), self._order[0])
            self._order.remove(victim)
            del self._runs[victim]
            self._results.pop(victim, None)
            self._vessels.pop(victim, None)
            self._centerlines.pop(victim, None)
            self._paired.pop(victim, None)
            for ids in self._paired.values():
                if victim in ids:
                    ids.remove(victim)
            if victim in self._baselines:
                self._baselines.remove(victim)
            self._registrations = {k: v for k, v in self._registrations.items() if victim not in k}


def _check_label(label) -> None:
    if label is not None and label not in RUN_LABELS:
        raise ValueError(f"label must be one of {', '.join(RUN_LABELS)} or None, got {label!r}")
