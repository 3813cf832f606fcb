"""Translation of a later run against the baseline, on what treatment does not change.

Between runs the table and C-arm move; the anatomy (bone, soft tissue) does not, while the vessel may:
thrombus removed, another vein filled, contrast weaker. So, given the contrast-free mask images, the shift
is found on the anatomy first, and the vessel only refines it within a few pixels:

1. Anatomy features: a band-pass of each mask (a local mean over ~4 px minus one over ~24 px, over measured
   pixels only, leaving out the vessel, which a mask taken as the contrast arrived shows). It keeps bone edges and soft-tissue texture and removes what differs between runs without the
   patient moving: the exposure level, the heel effect and vignetting (smooth), a different kV (a gain,
   which NCC ignores). Pixels near anything not measured (the collimated field's edge, burnt-in text) are
   left out: those edges stand still while the patient moves.
2. Coarse search on a reduced image (shorter side >= COARSE_SIDE_PX) over the whole +-``max_shift``, by
   masked NCC with FFTs (core/analysis/ncc.py), then uphill walks of single-pixel steps at each finer
   level up to the working resolution (full, or half above FINE_ABOVE_PX).
3. There a quadratic fit of the 5x5 NCC surface around the maximum gives the sub-pixel shift. Then the
   vessel images' own maximum within REFINE_PX: where it matches (NCC >= VESSEL_MIN_SCORE) and
   disagrees with the anatomy by more than VESSEL_TOLERANCE_PX, the vein moved otherwise than the bone
   (it lies at another depth, in soft tissue) and its shift is taken. Closer than that the anatomy is the
   better judge: on test venograms the changed vessel (thrombus removed, 40% weaker contrast) put the
   vessel's maximum up to 1.3 px off and a combined fit 0.2-0.5 px off; the anatomy alone stayed within 0.1 px.

Without masks, or when the masks show no anatomy that matches (NCC < ANATOMY_MIN_SCORE: masks of another
patient, noise) or none that localises the shift (smooth attenuation, one long straight edge: the NCC does not
fall by SHARP_DROP within SHARP_PX), the same search runs on the vessel images alone (``basis`` "vessel").

Reported: ``score``, the NCC of the basis features at the found shift (-1..1, clipped at 0; 0 when there is
nothing to match); ``residual``, the normalised RMS difference of the basis features at the sub-pixel shift
over their overlap, each standardised there (zero mean, unit RMS) and the RMS divided by sqrt(2), clipped to
0..1: 0 = identical, 1 = no better than unrelated images (for standardised images it equals sqrt(1 - r) with r
their correlation at the exact sub-pixel shift, at the working resolution).

Convention: ``moving`` is ``fixed`` moved by (+dx, +dy), i.e. moving[y + dy, x + dx] == fixed[y, x].
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from core.analysis.ncc import FlatPair, fast_len, masked_ncc, quadratic_peak, window_ncc

__all__ = ["Registration", "register", "DEFAULT_MAX_SHIFT_PX"]

DEFAULT_MAX_SHIFT_PX = 160.0  # table moves between runs of one procedure
COARSE_SIDE_PX = 200          # the coarse search runs on the smallest halving with at least this shorter side
FINE_ABOVE_PX = 640           # images larger than this are refined at half resolution
ANATOMY_MIN_SCORE = 0.25      # masks matching less than this are not trusted to decide the shift
VESSEL_MIN_SCORE = 0.3        # the vessel refines the anatomy's shift only where it matches at least this well
SHARP_PX = 8                  # the anatomy localises the shift when its NCC SHARP_PX away in every direction
SHARP_DROP = 0.25             #   is below its peak by at least this share of the peak
REFINE_PX = 4                 # the vessel may move the anatomy's shift by at most this many px per axis
VESSEL_TOLERANCE_PX = 2.0     #   and does so only where it disagrees by more than this
BAND_INNER_PX = 4             # band-pass of the masks: local means over these radii (full-resolution px),
BAND_OUTER_PX = 24            #   inner minus outer: bone edges and texture, without pixel noise or exposure
EDGE_GUARD_PX = 8             # mask pixels this close to an unmeasured one (field edge, text) are left out
MIN_FEATURE_PX = 64


@dataclass(frozen=True)
class Registration:
    dx: float               # moving = fixed moved by +dx (columns) and +dy (rows)
    dy: float
    score: float            # NCC of the basis features at the shift, 0..1 (0: nothing to match)
    residual: float = 1.0   # normalised RMS difference after alignment, 0 (identical) .. 1 (unrelated)
    basis: str = "vessel"   # "anatomy" (the masks decided) or "vessel" (the peak-opacity images did)

    @property
    def shift(self) -> tuple[float, float]:
        return (self.dx, self.dy)


def _vessel_features(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(features, vessel): opacity above the noise floor (0 elsewhere, NaN where the image is not measured),
    and where the vessel clearly is (above 4 noise sd)."""
    out = np.asarray(img, dtype=np.float32)
    valid = np.isfinite(out)
    vals = out[valid]
    if vals.size == 0:
        return np.full(out.shape, np.nan, dtype=np.float32), np.zeros(out.shape, dtype=bool)
    if vals.size > 65536:
        vals = vals[:: vals.size // 65536]
    med = float(np.median(vals))
    sd = 1.4826 * float(np.median(np.abs(vals - med)))
    # Soft threshold at 2 noise sd: the vessel, not the noise of the background, carries the correlation.
    feat = np.maximum(out - np.float32(med + 2.0 * sd), np.float32(0.0))
    feat[~valid] = np.nan
    return feat, feat > np.float32(2.0 * sd)


def _box(x: np.ndarray, r: int) -> np.ndarray:
    """Sum over (2r+1)^2 neighbourhoods, zero outside the image (cumulative sums: cost independent of r).
    float32: each cumulative sum runs along one row or column of centred values, far within its precision."""
    x = np.asarray(x, dtype=np.float32)
    n0, n1 = x.shape
    c = np.zeros((n0 + 1, n1), np.float32)
    np.cumsum(x, axis=0, out=c[1:])
    y = c[np.minimum(np.arange(n0) + r + 1, n0)] - c[np.maximum(np.arange(n0) - r, 0)]
    c = np.zeros((n0, n1 + 1), np.float32)
    np.cumsum(y, axis=1, out=c[:, 1:])
    return c[:, np.minimum(np.arange(n1) + r + 1, n1)] - c[:, np.maximum(np.arange(n1) - r, 0)]


def _smooth(x: np.ndarray, radius_px: float, f: int) -> np.ndarray:
    """Sum over a triangle kernel (two box passes) of about ``radius_px`` full-resolution pixels at level ``f``:
    smoother than a box, so the correlation peak is round enough for the sub-pixel fit."""
    r = max(1, int(round(radius_px / (2 * f))))
    return _box(_box(x, r), r)


def _anatomy_features(mask: np.ndarray, f: int, vessel: np.ndarray) -> np.ndarray | None:
    """Band-pass of a mask image at pyramid level ``f`` (NaN where not measured or near it, and on the
    ``vessel``); None when it holds too little. The band is fixed in full-resolution pixels, so every level
    sees the same anatomy."""
    m = np.asarray(mask, dtype=np.float32)
    measured = np.isfinite(m)
    # The vessel is what treatment changes, and a mask taken as the contrast arrived already shows some of it.
    valid = measured & ~(_box(vessel, max(1, int(round(BAND_INNER_PX / f)))) > 0.5)
    if valid.sum() < MIN_FEATURE_PX:
        return None
    v = valid.astype(np.float32)
    m0 = np.where(valid, m - np.float32(np.mean(m[valid])), np.float32(0.0))
    r_out = max(2, int(round(BAND_OUTER_PX / f)))
    with np.errstate(invalid="ignore", divide="ignore"):
        feat = (_smooth(m0, BAND_INNER_PX, f) / _smooth(v, BAND_INNER_PX, f)
                - _box(m0, r_out) / _box(v, r_out))
    keep = valid & (_box(~measured, max(1, int(round(EDGE_GUARD_PX / f)))) < 0.5)
    feat[~keep] = np.nan
    vals = feat[keep]
    if vals.size < MIN_FEATURE_PX:
        return None
    sub = vals[:: max(1, vals.size // 65536)]
    med = float(np.median(sub))
    sd = 1.4826 * float(np.median(np.abs(sub - med)))
    if not sd > 0:
        return None
    # A few very strong edges (a wire, the table's rim) must not outweigh the whole anatomy.
    return np.clip(feat, med - 4.0 * sd, med + 4.0 * sd).astype(np.float32)


def _half(img: np.ndarray) -> np.ndarray:
    """2x2 block mean (NaN if any of the four is NaN: not measured stays not measured)."""
    h, w = img.shape
    a = np.asarray(img, dtype=np.float32)[: h // 2 * 2, : w // 2 * 2]
    return 0.25 * (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2])


def _coarse(a: np.ndarray, b: np.ndarray, ms: int, f: int) -> tuple[float, float, float, float] | None:
    """Best shift (dy, dx, score, drop) within +-ms of two feature images at level ``f`` by masked FFT NCC,
    sub-pixel; ``drop`` is the least fall of the NCC SHARP_PX away, as a share of the peak. None when no shift
    has enough overlap."""
    h, w = a.shape
    ms = int(min(ms, h - 2, w - 2))
    ph, pw = fast_len(h + ms + 1), fast_len(w + ms + 1)      # zero padding: no shift wraps onto another
    corr = masked_ncc(a, b, ph, pw)
    rows = np.r_[0:ms + 1, ph - ms:ph] if ms > 0 else np.r_[0:1]
    cols = np.r_[0:ms + 1, pw - ms:pw] if ms > 0 else np.r_[0:1]
    sub = corr[np.ix_(rows, cols)]
    r, c = np.unravel_index(int(np.argmax(sub)), sub.shape)
    if sub[r, c] <= -1.0:
        return None
    iy, ix = int(rows[r]), int(cols[c])
    patch = corr[np.ix_([(iy + k) % ph for k in range(-2, 3)], [(ix + k) % pw for k in range(-2, 3)])]
    fx, fy = quadratic_peak(np.where(patch > -1.0, patch, np.nan))
    dy = iy if iy <= ms else iy - ph
    dx = ix if ix <= ms else ix - pw
    peak = float(sub[r, c])
    d = max(2, int(round(SHARP_PX / f)))
    around = max(float(corr[(iy + d * i) % ph, (ix + d * j) % pw]) for i in (-1, 0, 1) for j in (-1, 0, 1)
                 if (i, j) != (0, 0))
    return dy + fy, dx + fx, peak, (peak - around) / peak if peak > 0 else 0.0


def _climb(surface, cy: int, cx: int, steps: int) -> tuple[int, int]:
    """Single-pixel steps uphill on ``surface(cy, cx, r)`` (a (2r+1)^2 window) until the centre is the maximum."""
    for _ in range(steps):
        win = surface(cy, cx, 1)
        i, j = np.unravel_index(int(np.argmax(win)), win.shape)
        if (i, j) == (1, 1):
            break
        cy, cx = cy + int(i) - 1, cx + int(j) - 1
    return cy, cx


def _residual(a: np.ndarray, b: np.ndarray, dy: float, dx: float) -> float:
    """Normalised RMS difference of ``a`` and ``b`` sampled at (y + dy, x + dx) (bilinear) over their overlap."""
    h, w = a.shape
    iy, ix = int(np.floor(dy)), int(np.floor(dx))
    fy, fx = dy - iy, dx - ix
    y0, y1 = max(0, -iy), min(h, h - iy - 1)
    x0, x1 = max(0, -ix), min(w, w - ix - 1)
    if y1 - y0 < 2 or x1 - x0 < 2:
        return 1.0
    bs = b[y0 + iy:y1 + iy + 1, x0 + ix:x1 + ix + 1].astype(np.float64)
    bi = ((1 - fy) * ((1 - fx) * bs[:-1, :-1] + fx * bs[:-1, 1:]) + fy * ((1 - fx) * bs[1:, :-1] + fx * bs[1:, 1:]))
    av = a[y0:y1, x0:x1].astype(np.float64)
    ok = np.isfinite(av) & np.isfinite(bi)
    if ok.sum() < MIN_FEATURE_PX:
        return 1.0
    av, bi = av[ok] - av[ok].mean(), bi[ok] - bi[ok].mean()
    ra, rb = float(np.sqrt(np.mean(av * av))), float(np.sqrt(np.mean(bi * bi)))
    if not (ra > 0 and rb > 0):
        return 1.0
    return float(np.clip(np.sqrt(np.mean((av / ra - bi / rb) ** 2) / 2.0), 0.0, 1.0))


def _check(fixed, moving, fixed_mask, moving_mask, max_shift):
    if fixed.ndim != 2 or fixed.shape != moving.shape:
        raise ValueError(f"registration needs two 2-D images of the same shape, got {fixed.shape} and {moving.shape}")
    if min(fixed.shape) < 8:
        raise ValueError(f"images of shape {fixed.shape} are too small to register")
    if not (isinstance(max_shift, (int, float, np.number)) and np.isfinite(max_shift) and max_shift >= 0):
        raise ValueError(f"max_shift must be a finite number >= 0, got {max_shift!r}")
    if (fixed_mask is None) != (moving_mask is None):
        raise ValueError("registration on anatomy needs both masks (fixed_mask and moving_mask) or neither")
    if fixed_mask is not None and not (np.shape(fixed_mask) == np.shape(moving_mask) == fixed.shape):
        raise ValueError(f"masks of shape {np.shape(fixed_mask)} and {np.shape(moving_mask)} do not match the "
                         f"images' {fixed.shape}")


def register(fixed_peak: np.ndarray, moving_peak: np.ndarray, *, fixed_mask: np.ndarray | None = None,
             moving_mask: np.ndarray | None = None, max_shift: float = DEFAULT_MAX_SHIFT_PX) -> Registration:
    """Translation of ``moving_peak`` relative to ``fixed_peak`` (two peak-opacity images of the same shape,
    NaN where not measured), on the anatomy of the runs' contrast-free masks (core/analysis/peak.py's
    ``peak_and_mask``, log units, NaN where not measured) when both are given, else on the vessel alone.
    Shifts up to ``max_shift`` px per axis. Score 0 when there is nothing to match."""
    fixed = np.asarray(fixed_peak)
    moving = np.asarray(moving_peak)
    _check(fixed, moving, fixed_mask, moving_mask, max_shift)
    h, w = fixed.shape
    work = 2 if min(h, w) > FINE_ABOVE_PX else 1
    top = work
    while min(h, w) // (2 * top) >= COARSE_SIDE_PX:
        top *= 2
    levels = [work]
    while levels[-1] < top:
        levels.append(levels[-1] * 2)        # working resolution first, coarsest last

    def pyramid(img):
        out = {1: np.asarray(img, dtype=np.float32)}
        for f in (2, 4, 8, 16, 32, 64):
            if f > top:
                break
            out[f] = _half(out[f // 2])
        return out

    vf = {f: _vessel_features(im) for f, im in pyramid(fixed).items() if f >= work}
    vm = {f: _vessel_features(im) for f, im in pyramid(moving).items() if f >= work}
    vessel = {f: v[0] for f, v in vf.items()}, {f: v[0] for f, v in vm.items()}
    reach = int(np.ceil(max_shift / top))
    if fixed_mask is not None:
        pf, pm = pyramid(fixed_mask), pyramid(moving_mask)
        anat = ({top: _anatomy_features(pf[top], top, vf[top][1])}, {top: _anatomy_features(pm[top], top, vm[top][1])})
        found = None
        if anat[0][top] is not None and anat[1][top] is not None:
            found = _coarse(anat[0][top], anat[1][top], reach, top)
        # Half the sharpness asked at the end: a coarse peak is broader. Only spares the finer levels' work.
        if found is not None and found[2] >= ANATOMY_MIN_SCORE and found[3] >= SHARP_DROP / 2:
            for f in levels[:-1]:
                anat[0][f] = _anatomy_features(pf[f], f, vf[f][1])
                anat[1][f] = _anatomy_features(pm[f], f, vm[f][1])
            if all(x is not None for x in (*anat[0].values(), *anat[1].values())):
                reg, sharp = _refine(anat, vessel, levels, found, max_shift, use_vessel=True)
                # Anatomy that matches weakly at the working resolution (noise), or too smooth to say where it
                # fits (a broad peak, one long straight edge), does not decide.
                if reg.score >= ANATOMY_MIN_SCORE and sharp:
                    return replace(reg, basis="anatomy")
    a, b = vessel[0][top], vessel[1][top]
    if not (np.nan_to_num(a) > 0).any() or not (np.nan_to_num(b) > 0).any():
        return Registration(0.0, 0.0, 0.0, 1.0, "vessel")
    found = _coarse(a, b, reach, top)
    if found is None:
        return Registration(0.0, 0.0, 0.0, 1.0, "vessel")
    return _refine(vessel, vessel, levels, found, max_shift, use_vessel=False)[0]


def _refine(feats, vessel, levels: list[int], found, max_shift: float,
            use_vessel: bool) -> tuple[Registration, bool]:
    """From the coarse shift ``found`` (at ``levels[-1]``) down to the working resolution ``levels[0]``:
    uphill walks on ``feats`` at each level, the vessel joining at the last one when ``use_vessel``. Also
    says whether ``feats`` alone localise the shift: their NCC falls by SHARP_DROP (of its peak) SHARP_PX away
    in every direction."""
    work, top = levels[0], levels[-1]
    dy, dx = found[0] * top, found[1] * top            # full-resolution pixels from here on
    for f in levels[::-1]:
        lim = int(np.ceil(max_shift / f))
        pair = FlatPair(feats[0][f], feats[1][f], pad=lim + 4)

        def surface(cy, cx, r, pair=pair, lim=lim):
            return window_ncc(pair, cy, cx, r, lim)
        start = (int(np.clip(round(dy / f), -lim, lim)), int(np.clip(round(dx / f), -lim, lim)))
        cy, cx = _climb(surface, *start, steps=8)
        dy, dx = cy * f, cx * f
    d = max(2, int(round(SHARP_PX / work)))
    around = [pair.ncc(cy + d * i, cx + d * j) for i in (-1, 0, 1) for j in (-1, 0, 1) if (i, j) != (0, 0)]
    score = max(pair.ncc(cy, cx), 0.0)
    sharp = score > 0 and score - max(around) >= SHARP_DROP * score
    ey, ex = _subpixel(surface, cy, cx)
    if use_vessel:
        vpair = FlatPair(vessel[0][work], vessel[1][work], pad=pair.pad)

        def vsurface(cy, cx, r, vpair=vpair, lim=lim):
            return window_ncc(vpair, cy, cx, r, lim)
        vy, vx = _climb(vsurface, cy, cx, steps=max(1, int(round(REFINE_PX / work))))
        # The vessel's own maximum near the anatomy's, where it matches well: taken only when it disagrees with
        # the anatomy by more than VESSEL_TOLERANCE_PX (the vein moved otherwise than the bone: it lies at another
        # depth, or in soft tissue). Closer than that the anatomy is the better judge: treatment changed the vessel.
        if vsurface(vy, vx, 1).argmax() == 4 and vpair.ncc(vy, vx) >= VESSEL_MIN_SCORE:
            wy, wx = _subpixel(vsurface, vy, vx)
            if max(abs(wy - ey), abs(wx - ex)) * work > VESSEL_TOLERANCE_PX:
                ey, ex = wy, wx
    residual = _residual(feats[0][work], feats[1][work], ey, ex) if score > 0 else 1.0
    return Registration(round(float(ex * work), 3), round(float(ey * work), 3), round(score, 4),
                        round(residual, 4), "vessel"), sharp


def _subpixel(surface, cy: int, cx: int) -> tuple[float, float]:
    """Sub-pixel maximum near the integer maximum (cy, cx): quadratic fit of the 5x5 surface around it."""
    patch = surface(cy, cx, 2)
    fx, fy = quadratic_peak(np.where(patch > -1.0, patch, np.nan))
    return cy + fy, cx + fx
