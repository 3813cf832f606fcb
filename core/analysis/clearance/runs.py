"""One run of a clearance measurement at the shared stations: registered to the baseline, its lumen measured
(core/analysis/lumen.py), its own reference and patent stations, the filled cross-section's integral; and the
stations where it holds a device (a catheter or sheath displaces contrast like thrombus)."""
from __future__ import annotations

import numpy as np

from core.analysis.clearance import device
from core.analysis.lumen import integral_at, measure_lumen, run_reference
from core.analysis.registration import Registration, register
from core.analysis.vessel import Stations

STATION_SPACING_PX = 2.0          # "cross-section profiles every few pixels"
MIN_STATIONS = 5
MAX_DEVICE_SHARE = 0.6          # beyond this share of the vessel under a device, no grade
MAX_SHIFT_PX = 160                # table moves between runs


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
        self.round = np.zeros(len(stations.s), dtype=bool)   # stations whose column sits round on the axis
        self.device = np.zeros(len(stations.s), dtype=bool)   # stations where this run holds a device
        self.crowded = self.lumen.crowded       # stations where another vessel's column overlaps the lumen
        self.merged = np.zeros(len(stations.s), dtype=bool)   # ... or merges with its column (clearance/overlap.py)

    def leave_out(self, merged: np.ndarray) -> None:
        """No lumen at the ``merged`` stations (another vessel's column merged with the lumen's): its own reference
        and patent stations again without them."""
        self.merged = merged
        lu = self.lumen
        lu.integral, lu.width, lu.centre, lu.height = (np.where(merged, np.nan, v) for v in
                                                       (lu.integral, lu.width, lu.centre, lu.height))
        self.ref, self.patent = run_reference(lu.width, self.stations.s, STATION_SPACING_PX)
        self.integral = lu.integral.copy()

    def integrate(self, d_ref: np.ndarray) -> None:
        """The filled cross-section's integral over the whole reference lumen on the vein's axis, background
        beside it: a column cut on one side (or absent: an occlusion) is integrated where the lumen is, not
        where its remains are, so the background bands never touch the lumen's own edge."""
        st = self.stations
        whole, crowded = integral_at(self.peak, st, self.axis, d_ref)
        # Another vessel's column over the lumen (found either way): no integral there, never a thrombus.
        self.crowded = self.lumen.crowded | crowded | self.merged
        self.integral = np.where(self.crowded, np.nan, np.where(np.isfinite(whole), whole, self.integral))


def register_runs(base, peak, mask0=None, mask1=None) -> Registration:
    """A later run against the baseline, on the anatomy of the masks when both are given and the registration
    takes them, up to MAX_SHIFT_PX."""
    import inspect
    if mask0 is not None and mask1 is not None and "fixed_mask" in inspect.signature(register).parameters:
        return register(base, peak, fixed_mask=mask0, moving_mask=mask1, max_shift=MAX_SHIFT_PX)
    return register(base, peak, max_shift=MAX_SHIFT_PX)


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


def _half(r: _Run) -> int:
    """Stations in a lumen's radius."""
    w = r.lumen.width
    return max(1, int(round(np.nanmedian(w) / (2 * STATION_SPACING_PX)))) if np.isfinite(w).any() else 1
