"""One run's pulses into time-density curves: ``RunTimer``, shared by the live pipeline and ``analyze``.

``RunTimer`` collects what the curves of one run need, pulse by pulse (a coarse sample of the frame and the
configured ROI crops), decides the mask as the contrast arrives (core.analysis.mask) and, at the end of the run,
places the automatic ROI (core.analysis.autoroi) and times every curve (core.analysis.tdc). Pure NumPy, no I/O.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from core.analysis.autoroi import (PEAK_WINDOW_S, box_fill_times, box_peak_map, choose_venous_roi, coarse_side,
                                   static_density)
from core.analysis.curve import downsample
from core.analysis.mask import (MAX_MASK_PULSES, VALID_PULSES, MaskChoice, OnsetWatcher, log_lut, sample_stride,
                                valid_pixels)
from core.analysis.tdc import RoiCurve, TdcMetrics, tdc_metrics
from core.vocab import check_roi

MAX_PULSES = 1800           # per run (2 min at 15 p/s): beyond, timing uses the first MAX_PULSES pulses
RING_PULSES = MAX_MASK_PULSES + 4   # full frames kept for the live mask: the mask ends 2 pulses before onset


def _no_contrast(m: TdcMetrics) -> TdcMetrics:
    """``m`` as a curve that is no bolus: peak value and noise kept, no timing."""
    return TdcMetrics(None, None, None, m.peak_value, None, None, "none", m.noise_sd)


class RunTimer:
    """Everything timing needs from one run's pulses: a coarse log sample and full-resolution ROI crops.

    ``add(frame, t_ns, index)`` once per new pulse (repeats and last-image-hold carry nothing new). The
    onset watcher runs as pulses come; ``mask_ready`` turns True on the pulse that confirms the contrast
    rise, and ``mask_frames()`` then returns the full frames to build the live mask from. ``finish()``
    computes the curves and their timing. Per pulse the cost is one coarse copy and the ROI crops.
    """

    def __init__(self, shape: tuple[int, int], dtype, intensity: str,
                 rois: list[tuple[int, int, int, int]] | None = None, keep_frames: bool = True,
                 max_pulses: int = MAX_PULSES) -> None:
        if not isinstance(max_pulses, int) or max_pulses < 3:
            raise ValueError(f"max_pulses must be an integer >= 3, got {max_pulses!r}")
        self.max_pulses = max_pulses
        self.shape = (int(shape[0]), int(shape[1]))
        self.lut = log_lut(dtype, intensity)
        self.stride = sample_stride(self.shape)
        self.rois = [check_roi(r, self.shape) for r in (rois or [])]
        self.keep_frames = keep_frames
        self.t_ns: list[int] = []
        self.index: list[int] = []
        self.coarse: list[np.ndarray] = []
        self.crops: list[list[np.ndarray]] = [[] for _ in self.rois]
        self.ring: list[tuple[int, np.ndarray]] = []
        self.watcher: OnsetWatcher | None = None
        self.valid: np.ndarray | None = None
        self.mask_ready = False
        self.truncated = False
        self._live: list[float] = []           # live curve of the first ROI, once the mask is known
        self._live_roi: tuple[int, int, int, int] | None = None
        self._live_mask = None
        self._just_ready = False

    @property
    def pulses(self) -> int:
        return len(self.t_ns)

    def add(self, frame: np.ndarray, t_ns: int, index: int) -> bool:
        """Record one pulse; returns True when this pulse confirmed the contrast onset (mask now known)."""
        if self.pulses >= self.max_pulses:
            self.truncated = True
            return False
        s = self.stride
        self.t_ns.append(int(t_ns))
        self.index.append(int(index))
        self.coarse.append(np.array(frame[::s, ::s]))
        for crops, (x, y, w, h) in zip(self.crops, self.rois):
            crops.append(np.array(frame[y:y + h, x:x + w]))
        if self.keep_frames and not self.mask_ready:       # the live mask is built once, at the onset
            self.ring.append((self.pulses - 1, np.array(frame)))
            if len(self.ring) > RING_PULSES:
                self.ring.pop(0)
        k = self.pulses - 1
        self._just_ready = False
        if self.watcher is None:
            if self.pulses < VALID_PULSES:
                return False
            self.valid = valid_pixels(np.stack(self.coarse))
            self.watcher = OnsetWatcher(self.valid)
            for j in range(self.pulses):
                self._feed(j)
        else:
            self._feed(k)
        if self._live_mask is not None and not self._just_ready:
            self._live.append(self._live_value(k))
        return self._just_ready

    def _feed(self, k: int) -> None:
        was = self.watcher.onset is not None
        self.watcher.feed(self.lut[self.coarse[k]])
        if not was and self.watcher.onset is not None:
            self.mask_ready = self._just_ready = True
            self._start_live()

    # -- live curve ----------------------------------------------------------------------------------
    def _start_live(self) -> None:
        choice = self.watcher.choice(self.pulses)
        if self.rois:
            self._live_roi = self.rois[0]
            crops = np.stack(self.crops[0][choice.first:choice.last + 1])
            self._live_mask = ("crop", self.lut[crops].mean(axis=0), choice)
        else:
            # Provisional auto ROI around where the contrast rose first; the final one is chosen at the end.
            cy, cx = self.watcher.onset_cell
            side = coarse_side(self.shape, self.stride)
            h, w = self.watcher.shape
            y0 = min(max(0, cy - side // 2), max(0, h - side))
            x0 = min(max(0, cx - side // 2), max(0, w - side))
            box = (slice(y0, y0 + side), slice(x0, x0 + side))
            m = np.stack([self.coarse[j][box] for j in range(choice.first, choice.last + 1)])
            self._live_roi = (x0 * self.stride, y0 * self.stride, side * self.stride, side * self.stride)
            self._live_mask = ("coarse", self.lut[m].mean(axis=0), choice, box)
        g = self.watcher.offsets
        self._g_mask = float(np.mean(g[choice.first:choice.last + 1]))
        self._live = [self._live_value(j) for j in range(self.pulses)]

    def _live_value(self, k: int) -> float:
        kind, mask = self._live_mask[0], self._live_mask[1]
        off = self.watcher.offsets[k] - self._g_mask if k < len(self.watcher.offsets) else 0.0
        if kind == "crop":
            return float((mask - self.lut[self.crops[0][k]]).mean()) + off
        box = self._live_mask[3]
        return float((mask - self.lut[self.coarse[k][box]]).mean()) + off

    def live_curve(self, max_points: int = 200) -> dict | None:
        """The growing curve of the first ROI (provisional auto ROI without one), or None before onset."""
        if self._live_roi is None:
            return None
        n = min(len(self._live), self.pulses)
        t = (np.asarray(self.t_ns[:n]) - self.t_ns[0]) / 1e9
        return {"roi": list(self._live_roi), "auto": not self.rois,
                "curve": downsample(t, np.asarray(self._live[:n]), max_points) if n else []}

    def mask_frames(self) -> tuple[MaskChoice, list[np.ndarray]]:
        """The current mask choice and the full frames of its pulses still in the ring (may be fewer)."""
        choice = self.watcher.choice(self.pulses)
        frames = [f for k, f in self.ring if choice.first <= k <= choice.last]
        return choice, frames

    # -- end of run ----------------------------------------------------------------------------------
    def finish(self, start_ns: int, pulse_rate: float | None, injection_start_ns: int | None = None,
               full_res_crops=None) -> dict:
        """Curves and timing of the run. Times in s from ``start_ns``; ``full_res_crops(roi) -> (P, h, w)``
        (offline) gives the automatic ROI full-resolution crops instead of the coarse sample."""
        P = self.pulses
        if P < 3:
            return {"mask": None, "mask_frames": None, "contrast_rise": False, "rois": [],
                    "truncated": self.truncated}
        if self.watcher is None:
            self.valid = valid_pixels(np.stack(self.coarse))
            self.watcher = OnsetWatcher(self.valid)
            for j in range(P):
                self._feed(j)
        g = np.asarray(self.watcher.offsets)
        choice = self.watcher.final_choice(P, lambda c: self._mean_log(c, g))
        t = (np.asarray(self.t_ns, dtype=np.int64) - start_ns) / 1e9
        offsets = g - g[choice.first:choice.last + 1].mean()          # exposure shift against the mask
        sel = slice(choice.first, choice.last + 1)
        curves: list[RoiCurve] = []
        for roi, crops in zip(self.rois, self.crops):
            y = self._crop_curve(np.stack(crops), sel, offsets)
            curves.append(RoiCurve(roi, False, t, y, tdc_metrics(t, y)))
        if not self.rois:
            auto = self._auto_roi(sel, offsets, pulse_rate, t)
            if auto is not None:
                roi, y, reason = auto
                if full_res_crops is not None:
                    y = self._crop_curve(full_res_crops(roi), sel, offsets)
                curves.append(RoiCurve(roi, True, t, y, tdc_metrics(t, y), reason))
        if choice.onset is None and injection_start_ns is None:
            # Neither a rise the field showed nor an injection: whatever an ROI's curve does (a table move
            # steps it, too) is not a bolus to time. The curve stays for display.
            curves = [replace(c, metrics=_no_contrast(c.metrics)) for c in curves]
        inj = None if injection_start_ns is None else (injection_start_ns - start_ns) / 1e9
        return {"mask": choice.to_dict(), "mask_frames": [self.index[choice.first], self.index[choice.last]],
                "contrast_rise": choice.onset is not None and any(c.metrics.contrast for c in curves),
                "rois": [c.to_dict(inj) for c in curves], "curves": curves, "truncated": self.truncated}

    def _mean_log(self, choice: MaskChoice, g: np.ndarray) -> np.ndarray:
        """Exposure-corrected mean coarse log sample over a mask choice's pulses."""
        ks = range(choice.first, choice.last + 1)
        return np.mean([self.lut[self.coarse[k]] - np.float32(g[k]) for k in ks], axis=0)

    def _crop_curve(self, crops: np.ndarray, sel: slice, offsets: np.ndarray) -> np.ndarray:
        logs = self.lut[crops]
        mask = logs[sel].mean(axis=0)
        return (mask[None] - logs).mean(axis=(1, 2)) + offsets

    def _auto_roi(self, sel: slice, offsets: np.ndarray, pulse_rate: float | None, t: np.ndarray):
        lut, coarse = self.lut, self.coarse
        mask = np.mean([lut[c] for c in coarse[sel]], axis=0)
        window = max(1, int(round(PEAK_WINDOW_S * (pulse_rate or 15.0))))
        side = coarse_side(self.shape, self.stride)
        peak = box_peak_map(lambda k: lut[coarse[k]], self.pulses, mask, offsets, self.valid, side, window)
        fill = box_fill_times(lambda k: lut[coarse[k]], self.pulses, mask, offsets, self.valid, side, window,
                              peak, t)
        chosen = choose_venous_roi(peak, fill, static_density(mask, self.valid, side), self.stride, self.shape)
        if chosen is None:
            return None
        roi, reason = chosen
        s = self.stride
        x, y, w, h = roi
        box = (slice(y // s, (y + h + s - 1) // s), slice(x // s, (x + w + s - 1) // s))
        vals = np.array([(mask[box] - lut[c[box]]).mean() for c in coarse]) + offsets
        return roi, vals, reason
