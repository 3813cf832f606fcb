"""A catheter's outer width in the mask between two points marked along it (core.analysis.calibration turns
it into mm per px).

Measured in the contrast-free image (the mask: raw frames before the contrast, log units, where the radiopaque
wall attenuates) across the segment between the two points. Each station's outer edges are first the steepest
rise and fall of the background-subtracted attenuation profile (core.analysis.catheter_edges: a bone's step
beside the catheter told from its edge): they say where the catheter is and that its width is steady. The
width itself is a fit of a blurred projected tube to the stations' mean profile (core.analysis.catheter_fit):
the steepest slope lies inside the edge by an amount that depends on the blur, which the fit measures.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.analysis.catheter_background import edge_corrections
from core.analysis.catheter_edges import station_edges
from core.analysis.catheter_fit import TubeFit, fit_tube
from core.analysis.catheter_sampling import bilinear_sampler, fine_grid
from core.analysis.vessel import Stations, make_stations, sample_profiles

__all__ = ["catheter_width_px", "catheter_fit", "catheter_fit_width", "catheter_stations", "catheter_axis",
           "CatheterStations", "MAX_CATHETER_PX"]

ACROSS_STEP_PX = 0.25
MAX_CATHETER_PX = 40.0       # widest catheter the profile window looks for (px)
MIN_SNR = 6.0                # the catheter's wall stands this many noise sd above the background
MIN_LENGTH_PX = 8.0          # the two points must be this far apart
STEADY_FRACTION = 0.2        # a catheter's width varies along it by less than this (robust sd / width)
BLOCKS = 8                   # contiguous blocks of stations whose scatter measures the mean profile's noise
ALONG_PX = np.array([-0.25, 0.25])   # each station's profile: the mean of two lines this far along it
OUTLIER_MADS = 3.0           # a station's profile this far from the others' is left out (_typical)
EDGE_MARGIN_PX = 6.0         # a bone's edge is looked for this far beyond the fitted window
EDGE_MIN_HEIGHT = 0.05       # and counts from this fraction of the catheter's height (~1.5% of its width)
OPENING_MARGIN_PX = 4.0     # the top-hat's element is this much wider than the widest catheter (its smoothing)
CORRELATION_PX = 2.0         # across the catheter, samples this close share noise (bilinear, pixel)


def catheter_width_px(mask: np.ndarray, points: np.ndarray) -> float:
    """Outer width (px) of the catheter lying between ``points`` in ``mask`` (log units: lower = more
    attenuating). ValueError when the points are outside the image or not on a catheter."""
    return catheter_fit(mask, points).width_px


def catheter_fit(mask: np.ndarray, points: np.ndarray, blur_bounds: tuple[float, float, float] | None = None,
                 solid: bool = False, max_px: float = MAX_CATHETER_PX, ln_mask: bool = False,
                 blur_px: float | None = None) -> TubeFit:
    """The tube fitted to the catheter between ``points`` (catheter_width_px), with the range of outer widths
    its profile fits within the noise (TubeFit.width_range_px, ambiguous_px). ``blur_bounds``: the blur measured
    elsewhere (vessel_blur); ``solid``, ``max_px``: a solid column up to that wide (vessel_blur's pieces);
    ``ln_mask``: the mask is ln of linear counts (12/16-bit linear video), so the blur's action on the intensity
    is modelled exactly (core.analysis.catheter_fit.fit_tube's ln_profile); ``blur_px``: the blur held there
    (fit_tube's: the width only, no ranges; a third of the time)."""
    cs = catheter_stations(mask, points, max_px)
    return catheter_fit_width(cs.across, cs.prof, cs.centres, cs.width, cs.stations, blur_bounds, solid, ln_mask,
                              blur_px)


@dataclass(frozen=True)
class CatheterStations:
    """The stations between two points marked along a catheter, as catheter_fit measures them."""
    stations: Stations          # one per px along the segment (those whose profile lies in the image)
    across: np.ndarray          # offsets of the profiles' samples along each station's normal (px)
    prof: np.ndarray            # (stations, samples) the mask's attenuation, each less its straight background
    centres: np.ndarray         # each station's steepest-slope edges' midpoint (px along the normal)
    width: float                # their median width (px): the first guess


def catheter_stations(mask: np.ndarray, points: np.ndarray, max_px: float = MAX_CATHETER_PX) -> CatheterStations:
    """The mask's profiles across the catheter between ``points`` and its steepest-slope edges; ValueError
    with a one-line reason when the points are outside the image or not on a catheter."""
    img = np.asarray(mask, dtype=np.float32)
    pts = np.asarray(points, dtype=float)
    h, w = img.shape
    if pts.shape != (2, 2) or np.any(pts[:, 0] < 0) or np.any(pts[:, 0] > w - 1) or np.any(pts[:, 1] < 0) \
            or np.any(pts[:, 1] > h - 1):
        raise ValueError(f"catheter points must be two (x, y) inside the {w}x{h} image")
    if float(np.hypot(*(pts[1] - pts[0]))) < MIN_LENGTH_PX:
        raise ValueError(f"catheter points are less than {MIN_LENGTH_PX:g} px apart")
    st = make_stations(pts, 1.0, smooth_px=0.0)
    half = max_px / 2 + 6.0
    across = np.arange(-half, half + 1e-9, ACROSS_STEP_PX)
    prof = -sample_profiles(img, st, across, ALONG_PX)
    finite = np.all(np.isfinite(prof), axis=1)
    prof = prof[finite]
    st = st.picked(finite)
    if len(prof) < 4:
        raise ValueError("catheter points are not on a catheter (the segment between them is not measured)")
    outer = np.abs(across) >= half - 6.0
    A = np.column_stack([np.ones(outer.sum()), across[outer]])
    coef, *_ = np.linalg.lstsq(A, prof[:, outer].T, rcond=None)
    raw = prof
    prof = prof - (coef[0][:, None] + coef[1][:, None] * across[None, :])
    noise = 1.4826 * float(np.median(np.abs(np.diff(prof[:, outer], axis=1)))) / math.sqrt(2.0)
    near = np.abs(across) <= 0.5 * half
    edges = station_edges(across, raw, prof, near, int(round((max_px + OPENING_MARGIN_PX) / ACROSS_STEP_PX)))
    widths = edges.right - edges.left
    centres = 0.5 * (edges.left + edges.right)
    peaks = edges.top
    width = float(np.median(widths))
    snr = float(np.median(peaks)) / max(noise, 1e-9)
    if not snr > MIN_SNR:
        raise ValueError("catheter points are not on a catheter (no attenuating line along them)")
    if not float(np.median(edges.hat_top)) / max(noise, 1e-9) > MIN_SNR:     # the line's bump was a step's plateau
        raise ValueError("catheter points are not on a catheter: a bone's edge (a step of attenuation) lies along "
                         "them and no line stands out of it; mark the catheter elsewhere or give mm per px")
    spread = 1.4826 * float(np.median(np.abs(np.asarray(widths) - np.median(widths))))
    if not (1.0 <= width <= max_px) or spread > STEADY_FRACTION * width:
        raise ValueError("catheter points are not on a catheter (no steady width between them)")
    return CatheterStations(st, across, prof, centres, width)


def catheter_fit_width(across: np.ndarray, prof: np.ndarray, centres: np.ndarray, width: float,
                       stations: Stations, blur_bounds: tuple[float, float, float] | None = None,
                       solid: bool = False, ln_mask: bool = False, blur_px: float | None = None,
                       on_axis: bool = False) -> TubeFit:
    """The tube fitted to the stations' profiles ``prof``, each moved onto the catheter's axis and averaged;
    the model samples the tube exactly as those profiles sampled the image
    (core.analysis.catheter_sampling.bilinear_sampler). The axis: the straight line through the edge midpoints
    ``centres``, then each station's offset from the mean profile (``_refine_centres``) smoothed by a
    parabola (a catheter curves gently over a few tens of px). ``blur_bounds``, ``solid``, ``ln_mask``,
    ``blur_px``: as fit_tube's blur_bounds, solid, ln_profile, blur_px. ``on_axis``: the profiles are centred
    on the axis already (vein_blur's pieces, moved by their own parabola): only stations unlike the others are
    left out."""
    window = np.abs(across) <= 0.8 * width + 4.0
    if on_axis:
        line = np.asarray(centres, dtype=float)
        keep = _typical(shifted(across, prof, across[None, :] + line[:, None])[:, window])
    else:
        line, keep = catheter_axis(across, prof, centres, width)
    aligned = shifted(across, prof, across[None, :] + line[:, None])
    # A bone's edge in the stations, its foot reaching the window, is taken out of their mean (its sign left to
    # the fit; core.analysis.catheter_background). Leaving those stations out instead read the phantom's
    # catheter along its bony ring 4.3% narrow (main 3.3%, this 0.8% wide). Only at a blur measured elsewhere:
    # at a free blur the small misalignments of a thin 4 px tube's stations read as edges by its wall (+-20%).
    reach = float(np.max(across[window]))
    wide = np.abs(across) <= reach + EDGE_MARGIN_PX
    edges = []
    if not solid and (blur_bounds is not None or blur_px is not None):
        height = EDGE_MIN_HEIGHT * float(np.ptp(aligned[keep][:, window].mean(axis=0)))
        bony, corrections, shifts = edge_corrections(across[wide], aligned[keep][:, wide], reach, height, width / 2)
        if bony.any():
            edges = [c[window[wide]] for c in corrections]
            line[keep] += shifts       # the edge moved the steepest-slope centres
            aligned = shifted(across, prof, across[None, :] + line[:, None])
    line, aligned = line[keep], aligned[keep]
    fine = fine_grid(across[window], width)
    sampler = bilinear_sampler(fine, across[window], stations.xy[keep], stations.normal[keep],
                               stations.tangent[keep], line, ALONG_PX, across)
    normal = stations.normal[0]
    mean = aligned.mean(axis=0)
    return fit_tube(across[window], mean[window], width, (float(normal[0]), float(normal[1])),
                    noise_var=lambda basis: (mean_profile_noise(aligned[:, window], basis),
                                             pixel_noise(aligned[:, window], basis)),
                    sampler=(fine, sampler), blur_px=blur_px, blur_bounds=blur_bounds, solid=solid,
                    ln_profile=ln_mask, edges=edges)


def catheter_axis(across: np.ndarray, prof: np.ndarray, centres: np.ndarray, width: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(each station's offset of the catheter's axis along its normal, the stations to average): the straight
    line through the edge midpoints ``centres``, then each station's offset from the mean profile
    (``_refine_centres``) smoothed by a parabola; stations far off it or unlike the others (_typical) left out."""
    k = np.arange(len(centres), dtype=float)
    window = np.abs(across) <= 0.8 * width + 4.0
    line = np.polyval(np.polyfit(k, centres, 1), k)
    for _ in range(2):
        found = _refine_centres(across, prof, line, window)
        line = np.polyval(np.polyfit(k, found, 2), k)
    keep = np.abs(found - line) <= max(0.5, 3.0 * 1.4826 * float(np.median(np.abs(found - line))))
    aligned = shifted(across, prof, across[None, :] + line[:, None])
    return line, keep & _typical(aligned[:, window])


def pixel_noise(aligned: np.ndarray, basis: np.ndarray) -> float:
    """As mean_profile_noise, from neighbouring stations' differences instead of blocks: the pixels' own
    noise, without the background's slow changes along the catheter (bone, soft tissue)."""
    m = len(aligned)
    if m < 3:
        return 0.0
    dev = np.diff(aligned, axis=0) / math.sqrt(2.0)          # each: one station's noise
    dev = 0.5 * (dev + dev[:, ::-1])
    dev = dev - (dev @ basis) @ basis.T
    var = float((dev * dev).mean())
    if var <= 0:
        return 0.0
    lags = int(round(CORRELATION_PX / ACROSS_STEP_PX))
    rho = [float((dev[:, :-j] * dev[:, j:]).sum() / (dev[:, :-j] * dev[:, :-j]).sum()) for j in range(1, lags + 1)]
    return var / m * max(1.0, 1.0 + 2.0 * sum(rho))


def _typical(aligned: np.ndarray) -> np.ndarray:
    """Stations whose profile is like the others': its symmetric part's rms difference from the mean's within
    OUTLIER_MADS robust sds of the stations' median. A bone edge, a wire or another catheter crossing changes
    a few stations' profiles: averaged in, the phantom's catheter across a bony ring read 6% narrow."""
    dev = aligned - aligned.mean(axis=0)
    dev = 0.5 * (dev + dev[:, ::-1])
    dev = dev - dev.mean(axis=1, keepdims=True)
    r = np.sqrt((dev * dev).mean(axis=1))
    med = float(np.median(r))
    ok = r <= med + OUTLIER_MADS * 1.4826 * float(np.median(np.abs(r - med)))
    return ok if ok.sum() >= max(4, len(r) // 2) else np.ones(len(r), dtype=bool)


def _refine_centres(across: np.ndarray, prof: np.ndarray, line: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Each station's centre: ``line`` moved by the shift (within +-1 px) that best matches its profile to the
    stations' mean, both without a straight background (the steepest-slope edges lean with a background
    gradient across the catheter: a bone edge; a match of the whole profile does not)."""
    x = across[window]
    design = np.column_stack([np.ones_like(x), x])
    pinv = np.linalg.pinv(design)

    def detrend(v: np.ndarray) -> np.ndarray:       # less its least-squares line (rank 2: no L x L product)
        return v - (v @ pinv.T) @ design.T

    line = np.asarray(line, dtype=float)
    template = detrend(shifted(across, prof, x[None, :] + line[:, None]).mean(axis=0))
    shifts = np.arange(-1.0, 1.0 + 1e-9, 0.125)
    tried = detrend(shifted(across, prof, x[None, None, :] + (line[:, None] + shifts[None, :])[:, :, None]))
    scores = tried @ template / np.maximum(np.linalg.norm(tried, axis=2), 1e-12)     # (stations, shifts)
    out = np.empty(len(line))
    for i, (c, score) in enumerate(zip(line, scores)):
        j = int(np.argmax(score))
        off = 0.0
        if 0 < j < len(shifts) - 1:
            den = score[j - 1] - 2 * score[j] + score[j + 1]
            off = 0.5 * (score[j - 1] - score[j + 1]) / den if den < 0 else 0.0
        out[i] = c + shifts[j] + float(np.clip(off, -1.0, 1.0)) * (shifts[1] - shifts[0])
    return out


def shifted(across: np.ndarray, prof: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Each station's profile (a row of ``prof``, sampled at the evenly spaced ``across``) read at ``at`` (its
    leading axis the stations') by linear interpolation, held at the ends: np.interp, all stations at once."""
    step = float(across[1] - across[0])
    t = (at - across[0]) / step
    i = np.clip(np.floor(t).astype(int), 0, len(across) - 2)
    u = np.clip(t - i, 0.0, 1.0)
    rows = np.arange(len(prof)).reshape((-1,) + (1,) * (at.ndim - 1))
    return prof[rows, i] * (1.0 - u) + prof[rows, i + 1] * u


def mean_profile_noise(aligned: np.ndarray, basis: np.ndarray) -> float:
    """Variance of a smooth change measured on the stations' mean profile: the per-sample variance of the
    mean (symmetrised, background removed, as fitted), from the scatter of contiguous blocks of stations
    (neighbours share pixels; blocks barely do, and a misalignment or a kink counts as the noise it is),
    times the correlation length across the samples."""
    m = len(aligned)
    blocks = max(2, min(BLOCKS, m // 3))
    means = np.array([b.mean(axis=0) for b in np.array_split(aligned, blocks)])
    dev = means - means.mean(axis=0)
    # Only what the fit sees: the profile is symmetrised and its background (``basis``) is free. The
    # background under the catheter varies along it (bone, soft tissue): blocks' offsets differ by ten times
    # the rest (phantom).
    dev = 0.5 * (dev + dev[:, ::-1])
    dev = dev - (dev @ basis) @ basis.T
    var = float((dev * dev).sum()) / (blocks - 1) / dev.shape[1]        # per sample, one block's mean
    if var <= 0:
        return 0.0
    lags = int(round(CORRELATION_PX / ACROSS_STEP_PX))
    rho = [float((dev[:, :-j] * dev[:, j:]).sum() / (dev[:, :-j] * dev[:, :-j]).sum())
           for j in range(1, lags + 1)]
    return var / blocks * max(1.0, 1.0 + 2.0 * sum(rho))

