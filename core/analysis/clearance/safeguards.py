"""When a clearance must not be graded: the reasons, in words the operator reads (``warnings``).

No grade beats a wrong grade, but refusing is not a way to pass: each check is loose enough that an ordinary
venogram pair (a moved table, a fainter bolus, a tapering vein, 8-bit video) stays gradable.
"""
from __future__ import annotations

import numpy as np

from core.analysis.lumen import running_median

WEAK_REGISTRATION = 0.35      # normalised correlation below this: the runs may not show the same anatomy
OFF_PATH_SHARE = 0.25         # share of stations whose column is off the baseline's path
OFF_PATH_RADII = 0.7          # "off the path": the column's middle this many reference radii away
BESIDE_HEIGHT = 0.3           # contrast beside the column, as a share of its height: another vessel
BESIDE_SHARE = 0.2            # ... over this share of an automatic centreline's stations
MAX_OVERFILLED_SHARE = 0.4    # share of the vessel left out for another vessel's contrast over or beside it
DENSITY_DROP = 0.8            # a later run's density over the baseline's this share of its upper level: fainter
DENSITY_TOP_PCT = 80          # ... the upper level: this percentile of the ratio along the vessel
DENSITY_DROP_SHARE = 0.2      # ... over this share of the vessel where the baseline's column was even
MIN_TRUSTED_SHARE = 0.3       # share of stations whose reference some run showed patent (not bridged)
FAINT_SNR = 4.0               # patent column height over the profile noise sd
CLIPPED_FILL = 0.93           # integral / (height x width): 0.79 for a round lumen, ~1 for a flat (clipped) top


def registration_warning(score: float) -> str | None:
    if score < WEAK_REGISTRATION:
        return (f"weak registration (match {score:.2f} < {WEAK_REGISTRATION:g}): the runs may not show the "
                "same anatomy")
    return None


def path_warning(centre: np.ndarray, ref_diameter: np.ndarray, used: np.ndarray) -> str | None:
    """The later run's contrast column runs beside the baseline's centreline (a collateral, a wrong shift)."""
    have = used & np.isfinite(centre)
    if have.sum() < 5:
        return None
    off = np.abs(centre[have]) > np.maximum(2.5, OFF_PATH_RADII * ref_diameter[have] / 2)
    share = float(off.mean())
    if share > OFF_PATH_SHARE:
        return (f"the contrast column leaves the baseline's path over {share * 100:.0f}% of the vessel "
                "(a collateral or a wrong registration)")
    return None


def vessel_beside_warning(beside: np.ndarray | None, used: np.ndarray) -> str | None:
    """Another opacified vessel beside an automatic centreline (a paired vein, a collateral): the path may have
    crossed to it, and nothing tells which one the operator treats."""
    if beside is None:
        return None
    have = used & np.isfinite(beside)
    if have.sum() < 5:
        return None
    share = float((beside[have] > BESIDE_HEIGHT).mean())
    if share > BESIDE_SHARE:
        return (f"another vessel runs beside the automatic centreline over {share * 100:.0f}% of it (a paired vein "
                "or a collateral): draw the centreline")
    return None


def overfilled_warning(overfilled: np.ndarray) -> str | None:
    """Much of the vessel holds more contrast than its lumen can, or lies under another vessel's column (no lumen
    measured there): the burden rests on what is left, beside other vessels (confluences, collaterals, a paired
    vein) the centreline may not follow."""
    share = float(overfilled.mean()) if overfilled.size else 0.0
    if share > MAX_OVERFILLED_SHARE:
        return (f"{share * 100:.0f}% of the vessel holds more contrast than its lumen can or lies under another "
                "vessel's column (other vessels over or beside it): the burden rests on too little of it")
    return None


def density_drop_warning(name: str, run_density: np.ndarray, base_density: np.ndarray, compare: np.ndarray,
                         used: np.ndarray, half: int) -> str | None:
    """A later run whose round columns read clearly fainter, against the baseline's even ones, over much of the
    vessel than over the rest. Thrombus in front of the lumen does that, but so does another vessel lying exactly
    over the lumen along the rest (twice the contrast there, its width unchanged: the rest then reads as thrombus)
    or unopacified inflow from a tributary thinning the contrast beyond a confluence. One projection cannot tell
    them apart; residue after thrombectomy sits where the baseline's thrombus was, not over a fifth of the vessel
    the baseline showed even. ``compare``: stations round in both runs, even in the baseline, measured."""
    ok = compare & np.isfinite(run_density) & np.isfinite(base_density) & (base_density > 0)
    if ok.sum() < 8 or not used.any():
        return None
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = running_median(np.where(ok, run_density / base_density, np.nan), half)
    ratio = np.where(ok, ratio, np.nan)
    top = float(np.nanpercentile(ratio, DENSITY_TOP_PCT))
    with np.errstate(invalid="ignore"):
        faint = ok & (ratio < DENSITY_DROP * top)
    share = float(faint.sum() / used.sum())
    if share > DENSITY_DROP_SHARE:
        return (f"the {name} run's contrast reads {(1 - float(np.nanmedian(ratio[faint])) / top) * 100:.0f}% fainter "
                f"over {share * 100:.0f}% of the vessel than over the rest, where the baseline's was even and "
                "the column no narrower: thrombus in front of the lumen there, or another vessel over the rest "
                "(one projection cannot tell)")
    return None


def reference_warning(trusted: np.ndarray, used: np.ndarray) -> str | None:
    if not used.any():
        return None
    share = float((trusted & used).sum() / used.sum())
    if share < MIN_TRUSTED_SHARE:
        return (f"only {share * 100:.0f}% of the stations have a reference lumen some run showed patent "
                f"(need {MIN_TRUSTED_SHARE * 100:.0f}%)")
    return None


def contrast_warnings(name: str, height: np.ndarray, integral: np.ndarray, width: np.ndarray, noise: float,
                      patent: np.ndarray) -> list[str]:
    out = []
    use = patent & np.isfinite(height) & np.isfinite(width) & (height > 0)
    if use.sum() < 5:
        return out
    h = float(np.median(height[use]))
    if np.isfinite(noise) and noise > 0 and h / noise < FAINT_SNR:
        out.append(f"contrast too faint on the {name} run (column {h / noise:.1f} noise sd high, "
                   f"need {FAINT_SNR:g})")
    fill = float(np.median(integral[use] / (height[use] * width[use])))
    if fill > CLIPPED_FILL:
        out.append(f"flat-topped contrast column on the {name} run (clipped or saturated): densities unreliable")
    return out
