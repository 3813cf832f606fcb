"""Millimetres per pixel of a run, first that applies: the operator's number, a catheter of known French size
marked by two points along it, the DICOM file's own spacing; otherwise None (pixels only).

- Catheter: outer diameter F / 3 mm. Its width is measured in the contrast-free image (the mask: raw frames
  before the contrast, log units, where the radiopaque wall attenuates) across the segment between the two
  points. Each station's outer edges are first the steepest rise and fall of the background-subtracted
  attenuation profile (a hollow catheter's profile has two wall peaks and a dip between them, so a half-height
  rule would find the inner wall): they say where the catheter is and that its width is steady. The width
  itself is a fit of a blurred projected tube to the stations' mean profile (core.analysis.catheter_fit): the
  steepest slope lies inside the edge by an amount that depends on the blur, which the fit measures.
- DICOM: Imager Pixel Spacing (0018,1164) is at the detector; divided by the Estimated Radiographic
  Magnification Factor (0018,1114) it is at the patient. Without that factor, Pixel Spacing (0028,0030) when
  the modality calibrated it. Spacings are (row, column): their mean when they differ a little.
"""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from core.analysis.catheter_fit import TubeFit, bilinear_sampler, fine_grid, fit_tube
from core.analysis.vessel import Stations, make_stations, sample_profiles

__all__ = ["dicom_mm_per_px", "catheter_width_px", "catheter_fit", "parse_catheter", "catheter_mm_per_px", "MAX_CATHETER_PX"]

ACROSS_STEP_PX = 0.25
MAX_CATHETER_PX = 40.0       # widest catheter the profile window looks for (px)
MIN_SNR = 6.0                # the catheter's wall stands this many noise sd above the background
MIN_LENGTH_PX = 8.0          # the two points must be this far apart
STEADY_FRACTION = 0.2        # a catheter's width varies along it by less than this (robust sd / width)
MIN_FRENCH, MAX_FRENCH = 3.0, 30.0
BLOCKS = 8                   # contiguous blocks of stations whose scatter measures the mean profile's noise
ALONG_PX = np.array([-0.25, 0.25])   # each station's profile: the mean of two lines this far along it
CORRELATION_PX = 2.0         # across the catheter, samples this close share noise (bilinear, pixel)


def parse_catheter(text: str) -> np.ndarray:
    """``"x,y;x,y"`` -> (2, 2) array, or ValueError with a one-line reason."""
    items = [p for p in str(text).strip().strip(";").split(";") if p.strip()]
    if len(items) != 2:
        raise ValueError(f"--catheter needs two points \"x,y;x,y\" along the catheter, got {text!r}")
    pts = []
    for item in items:
        try:
            x, y = (float(v) for v in item.split(","))
        except ValueError:
            raise ValueError(f"--catheter point {item.strip()!r} is not \"x,y\"") from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError(f"--catheter point {item.strip()!r} is not finite")
        pts.append((x, y))
    return np.asarray(pts, dtype=float)


def catheter_width_px(mask: np.ndarray, points: np.ndarray) -> float:
    """Outer width (px) of the catheter lying between ``points`` in ``mask`` (log units: lower = more
    attenuating). ValueError when the points are outside the image or not on a catheter."""
    return catheter_fit(mask, points).width_px


def catheter_fit(mask: np.ndarray, points: np.ndarray, with_range: bool = False) -> TubeFit:
    """The tube fitted to the catheter between ``points`` (catheter_width_px); ``with_range``: with the range
    of outer widths its profile fits within the noise (TubeFit.width_range_px; slower)."""
    img = np.asarray(mask, dtype=np.float32)
    pts = np.asarray(points, dtype=float)
    h, w = img.shape
    if pts.shape != (2, 2) or np.any(pts[:, 0] < 0) or np.any(pts[:, 0] > w - 1) or np.any(pts[:, 1] < 0) \
            or np.any(pts[:, 1] > h - 1):
        raise ValueError(f"catheter points must be two (x, y) inside the {w}x{h} image")
    if float(np.hypot(*(pts[1] - pts[0]))) < MIN_LENGTH_PX:
        raise ValueError(f"catheter points are less than {MIN_LENGTH_PX:g} px apart")
    st = make_stations(pts, 1.0, smooth_px=0.0)
    half = MAX_CATHETER_PX / 2 + 6.0
    across = np.arange(-half, half + 1e-9, ACROSS_STEP_PX)
    prof = -sample_profiles(img, st, across, ALONG_PX)
    finite = np.all(np.isfinite(prof), axis=1)
    prof = prof[finite]
    st = replace(st, xy=st.xy[finite], normal=st.normal[finite], tangent=st.tangent[finite], s=st.s[finite])
    if len(prof) < 4:
        raise ValueError("catheter points are not on a catheter (the segment between them is not measured)")
    outer = np.abs(across) >= half - 6.0
    A = np.column_stack([np.ones(outer.sum()), across[outer]])
    coef, *_ = np.linalg.lstsq(A, prof[:, outer].T, rcond=None)
    prof = prof - (coef[0][:, None] + coef[1][:, None] * across[None, :])
    noise = 1.4826 * float(np.median(np.abs(np.diff(prof[:, outer], axis=1)))) / math.sqrt(2.0)
    fine = _smooth(prof, 2)
    coarse = _smooth(prof, 8)            # +-2 px: a hollow catheter's two walls read as one bump
    near = np.abs(across) <= 0.5 * half
    widths, peaks, centres = [], [], []
    for pf, pc in zip(fine, coarse):
        c = int(np.argmax(np.where(near, pc, -np.inf)))
        top = pc[c]
        lo = c
        while lo > 0 and pc[lo - 1] > 0.3 * top:
            lo -= 1
        hi = c
        while hi < len(pc) - 1 and pc[hi + 1] > 0.3 * top:
            hi += 1
        g = np.gradient(pf, ACROSS_STEP_PX)
        reach = int(2.0 / ACROSS_STEP_PX)
        idx = np.arange(len(pf))
        left = _peak_at(g, across, (idx >= lo - reach) & (idx <= c), +1)
        right = _peak_at(g, across, (idx >= c) & (idx <= hi + reach), -1)
        widths.append(right - left)
        centres.append((left + right) / 2.0)
        peaks.append(top)
    width = float(np.median(widths))
    snr = float(np.median(peaks)) / max(noise, 1e-9)
    if not snr > MIN_SNR:
        raise ValueError("catheter points are not on a catheter (no attenuating line along them)")
    spread = 1.4826 * float(np.median(np.abs(np.asarray(widths) - np.median(widths))))
    if not (1.0 <= width <= MAX_CATHETER_PX) or spread > STEADY_FRACTION * width:
        raise ValueError("catheter points are not on a catheter (no steady width between them)")
    return catheter_fit_width(across, prof, np.asarray(centres), width, st, with_range)


def catheter_fit_width(across: np.ndarray, prof: np.ndarray, centres: np.ndarray, width: float,
                       stations: Stations, with_range: bool = False) -> TubeFit:
    """The tube fitted to the stations' profiles ``prof``, each moved onto the straight line through their edge
    midpoints ``centres`` (a catheter is straight over a few tens of px) and averaged; the model samples the
    tube exactly as those profiles sampled the image (core.analysis.catheter_fit.bilinear_sampler).
    ``with_range``: also the outer widths the profile cannot tell apart at the noise measured along it."""
    k = np.arange(len(centres), dtype=float)
    line = np.polyval(np.polyfit(k, centres, 1), k)
    keep = np.abs(centres - line) <= max(1.0, 3.0 * 1.4826 * float(np.median(np.abs(centres - line))))
    window = np.abs(across) <= 0.8 * width + 4.0
    line = line[keep]
    aligned = np.array([np.interp(across + c, across, p) for c, p in zip(line, prof[keep])])
    fine = fine_grid(across[window], width)
    sampler = bilinear_sampler(fine, across[window], stations.xy[keep], stations.normal[keep],
                               stations.tangent[keep], line, ALONG_PX, across)
    normal = stations.normal[0]
    return fit_tube(across[window], aligned.mean(axis=0)[window], width, (float(normal[0]), float(normal[1])),
                    noise_var=_mean_profile_noise(aligned[:, window]), sampler=(fine, sampler), with_range=with_range)


def _mean_profile_noise(aligned: np.ndarray) -> float:
    """Variance of a smooth change measured on the stations' mean profile: the per-sample variance of the
    mean, from the scatter of contiguous blocks of stations (neighbours share pixels; blocks barely do, and a
    misalignment or a kink counts as the noise it is), times the correlation length across the samples."""
    m = len(aligned)
    blocks = max(2, min(BLOCKS, m // 3))
    means = np.array([b.mean(axis=0) for b in np.array_split(aligned, blocks)])
    dev = means - means.mean(axis=0)
    var = float((dev * dev).sum()) / (blocks - 1) / dev.shape[1]        # per sample, one block's mean
    if var <= 0:
        return 0.0
    lags = int(round(CORRELATION_PX / ACROSS_STEP_PX))
    rho = [float((dev[:, :-j] * dev[:, j:]).sum() / (dev[:, :-j] * dev[:, :-j]).sum())
           for j in range(1, lags + 1)]
    return var / blocks * max(1.0, 1.0 + 2.0 * sum(rho))


def _smooth(p: np.ndarray, half: int) -> np.ndarray:
    pad = np.pad(p, ((0, 0), (half, half)), mode="edge")
    return np.lib.stride_tricks.sliding_window_view(pad, 2 * half + 1, axis=1).mean(axis=2)


def _peak_at(g: np.ndarray, across: np.ndarray, sel: np.ndarray, sign: int) -> float:
    """Sub-pixel position (parabola through three samples) of the largest ``sign * g`` within ``sel``."""
    v = np.where(sel, sign * g, -np.inf)
    j = int(np.argmax(v))
    if 0 < j < len(g) - 1 and np.isfinite(v[j - 1]) and np.isfinite(v[j + 1]):
        den = v[j - 1] - 2 * v[j] + v[j + 1]
        off = 0.5 * (v[j - 1] - v[j + 1]) / den if den < 0 else 0.0
        return float(across[j] + np.clip(off, -1.0, 1.0) * (across[1] - across[0]))
    return float(across[j])


def catheter_mm_per_px(mask: np.ndarray, points: np.ndarray, french: float) -> float:
    f = float(french)
    if not (math.isfinite(f) and MIN_FRENCH <= f <= MAX_FRENCH):
        raise ValueError(f"--catheter-french must be in [{MIN_FRENCH:g}, {MAX_FRENCH:g}], got {french!r}")
    return (f / 3.0) / catheter_width_px(mask, points)


def dicom_mm_per_px(path: str | Path) -> float | None:
    """mm per pixel at the patient from a DICOM file's tags, or None (not DICOM, no usable spacing)."""
    try:
        import pydicom
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception:   # not DICOM (a .npy), unreadable: no calibration from the file
        return None
    ips = _spacing(ds.get("ImagerPixelSpacing"))
    mag = _number(ds.get("EstimatedRadiographicMagnificationFactor"))
    if ips is not None and mag is not None and mag >= 1.0:
        return ips / mag
    ps = _spacing(ds.get("PixelSpacing"))
    if ps is None:
        for seq in ("SharedFunctionalGroupsSequence",):
            for item in ds.get(seq) or []:
                for pm in item.get("PixelMeasuresSequence") or []:
                    ps = ps or _spacing(pm.get("PixelSpacing"))
    return ps


def _spacing(value) -> float | None:
    try:
        vals = [float(v) for v in (value if isinstance(value, (list, tuple)) or hasattr(value, "__iter__")
                                   and not isinstance(value, str) else [value])]
    except (TypeError, ValueError):
        return None
    vals = [v for v in vals if math.isfinite(v) and v > 0]
    if not vals or max(vals) > 1.05 * min(vals):   # strongly anisotropic: no single mm per pixel
        return None
    return float(np.mean(vals))


def _number(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None
