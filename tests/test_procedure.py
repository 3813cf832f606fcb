"""Procedure totals and the Cigarroa contrast limit."""
import math

import pytest

from core.analysis.totals import ProcedureTotals, cigarroa_ml


def test_cigarroa_reference_value_and_cap():
    assert cigarroa_ml(70, 2.0) == pytest.approx(175.0)
    assert cigarroa_ml(100, 0.5) == 300.0                 # 1000 ml capped
    assert cigarroa_ml(60, 1.0) == pytest.approx(300.0)   # exactly at the cap


def test_totals_accumulate_runs_and_injections():
    p = ProcedureTotals()
    p.add_run({"duration_s": 3.0, "contrast": False})
    p.add_run({"duration_s": 6.5, "contrast": True})
    assert p.add_injection({"delivered_volume_ml": 10.0, "seq": 1, "duration_ms": 2000})
    assert p.add_injection({"delivered_volume_ml": 12.0, "seq": 2, "duration_ms": 2000})
    d = p.to_dict()
    assert d["fluoro_time_s"] == pytest.approx(9.5)
    assert (d["runs"], d["contrast_runs"], d["contrast_ml"]) == (2, 1, 22.0)
    assert d["max_contrast_ml"] is None and d["contrast_pct"] is None
    assert p.alarms() == []


def test_resent_summary_is_counted_once():
    p = ProcedureTotals()
    s = {"delivered_volume_ml": 10.0, "seq": 7, "duration_ms": 2000}
    assert p.add_injection(s) and not p.add_injection(dict(s))
    assert p.contrast_ml == 10.0


def test_a_run_completed_by_a_late_summary_is_replaced_not_added():
    p = ProcedureTotals()
    before = {"duration_s": 1.5, "contrast": False, "delivered_volume_ml": None}
    p.add_run(before)
    assert p.add_injection({"delivered_volume_ml": 10.0, "seq": 3, "duration_ms": 2650})
    p.replace_run(before, dict(before, contrast=True, delivered_volume_ml=10.0))
    d = p.to_dict()
    assert (d["runs"], d["contrast_runs"], d["contrast_ml"], d["fluoro_time_s"]) == (1, 1, 10.0, 1.5)
    p.replace_run(dict(before, contrast=True), dict(before, contrast=True))   # already contrast: no change
    assert p.to_dict()["contrast_runs"] == 1
    with pytest.raises(ValueError):
        p.replace_run(before, {"duration_s": 1.5, "contrast": 1})
    assert p.to_dict() == d


def test_percentage_and_alarms_at_80_and_100():
    p = ProcedureTotals()
    p.set_patient(70, 2.0)                                  # 175 ml
    p.add_injection({"delivered_volume_ml": 139.0})
    assert p.to_dict()["contrast_pct"] == pytest.approx(100 * 139 / 175, abs=0.05)
    assert p.alarms() == []
    p.add_injection({"delivered_volume_ml": 1.0})           # 140 ml = 80%
    assert [a["kind"] for a in p.alarms()] == ["contrast_warning"]
    p.add_injection({"delivered_volume_ml": 35.0})          # 175 ml = 100%
    alarms = p.alarms()
    assert [a["kind"] for a in alarms] == ["contrast_limit"] and "175" in alarms[0]["message"]
    p.set_patient(None, 2.0)                                # limit unknown again: no percentage, no alarm
    assert p.to_dict()["max_contrast_ml"] is None and p.alarms() == []


@pytest.mark.parametrize("weight,creat", [(0, 1.0), (-70, 1.0), (70, 0.0), (70, -1), (math.nan, 1.0),
                                          (70, math.inf), ("70", 1.0), (True, 1.0), (1000, 1.0), (70, 50.0)])
def test_bad_patient_values(weight, creat):
    p = ProcedureTotals()
    with pytest.raises(ValueError):
        p.set_patient(weight, creat)
    assert p.weight_kg is None and p.creatinine_mg_dl is None


@pytest.mark.parametrize("summary", [{}, {"delivered_volume_ml": -1}, {"delivered_volume_ml": math.nan},
                                     {"delivered_volume_ml": "10"}, {"delivered_volume_ml": 5000}, [10]])
def test_bad_injection_summaries(summary):
    p = ProcedureTotals()
    with pytest.raises(ValueError):
        p.add_injection(summary)
    assert p.contrast_ml == 0


@pytest.mark.parametrize("summary", [{}, {"duration_s": -1, "contrast": True}, {"duration_s": 1, "contrast": 1},
                                     "run"])
def test_bad_run_summaries(summary):
    p = ProcedureTotals()
    with pytest.raises(ValueError):
        p.add_run(summary)
    assert p.runs == 0
