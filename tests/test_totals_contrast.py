"""Procedure contrast totals: injector and hand volumes, iodine grams, the limit on all contrast."""
import pytest

from core.analysis.totals import ProcedureTotals


def test_split_iodine_and_limit():
    t = ProcedureTotals(injector_concentration_mg_ml=300.0)
    t.set_patient(70, 2.0)                                       # 175 ml allowed
    t.add_injection({"delivered_volume_ml": 100.0, "seq": 1})
    t.add_injection({"source": "hand", "delivered_volume_ml": 50.0, "concentration_mg_ml": 150.0})
    d = t.to_dict()
    assert d["contrast_ml_injector"] == 100.0 and d["contrast_ml_hand"] == 50.0 and d["contrast_ml"] == 150.0
    assert d["iodine_g"] == pytest.approx(30.0 + 7.5)
    assert d["contrast_pct"] == pytest.approx(100 * 150 / 175, abs=0.1)
    t.add_injection({"source": "hand", "delivered_volume_ml": 30.0})
    assert [a["kind"] for a in t.alarms()] == ["contrast_limit"]  # hand contrast reaches the limit
    assert t.to_dict()["iodine_g"] is None                       # 30 ml of unknown strength


def test_injector_without_a_concentration_setting():
    t = ProcedureTotals()
    t.add_injection({"delivered_volume_ml": 10.0})
    assert t.to_dict()["iodine_g"] is None and t.to_dict()["contrast_ml_injector"] == 10.0
    with pytest.raises(ValueError):
        t.add_injection({"source": "hand", "delivered_volume_ml": 5.0, "concentration_mg_ml": 5000.0})
    assert t.to_dict()["contrast_ml"] == 10.0
