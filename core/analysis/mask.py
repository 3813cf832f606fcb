"""Mask selection for one run: which pulses are contrast-free, settled and still. Pure NumPy, no I/O.

Works on a coarse regular sample of each pulse in log units (``ln(counts)`` for linear data, display levels
for log video; brighter = larger either way), so it costs the same on a 1024x1024 frame as on a 256x256 one.

Real runs break the textbook "first frame is the mask":
- automatic brightness control (ABC) is still settling over the first pulses: every pixel's log value moves
  by the same amount, so each pulse's median shift over the field is measured and removed, and pulses
  whose exposure is still moving are not used as mask;
- the patient or the table moves: each pulse's global shift against the still segment's first pulse is
  estimated by least squares on the image gradient (bone edges carry it; a smooth field barely changes
  when it moves, and then it does not matter); a significant shift starts a new still segment, and the
  mask comes from the segment the bolus is seen in;
- contrast already in frame 0 (a previous injection washing out): onset is a *rise* of opacity against the
  least-opacified (brightest) smoothed state the segment has shown so far, which washout (a fall) never
  triggers and only lowers; the mask is the last still, settled pulses before the rise, where the residual
  is lowest. A vessel filling is a local change, so it is not mistaken for motion (the shift fit drops
  cells it cannot explain).

``OnsetWatcher`` is causal (one pulse at a time), so the live pipeline and the offline analysis, which both
use it, pick the same mask from the same pulses.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_MASK_PULSES = 6         # enough to average noise down, few enough to stay close to the bolus
TARGET_SAMPLE = 160         # coarse sample: about this many points across the frame
VALID_PULSES = 8            # pulses that decide which pixels carry image (text and surround do not change)
DARK_FRACTION = 0.05        # pixels darker than this fraction of the bright field are collimator surround
CELL = 3                    # noise is judged on CELL x CELL blocks of the coarse sample
ONSET_SIGMA = 6.0           # contrast onset: the top cells rise this many noise sd above the reference
ONSET_TOP_FRACTION = 0.003  # ... where "top cells" is this fraction of the field (at least 3 cells)
MOTION_SIGMA = 6.0          # motion: a global shift this many standard errors from zero ...
MOTION_MIN_CELLS = 0.15     # ... and at least this large (in cells), against the segment's first pulse
SETTLE_FRACTION = 0.05      # ABC settled once the exposure step is < 5% of the first step
REF_ALPHA = 0.5             # smoothing of the onset reference (an exponential mean over ~3 pulses)
MEDIAN_SUBSET = 4096        # the exposure shift is a median over this many field pixels at most


def _median(x: np.ndarray) -> float:
    """Median of a 1-D array, destroying it (the per-pulse path: np.median's checks cost more than the work)."""
    n = x.size
    h = n // 2
    x.partition(h if n % 2 else (h - 1, h))
    return float(x[h]) if n % 2 else 0.5 * (float(x[h - 1]) + float(x[h]))


def sample_stride(shape: tuple[int, int]) -> int:
    """Stride of the coarse sample grid for frames of ``shape``: about TARGET_SAMPLE points across."""
    return max(1, int(round(max(shape) / TARGET_SAMPLE)))


def log_lut(dtype, intensity: str) -> np.ndarray:
    """Pixel value -> log units (float32), as core.analysis.kernels does: ln(max(v, 1)) for linear data, v for log."""
    if intensity not in ("lin", "log"):
        raise ValueError(f"intensity must be 'lin' or 'log', got {intensity!r}")
    dtype = np.dtype(dtype)
    if dtype not in (np.uint8, np.uint16):
        raise ValueError(f"pixel type must be uint8 or uint16, got {dtype}")
    v = np.arange(1 << (8 * dtype.itemsize), dtype=np.float64)
    if intensity == "log":
        return v.astype(np.float32)
    return np.log(np.maximum(v, 1.0)).astype(np.float32)


def valid_pixels(raw: np.ndarray) -> np.ndarray:
    """(h, w) bool: pixels that carry image, judged on the first VALID_PULSES raw coarse samples (P, h, w).

    Burnt-in text and the black collimator surround do not change from pulse to pulse (a counter ticks once
    a second at most); saturated or empty pixels carry no opacity; a surround with dark noise is far darker
    than the field.
    """
    if raw.ndim != 3:
        raise ValueError(f"expected (pulses, h, w) samples, got shape {raw.shape}")
    raw = raw[:VALID_PULSES]
    if raw.shape[0] < 2:
        return np.ones(raw.shape[1:], dtype=bool)
    changes = (raw[1:] != raw[:-1]).mean(axis=0)
    top = np.iinfo(raw.dtype).max
    level = raw.mean(axis=0)
    # A real detector's collimator surround is dark but not constant (dark noise): judge it by its level.
    dark = level < DARK_FRACTION * np.percentile(level, 90)
    return (changes >= 0.5) & (raw.min(axis=0) > 0) & (raw.max(axis=0) < top) & ~dark


@dataclass(frozen=True)
class MaskChoice:
    first: int                  # pulse indices (into the run's pulses), inclusive
    last: int
    onset: int | None           # first pulse of the contrast rise, None: no rise seen
    settled: int                # first pulse after ABC settling
    motion: tuple[int, ...]     # pulses that moved against their predecessor
    reason: str                 # "pre-contrast" | "no-onset" (first settled pulses) | "late" (no clean
                                #  pulse before the rise, or contrast washing out from the start: the last)

    def to_dict(self) -> dict:
        return {"first": self.first, "last": self.last, "onset": self.onset, "settled": self.settled,
                "motion": list(self.motion), "reason": self.reason}


class OnsetWatcher:
    """Feed one coarse log sample per pulse; tracks ABC settling, motion and the contrast onset.

    ``valid`` (h, w) bool from ``valid_pixels``. After each ``feed`` the attributes ``settled``,
    ``motion``, ``onset`` (confirmed one pulse later) and ``segment`` (first pulse of the still segment
    the onset happened in) describe the run so far; ``choice()`` turns them into mask pulses.
    """

    def __init__(self, valid: np.ndarray) -> None:
        if valid.ndim != 2:
            raise ValueError(f"valid map must be 2-D, got shape {valid.shape}")
        self.shape = valid.shape
        idx = np.flatnonzero(valid.ravel())
        self._idx = idx[:: max(1, idx.size // MEDIAN_SUBSET)] if idx.size else idx
        h, w = valid.shape
        self._ch, self._cw = h // CELL, w // CELL
        v = valid[:self._ch * CELL, :self._cw * CELL].reshape(self._ch, CELL, self._cw, CELL)
        n = v.sum(axis=(1, 3))
        self._cell_w = v.astype(np.float32)
        self._cell_n = np.maximum(n, 1).astype(np.float32)
        self._usable = n >= 0.75 * CELL * CELL
        self._ncells = int(self._usable.sum())
        self._top = max(3, int(ONSET_TOP_FRACTION * self._ncells))
        self._ref0: np.ndarray | None = None
        self.k = -1
        self.offsets: list[float] = []          # exposure shift of each pulse against pulse 0
        self._steps: list[float] = []           # median |cell change| per pulse
        self._prev: np.ndarray | None = None
        self._seg_cells: list[np.ndarray] = []  # the segment's first two pulses (the onset reference)
        self.settled: int | None = None
        self.motion: list[int] = []
        self.segment = 0
        self.onset: int | None = None
        self._pending: int | None = None
        self.onset_cell: tuple[int, int] | None = None   # coarse (row, col) of the strongest rise at onset

    @property
    def has_field(self) -> bool:
        return self._ncells > 0

    def feed(self, logs: np.ndarray) -> None:
        if logs.shape != self.shape:
            raise ValueError(f"sample shape {logs.shape} does not match {self.shape}")
        self.k += 1
        k = self.k
        flat = logs.ravel()
        if self._ref0 is None:
            self._ref0 = flat[self._idx].copy()
        g = _median(flat[self._idx] - self._ref0) if self._idx.size else 0.0
        self.offsets.append(g)
        if self.onset is not None or not self._ncells:
            return
        c = self._cells(logs) - np.float32(g)
        if self._prev is None:
            self._prev = c
            return
        step = _median(np.abs(c - self._prev))
        self._prev = c
        self._steps.append(step)
        moved = self.settled is not None and self._moved(c)
        if moved:
            self.motion.append(k)
        if self.settled is None:
            first = abs(self.offsets[1] - self.offsets[0])
            if abs(self.offsets[k] - self.offsets[k - 1]) <= max(SETTLE_FRACTION * first, 0.2 * self._sd()):
                self.settled = k
                self._start_segment(k, c)
            return
        if moved:
            self._start_segment(k, c)
            return
        if len(self._seg_cells) < 2:
            self._seg_cells.append(c)
            if len(self._seg_cells) == 2:
                self._ema = 0.5 * (self._seg_cells[0] + self._seg_cells[1])
                self._ref = self._ema.copy()
            return
        rise = self._ref - c
        top = -np.partition(-rise, self._top - 1)[self._top - 1]
        # The reference is the brightest (least opacified) smoothed state of the segment so far, so contrast
        # washing out of the first pulses lowers the bar instead of hiding the new bolus behind it.
        # Against it a pulse holds about 1.5 noise variances plus the upward bias of a running maximum.
        self._ema = REF_ALPHA * c + (1.0 - REF_ALPHA) * self._ema
        if top > ONSET_SIGMA * self._sd() * np.sqrt(1.5):
            if self._pending is None:
                self._pending = k
                self._pending_rise = rise
            else:
                self.onset = self._pending
                pos = int(np.argmax(self._pending_rise + rise))
                rows, cols = np.nonzero(self._usable)
                self.onset_cell = (int(rows[pos]) * CELL + CELL // 2, int(cols[pos]) * CELL + CELL // 2)
        else:
            self._pending = None
            np.maximum(self._ref, self._ema, out=self._ref)

    def _start_segment(self, k: int, c: np.ndarray) -> None:
        self.segment = k
        self._seg_cells = [c]
        self._pending = None
        # Gradient of the segment's first pulse over the cell grid, for the shift estimate.
        grid = np.zeros((self._ch, self._cw), dtype=np.float64)
        grid[self._usable] = c
        gy, gx = np.gradient(grid)
        ok = self._usable.copy()
        ok[1:, :] &= self._usable[:-1, :]
        ok[:-1, :] &= self._usable[1:, :]
        ok[:, 1:] &= self._usable[:, :-1]
        ok[:, :-1] &= self._usable[:, 1:]
        sel = ok[self._usable]                     # cells whose gradient uses usable neighbours only
        G = np.column_stack([gx[self._usable][sel], gy[self._usable][sel]])
        GtG = G.T @ G
        self._shift = None
        if sel.sum() >= 8 and np.linalg.det(GtG) > 0:
            self._shift = (sel, G, np.linalg.inv(GtG), c.astype(np.float64))

    def _moved(self, c: np.ndarray) -> bool:
        """Least-squares global shift (cells) of ``c`` against the segment's first pulse: c - ref = -G d."""
        if getattr(self, "_shift", None) is None or len(self._steps) < 2:
            return False
        sel, G, inv, ref = self._shift
        diff = (c.astype(np.float64) - ref)[sel]
        d = -inv @ (G.T @ diff)
        # Contrast filling a vessel is a local change a global shift cannot explain: drop the cells the
        # shift leaves far off (beyond 4 noise sd of a difference) and solve again.
        sd2 = self._sd() * np.sqrt(2.0)
        keep = np.abs(diff + G @ d) <= 4.0 * sd2
        if keep.sum() < 8:
            return False
        if not keep.all():
            Gk = G[keep]
            GtG = Gk.T @ Gk
            if np.linalg.det(GtG) <= 0:
                return False
            inv = np.linalg.inv(GtG)
            d = -inv @ (Gk.T @ diff[keep])
        se = sd2 * np.sqrt(np.diag(inv))                            # the difference holds two noises
        z = np.abs(d) / np.maximum(se, 1e-12)
        return bool(np.max(z) > MOTION_SIGMA and np.hypot(*d) > MOTION_MIN_CELLS)

    def _sd(self) -> float:
        # Cell noise sd: a pulse-to-pulse step holds two noises; the median of |N(0, 2 sd^2)| is 0.954 sd.
        # The last 31 steps are plenty and keep the cost per pulse constant on long runs.
        return float(np.median(self._steps[-31:])) / 0.9539 if self._steps else 0.0

    def final_choice(self, pulses: int, mean_log) -> MaskChoice:
        """The mask of a finished run. ``mean_log(choice)`` gives the exposure-corrected mean log sample of
        a choice's pulses.

        Without a seen onset the mask is early or late in the run: contrast present from the first pulse
        and washing out makes the late pulses the cleaner ones, a faint bolus (too faint for the cells, not
        for an ROI's mean) the early ones. Iodine only darkens, so the strongest brightening over the top
        cells, one way against the other, decides.
        """
        choice = self.choice(pulses)
        if choice.reason != "no-onset" or pulses < choice.last + 1 + MAX_MASK_PULSES or not self._ncells:
            return choice
        late = MaskChoice(pulses - MAX_MASK_PULSES, pulses - 1, None, choice.settled, choice.motion, "late")
        d = self._cells(mean_log(late)) - self._cells(mean_log(choice))
        k = self._top - 1
        brighter_late = -np.partition(-d, k)[k]
        brighter_early = -np.partition(d, k)[k]
        # Each side is a mean of MAX_MASK_PULSES pulses; the late pulses must be clearly brighter, not by
        # the luck of the noise, to move the mask away from the likelier clean start.
        sd_diff = self._sd() * np.sqrt(2.0 / MAX_MASK_PULSES)
        if brighter_late > max(brighter_early, 0.0) + ONSET_SIGMA * sd_diff:
            return late
        return choice

    def _cells(self, logs: np.ndarray) -> np.ndarray:
        x = logs[:self._ch * CELL, :self._cw * CELL].reshape(self._ch, CELL, self._cw, CELL)
        means = (x * self._cell_w).sum(axis=(1, 3)) / self._cell_n
        return means[self._usable]

    def choice(self, pulses: int) -> MaskChoice:
        """Mask pulses for a run of ``pulses`` pulses seen so far."""
        settled = self.settled if self.settled is not None else 0
        motion = tuple(self.motion)
        if self.onset is None:
            # No rise the cells could see. A faint bolus may still show in an ROI's mean, and X-ray usually
            # starts before the injection: the first settled pulses of the longest still segment (most
            # of the run seen in the mask's geometry) are the likeliest clean mask.
            bounds = [min(settled, pulses - 1)] + [m for m in motion if settled < m < pulses] + [pulses]
            k = int(np.argmax(np.diff(bounds)))
            first, end = bounds[k], bounds[k + 1]
            last = min(first + MAX_MASK_PULSES, end) - 1
            return MaskChoice(first, max(first, last), None, settled, motion, "no-onset")
        last = self.onset - 2                  # the pulse before the rise may hold its foot
        if last >= self.segment:
            return MaskChoice(max(self.segment, last - MAX_MASK_PULSES + 1), last, self.onset, settled,
                              motion, "pre-contrast")
        # No still, settled pulse before the rise (injection before X-ray on): venous contrast washes out,
        # so the last pulses of the run are the cleanest available.
        first = max(self.segment, pulses - MAX_MASK_PULSES)
        return MaskChoice(min(first, pulses - 1), pulses - 1, self.onset, settled, motion, "late")


def choose_mask(raw: np.ndarray, lut: np.ndarray) -> tuple[MaskChoice, np.ndarray]:
    """Offline: the mask pulses of a whole run from its raw coarse samples (P, h, w); also the valid map."""
    if raw.ndim != 3 or raw.shape[0] < 1:
        raise ValueError(f"expected (pulses, h, w) samples, got shape {raw.shape}")
    valid = valid_pixels(raw)
    watcher = OnsetWatcher(valid)
    for k in range(raw.shape[0]):
        watcher.feed(lut[raw[k]])
    g = watcher.offsets

    def mean_log(c: MaskChoice) -> np.ndarray:
        return np.mean([lut[raw[k]] - np.float32(g[k]) for k in range(c.first, c.last + 1)], axis=0)

    return watcher.final_choice(raw.shape[0], mean_log), valid
