"""A vein lying exactly over part of the treated one on the post run only (same width, twice the contrast there):
density cannot tell those stations from thrombus in front of the rest, so the result must never be a gradable
false progression. Analytic images (tests/test_clearance_parallel.py's pairs)."""
from __future__ import annotations

import numpy as np
import pytest

from core.analysis.clearance.measure import measure_clearance
from core.analysis.clearance.safeguards import density_drop_warning
from tests.test_clearance_parallel import _pair


@pytest.mark.parametrize("share, seed", [(0.3, 4), (0.35, 1), (0.45, 2)])
def test_a_vein_superimposed_over_a_third_of_the_post_run_is_not_graded(share, seed):
    """Over 30-45% of the post run (beyond what the overfilled stations catch): not gradable, the reason said."""
    base, post, truth = _pair(0.0, share, seed, both=False, superimposed=True)
    res = measure_clearance(base, post, centerline=truth["centerline"], diameter_px=12.0)
    assert not res["gradable"] and res["grade"] is None
    assert any("fainter over" in w and "another vessel over the rest" in w for w in res["warnings"]), res["warnings"]


@pytest.mark.parametrize("seed", [0, 3])
def test_an_evenly_fainter_post_run_with_residue_at_the_thrombus_stays_gradable(seed):
    """A post run 40% fainter throughout, with front residue where the baseline's thrombus was: graded, no
    density warning (residue sits where the thrombus was)."""
    from tests.test_clearance import synthetic_vessel
    base, truth = synthetic_vessel(thrombi=[(0.1, 0.3, 0.5, "depth")], noise=0.01, seed=seed, background=0.2)
    post, _ = synthetic_vessel(thrombi=[(0.12, 0.28, 0.25, "depth")], noise=0.006, seed=seed + 1, background=0.12,
                               k=0.03)
    res = measure_clearance(base, post, centerline=truth["centerline"], diameter_px=12.0)
    assert res["gradable"], res["warnings"]
    assert not any("fainter over" in w for w in res["warnings"])


def test_density_drop_warning_counts_only_where_the_baseline_was_even():
    """Half the stations read 50% fainter in the later run: warned when the baseline was even there, not when
    the baseline's own thrombus was there (that is residue, measured as such)."""
    rng = np.random.default_rng(1)
    n = 120
    base = 1.0 + 0.01 * rng.standard_normal(n)
    run = 0.8 * (1.0 + 0.01 * rng.standard_normal(n))
    run[:60] *= 0.5
    used = np.ones(n, dtype=bool)
    assert density_drop_warning("post", run, base, used, used, 3) is not None
    even = np.arange(n) >= 50          # the baseline's thrombus over the first 50 stations
    assert density_drop_warning("post", run, base, even, used, 3) is None
    assert density_drop_warning("post", 0.6 * base, base, used, used, 3) is None
