"""A catheter through a long narrowing, and the lesion on the noisy bottom it leaves (issue 16).

Where a catheter fills a narrowing its width is the MLD: its 1 px wall trades against the blur, and the middle of
the widths its profile allows read it 6-8% narrow without blur (the sweep's seed 23: MLD -12.7%, seed 47 -12.3%).
The blur measured on the vein's patent stretches away from the device pins that trade, as catheter calibration
pins it. Read from areas beside the device, the narrowing's bottom is noisier than the edges elsewhere, and the
lesion's stretch within the whole vessel's noise of the greatest reading ended on one lump (8-12 px off)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from core.analysis.along_vessel import runs
from core.analysis.lumen import measure_lumen
from core.analysis.sizing import _lesion_station
from core.analysis.sizing_device import _chord_width, _vein_blur
from core.analysis.vessel import make_stations
from core.sources.phantom.psf import blur as psf_blur

SUB = 4
H, W, ANGLE = 150, 340, math.radians(17.0)      # oblique: a catheter along a pixel row reads by its phase
START = np.array([8.0, 25.0])                     # the vein's axis from here along ANGLE
LENGTH = 320.0
D_VEIN, D_MLD, CENTRE, HALF = 16.0, 7.0, 130.0, 45.0
CATHETER, WALL, TIP = 5.3, 1.0, 195.0
MASK_NOISE = 0.01


def _chord(d: np.ndarray, r: np.ndarray | float) -> np.ndarray:
    return 2.0 * np.sqrt(np.clip(np.asarray(r) ** 2 - d * d, 0.0, None))


def scene(blur_px: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(peak opacity, mask, centreline): a straight vein 16 px wide narrowing to 7 px over 90 px, a 5.3 px catheter
    (1 px wall) in it from the vein's start to 65 px past the narrowing's middle; both images blurred alike."""
    rng = np.random.default_rng(seed)
    f = (np.arange(W * SUB) + 0.5) / SUB - 0.5
    g = (np.arange(H * SUB) + 0.5) / SUB - 0.5
    xs, ys = np.meshgrid(f, g)
    s = (xs - START[0]) * math.cos(ANGLE) + (ys - START[1]) * math.sin(ANGLE)
    dy = -(xs - START[0]) * math.sin(ANGLE) + (ys - START[1]) * math.cos(ANGLE)
    u = np.clip((s - CENTRE) / HALF, -1.0, 1.0)
    dip = np.where(np.abs(s - CENTRE) < HALF, (1.0 + np.cos(np.pi * u)) / 2.0, 0.0)
    radius = 0.5 * (D_VEIN - (D_VEIN - D_MLD) * dip)
    on = s <= TIP
    outer = np.where(on, _chord(dy, CATHETER / 2), 0.0)
    wall = outer - np.where(on, _chord(dy, CATHETER / 2 - WALL), 0.0)
    opacity = 0.05 * (_chord(dy, radius) - outer)
    attenuation = 0.08 * wall
    out = []
    for img in (opacity, attenuation):
        if blur_px > 0:
            img = psf_blur(img, blur_px * SUB)
        out.append(img.reshape(H, SUB, W, SUB).mean(axis=(1, 3)))
    peak = out[0] + rng.normal(0.0, 0.01, (H, W))
    mask = 5.0 - out[1] + 0.001 * np.arange(W)[None, :] + rng.normal(0.0, MASK_NOISE, (H, W))
    line = START + np.outer([0.0, LENGTH], [math.cos(ANGLE), math.sin(ANGLE)])
    return peak.astype(np.float32), mask.astype(np.float32), line


def test_a_catheter_filling_a_narrowing_is_read_at_the_veins_blur():
    """Unblurred: the vein's patent stretch beyond the catheter reads no blur, and the catheter fitted at it reads
    its width; the middle of the widths its 1 px wall allows read 5.07 +- 0.1 px on this scene's noise draws
    (4.84-5.10 px on three)."""
    peak, mask, line = scene(0.0)
    st = make_stations(line, 1.0)
    lumen = measure_lumen(peak, st, 1.5 * D_VEIN)
    device = st.s <= TIP
    patent = np.abs(st.s - CENTRE) > HALF + 0.5 * D_VEIN
    blur = _vein_blur(peak, st, lumen, patent, device)
    assert blur is not None and blur[1] < 0.1, blur
    on = (st.s >= 80.0) & (st.s <= 110.0)
    points = st.xy[np.flatnonzero(on)[[0, -1]]]
    assert _chord_width(mask, points, blur) == pytest.approx(CATHETER, abs=0.1)


def test_lesion_on_a_bottom_read_noisier_than_the_vessel():
    """Analytic stenosis profiles, 100 noise draws: lumpy noise all along (as test_vessel_sizing's), and lumps 4x
    larger over a long narrowing's bottom (read from areas beside a catheter: the sweep's seed 23 reads 2.1 points
    of noise there, 0.5 elsewhere). Judged by the whole vessel's noise, the stretch within it of the greatest
    reading broke on the bottom's lumps: the place's RMS error 6.5 px on the 50% narrowing and 5.3 on the 70%, 33
    of 200 beyond 8 px (now 5.2, 4.4, 16)."""
    n, d_typ, centre, draws = 400, 16.0, 203.0, 100
    x = np.arange(n, dtype=float)
    half = 7.0 * d_typ
    off = {50.0: [], 70.0: []}
    for draw in range(draws):
        rng = np.random.default_rng(draw)
        lumpy = [np.convolve(rng.normal(0.0, 1.0, n + 9), np.ones(10) / math.sqrt(10.0), mode="valid")
                 for _ in range(2)]
        noise = 0.5 * lumpy[0] + 0.3 * rng.normal(0.0, 1.0, n) + np.where(np.abs(x - centre) < half, 2.0 * lumpy[1], 0.0)
        for pct in off:
            dip = np.where(np.abs(x - centre) < half, pct * (1.0 + np.cos(np.pi * (x - centre) / half)) / 2.0, 0.0)
            off[pct].append(_lesion_station(dip + noise, d_typ) - int(centre))
    rms = {pct: math.sqrt(float(np.mean(np.square(v)))) for pct, v in off.items()}
    beyond = sum(int(np.sum(np.abs(v) > 8)) for v in off.values())
    assert rms[50.0] <= 5.8 and rms[70.0] <= 4.9 and beyond <= 22, (rms, beyond)


def test_runs_of_flags():
    assert runs(np.array([], dtype=bool)) == []
    assert runs(np.array([True, True, False, True, False, False, True])) == [(0, 2), (3, 4), (6, 7)]
    assert runs(np.zeros(4, dtype=bool)) == [] and runs(np.ones(3, dtype=bool)) == [(0, 3)]
