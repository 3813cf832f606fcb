"""Digital angiography (DSA) acquisitions of the phantom: seeded venous runs at 0.5-6 exposures/s, fixed or
variable rate, hand-injected (no injector: only the truth knows when the injection started), optionally a
long injection whose curve plateaus. Truth stays analytic (core.sources.phantom.truth).

``dsa_config`` builds the acquisition; ``render_run`` renders it on a video line (what a grabber sees: each
exposure held until the next); ``exposure_stack`` keeps one frame per exposure with its time, as a DICOM
export with a Frame Time Vector (0018,1065) holds it.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from core.sources.phantom.config import PhantomConfig
from core.sources.phantom.truth import PhantomRun


def dsa_config(seed: int, rates: tuple[tuple[float, float], ...] = ((0.0, 2.0),), intensity: str = "lin",
               injection_s: float = 0.0, **overrides) -> PhantomConfig:
    """A venous DSA run: the seed draws the bolus (a venous curve lasting seconds), the injection time and
    the noise; the run lasts until the bolus has washed out of the field."""
    rng = np.random.default_rng([seed, 17])
    a, b = rng.uniform(2.5, 4.0), rng.uniform(0.8, 1.3)
    if injection_s > 0:
        # Near the injection site the bolus has not spread yet: the curve is the injection's own profile.
        a, b = rng.uniform(2.0, 3.0), rng.uniform(0.2, 0.35)
    inject = rng.uniform(0.5, 1.5)
    transit = rng.uniform(0.3, 0.8)
    # Field crossing (~1.7 s) + the bolus to well past its 50% washout + the injection itself.
    xray = inject + transit + 1.7 + (a + 3.5) * b + injection_s
    kw = dict(size=(256, 256), intensity=intensity, seed=seed, fps=30.0, frame_rates=tuple(rates),
              pulse_rate=max(r for _, r in rates), bolus_a=a, bolus_b_s=b, inject_at_s=inject,
              transit_delay_s=transit, xray_s=round(xray * 30.0) / 30.0, injection_s=injection_s,
              i0=800.0, lih_before_s=1.3, lih_after_s=0.5, abc_start=1.0)
    kw.update(overrides)
    return PhantomConfig(**kw)


def exposure_stack(run: PhantomRun) -> tuple[np.ndarray, np.ndarray]:
    """(frames, times_s): one frame per exposure, times from the first exposure (= the run clock)."""
    truth = run.truth
    frames = run.frames[truth.is_new_pulse]
    return np.ascontiguousarray(frames), truth.pulse_times_s - truth.run_start_s


def frame_time_vector_ms(times_s: np.ndarray) -> list[float]:
    """DICOM Frame Time Vector: 0 then the ms from each frame to the next."""
    t = np.asarray(times_s, dtype=float)
    return [0.0] + [round(float(v), 3) for v in np.diff(t) * 1000.0]


def with_rates(cfg: PhantomConfig, rates: tuple[tuple[float, float], ...]) -> PhantomConfig:
    return replace(cfg, frame_rates=tuple(rates), pulse_rate=max(r for _, r in rates))
