"""Vessel sizing beside a paired vein whose column joins the treated one's (issue 16): which vein is sized must
not hang on where the automatic path happens to run. The vein beside is found even where the two columns join
(the followed column blanked, not the coarse pieces both share), the more opacified one is judged where each is
fullest (a long narrowing lowers the treated vein's median, never its fullest part), and a path whose column
switches vessel beside its narrowest point is refused with the reason, never sized as a narrowing."""
from __future__ import annotations

import numpy as np
import pytest

from core.analysis.lumen import Lumen
from core.analysis.sizing import measure_sizing
from core.analysis.sizing_path import BESIDE_CHOICE_WARNING, more_opacified
from core.sources.phantom.features import ParallelVein
from core.sources.phantom.sizing_cases import make_sizing_case
from tests.test_vessel_blur import _images


def _lumen(integral: np.ndarray) -> Lumen:
    m = len(integral)
    return Lumen(integral=integral, width=np.full(m, 12.0), centre=np.zeros(m), height=np.ones(m), noise=0.01)


def test_more_opacified_is_judged_where_each_vessel_is_fullest():
    # The treated vein (integral 400 where patent) narrowed over 70% of its length (100 there), a paired vein of
    # 200 all along: a median picks the paired vein.
    treated = _lumen(np.r_[np.full(300, 400.0), np.full(700, 100.0)])
    paired = _lumen(np.full(1000, 200.0))
    assert more_opacified(treated, paired)
    assert not more_opacified(paired, treated)


def test_paired_vein_whose_column_joins_the_treated_one_is_not_sized_instead():
    """Seed 27 of the sweep at 0.6 px blur: a long 50% narrowing, a paired vein of 11 px 35 px beside it. The
    path ran along the paired vein alone and the coarse pieces under it held both veins, so nothing was left to
    compare with: the paired vein was sized (1.9%)."""
    case = make_sizing_case(27, 50.0, "log", length_diameters=14.0,
                            parallel=ParallelVein(offset_px=-34.665, diameter_px=11.199))
    peak, mask = _images(case, 0.6)
    res = measure_sizing(peak, mask=mask).to_json()
    truth = case.truth
    assert abs(res["diameter_stenosis_pct"] - truth.diameter_stenosis_pct) <= 7.0, res["diameter_stenosis_pct"]
    assert abs(res["mld_px"] - truth.mld_px) <= 0.12 * truth.mld_px
    assert BESIDE_CHOICE_WARNING in res["warnings"], res["warnings"]


def test_column_switching_vessel_beside_the_narrowing_is_refused():
    """Seed 59 of the sweep: a long 70% narrowing, a paired vein of 12 px 30 px beside it, the two columns
    touching where the treated vein is widest. The path ran on along the paired vein over the narrowing and its
    12 px read as the MLD (42% for 70%)."""
    case = make_sizing_case(59, 70.0, "log", length_diameters=14.0,
                            parallel=ParallelVein(offset_px=30.380, diameter_px=12.263))
    peak, mask = _images(case, 0.0)
    with pytest.raises(ValueError, match="jumps sideways"):
        measure_sizing(peak, mask=mask)
    # Drawn along the treated vein, it is sized.
    res = measure_sizing(peak, case.truth.centreline_xy, mask=mask).to_json()
    assert abs(res["diameter_stenosis_pct"] - case.truth.diameter_stenosis_pct) <= 5.0, res["diameter_stenosis_pct"]
