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
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from core.analysis.clearance import density as dens
from core.analysis.clearance import device, normalise, reference, safeguards
from core.analysis.clearance.grading import DEFAULT_GRADES, check_segments, check_thresholds, grade
from core.analysis.clearance.path import automatic_centerline
from core.analysis.lumen import integral_at, measure_lumen, run_reference, running_mean, running_median
from core.analysis.registration import Registration, register
from core.analysis.vessel import Stations, check_centerline, diameter_along, make_stations

STATION_SPACING_PX = 2.0          # "cross-section profiles every few pixels"
MIN_BASELINE_BURDEN_PCT = 5.0     # below this the baseline has too little thrombus for a clearance ratio
PROGRESSION_PCT = -5.0            # a clearance below this is progression, not a grade
REMOVAL_FLAG_PCT = 75.0           # CLOUT end point
DEFECT_BURDEN = 0.25              # a station this occluded (smoothed) is drawn as a defect
MIN_STATIONS = 5
MAX_DEVICE_SHARE = 0.6          # beyond this share of the vessel under a device, no grade
ROUND_OFFSET = 0.04               # a column's middle this share of its width off its track: one side is cut
MAX_SHIFT_PX = 160                # table moves between runs
# An operator's centreline: a venogram's vein is drawn with a few dozen clicks (one every few centimetres, more
# along a bend); 256 leaves ample room. It crosses the field once, so it is at most twice the image's
# perimeter half (w + h) long; a longer one zigzags, and its analysis time grows with its length (a 4,096-point
# scribble held the analysis worker for 10-50 s).
MAX_CENTERLINE_POINTS = 256
MAX_CENTERLINE_LENGTH_FACTOR = 2.0   # times (width + height) of the image


def _pct(v: float | None, nd: int = 1) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v) * 100.0, nd)


def _clearance(b0: float, b1: float) -> tuple[float | None, str | None]:
    if not np.isfinite(b0) or not np.isfinite(b1):
        return None, "not measured"
    if b0 * 100.0 < MIN_BASELINE_BURDEN_PCT:
        return None, (f"baseline burden {b0 * 100:.1f}% is below {MIN_BASELINE_BURDEN_PCT:g}%: "
                      "too little thrombus to measure clearance against")
    return (b0 - b1) / b0 * 100.0, None


def verdict(clear: float | None, gradable: bool, thresholds) -> dict:
    """clearance_pct, grade, progression, removal_ge_75 from a clearance, graded as displayed (one decimal)."""
    shown = None if clear is None else round(float(clear), 1) + 0.0
    progression = shown is not None and shown < PROGRESSION_PCT
    return {"clearance_pct": shown,
            "grade": grade(shown, thresholds) if gradable and not progression else None,
            "progression": bool(progression),
            "removal_ge_75": None if shown is None else bool(shown >= REMOVAL_FLAG_PCT)}


def _defects(burden: np.ndarray, stations: Stations, diameter_px: float, shift=(0.0, 0.0),
             where: bool = False) -> list[dict]:
    """Stretches of the centreline whose (smoothed) burden exceeds DEFECT_BURDEN; with ``where`` also x, y of
    the worst station (in the coordinates of the run, i.e. moved by ``shift``)."""
    half = max(1, int(round(diameter_px / (2 * STATION_SPACING_PX))))
    sm = running_mean(burden, half)
    hot = np.nan_to_num(sm, nan=0.0) > DEFECT_BURDEN
    edges = np.diff(np.concatenate([[0], hot.astype(int), [0]]))
    out = []
    for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
        seg = burden[a:b]
        has = np.isfinite(seg).any()
        d = {"start_frac": round(float(stations.frac[a]), 4), "end_frac": round(float(stations.frac[b - 1]), 4),
             "peak_burden_pct": _pct(float(np.nanmax(seg)) if has else None),
             "mean_burden_pct": _pct(float(np.nanmean(seg)) if has else None)}
        if where:
            k = a + int(np.nanargmax(np.nan_to_num(sm[a:b], nan=-1.0)))
            d["x"] = round(float(stations.xy[k, 0] + shift[0]), 1)
            d["y"] = round(float(stations.xy[k, 1] + shift[1]), 1)
        out.append(d)
    return out


class _Run:
    """One run measured at the stations: lumen, own reference, density, filled cross-section."""

    def __init__(self, peak: np.ndarray, stations: Stations, reg: Registration, max_d: float,
                 beside: bool = False) -> None:
        self.peak, self.reg = peak, reg
        self.stations = stations.moved(reg.dx, reg.dy)
        self.lumen = measure_lumen(peak, self.stations, max_d, beside=beside)
        self.ref, self.patent = run_reference(self.lumen.width, stations.s, STATION_SPACING_PX)
        self.integral = self.lumen.integral.copy()
        self.line = None
        self.axis = np.zeros(len(stations.s))   # the vein's axis in this run's profiles (offset along the normal)
        self.borrowed = False       # density line taken unscaled from another run (none of its own)
        self.device = np.zeros(len(stations.s), dtype=bool)   # stations where this run holds a device

    def integrate(self, d_ref: np.ndarray) -> None:
        """The filled cross-section's integral over the whole reference lumen on the vein's axis, background
        beside it: a column cut on one side (or absent: an occlusion) is integrated where the lumen is, not
        where its remains are, so the background bands never touch the lumen's own edge."""
        st = self.stations
        whole = integral_at(self.peak, st, self.axis, d_ref)
        self.integral = np.where(np.isfinite(whole), whole, self.integral)


def _check_diameter(diameter_px, shape) -> float | None:
    if diameter_px is None:
        return None
    if not (isinstance(diameter_px, numbers.Real) and math.isfinite(diameter_px)
            and 1.0 <= diameter_px <= min(shape) / 2):
        raise ValueError(f"diameter must be a number of pixels between 1 and {min(shape) / 2:g}, "
                         f"got {diameter_px!r}")
    return float(diameter_px)


def register_runs(base, peak, mask0=None, mask1=None) -> Registration:
    """A later run against the baseline, on the anatomy of the masks when both are given and the registration
    takes them, up to MAX_SHIFT_PX."""
    import inspect
    if mask0 is not None and mask1 is not None and "fixed_mask" in inspect.signature(register).parameters:
        return register(base, peak, fixed_mask=mask0, moving_mask=mask1, max_shift=MAX_SHIFT_PX)
    return register(base, peak, max_shift=MAX_SHIFT_PX)


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

    # The shared reference: the widest lumen any run shows at each station, the operator's diameter a floor.
    # Twice: stations whose density then reads low (a thrombus in front, a flattened top) leave the reference.
    for it in range(2):
        d_run, trusted = _shared_reference(runs)
        axis = _axis(runs)
        for r in runs:
            # A run registered a pixel off sits a pixel off the axis everywhere: that offset is measured on its
            # stations as wide as the reference, and removed.
            wide = r.patent & np.isfinite(d_run) & (r.lumen.width >= 0.96 * d_run) & np.isfinite(axis)
            off = float(np.median((r.lumen.centre - axis)[wide])) if wide.sum() >= MIN_STATIONS else 0.0
            r.axis = np.where(np.isfinite(axis), axis + off, 0.0)
            r.full = r.patent & round_column(r.lumen.centre - off, r.lumen.width, axis)
        # Pooled between runs only once the reference is settled: the first lines find each run's own low stations.
        _densities(runs, pool=it == 1)
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
    for r in runs:
        r.integrate(d_ref)
    ref_area = dens.reference_area(d_ref)
    devices = _devices(runs, masks, d_ref)
    if any(d.any() for d in devices):
        # A device displaces contrast: its stations read no run's contrast density.
        for r in runs:
            r.line = None
            r.full = r.full & ~r.device
        _densities(runs)
    fills = [dens.filled_area(r.integral, dens.line_at(r.line, stations.s)) for r in runs]
    with np.errstate(invalid="ignore", divide="ignore"):
        beyond = reference.overfilled([1.0 - f / ref_area for f in fills], _half(runs[0]))
    if beyond.any():
        notes.append(f"{beyond.mean() * 100:.0f}% of the vessel left out: more contrast there than its reference "
                     "lumen holds (a branch's junction or a tributary beside it)")

    entries, pairs = [], []
    for k, run in enumerate(runs[1:], start=1):
        used = np.isfinite(fills[0]) & np.isfinite(fills[k]) & np.isfinite(ref_area) & ~beyond
        if used.sum() < MIN_STATIONS:
            raise ValueError(f"only {int(used.sum())} stations measured in both runs (need {MIN_STATIONS}): "
                             "the centreline is outside the field or under an overlay")
        name = "post" if len(runs) == 2 else f"post {k}"
        device_warning, device_note = _device_outcome(devices[k - 1], used, name, runs[0].device & run.device)
        if device_note:
            notes.append(device_note)
        if not device_warning:
            used = used & ~devices[k - 1]
        b0 = dens.burden(fills[0], ref_area, used)
        b1 = dens.burden(fills[k], ref_area, used)
        beside = safeguards.vessel_beside_warning(runs[0].lumen.beside, used) if centerline is None else None
        warnings = [w for w in (safeguards.registration_warning(run.reg.score), beside,
                                safeguards.path_warning(run.lumen.centre, d_ref, used),
                                safeguards.reference_warning(trusted, used), device_warning, path_doubt) if w]
        for name, r in (("baseline", runs[0]), (f"post {k}", run)):
            if r.borrowed:
                warnings.append(f"the {name} run shows no round contrast column to read its contrast density from")
        for name, r in (("baseline", runs[0]), (name, run)):
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
                       "source": str(src)} for s, d, src in zip(stations.s, d_ref, source)],
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


def _devices(runs: list[_Run], masks: list, d_ref: np.ndarray) -> list[np.ndarray]:
    """Per later run, the stations where its mask or the baseline's holds a device: one the other does not (from
    the masks' difference), or one in either mask alone, in both runs or not (a catheter or sheath left in
    place: the difference cancels it, its walls do not); none without the baseline's mask. Each run's
    ``device`` the stations where it holds one."""
    none = np.zeros(len(d_ref), dtype=bool)
    for r in runs:
        r.device = none.copy()
    if masks[0] is None:
        return [none] * (len(runs) - 1)
    half = max(1, int(round(float(np.nanmedian(d_ref)) / (2 * STATION_SPACING_PX))))
    base = runs[0]
    # A device in both runs can leave no lumen measured at its stations: the nearest reference holds there.
    d_ref = device.nearest_filled(d_ref)
    profs = [device.mask_profiles(m, r.stations, d_ref) if m is not None and m.shape == masks[0].shape else None
             for r, m in zip(runs, masks)]
    for r, p in zip(runs, profs):
        if p is not None:
            height = float(np.nanmedian(r.lumen.height[r.patent])) if r.patent.any() else float("nan")
            r.device |= device.tube_stations(p[0], p[1], r.axis, d_ref, height, half)
    base_static = base.device.copy()
    contrast = float(np.nanmedian(base.integral[base.patent])) if base.patent.any() else float("nan")
    out = []
    for r, p in zip(runs[1:], profs[1:]):
        if p is None:
            out.append(base_static)
            continue
        diff = device.ridge(p[0], profs[0][1] - p[1], r.axis, d_ref)      # log I: a device lowers the run's mask
        in_run, in_base = device.device_stations(diff, contrast, half)
        r.device |= in_run
        base.device |= in_base
        out.append(r.device | in_base | base_static)
    return out


def _device_outcome(dev: np.ndarray, used: np.ndarray, name: str, both: np.ndarray | None = None
                    ) -> tuple[str | None, str | None]:
    """(warning, note) for a device found on either run (``both``: the stations where both hold it, a device
    left in place): its stations are left out of the burden when enough of the vessel remains, else the
    comparison is not gradable."""
    # Stations under a device the runs measured no lumen at count too: they are left out all the same.
    n = int(dev.sum())
    if n == 0:
        return None, None
    share = n / max(int((used | dev).sum()), 1)
    in_both = both is not None and int((both & dev).sum()) >= n / 2
    where = f"on the baseline and {name} runs (left in place)" if in_both else f"on the baseline or {name} run"
    if (used & ~dev).sum() < MIN_STATIONS or share > MAX_DEVICE_SHARE:
        return (f"a device (catheter, sheath) in the lumen {where} over {share * 100:.0f}% "
                "of the vessel: it displaces contrast like thrombus"), None
    return None, (f"a device (catheter, sheath) in the lumen {where}: its {share * 100:.0f}% "
                  "of the vessel left out of the burden")


def _shared_reference(runs: list[_Run]) -> tuple[np.ndarray, np.ndarray]:
    """(widest reference any run shows per station, the runs within noise of it averaged (clearance/reference.py),
    stations some run shows patent)."""
    refs = np.vstack([r.ref for r in runs])
    sds = np.array([reference.smoothed_sd(r.lumen.width, _half(r)) for r in runs])
    return reference.shared_width(refs, sds), np.any(np.vstack([r.patent for r in runs]), axis=0)


def _track(centre: np.ndarray, width: np.ndarray) -> np.ndarray:
    ok = np.isfinite(centre) & np.isfinite(width)
    if ok.sum() < 3:
        return np.full(centre.shape, np.nan)
    d = float(np.median(width[ok]))
    return running_median(np.where(ok, centre, np.nan), max(2, int(round(2 * d / STATION_SPACING_PX))))


def _axis(runs: list[_Run]) -> np.ndarray:
    """The vein's axis per station (offset along the normal): the smoothed column middle of the run that shows
    the widest lumen there, i.e. a whole column, not one cut on a side."""
    refs = np.vstack([np.nan_to_num(r.ref, nan=-1.0) for r in runs])
    tracks = np.vstack([_track(r.lumen.centre, r.lumen.width) for r in runs])
    best = np.argmax(refs, axis=0)
    return tracks[best, np.arange(refs.shape[1])]


def round_column(centre: np.ndarray, width: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Stations whose column sits symmetric on the vein's axis: a round lumen (whole, or lined evenly by
    thrombus), the only kind whose shape tells its contrast density. A thrombus beside the lumen cuts one side
    of the column, moves its middle off the axis, and reads too dense."""
    ok = np.isfinite(centre) & np.isfinite(width) & np.isfinite(axis)
    with np.errstate(invalid="ignore"):
        return ok & (np.abs(centre - axis) <= np.maximum(0.5, ROUND_OFFSET * width))


def _half(r: _Run) -> int:
    """Stations in a lumen's radius."""
    w = r.lumen.width
    return max(1, int(round(np.nanmedian(w) / (2 * STATION_SPACING_PX)))) if np.isfinite(w).any() else 1


def _densities(runs: list[_Run], pool: bool = True) -> None:
    """Each run's density line from its own patent columns, pooled with the baseline's where the two show the same
    lumen (clearance/normalise.py); a run with too few takes another run's line scaled by the integrals' ratio on
    the stations patent in both (normalised between runs)."""
    s = runs[0].stations.s
    for r in runs:
        r.line = dens.density_line(s, r.lumen.density, r.full)
    if pool:
        normalise.pool(s, runs, [_half(r) for r in runs])
    for r in runs:
        if r.line is not None:
            continue
        for o in runs:
            if o.line is None:
                continue
            q = dens.contrast_ratio(r.integral, o.integral, r.full & o.full)
            if q is not None and q > 0:
                r.line = (o.line[0] * q, o.line[1] * q)
                break
        if r.line is None:
            # Nothing round to read: the first readable run's line, unscaled; said in the warnings.
            r.line = next((o.line for o in runs if o.line is not None and o.line is not r.line), None)
            r.borrowed = True
        if r.line is None:
            raise ValueError("no patent contrast column to read the contrast density from (no usable contrast)")
        if not np.all(dens.line_at(r.line, s) > 0):
            raise ValueError("the contrast density falls to zero along the vessel: no usable contrast")


def _segments(segs, stations, used, fill0, fill1, ref_area, gradable, thresholds) -> list[dict]:
    out = []
    for name, a, b in segs:
        inside = used & (stations.frac >= a) & (stations.frac <= b)
        entry = {"name": name, "start": a, "end": b, "stations": int(inside.sum())}
        if inside.sum() == 0:
            entry.update(burden_baseline_pct=None, burden_post_pct=None, clearance_pct=None, grade=None,
                         removal_ge_75=None, progression=False, note="no station measured in this segment")
        else:
            sb0 = dens.burden(fill0, ref_area, inside)
            sb1 = dens.burden(fill1, ref_area, inside)
            sc, swhy = _clearance(sb0, sb1)
            entry.update(burden_baseline_pct=_pct(sb0), burden_post_pct=_pct(sb1), **verdict(sc, gradable, thresholds))
            if swhy:
                entry["note"] = swhy
        out.append(entry)
    return out


def measure_clearance(baseline_peak: np.ndarray, post_peak: np.ndarray, *, centerline=None, diameter_px=None,
                      segments=None, grade_thresholds=DEFAULT_GRADES, registration: Registration | None = None,
                      masks=None) -> dict:
    """Burden of both runs, clearance, grade, per-station and per-segment results (the ``--json`` object).

    ``registration`` skips the search when the shift is already known; see ``measure_runs``.
    """
    return measure_runs(baseline_peak, [post_peak], centerline=centerline, diameter_px=diameter_px,
                        segments=segments, grade_thresholds=grade_thresholds, registrations=[registration],
                        masks=masks)


def check_operator_centerline(points, shape: tuple[int, int]) -> np.ndarray:
    """An operator's centreline (``--centerline``, ``PUT /api/centerline``) checked for the image ``shape``:
    at most ``MAX_CENTERLINE_POINTS`` points and ``MAX_CENTERLINE_LENGTH_FACTOR * (w + h)`` px long, so one
    request cannot hold the analysis worker."""
    arr = np.asarray(points, dtype=float)
    if arr.ndim >= 1 and len(arr) > MAX_CENTERLINE_POINTS:
        raise ValueError(f"a centreline has at most {MAX_CENTERLINE_POINTS} points (a vein needs a few dozen), "
                         f"got {len(arr)}")
    line = check_centerline(arr, shape)
    h, w = shape
    limit = MAX_CENTERLINE_LENGTH_FACTOR * (w + h)
    length = float(np.hypot(*np.diff(line, axis=0).T).sum())
    if length > limit:
        raise ValueError(f"the centreline is {length:.0f} px long, more than {limit:.0f} px "
                         f"({MAX_CENTERLINE_LENGTH_FACTOR:g} x (width + height)): a vein crosses the image once")
    return line


def check_peak_image(img, name: str) -> np.ndarray:
    """A peak-opacity image as float32, or ValueError naming what is wrong with it."""
    arr = np.asarray(img)
    if arr.ndim != 2 or min(arr.shape) < 16:
        raise ValueError(f"the {name} peak-opacity image must be 2-D and at least 16x16, got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"the {name} peak-opacity image must be numeric, got {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).any():
        raise ValueError(f"the {name} peak-opacity image has no measured pixels")
    return arr
