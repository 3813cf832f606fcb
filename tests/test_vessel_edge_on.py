"""A compression seen edge-on on the phantom: the vein flattened over a few diameters reads wider and fainter in
one projection, and sizing says so in its warnings, at that place; the same widening with a round lumen (a
confluence, a varix) is not warned. Seeded; 16-bit linear and 8-bit display video."""
import re

import numpy as np
import pytest

from core.analysis.peak import peak_and_mask
from core.analysis.sizing import measure_sizing
from core.sources.phantom.render import render_run
from core.sources.phantom.sizing_cases import make_edge_on_case
from core.sources.stacks import FrameStack

AT = re.compile(r"wider and fainter at \((\d+), (\d+)\)")


def peak_of(cfg, intensity: str) -> np.ndarray:
    run = render_run(cfg)
    stack = FrameStack(run.frames, run.fps, intensity, 12 if intensity == "lin" else 8,
                       np.arange(run.frames.shape[0]) / run.fps, "phantom")
    return peak_and_mask(stack)[0]


@pytest.mark.parametrize("seed, intensity, automatic", [(0, "lin", False), (1, "log", True), (2, "lin", True)])
def test_a_flattened_vein_seen_edge_on_is_warned_where_it_is(seed, intensity, automatic):
    case = make_edge_on_case(seed, intensity)
    result = measure_sizing(peak_of(case.config, intensity), None if automatic else case.centreline_xy).to_json()
    places = [tuple(map(float, m.groups())) for w in result["warnings"] if (m := AT.search(w))]
    assert len(places) == 1 and "edge-on" in result["warnings"][0], result["warnings"]
    assert np.hypot(places[0][0] - case.xy[0], places[0][1] - case.xy[1]) <= case.half_px


@pytest.mark.parametrize("seed, intensity", [(0, "lin"), (1, "log")])
def test_the_same_widening_with_a_round_lumen_is_not_warned(seed, intensity):
    case = make_edge_on_case(seed, intensity, depth_ratio=1.0)
    result = measure_sizing(peak_of(case.config, intensity), case.centreline_xy).to_json()
    assert not any("edge-on" in w for w in result["warnings"]), result["warnings"]
