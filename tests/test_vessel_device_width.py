"""The width of a device lying in the sized lumen (issue 16): where it fills a narrowing its width is the MLD, so
it must not hang on one chord's fit. A 1 px wall under blur trades against the blur (the fit alone takes the
least blur, or runs to a thin-wall solution): one chord read a 5.3 px catheter 4.4 px at 0.5 px blur, and the
sweep's seed 23 (a catheter through a long 70% narrowing) its MLD 20% narrow."""
from __future__ import annotations

import numpy as np
import pytest

from core.analysis.sizing_device import _fitted_width
from core.analysis.vessel import make_stations
from tests.test_catheter_blur import tube_mask


def test_device_width_is_not_one_chords_thin_wall_fit():
    mask, points = tube_mask(5.3, 1.0, 70.0, 0.5, seed=2)
    st = make_stations(points, 1.0)
    everywhere = np.ones(len(st.s), dtype=bool)
    width = _fitted_width(mask, st, np.zeros(len(st.s)), everywhere, coarse=5.0)
    assert width == pytest.approx(5.3, rel=0.06)
