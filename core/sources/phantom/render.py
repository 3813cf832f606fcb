"""Rendering the phantom: a scene, iodine and exposure to detector or display frames, and ``render_run``, one
acquisition with every frame and its truth (accuracy tests). The live timeline is core/sources/phantom/video.py.

Physics (docs/domain.md): linear detector I = I0 * e * exp(-(mu_bg(x, y) + mu_iodine * c(s, t) * L(x, y))), with e
the exposure (automatic brightness control), c the iodine concentration at the pixel's centreline station s
and L the contrast-filled path length through the lumen (core/sources/phantom/geometry.py). The detector's PSF
(``psf_px``, a Gaussian) blurs the quanta after their noise, as a scintillator spreads each photon's light.
Linear frames are 12-bit counts proportional to I; display frames are v = offset + gain * ln(I) in 8 bits
(bright = more photons), so without blur ln(mask) - ln(frame) (lin) or (mask - frame) / gain (log) is exactly
mu_iodine * c * L, the model opacity. Conventions: core/sources/phantom/config.py.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from core.sources.phantom.config import PhantomConfig
from core.sources.phantom.overlay import Overlay
from core.sources.phantom.psf import blur
from core.sources.phantom.scene import Scene, TdcModel
from core.sources.phantom.truth import BolusTruth, PhantomRun, RunTruth

LIN_MAX = 4095          # 12-bit detector
LIN_FULL_SCALE = 3600   # DN for i0 quanta at full exposure: headroom for noise and ABC overshoot
LOG_TOP = 235           # display level of i0 quanta (unattenuated, full exposure)


class Renderer:
    """Turns a scene + iodine + exposure into one detector or display frame."""

    def __init__(self, cfg: PhantomConfig) -> None:
        self.cfg = cfg
        self.dtype = np.uint16 if cfg.intensity == "lin" else np.uint8
        self.dn_per_quantum = LIN_FULL_SCALE / cfg.i0
        self.gain = cfg.display_gain
        self.offset = LOG_TOP - cfg.display_gain * math.log(cfg.i0)
        self.overlay = Overlay(cfg) if (cfg.text and cfg.intensity == "log") else None

    def pulse(self, scene: Scene, bolus: BolusTruth, t_s: float, exposure: float,
              rng: np.random.Generator | None) -> np.ndarray:
        cfg = self.cfg
        quanta = scene.base_quanta * np.float32(exposure)
        conc = bolus.concentration(scene.vessel_s, t_s)
        if np.any(conc > 0):
            att = np.exp(-(cfg.mu_iodine * conc * scene.vessel_path)).astype(np.float32)
            quanta[scene.vessel_pos] *= att
        if scene.branch_pos.size:
            conc_b = bolus.concentration(scene.branch_s, t_s)
            if np.any(conc_b > 0):
                quanta[scene.branch_pos] *= np.exp(-(cfg.mu_iodine * conc_b * scene.branch_vals)).astype(np.float32)
        if cfg.noise == "poisson" and rng is not None:
            quanta = rng.poisson(quanta).astype(np.float32)
        elif cfg.noise == "gaussian" and rng is not None:
            quanta += np.sqrt(quanta) * rng.standard_normal(quanta.shape, dtype=np.float32)
        if cfg.psf_px > 0:
            # The scintillator spreads each absorbed photon's light: the quanta and their noise are blurred.
            full = np.zeros(scene.size, dtype=np.float32)
            full.ravel()[scene.active_idx] = quanta
            quanta = blur(full, cfg.psf_px).ravel()[scene.active_idx]
        if cfg.electronic_sd > 0 and cfg.noise != "none" and rng is not None:
            quanta += np.float32(cfg.electronic_sd) * rng.standard_normal(quanta.shape, dtype=np.float32)
        if cfg.intensity == "lin":
            vals = np.clip(np.rint(quanta * np.float32(self.dn_per_quantum)), 0, LIN_MAX)
        else:
            # One quantum floor: the log of an empty pixel is the darkest level, not -inf.
            vals = np.clip(np.rint(self.offset + self.gain * np.log(np.maximum(quanta, 1.0))), 0, 255)
        frame = np.zeros(scene.size[0] * scene.size[1], dtype=self.dtype)
        frame[scene.active_idx] = vals.astype(self.dtype)
        frame = frame.reshape(scene.size)
        if self.overlay is not None:
            self.overlay.draw(frame)
        return frame

    def blank(self) -> np.ndarray:
        frame = np.zeros(self.cfg.size, dtype=self.dtype)
        if self.overlay is not None:
            self.overlay.draw(frame)
        return frame



def abc_exposure(cfg: PhantomConfig, k: np.ndarray | int) -> np.ndarray:
    """Exposure of pulse k of a run: automatic brightness control settling toward 1."""
    return 1.0 - (1.0 - cfg.abc_start) * np.exp(-np.asarray(k, dtype=float) / cfg.abc_tau_pulses)


def bolus_truth(cfg: PhantomConfig, inject_start_s: float | None, volume_ml: float,
                residual_from_s: float) -> BolusTruth:
    # contrast_scale: this run's iodine strength (1.0 leaves the legacy numbers exactly as they were)
    peak = (cfg.bolus_peak * volume_ml / cfg.reference_volume_ml * cfg.contrast_scale
            if inject_start_s is not None else 0.0)
    a, b = cfg.bolus_a, cfg.bolus_b_s
    K = peak / ((a * b) ** a * math.exp(-a)) if peak > 0 else 0.0   # gamma variate maximum is at tau = a b
    t0 = (inject_start_s if inject_start_s is not None else 0.0) + cfg.transit_delay_s
    bolus = BolusTruth(inject_start_s, t0, a, b, K, cfg.speed_px_s, peak, cfg.transit_delay_s,
                       cfg.residual_contrast * cfg.contrast_scale, residual_from_s, cfg.residual_washout_s)
    if cfg.injection_s > 0 and peak > 0:
        # The spread bolus's maximum, found on a fine grid, is scaled to the same peak concentration.
        grid = np.arange(0.0, cfg.injection_s + (a + 10.0) * b, 1e-3)
        unit = replace(bolus, K=1.0, t0_s=0.0, residual=0.0, injection_s=cfg.injection_s)
        bolus = replace(unit, t0_s=t0, residual=bolus.residual,
                        K=peak / float(unit.concentration(np.zeros(1), grid).max()))
    return bolus


def _pulse_of_frames(n_frames: int, fps: float, pulse_rate: float) -> np.ndarray:
    """Pulse shown by each of ``n_frames`` frames starting at a pulse: the latest pulse not after the frame."""
    j = np.arange(n_frames)
    # The small epsilon keeps exact ratios (15 p/s on 30 fps) from flooring one pulse short.
    return np.floor(j * pulse_rate / fps + 1e-9).astype(int)


def render_run(config: PhantomConfig) -> PhantomRun:
    """One acquisition: LIH before, the exposure (pulses repeated on the video line), LIH after, and its truth."""
    cfg = config
    rng = np.random.default_rng(cfg.seed)
    scene = Scene(cfg, cfg.shift_px, cfg.thrombus_fraction)   # the first pulse's: truth maps and ROIs use it
    renderer = Renderer(cfg)

    n_before = int(round(cfg.lih_before_s * cfg.fps))
    n_xray = max(1, int(round(cfg.xray_s * cfg.fps)))
    n_after = int(round(cfg.lih_after_s * cfg.fps))
    T = n_before + n_xray + n_after
    t_on = n_before / cfg.fps                 # the first pulse lands on a video frame
    t_off = (n_before + n_xray) / cfg.fps
    frame_pulse = np.full(T, -1, dtype=int)
    if cfg.frame_rates:
        # A DSA program: exposures at its (variable) rates, each shown until the next.
        offsets = np.asarray(cfg.pulse_offsets_s())
        starts = np.round(offsets * cfg.fps).astype(int)
        frame_pulse[n_before:n_before + n_xray] = np.searchsorted(starts, np.arange(n_xray), side="right") - 1
    else:
        frame_pulse[n_before:n_before + n_xray] = _pulse_of_frames(n_xray, cfg.fps, cfg.pulse_rate)
    n_pulses = int(frame_pulse[n_before + n_xray - 1]) + 1
    frame_pulse[n_before + n_xray:] = n_pulses - 1
    if cfg.frame_rates:
        pulse_times = t_on + offsets[:n_pulses]
    else:
        pulse_times = t_on + np.arange(n_pulses) / cfg.pulse_rate
    exposure = abc_exposure(cfg, np.arange(n_pulses))
    pulse_shift = np.asarray(cfg.shift_px, dtype=float) + np.outer(pulse_times - t_on, cfg.drift_px_s)
    scenes = {(float(pulse_shift[0, 0]), float(pulse_shift[0, 1])): scene}
    inject = None if cfg.inject_at_s is None else t_on + cfg.inject_at_s
    bolus = bolus_truth(cfg, inject, cfg.volume_ml, t_on)

    frames = np.empty((T,) + cfg.size, dtype=renderer.dtype)
    if n_before:
        # An earlier fluoroscopy pulse held on screen: contrast-free, steady exposure, its own noise.
        held = renderer.pulse(scene, replace(bolus, K=0.0, residual=0.0), 0.0, 1.0, rng)
        frames[:n_before] = held
    is_new = np.zeros(T, dtype=bool)
    j = n_before
    for k in range(n_pulses):
        n_rep = int(np.count_nonzero(frame_pulse[n_before:n_before + n_xray] == k))
        key = (float(pulse_shift[k, 0]), float(pulse_shift[k, 1]))
        if key not in scenes:
            scenes = {key: Scene(cfg, key, cfg.thrombus_fraction)}   # moving patient: one scene per pulse
        frames[j:j + n_rep] = renderer.pulse(scenes[key], bolus, pulse_times[k], float(exposure[k]), rng)
        is_new[j] = True
        j += n_rep
    if n_after:
        frames[j:] = frames[j - 1]

    counter_box, counter_values = None, None
    if renderer.overlay is not None and renderer.overlay.counter_box is not None:
        counter_box = renderer.overlay.counter_box
        elapsed = np.clip(np.arange(T) / cfg.fps - t_on, 0.0, t_off - t_on)
        counter_values = np.floor(elapsed + 1e-9).astype(int)
        for i in range(T):
            renderer.overlay.draw_counter(frames[i], int(counter_values[i]))

    xray_on = np.zeros(T, dtype=bool)
    xray_on[n_before:n_before + n_xray] = True
    truth = RunTruth(
        intensity=cfg.intensity, fps=cfg.fps,
        pulse_rate=cfg.frame_rates[0][1] if cfg.frame_rates else cfg.pulse_rate,
        frame_times_s=np.arange(T) / cfg.fps, frame_pulse=frame_pulse, is_new_pulse=is_new, xray_on=xray_on,
        xray_on_frame=n_before, xray_off_frame=n_before + n_xray, run_start_s=t_on, run_end_s=t_off,
        pulse_times_s=pulse_times, pulse_shift_px=pulse_shift, exposure=exposure, inject_start_s=inject,
        bolus=bolus, scene=scene.truth,
        text_boxes=renderer.overlay.all_boxes if renderer.overlay else (), counter_box=counter_box,
        counter_values=counter_values, mu_iodine=cfg.mu_iodine, i0=cfg.i0,
        display_offset=renderer.offset if cfg.intensity == "log" else None,
        display_gain=renderer.gain if cfg.intensity == "log" else None,
        dn_per_quantum=renderer.dn_per_quantum if cfg.intensity == "lin" else None,
        _model=TdcModel(scene, bolus, t_on, t_off, cfg.mu_iodine))
    return PhantomRun(frames, cfg.fps, truth)
