"""Procedure totals: fluoroscopy time, runs, contrast volume and the Cigarroa contrast limit. Pure, no I/O.

Contrast comes from the injector (its SUMMARY) and by hand (entered by staff, ``source: "hand"``); the limit
compares both together. Iodine grams = volume x concentration: a hand entry may carry its own concentration,
the injector's is the ``contrast_concentration_mg_ml`` setting (the serial protocol does not carry it).

Maximum allowable contrast dose (Cigarroa 1989): 5 ml x weight (kg) / serum creatinine (mg/dl), capped at
300 ml. The page shows cumulative contrast against it; alarms at 80% and 100% inform, they never act.
"""
from __future__ import annotations

import math

CIGARROA_ML_PER_KG = 5.0
MAX_CONTRAST_CAP_ML = 300.0
WARN_PCT = 80.0
LIMIT_PCT = 100.0
WEIGHT_RANGE_KG = (2.0, 350.0)
CREATININE_RANGE_MG_DL = (0.1, 20.0)
MAX_INJECTION_ML = 500.0        # no injector syringe holds more: a larger number is a decoding error
MAX_CONCENTRATION_MG_ML = 1000.0   # no iodinated contrast is stronger (the strongest are ~400)


def cigarroa_ml(weight_kg: float, creatinine_mg_dl: float) -> float:
    """``5 ml x kg / (mg/dl)``, capped at 300 ml (70 kg at 2.0 mg/dl gives 175 ml)."""
    _check_range("weight_kg", weight_kg, WEIGHT_RANGE_KG)
    _check_range("creatinine_mg_dl", creatinine_mg_dl, CREATININE_RANGE_MG_DL)
    return min(CIGARROA_ML_PER_KG * weight_kg / creatinine_mg_dl, MAX_CONTRAST_CAP_ML)


def _check_range(name: str, value, bounds: tuple[float, float]) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not bounds[0] <= value <= bounds[1]:
        raise ValueError(f"{name} {value} is outside the plausible range {bounds[0]}-{bounds[1]}")


def _number(summary: dict, key: str, default: float | None = None) -> float:
    value = summary.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{key} must be a non-negative number, got {value!r}")
    return float(value)


class ProcedureTotals:
    """Running totals of one procedure. Feed every finished run and every injection summary once."""

    def __init__(self, injector_concentration_mg_ml: float | None = None) -> None:
        self.injector_concentration_mg_ml = injector_concentration_mg_ml
        self.contrast_ml_injector = 0.0
        self.contrast_ml_hand = 0.0
        self.iodine_g = 0.0
        self.iodine_unknown_ml = 0.0          # volume whose concentration nobody gave
        self.fluoro_time_s = 0.0
        self.runs = 0
        self.contrast_runs = 0
        self.contrast_ml = 0.0
        self.injections = 0
        self.weight_kg: float | None = None
        self.creatinine_mg_dl: float | None = None
        self._seen: set[tuple] = set()

    def add_run(self, summary: dict) -> None:
        """A finished run's summary (``Run.summary()``): needs ``duration_s`` and ``contrast``."""
        duration, contrast = self._run_values(summary)
        self.fluoro_time_s += duration
        self.runs += 1
        self.contrast_runs += int(contrast)

    def replace_run(self, old: dict, new: dict) -> None:
        """A run already added, recorded again with new values (an injector SUMMARY that came after the run
        ended makes it a contrast run): its share of fluoroscopy time and contrast runs is swapped. Contrast
        volume is left alone: it is counted from the injection summaries, never from runs."""
        old_duration, old_contrast = self._run_values(old)
        new_duration, new_contrast = self._run_values(new)
        self.fluoro_time_s += new_duration - old_duration
        self.contrast_runs += int(new_contrast) - int(old_contrast)

    @staticmethod
    def _run_values(summary: dict) -> tuple[float, bool]:
        if not isinstance(summary, dict):
            raise ValueError(f"run summary must be a dict, got {type(summary).__name__}")
        duration = _number(summary, "duration_s")
        contrast = summary.get("contrast", False)
        if not isinstance(contrast, bool):
            raise ValueError(f"contrast must be true or false, got {contrast!r}")
        return duration, contrast

    def add_injection(self, summary: dict) -> bool:
        """An injector SUMMARY (``delivered_volume_ml``), or a hand entry (``source: "hand"``, its own
        ``concentration_mg_ml`` or null). A repeat of one already counted (same ``seq``, duration and volume,
        as a resent message would be) is ignored; returns whether it counted."""
        if not isinstance(summary, dict):
            raise ValueError(f"injection summary must be a dict, got {type(summary).__name__}")
        volume = _number(summary, "delivered_volume_ml")
        if volume > MAX_INJECTION_ML:
            raise ValueError(f"delivered_volume_ml {volume} exceeds any syringe ({MAX_INJECTION_ML} ml)")
        if "seq" in summary:
            key = (summary["seq"], summary.get("duration_ms"), volume)
            if key in self._seen:
                return False
            self._seen.add(key)
        hand = summary.get("source") == "hand"
        concentration = summary.get("concentration_mg_ml")
        if concentration is None and not hand:
            concentration = self.injector_concentration_mg_ml
        if concentration is not None:
            concentration = _number({"concentration_mg_ml": concentration}, "concentration_mg_ml")
            if concentration > MAX_CONCENTRATION_MG_ML:
                raise ValueError(f"concentration_mg_ml {concentration} exceeds any contrast medium")
        self.contrast_ml += volume
        if hand:
            self.contrast_ml_hand += volume
        else:
            self.contrast_ml_injector += volume
        if concentration is None:
            self.iodine_unknown_ml += volume
        else:
            self.iodine_g += volume * concentration / 1000.0
        self.injections += 1
        return True

    def set_patient(self, weight_kg: float | None, creatinine_mg_dl: float | None) -> None:
        """Patient weight and serum creatinine for the contrast limit; None clears a value."""
        if weight_kg is not None:
            _check_range("weight_kg", weight_kg, WEIGHT_RANGE_KG)
        if creatinine_mg_dl is not None:
            _check_range("creatinine_mg_dl", creatinine_mg_dl, CREATININE_RANGE_MG_DL)
        self.weight_kg = None if weight_kg is None else float(weight_kg)
        self.creatinine_mg_dl = None if creatinine_mg_dl is None else float(creatinine_mg_dl)

    @property
    def max_contrast_ml(self) -> float | None:
        if self.weight_kg is None or self.creatinine_mg_dl is None:
            return None
        return cigarroa_ml(self.weight_kg, self.creatinine_mg_dl)

    @property
    def contrast_pct(self) -> float | None:
        limit = self.max_contrast_ml
        return None if limit is None else 100.0 * self.contrast_ml / limit

    def to_dict(self) -> dict:
        pct = self.contrast_pct
        limit = self.max_contrast_ml
        return {"fluoro_time_s": round(self.fluoro_time_s, 3), "runs": self.runs,
                "contrast_runs": self.contrast_runs, "contrast_ml": round(self.contrast_ml, 2),
                "contrast_ml_injector": round(self.contrast_ml_injector, 2),
                "contrast_ml_hand": round(self.contrast_ml_hand, 2),
                # Null while some volume has no known concentration: a partial sum would understate it.
                "iodine_g": None if self.iodine_unknown_ml > 0 else round(self.iodine_g, 2),
                "injections": self.injections, "weight_kg": self.weight_kg,
                "creatinine_mg_dl": self.creatinine_mg_dl,
                "max_contrast_ml": None if limit is None else round(limit, 1),
                "contrast_pct": None if pct is None else round(pct, 1)}

    def alarms(self) -> list[dict]:
        pct = self.contrast_pct
        if pct is None or pct < WARN_PCT:
            return []
        limit = self.max_contrast_ml
        if pct >= LIMIT_PCT:
            return [{"kind": "contrast_limit",
                     "message": f"contrast {self.contrast_ml:.0f} ml has reached the maximum allowable "
                                f"{limit:.0f} ml ({pct:.0f}%)"}]
        return [{"kind": "contrast_warning",
                 "message": f"contrast {self.contrast_ml:.0f} ml is {pct:.0f}% of the maximum allowable "
                            f"{limit:.0f} ml"}]
