"""The automatic ROI on the venous segment downstream of the injection, not on the catheter or sheath."""
from dataclasses import replace

import numpy as np

from core.analysis.autoroi import choose_venous_roi
from core.analysis.offline import analyze_stack
from core.sources.phantom.dsa import dsa_config, exposure_stack
from core.sources.phantom.features import Device
from core.sources.phantom.render import render_run
from core.sources.stacks import FrameStack


def analyse(cfg):
    run = render_run(cfg)
    frames, times = exposure_stack(run)
    stack = FrameStack(frames, float(1 / np.median(np.diff(times))), cfg.intensity,
                       16 if cfg.intensity == "lin" else 8, times, "phantom")
    return analyze_stack(stack), run.truth


def test_not_on_the_catheter():
    device = Device(end=0.45, outer_diameter_px=8.0, wall_px=1.5, mu_px=0.3)
    for seed in (0, 3):
        result, truth = analyse(dsa_config(seed, rates=((0.0, 3.0),), injection_s=3.0, device=device))
        roi = result["rois"][0]
        x, y, w, h = roi["roi"]
        assert roi["auto"] is True and "catheter" in roi["reason"]
        assert truth.scene.device_path_map()[y:y + h, x:x + w].max() == 0.0
        t = truth.truth_timing(roi["roi"])
        assert abs(roi["peak_s"] - t.peak_s) < 1 / 3.0


def test_auto_roi_plateau_peak_is_stable_across_noise():
    base = dsa_config(6, rates=((0.0, 3.0),), injection_s=4.0)
    peaks = []
    for seed in range(20):
        result, _ = analyse(replace(base, seed=200 + seed))
        roi = result["rois"][0]
        assert roi["auto"] and roi["reason"].startswith("venous segment")
        peaks.append(roi["peak_s"])
    assert max(peaks) - min(peaks) < 1 / 3.0, peaks


def test_choice_leaves_out_device_and_injection_site():
    # Five boxes along a vein: the first fills first (injection site), the second is dense in the mask.
    peak = np.array([[1.0, 1.0, 0.9, 0.85, 0.8]])
    fill = np.array([[0.0, 0.5, 1.0, 1.5, 2.0]])
    density = np.array([[0.0, 0.9, 0.0, 0.0, 0.0]])
    roi, reason = choose_venous_roi(peak, fill, density, 4, (64, 64))
    assert roi[0] == 3 * 4 and "catheter" in reason        # the median fill time of the boxes left
    roi, _ = choose_venous_roi(peak, fill, np.zeros_like(density), 4, (64, 64))
    assert roi[0] in (2 * 4, 3 * 4)
    assert choose_venous_roi(np.full((2, 2), np.nan), np.full((2, 2), np.nan), np.zeros((2, 2)), 4,
                             (64, 64)) is None


def test_plot_draws_the_chosen_roi():
    from core.analysis.offline_figure import render_curves_png

    cfg = dsa_config(1, rates=((0.0, 2.0),), size=(128, 128), diameter_px=10.0)
    result, _ = analyse(cfg)
    frames, _ = exposure_stack(render_run(cfg))
    png = render_curves_png(result, frames[len(frames) // 2])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > len(render_curves_png(result))
