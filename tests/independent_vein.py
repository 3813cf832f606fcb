"""An independent sizing phantom: venogram runs of a tapering vein with one concentric narrowing, written from
docs/domain.md (DOMAIN) and issue 16's text alone, not from core/sources/phantom (a bias shared by the project's
renderer and measurer would go unseen there). NumPy only.

Geometry (pixel centres at integer x, y): the centreline is two tangent circular arcs (a gentle C or S) in a
random direction, so the nearest centreline point of any pixel is analytic. The lumen is a round cylinder of
diameter ``ref(s) * (1 - p * g(s))``: ``ref`` tapers linearly along the field, ``g`` in [0, 1] is the narrowing's
shape (cosine, a short web, a long flat bottom, asymmetric ramps, or none). A pixel sees the chord
``2 sqrt(r^2 - d^2)`` (4x4 subsamples per pixel), times the iodine density.

Imaging: Beer-Lambert on a smooth soft-tissue slope with a bone-like band, quanta drawn from a Poisson law, then
the detector's Gaussian PSF (the scintillator blurs the quanta: correlated noise), a little read noise, a
collimator outside which only scatter arrives, burnt-in text. Contrast fills the vein from its upstream end and
may wash out. Three outputs: 16-bit linear detector frames (one per pulse, last-image-hold at the end), 8-bit
display video (a log-like LUT with gain, every pulse repeated on the video line) and DICOM XA with the imager
pixel spacing and magnification.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SHAPES = ("cosine", "web", "long", "asymmetric", "none")
SUB = 4                      # subsamples per pixel side for the area-averaged chord
LESION_FRACTION = 0.8        # DOMAIN: the lesion is where the diameter is below 80% of the reference


@dataclass
class Arcs:
    """Two tangent arcs: start point, heading, and per arc (length, curvature)."""
    start: np.ndarray
    heading: float
    lengths: tuple[float, float]
    curvatures: tuple[float, float]

    def _arc(self, i: int):
        p, th = self.start.astype(float), self.heading
        s0 = 0.0
        if i == 1:
            p, th = self.point(self.lengths[0]), self.heading + self.curvatures[0] * self.lengths[0]
            s0 = self.lengths[0]
        return p, th, s0, self.lengths[i], self.curvatures[i]

    def point(self, s) -> np.ndarray:
        s = np.asarray(s, dtype=float)
        out = np.empty(s.shape + (2,))
        first = s <= self.lengths[0]
        for i, sel in ((0, first), (1, ~first)):
            if i == 1 and not sel.any():
                continue
            p, th, s0, _, k = self._arc(i) if i == 0 else self._arc(1)
            u = s[sel] - s0
            a = th + k * u
            out[sel, 0] = p[0] + (np.sin(a) - math.sin(th)) / k
            out[sel, 1] = p[1] - (np.cos(a) - math.cos(th)) / k
        return out

    def tangent(self, s) -> np.ndarray:
        s = np.asarray(s, dtype=float)
        a = np.where(s <= self.lengths[0], self.heading + self.curvatures[0] * s,
                     self.heading + self.curvatures[0] * self.lengths[0]
                     + self.curvatures[1] * (s - self.lengths[0]))
        return np.stack([np.cos(a), np.sin(a)], axis=-1)

    def project(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Arc length of the nearest centreline point and the signed distance to it (left of the heading > 0)."""
        best_d = np.full(x.shape, np.inf)
        best_s = np.zeros(x.shape)
        signed = np.zeros(x.shape)
        for i in (0, 1):
            p, th, s0, length, k = self._arc(i)
            r = 1.0 / k
            cx, cy = p[0] - r * math.sin(th), p[1] + r * math.cos(th)
            qx, qy = x - cx, y - cy
            rho = np.hypot(qx, qy)
            sg = 1.0 if r > 0 else -1.0
            alpha = np.arctan2(sg * qx, -sg * qy)
            mid = 0.5 * length
            wrap = (alpha - th - k * mid + math.pi) % (2 * math.pi) - math.pi
            u = np.clip(mid + wrap / k, 0.0, length)
            a = th + k * u
            px = p[0] + (np.sin(a) - math.sin(th)) / k
            py = p[1] - (np.cos(a) - math.cos(th)) / k
            dist = np.hypot(x - px, y - py)
            side = sg * (abs(r) - rho)                 # > 0 towards the centre of a left-turning arc
            better = dist < best_d
            best_d = np.where(better, dist, best_d)
            best_s = np.where(better, s0 + u, best_s)
            signed = np.where(better, np.where(np.abs(side) > 0, np.sign(side), 1.0) * dist, signed)
        return best_s, signed


@dataclass
class VeinCase:
    seed: int
    size: int
    arcs: Arcs
    s_in: float                   # the analysed part of the centreline (inside the field, a margin in)
    s_out: float
    ref_in: float                 # reference diameter (px) at s_in and s_out: a linear taper
    ref_out: float
    shape: str
    stenosis: float               # fraction 0-1 (0 for "none")
    lesion_s: float               # where g reaches 1 (its middle on a flat bottom)
    ramps: tuple[float, float]    # ramp lengths in and out (px); flat bottom between
    flat: float                   # flat bottom length (px)
    blur_px: float
    photons: float                # quanta per pixel without attenuation (0: no noise)
    iodine_per_px: float          # ln units of opacity per px of full-strength contrast
    mm_per_px: float              # at the patient
    magnification: float
    pulse_rate: float
    video_fps: float
    n_pulses: int
    washout: bool
    display_gain: float           # levels per ln unit
    display_gamma: float          # 1: an exact log LUT
    catheter_french: float | None = None
    catheter_tip_s: float | None = None
    catheter_offset_px: float = 0.0
    catheter_mu_per_px: float = 0.1   # the wall's attenuation (ln units per px of path)
    upstream_at_start: bool = True
    rng_state: int = 0
    notes: list[str] = field(default_factory=list)

    # --- the lumen ---------------------------------------------------------------------------------------
    def reference(self, s) -> np.ndarray:
        s = np.asarray(s, dtype=float)
        t = (s - self.s_in) / (self.s_out - self.s_in)
        return np.maximum(self.ref_in + (self.ref_out - self.ref_in) * t, 2.0)

    def narrowing(self, s) -> np.ndarray:
        """g(s) in [0, 1]: 1 on the bottom."""
        s = np.asarray(s, dtype=float)
        if self.shape == "none" or self.stenosis <= 0:
            return np.zeros(s.shape)
        a, b = self.ramps
        lo, hi = self.lesion_s - 0.5 * self.flat, self.lesion_s + 0.5 * self.flat
        g = np.zeros(s.shape)
        g[(s >= lo) & (s <= hi)] = 1.0
        up = (s < lo) & (s > lo - a)
        g[up] = 0.5 * (1 - np.cos(math.pi * (s[up] - (lo - a)) / a))
        dn = (s > hi) & (s < hi + b)
        g[dn] = 0.5 * (1 + np.cos(math.pi * (s[dn] - hi) / b))
        return g

    def diameter(self, s) -> np.ndarray:
        return self.reference(s) * (1.0 - self.stenosis * self.narrowing(s))

    def catheter_px(self) -> float | None:
        return None if self.catheter_french is None else self.catheter_french / 3.0 / self.mm_per_px

    def centreline_points(self, step: float = 8.0) -> np.ndarray:
        n = max(2, int(math.ceil((self.s_out - self.s_in) / step)) + 1)
        return self.arcs.point(np.linspace(self.s_in, self.s_out, n))

    def catheter_points(self, apart_px: float = 50.0) -> np.ndarray | None:
        """Two points ``apart_px`` along the catheter's axis (an operator marks a short, nearly straight stretch),
        in the middle of its stretch in the field, away from its tip."""
        if self.catheter_french is None:
            return None
        if self.upstream_at_start:
            a, b = self.s_in + 10.0, self.catheter_tip_s - 15.0
        else:
            a, b = self.catheter_tip_s + 15.0, self.s_out - 10.0
        half = min(0.5 * apart_px, 0.5 * (b - a))
        s = np.array([0.5 * (a + b) - half, 0.5 * (a + b) + half])
        return self.arcs.point(s) + self.catheter_offset_px * _left(self.arcs.tangent(s))


def _left(t: np.ndarray) -> np.ndarray:
    return np.stack([-t[..., 1], t[..., 0]], axis=-1)


@dataclass
class Truth:
    reference_px: float
    mld_px: float
    diameter_stenosis_pct: float
    lesion_length_px: float
    lesion_xy: tuple[float, float]
    mm_per_px: float
    bottom_xy: np.ndarray         # centreline points within 1 point of the greatest stenosis (anywhere there)
    bottom_s: np.ndarray

    def mld_at(self, case: VeinCase, xy) -> float:
        """The true diameter at the bottom point nearest ``xy`` (a flat bottom on a taper: MLD where measured)."""
        k = int(np.argmin(np.hypot(*(self.bottom_xy - np.asarray(xy, float)).T)))
        return float(case.diameter(self.bottom_s[k]))

    def place_error(self, xy) -> float:
        return float(np.min(np.hypot(*(self.bottom_xy - np.asarray(xy, float)).T)))


def truth(case: VeinCase, step: float = 0.05) -> Truth:
    """DOMAIN's definitions on the analytic lumen: the lesion is the greatest % stenosis, the length the
    contiguous stretch around it below 80% of the reference."""
    s = np.arange(case.s_in, case.s_out + step / 2, step)
    ref, d = case.reference(s), case.diameter(s)
    sten = 100.0 * (1.0 - d / ref)
    if case.stenosis <= 0:
        k = len(s) // 2
        xy = case.arcs.point(s[k])
        return Truth(float(ref[k]), float(d[k]), 0.0, 0.0, (float(xy[0]), float(xy[1])), case.mm_per_px,
                     case.arcs.point(s), s)
    k = int(np.argmin(np.abs(s - case.lesion_s)))
    below = d < LESION_FRACTION * ref
    length = 0.0
    if below[k]:
        lo = k
        while lo > 0 and below[lo - 1]:
            lo -= 1
        hi = k
        while hi < len(s) - 1 and below[hi + 1]:
            hi += 1
        length = float(s[hi] - s[lo] + step)
    bottom = sten >= sten.max() - 1.0
    xy = case.arcs.point(case.lesion_s)
    return Truth(float(ref[k]), float(d[k]), float(sten[k]), length, (float(xy[0]), float(xy[1])),
                 case.mm_per_px, case.arcs.point(s[bottom]), s[bottom])


def make_case(seed: int, size: int = 512, shape: str | None = None, stenosis_pct: float | None = None,
              blur_px: float | None = None, noise: bool = True, catheter: bool | None = None,
              dose: float = 1.0) -> VeinCase:
    """A seeded case; the shape cycles with the seed unless given, a catheter on every third seed. ``dose``
    scales the quanta (10: an acquisition run's dose rather than fluoroscopy's)."""
    rng = np.random.default_rng(910_000 + seed)
    shape = shape or SHAPES[seed % len(SHAPES)]
    heading = rng.uniform(0, 2 * math.pi)
    total = 2.2 * size
    curv = tuple(float(rng.choice([-1, 1]) / rng.uniform(350.0, 1500.0)) for _ in range(2))
    l0 = rng.uniform(0.35, 0.65) * total
    centre = np.array([size / 2, size / 2]) + rng.uniform(-0.06, 0.06, 2) * size
    arcs = Arcs(np.zeros(2), heading, (l0, total - l0), curv)
    # Put the point at mid-length near the image centre.
    arcs.start = centre - arcs.point(np.array([total / 2]))[0]
    s_in, s_out = _field_span(arcs, size, total)
    ref_in = rng.uniform(11.0, 19.0)
    ref_out = ref_in * rng.uniform(0.6, 0.85)
    if rng.random() < 0.5:
        ref_in, ref_out = ref_out, ref_in
    p = float(rng.uniform(0.25, 0.8))                # drawn either way (overrides keep the rest of the case)
    p = 0.0 if shape == "none" else (stenosis_pct / 100.0 if stenosis_pct is not None else p)
    d_les = 0.5 * (ref_in + ref_out)
    flat = 0.0
    if shape == "cosine":
        half = rng.uniform(1.0, 2.0) * d_les
        ramps = (half, half)
    elif shape == "web":
        ramps = (rng.uniform(0.1, 0.2) * d_les,) * 2
        flat = rng.uniform(0.2, 0.5) * d_les
    elif shape == "long":
        ramps = (rng.uniform(0.5, 1.5) * d_les, rng.uniform(0.5, 1.5) * d_les)
        flat = rng.uniform(8.0, 15.0) * d_les - sum(ramps) / 2
    elif shape == "asymmetric":
        steep, gentle = rng.uniform(0.3, 0.7) * d_les, rng.uniform(3.0, 5.0) * d_les
        ramps = (steep, gentle) if rng.random() < 0.5 else (gentle, steep)
    else:
        ramps = (1.0, 1.0)
    span = s_out - s_in
    lo = s_in + max(0.25 * span, ramps[0] + flat / 2 + 2 * d_les)
    hi = s_out - max(0.25 * span, ramps[1] + flat / 2 + 2 * d_les)
    if hi < lo:     # a long narrowing in a short field: centred
        lo = hi = 0.5 * (s_in + s_out) + 0.5 * (ramps[0] - ramps[1])
    lesion_s = float(rng.uniform(lo, hi))
    blur = float(rng.uniform(0.5, 1.5))             # drawn either way: the same case with another blur
    blur = blur if blur_px is None else float(blur_px)
    pulse_rate = float(rng.choice([7.5, 15.0]))
    photons = float(rng.uniform(250.0, 2500.0))     # drawn with or without noise: the same case either way
    case = VeinCase(
        seed=seed, size=size, arcs=arcs, s_in=s_in, s_out=s_out, ref_in=ref_in, ref_out=ref_out, shape=shape,
        stenosis=p, lesion_s=lesion_s, ramps=ramps, flat=flat, blur_px=blur,
        photons=dose * photons if noise else 0.0,
        iodine_per_px=float(rng.uniform(0.3, 0.9) / max(ref_in, ref_out)),
        mm_per_px=float(rng.uniform(0.35, 0.6)), magnification=float(rng.uniform(1.15, 1.5)),
        pulse_rate=pulse_rate, video_fps=2 * pulse_rate if pulse_rate < 15 or rng.random() < 0.5 else pulse_rate,
        n_pulses=int(rng.integers(22, 36)), washout=bool(rng.random() < 0.5),
        display_gain=float(rng.uniform(40.0, 90.0)),
        display_gamma=1.0 if rng.random() < 0.5 else float(rng.uniform(0.85, 1.15)),
        upstream_at_start=bool(rng.random() < 0.5), rng_state=int(rng.integers(1 << 31)))
    if catheter if catheter is not None else seed % 3 == 1:
        case.catheter_french = float(rng.choice([5.0, 6.0, 8.0]))
        room = d_les - case.catheter_french / 3.0 / case.mm_per_px
        case.catheter_offset_px = float(rng.uniform(-0.3, 0.3) * max(room, 0.0) / 2)
        case.catheter_mu_per_px = float(rng.uniform(0.06, 0.15))
        gap = ramps[0] + flat / 2 + rng.uniform(2.0, 4.0) * d_les if case.upstream_at_start else \
            -(ramps[1] + flat / 2 + rng.uniform(2.0, 4.0) * d_les)
        case.catheter_tip_s = float(lesion_s - gap)
        # The catheter must lie in the field for a useful length.
        if (case.catheter_tip_s - s_in < 80 if case.upstream_at_start else s_out - case.catheter_tip_s < 80):
            case.catheter_french = case.catheter_tip_s = None
    return case


def _field_span(arcs: Arcs, size: int, total: float, margin: float = 28.0) -> tuple[float, float]:
    """The arc-length span of the centreline inside the collimated field (a disc), a margin in."""
    s = np.arange(0.0, total, 0.5)
    xy = arcs.point(s)
    c, rad = _field(size)
    inside = np.hypot(xy[:, 0] - c, xy[:, 1] - c) < rad - margin
    idx = np.flatnonzero(inside)
    # The longest contiguous stretch inside (a gentle curve enters and leaves once).
    breaks = np.flatnonzero(np.diff(idx) > 1)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [len(idx) - 1]])
    j = int(np.argmax(ends - starts))
    return float(s[idx[starts[j]]]), float(s[idx[ends[j]]])


def _field(size: int) -> tuple[float, float]:
    return (size - 1) / 2.0, 0.47 * size


# --- rendering ----------------------------------------------------------------------------------------------
@dataclass
class Rendered:
    linear: np.ndarray            # (T, H, W) uint16, one frame per pulse (+ last-image-hold)
    display: np.ndarray           # (T', H, W) uint8, the video line (pulses repeated)
    lin_fps: float
    display_fps: float


def _chords(case: VeinCase):
    """Per pixel: area-averaged lumen chord (px), catheter wall path (px) and the pixel's arc length."""
    n = case.size
    yy, xx = np.mgrid[0:n, 0:n].astype(float)
    s_pix, d_pix = case.arcs.project(xx, yy)
    rmax = 0.5 * max(case.ref_in, case.ref_out) * 1.6 + 2
    band = np.abs(d_pix) < rmax
    iy, ix = np.nonzero(band)
    off = (np.arange(SUB) + 0.5) / SUB - 0.5
    oy, ox = np.meshgrid(off, off, indexing="ij")
    sx = ix[:, None] + ox.ravel()[None]
    sy = iy[:, None] + oy.ravel()[None]
    s_sub, d_sub = case.arcs.project(sx, sy)
    r = 0.5 * case.diameter(s_sub)
    chord = 2.0 * np.sqrt(np.clip(r * r - d_sub * d_sub, 0.0, None))
    wall = np.zeros_like(chord)
    if case.catheter_french is not None:
        ro = 0.5 * case.catheter_px()
        ri = 0.72 * ro
        dc = d_sub - case.catheter_offset_px
        outer = 2.0 * np.sqrt(np.clip(ro * ro - dc * dc, 0.0, None))
        inner = 2.0 * np.sqrt(np.clip(ri * ri - dc * dc, 0.0, None))
        on = s_sub <= case.catheter_tip_s if case.upstream_at_start else s_sub >= case.catheter_tip_s
        # The catheter displaces the contrast of its whole cross-section; its lumen holds saline.
        chord = np.where(on, np.clip(chord - outer, 0.0, None), chord)
        wall = np.where(on, outer - inner, 0.0)
    lumen = np.zeros((n, n))
    wall_img = np.zeros((n, n))
    lumen[iy, ix] = chord.mean(axis=1)
    wall_img[iy, ix] = wall.mean(axis=1)
    return lumen, wall_img, s_pix


def _background(case: VeinCase, rng: np.random.Generator) -> np.ndarray:
    """Soft-tissue attenuation (ln units): a slope, a gentle wobble and a bone-like band."""
    n = case.size
    yy, xx = np.mgrid[0:n, 0:n].astype(float) / n
    mu = 0.6 + rng.uniform(-0.4, 0.4) * xx + rng.uniform(-0.4, 0.4) * yy
    for _ in range(2):
        f = rng.uniform(0.5, 2.0)
        a = rng.uniform(0, 2 * math.pi)
        mu += 0.05 * np.sin(2 * math.pi * f * (xx * math.cos(a) + yy * math.sin(a)) + rng.uniform(0, 6.3))
    a = rng.uniform(0, math.pi)
    dist = (xx - 0.5) * math.cos(a) + (yy - 0.5) * math.sin(a) - rng.uniform(-0.3, 0.3)
    half = rng.uniform(0.03, 0.07)
    band = 1.0 / (1.0 + (np.abs(dist) / half) ** 6)        # flat-topped, soft-edged: a bone's cortex blurred
    mu += rng.uniform(0.3, 0.7) * band
    return mu


def _gauss_blur(img: np.ndarray, sd: float) -> np.ndarray:
    if sd <= 0:
        return img
    r = int(math.ceil(4 * sd))
    x = np.arange(-r, r + 1)
    k = np.exp(-0.5 * (x / sd) ** 2)
    k /= k.sum()
    p = np.pad(img, ((r, r), (0, 0)), mode="edge")
    out = sum(k[i] * p[i:i + img.shape[0]] for i in range(2 * r + 1))
    p = np.pad(out, ((0, 0), (r, r)), mode="edge")
    return sum(k[i] * p[:, i:i + img.shape[1]] for i in range(2 * r + 1))


def _filling(case: VeinCase, s_pix: np.ndarray, t: int, rng_phase: float) -> np.ndarray:
    """Contrast strength 0-1 per pixel at pulse ``t``: a front travelling from upstream, then a plateau, then an
    optional washout; a mild density variation along the vein (mixing)."""
    first = 4
    speed = 45.0                                                    # px per pulse
    up = s_pix - case.s_in if case.upstream_at_start else case.s_out - s_pix
    front = (t - first) * speed
    x = np.clip((front - up) / 60.0 + 0.5, 0.0, 1.0)
    fill = x * x * (3 - 2 * x)
    if case.washout:
        t_w = first + 14
        fill = fill * (1.0 if t < t_w else math.exp(-(t - t_w) / 5.0))
    mix = 1.0 + 0.04 * np.sin(2 * math.pi * s_pix / 180.0 + rng_phase)
    return fill * mix


def render(case: VeinCase) -> Rendered:
    rng = np.random.default_rng(case.rng_state)
    n = case.size
    lumen, wall, s_pix = _chords(case)
    mu_bg = _background(case, rng) + case.catheter_mu_per_px * wall  # the catheter's wall is static anatomy
    c, rad = _field(n)
    yy, xx = np.mgrid[0:n, 0:n].astype(float)
    rr = np.hypot(xx - c, yy - c)
    open_ = np.clip((rad - rr) / 2.0 + 0.5, 0.0, 1.0)               # the collimator's edge, 2 px soft
    # Behind the blades only scatter arrives: a smooth few % of the field's light, no shadow of the vein.
    scatter = 0.03 * float(np.exp(-np.median(mu_bg)))
    text = _text_mask(n, rng)
    phase = rng.uniform(0, 2 * math.pi)
    gain_det = 4.0 * min(1.0, 2500.0 / max(case.photons, 1.0))   # the brightest field stays below 14 bits
    lin = []
    for t in range(case.n_pulses):
        att = mu_bg + case.iodine_per_px * lumen * _filling(case, s_pix, t, phase)
        exposure = 1.0 + 0.015 * math.sin(0.7 * t)                  # the brightness control settling
        expect = exposure * (open_ * np.exp(-att) + (1.0 - open_) * scatter)
        if case.photons > 0:
            quanta = rng.poisson(case.photons * expect).astype(float)
            quanta = _gauss_blur(quanta, case.blur_px) + rng.normal(0, 0.7, (n, n))
        else:       # noise-free: the analytic check
            quanta = _gauss_blur(1000.0 * expect, case.blur_px)
        lin.append(np.clip(np.rint(quanta * gain_det), 1, 16000))
    lin = np.stack(lin)
    lin[:, text] = 16383
    held = np.concatenate([lin, np.repeat(lin[-1:], 3, axis=0)])   # last-image-hold: X-ray off
    linear = held.astype(np.uint16)
    display = _display(case, lin)
    display[:, text] = 255
    repeat = int(round(case.video_fps / case.pulse_rate))
    display = np.repeat(display, repeat, axis=0)
    display = np.concatenate([display, np.repeat(display[-1:], 2 * repeat, axis=0)])
    return Rendered(linear, display.astype(np.uint8), case.pulse_rate, case.video_fps)


def _display(case: VeinCase, lin: np.ndarray) -> np.ndarray:
    """A C-arm's display LUT: log of the light with a gain (levels per ln unit), the open field's bright tissue
    near level 220; ``display_gamma`` != 1 bends it (log-like, not exactly log)."""
    ln = np.log(np.maximum(lin, 1.0))
    top = np.percentile(ln[0], 99.0)
    span = 220.0 / case.display_gain                                 # ln units from level 0 to 220
    x = np.clip((ln - (top - span)) / span, 0.0, None)               # 0 .. 1 over the LUT's range
    v = 220.0 * x ** case.display_gamma
    return np.clip(np.rint(v), 0, 255)


def _text_mask(n: int, rng: np.random.Generator) -> np.ndarray:
    """Burnt-in text: a few rows of blocky 'characters' in the top-left corner."""
    m = np.zeros((n, n), dtype=bool)
    for row in range(3):
        y0 = 8 + 12 * row
        for ch in range(int(rng.integers(5, 10))):
            x0 = 8 + 8 * ch
            glyph = rng.random((7, 5)) < 0.45
            m[y0:y0 + 7, x0:x0 + 5] |= glyph
    return m


def write_dicom(path, case: VeinCase, frames: np.ndarray, fps: float, linear: bool) -> None:
    """XA multi-frame with Frame Time, Pixel Intensity Relationship, Imager Pixel Spacing (at the detector) and
    the Estimated Radiographic Magnification Factor, so mm per px at the patient is spacing / magnification."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    frames = np.ascontiguousarray(frames)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.12.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "XA"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = frames.shape[0]
    ds.Rows, ds.Columns = frames.shape[1:]
    ds.BitsAllocated = 16 if linear else 8
    ds.BitsStored = 14 if linear else 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    ds.FrameTime = f"{1000.0 / fps:.3f}"
    ds.PixelIntensityRelationship = "LIN" if linear else "LOG"
    ds.PixelIntensityRelationshipSign = 1
    ips = case.mm_per_px * case.magnification
    ds.ImagerPixelSpacing = [f"{ips:.6f}", f"{ips:.6f}"]
    ds.EstimatedRadiographicMagnificationFactor = f"{case.magnification:.6f}"
    ds.PixelData = frames.astype(np.uint16 if linear else np.uint8).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
