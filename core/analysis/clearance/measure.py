"""Venographic clearance: thrombus burden of a baseline and later runs against one reference lumen, % clearance,
grade, residual defects and the reasons a result must not be graded.

Method (docs/domain.md, clearance):
- Stations every ``STATION_SPACING_PX`` along the analysed centreline (baseline coordinates); each later run is
  registered to the baseline and measured at the same anatomical stations.
- Per run and station (core/analysis/lumen.py): the contrast column's width from its edges, its integrated
  opacity, hence the run's contrast density along the vessel (clearance/density.py) and the filled
  cross-section ``integral / density``.
- Reference lumen per station: the widest lumen any run of the procedure shows there, each run's widths
  smoothed robustly along the vessel first (the narrowed part bridged, noise averaged, never maximised), with
  the operator's diameter as a floor. So a taper or a step is no thrombus, and a thrombus lining the whole
  vein on one run is measured against the lumen another run shows.
- Burden: sum of thrombus cross-section over sum of reference cross-section (a volume fraction), overall and
  per named segment. Clearance ``(b_base - b_post) / b_base * 100``; below -5% progression (no grade); graded
  from the value as displayed (one decimal) at configurable thresholds; not graded when a safeguard
  (clearance/safeguards.py) says the comparison is doubtful.

This module runs the measurement; its parts live beside it: inputs.py (the checked inputs), runs.py (one run at
the stations, devices), reference.py (the cross-run reference, axis and densities; noise.py and normalise.py
its statistics), overlap.py (another vessel's column merged with the lumen's), result.py (percentages,
verdict, defects, segments).
"""
from __future__ import annotations

import numpy as np

from core.analysis.clearance import density as dens
from core.analysis.clearance import noise, overlap, safeguards
from core.analysis.clearance.grading import DEFAULT_GRADES, check_segments, check_thresholds
from core.analysis.clearance.inputs import (
    MAX_CENTERLINE_LENGTH_FACTOR,
    MAX_CENTERLINE_POINTS,
    _check_diameter,
    check_operator_centerline,
    check_peak_image,
)
from core.analysis.clearance.path import automatic_centerline
from core.analysis.clearance.reference import _axis, _densities, _shared_reference, round_column
from core.analysis.clearance.result import _clearance, _defects, _pct, _segments, verdict
from core.analysis.clearance.runs import (
    MIN_STATIONS,
    STATION_SPACING_PX,
    _device_outcome,
    _devices,
    _half,
    _Run,
    register_runs,
)
from core.analysis.lumen import run_reference
from core.analysis.registration import Registration
from core.analysis.vessel import check_centerline, make_stations
from core.analysis.vessel_find import diameter_along

# The measurement's parts live beside it (inputs, runs, reference, result); these names stay importable from here.
__all__ = ["MAX_CENTERLINE_LENGTH_FACTOR", "MAX_CENTERLINE_POINTS", "STATION_SPACING_PX", "check_operator_centerline",
           "check_peak_image", "measure_clearance", "measure_runs", "register_runs", "round_column", "verdict"]


def measure_runs(baseline_peak: np.ndarray, later_peaks, *, centerline=None, diameter_px=None, segments=None,
                 grade_thresholds=DEFAULT_GRADES, registrations=None, masks=None) -> dict:
    """Every later run against the baseline, all sharing one cross-run reference lumen.

    The top-level keys describe the last run (the ``--json`` object of two runs), ``runs`` lists every later
    run in order. ``centerline`` (N, 2) in baseline pixels (its ends bound the analysed part) is found
    automatically when None; ``diameter_px`` is the operator's reference diameter, a floor under the measured
    reference. ``registrations`` (one per later run, or None entries) skip the search; ``masks`` (the baseline's
    then each later run's contrast-free mask image) let the registration use the anatomy.
    """
    base = check_peak_image(baseline_peak, "baseline")
    posts = [check_peak_image(p, f"post {k + 1}" if len(later_peaks) > 1 else "post")
             for k, p in enumerate(later_peaks)]
    if not posts:
        raise ValueError("need at least one run after the baseline")
    for p in posts:
        if base.shape != p.shape:
            raise ValueError(f"baseline and post images differ in size: {base.shape} vs {p.shape}")
    thresholds = check_thresholds(grade_thresholds)
    segs = check_segments(segments)
    notes: list[str] = []
    floor = _check_diameter(diameter_px, base.shape)
    regs = list(registrations) if registrations is not None else [None] * len(posts)
    masks = list(masks) if masks is not None else [None] * (len(posts) + 1)
    regs = [r if r is not None else register_runs(base, p, masks[0], masks[k + 1]) for k, (r, p) in
            enumerate(zip(regs, posts))]
    path_doubt = None
    if centerline is None:
        line, d_guess, path_doubt, found_on = automatic_centerline(base, posts, regs, floor)
        notes.append("centreline found automatically (from the bottom end)"
                     + ("" if found_on == 0 else f", on the post {found_on} run (the vein at least as long there)"))
    else:
        line = check_centerline(centerline, base.shape)
        d_guess = floor if floor is not None else diameter_along(base, line)
    stations = make_stations(line, STATION_SPACING_PX)

    # The profile window must hold the widest lumen anywhere along the vessel (a taper, a confluence).
    max_d = 1.5 * d_guess
    runs = [_Run(base, stations, Registration(0.0, 0.0, 1.0), max_d, beside=centerline is None)]
    wide = np.nanpercentile(runs[0].lumen.width, 95) if np.isfinite(runs[0].lumen.width).any() else 0.0
    if wide > 0.8 * max_d:
        max_d = 1.3 * wide
        runs = [_Run(base, stations, Registration(0.0, 0.0, 1.0), max_d, beside=centerline is None)]
    runs += [_Run(p, stations, r, max_d) for p, r in zip(posts, regs)]
    names = ["baseline"] + (["post"] if len(posts) == 1 else [f"post {k}" for k in range(1, len(posts) + 1)])
    # Another vessel's column merged with the lumen's reads as a lumen twice as wide: left out before the reference.
    overlap.leave_out_merged(runs, floor)

    # The shared reference: the widest lumen any run shows at each station, the operator's diameter a floor.
    # Twice: stations whose density then reads low (a thrombus in front, a flattened top) leave the reference.
    unreadable = None
    for it in range(2):
        d_run, trusted = _shared_reference(runs)
        axis = _axis(runs)
        for r in runs:
            # A run registered a pixel off sits a pixel off the axis everywhere: that offset is measured on its
            # stations as wide as the reference, and removed.
            wide = r.patent & np.isfinite(d_run) & (r.lumen.width >= 0.96 * d_run) & np.isfinite(axis)
            off = float(np.median((r.lumen.centre - axis)[wide])) if wide.sum() >= MIN_STATIONS else 0.0
            r.axis = np.where(np.isfinite(axis), axis + off, 0.0)
            r.round = round_column(r.lumen.centre - off, r.lumen.width, axis)
            r.full = r.patent & r.round
        # Pooled between runs only once the reference is settled: the first lines find each run's own low stations.
        try:
            _densities(runs, pool=it == 1)
        except ValueError:
            # Legitimate anatomy, not an error: another vessel over the lumen left no column to read. Not gradable.
            why = overlap.unreadable_reason(runs, safeguards.MAX_OVERFILLED_SHARE / 2)
            if why is None:
                raise
            unreadable = f"no run shows a round contrast column to read the contrast density from: {why}"
            for r in runs:
                r.line = None
            break
        if it == 0:
            for r in runs:
                low = dens.low_density(stations.s, r.lumen.density, r.line, _half(r))
                r.ref, r.patent = run_reference(r.lumen.width, stations.s, STATION_SPACING_PX, exclude=low)
    d_ref = d_run.copy()
    source = np.where(np.isfinite(d_run), "run", "operator")
    if floor is not None:
        low = ~(d_run >= floor)
        d_ref[low] = floor
        source[low] = "operator"
    shown_ref = d_ref
    if not np.isfinite(d_ref).any():
        # No run shows the lumen alone anywhere (other vessels' columns over all of it): the first guess of its
        # diameter places the windows; no reference is reported.
        d_ref = np.full(d_ref.shape, float(d_guess))
    for r in runs:
        r.integrate(d_ref)
    ref_area = dens.reference_area(d_ref)
    devices = _devices(runs, masks, d_ref)
    if any(d.any() for d in devices) and unreadable is None:
        # A device displaces contrast: its stations read no run's contrast density.
        for r in runs:
            r.line = None
            r.full = r.full & ~r.device
        _densities(runs)
    nan = np.full(len(stations.s), np.nan)
    fills = [nan if r.line is None else dens.filled_area(r.integral, dens.line_at(r.line, stations.s)) for r in runs]
    with np.errstate(invalid="ignore", divide="ignore"):
        beyond = noise.overfilled([1.0 - f / ref_area for f in fills], _half(runs[0]))
    if beyond.any():
        notes.append(f"{beyond.mean() * 100:.0f}% of the vessel left out: more contrast there than its reference "
                     "lumen holds (a branch's junction or a tributary beside it)")
    # Stations where another vessel's column overlaps the lumen on some run: no lumen measured there (lumen.py).
    merged = np.any(np.vstack([r.merged for r in runs]), axis=0)
    crowded = np.any(np.vstack([r.crowded for r in runs]), axis=0) & ~beyond
    if (crowded & ~merged).any():
        notes.append(f"{(crowded & ~merged).mean() * 100:.0f}% of the vessel left out: another vessel's contrast "
                     "column overlaps the lumen there (a paired vein or a tributary alongside)")
    merged_note = overlap.merged_note(runs, names, stations.frac)
    if merged_note:
        notes.append(merged_note)

    # The baseline's round columns of even density: where a later run's density is compared with it.
    base_even = runs[0].full & ~dens.low_density(stations.s, runs[0].lumen.density, runs[0].line, _half(runs[0]))

    entries, pairs = [], []
    for k, run in enumerate(runs[1:], start=1):
        used = np.isfinite(fills[0]) & np.isfinite(fills[k]) & np.isfinite(ref_area) & ~beyond
        few = None
        if used.sum() < MIN_STATIONS:
            if not (beyond | crowded).any():
                raise ValueError(f"only {int(used.sum())} stations measured in both runs (need {MIN_STATIONS}): "
                                 "the centreline is outside the field or under an overlay")
            # Other vessels over the rest: a result for the record, not graded.
            few = (f"only {int(used.sum())} stations measured in both runs (need {MIN_STATIONS}): other vessels' "
                   "contrast over the rest")
            used = np.zeros_like(used)      # no burden from so few: none reported, never a misleading one
        name = "post" if len(runs) == 2 else f"post {k}"
        device_warning, device_note = _device_outcome(devices[k - 1], used, name, runs[0].device & run.device)
        if device_note:
            notes.append(device_note)
        if not device_warning:
            used = used & ~devices[k - 1]
        b0 = dens.burden(fills[0], ref_area, used)
        b1 = dens.burden(fills[k], ref_area, used)
        left_out = (safeguards.overfilled_warning(beyond | crowded) if not merged.any() else
                    overlap.left_out_warning(runs, names, beyond, crowded, stations.frac,
                                             safeguards.MAX_OVERFILLED_SHARE))
        beside = safeguards.vessel_beside_warning(runs[0].lumen.beside, used) if centerline is None else None
        warnings = [w for w in (safeguards.registration_warning(run.reg.score), beside,
                                safeguards.path_warning(run.lumen.centre, d_ref, used),
                                safeguards.reference_warning(trusted, used),
                                left_out, device_warning, path_doubt, few, unreadable,
                                safeguards.density_drop_warning(names[k], run.lumen.density, runs[0].lumen.density,
                                                                base_even & run.round & used, used, _half(run)))
                    if w]
        for name, r in ((names[0], runs[0]), (names[k], run)):
            if r.borrowed and unreadable is None:
                # Say why when other vessels' columns over the lumen left it none.
                why = overlap.unreadable_reason([r], safeguards.MAX_OVERFILLED_SHARE / 2)
                warnings.append(f"the {name} run shows no round contrast column to read its contrast density from"
                                + (f": {why}" if why else ""))
        for name, r in ((names[0], runs[0]), (names[k], run)):
            warnings += safeguards.contrast_warnings(name, r.lumen.height, r.lumen.integral, r.lumen.width,
                                                     r.lumen.noise, r.patent)
        clear, why = _clearance(b0, b1)
        v = verdict(clear, not warnings, thresholds)
        st_b0 = np.where(used, 1.0 - fills[0] / ref_area, np.nan)
        st_b1 = np.where(used, 1.0 - fills[k] / ref_area, np.nan)
        entry = {"burden_baseline_pct": _pct(b0), "burden_post_pct": _pct(b1), **v, "gradable": not warnings,
                 "warnings": warnings, "shift_px": [round(run.reg.dx, 1) + 0.0, round(run.reg.dy, 1) + 0.0],
                 "registration_score": round(run.reg.score, 3),
                 "residual_defects": _defects(st_b1, stations, float(np.nanmedian(d_ref)),
                                              (run.reg.dx, run.reg.dy), where=True)}
        if getattr(run.reg, "residual", None) is not None:
            entry["registration_residual"] = round(float(run.reg.residual), 4)
        entries.append(entry)
        pairs.append((used, st_b0, st_b1, why, fills[k]))

    used, st_b0, st_b1, why, fill_last = pairs[-1]
    last = entries[-1]
    if why:
        notes.append(why)
    d_show = floor if floor is not None else float(np.nanmedian(d_ref))
    result = {
        "burden_baseline_pct": last["burden_baseline_pct"],
        "burden_post_pct": last["burden_post_pct"],
        "clearance_pct": last["clearance_pct"],
        "grade": last["grade"],
        "removal_ge_75": last["removal_ge_75"],
        "progression": last["progression"],
        "gradable": last["gradable"],
        "warnings": last["warnings"],
        "shift_px": last["shift_px"],
        "registration_score": last["registration_score"],
        "diameter_px": round(float(d_show), 2),
        "grade_thresholds": list(thresholds),
        "centerline": [[round(float(x), 2), round(float(y), 2)] for x, y in line],
        "stations": [
            {"s_px": round(float(s), 1), "frac": round(float(f), 4), "x": round(float(x), 1), "y": round(float(y), 1),
             "burden_baseline_pct": _pct(st_b0[k]) if used[k] else None,
             "burden_post_pct": _pct(st_b1[k]) if used[k] else None}
            for k, (s, f, (x, y)) in enumerate(zip(stations.s, stations.frac, stations.xy))],
        "reference": [{"s_px": round(float(s), 1), "width_px": None if not np.isfinite(d) else round(float(d), 2),
                       "source": str(src)} for s, d, src in zip(stations.s, shown_ref, source)],
        "segments": _segments(segs, stations, used, fills[0], fill_last, ref_area, last["gradable"], thresholds),
        "defects": _defects(st_b0, stations, float(np.nanmedian(d_ref))),
        "residual_defects": last["residual_defects"],
        "stations_measured": int(used.sum()),
        "notes": notes,
        "runs": entries,
    }
    if "registration_residual" in last:
        result["registration_residual"] = last["registration_residual"]
    return result


def measure_clearance(baseline_peak: np.ndarray, post_peak: np.ndarray, *, centerline=None, diameter_px=None,
                      segments=None, grade_thresholds=DEFAULT_GRADES, registration: Registration | None = None,
                      masks=None) -> dict:
    """Burden of both runs, clearance, grade, per-station and per-segment results (the ``--json`` object).

    ``registration`` skips the search when the shift is already known; see ``measure_runs``.
    """
    return measure_runs(baseline_peak, [post_peak], centerline=centerline, diameter_px=diameter_px,
                        segments=segments, grade_thresholds=grade_thresholds, registrations=[registration],
                        masks=masks)
