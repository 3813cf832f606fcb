"""The status page's diameter profile (core/analysis/sizing_plot.py): thinned without losing a short narrowing,
the lesion where sizing puts it, millimetres when calibrated; and the page's server-rendered numbers."""
import numpy as np
import pytest

from api.routes.page import vessel_numbers, vessel_text
from core.analysis.sizing_plot import MAX_POINTS, profile_plot


def result(n: int = 600, dip_at: int = 437, dip_len: int = 3, mm_per_px: float | None = None) -> dict:
    """A tapering vein (14 -> 10 px) with a short 50% narrowing at station ``dip_at``."""
    s = np.arange(n, dtype=float)
    ref = 14.0 - 4.0 * s / n
    d = ref.copy()
    d[dip_at:dip_at + dip_len] *= 0.5
    d[dip_at - 4:dip_at] *= 0.75           # shoulders below 80%: part of the lesion's stretch
    second = (dip_at + n // 2) % n          # a second, milder narrowing one station long
    d[second] *= 0.7
    return {"calibration": None if mm_per_px is None else "operator", "mm_per_px": mm_per_px,
            "profile": [{"s_px": float(a), "diameter_px": round(float(b), 2), "reference_px": round(float(c), 2)}
                        for a, b, c in zip(s, d, ref)]}


@pytest.mark.parametrize("dip_at", [5, 137, 437, 590])
def test_a_short_narrowing_survives_the_thinning(dip_at):
    plot = profile_plot(result(dip_at=dip_at))
    assert plot["unit"] == "px" and len(plot["s"]) <= MAX_POINTS + 3
    assert len(plot["s"]) == len(plot["diameter"]) == len(plot["reference"])
    assert plot["s"] == sorted(plot["s"]) and plot["s"][0] == 0.0 and plot["s"][-1] == 599.0
    assert plot["lesion_s"] == dip_at and plot["lesion_s"] in plot["s"]
    k = plot["s"].index(plot["lesion_s"])
    assert plot["diameter"][k] / plot["reference"][k] == pytest.approx(0.5, abs=0.01)
    assert plot["lesion_from_s"] == max(0, dip_at - 4) and plot["lesion_to_s"] == dip_at + 2
    second = (dip_at + 300) % 600
    assert second in plot["s"], "the milder narrowing was thinned away"
    k = plot["s"].index(second)
    assert plot["diameter"][k] / plot["reference"][k] == pytest.approx(0.7, abs=0.01)


def test_millimetres_when_calibrated_and_no_lesion_stretch_without_one():
    px, mm = profile_plot(result()), profile_plot(result(mm_per_px=0.25))
    assert mm["unit"] == "mm" and mm["s"][-1] == pytest.approx(599 * 0.25)
    assert mm["diameter"] == pytest.approx([v * 0.25 for v in px["diameter"]], abs=0.01)
    clean = result(dip_len=0)
    for row in clean["profile"]:
        row["diameter_px"] = row["reference_px"]
    plot = profile_plot(clean)
    assert plot["lesion_from_s"] is None and plot["lesion_to_s"] is None
    assert profile_plot({"profile": []}) is None


def test_the_page_says_the_numbers_and_the_warnings():
    v = {"run_id": "a-1", "calibration": "catheter", "mm_per_px": 0.2, "mld_mm": 4.04, "mld_px": 20.2,
         "diameter_stenosis_pct": 55.4, "residual_stenosis_ge_50": True, "reference_diameter_mm": 9.1,
         "lesion_length_mm": 12.0, "warnings": ["the vein reads wider and fainter"]}
    assert vessel_numbers(v) == {"vessel_pct": "55%", "vessel_mld": "MLD 4.0 mm", "vessel_flag": "RESIDUAL ≥ 50%"}
    assert "wider and fainter" in vessel_text(v)
    assert vessel_numbers(None)["vessel_pct"] == "—"
