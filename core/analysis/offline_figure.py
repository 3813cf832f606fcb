"""The figure of an offline analysis: each ROI's time-density curve with its fit and timing marks (PNG bytes)."""
from __future__ import annotations

import io
import textwrap

import numpy as np

from core.analysis.gamma import gamma_variate


def render_curves_png(result: dict, image: np.ndarray | None = None) -> bytes:
    """``analyze_stack``'s result drawn: curves, gamma-variate fits, arrival / peak / washout, injection start;
    with ``image`` (a frame of the run) also the frame with every ROI outlined, the automatic one with its reason."""
    # The object API with the Agg canvas: no pyplot state shared with other threads or callers.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12 if image is not None else 8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    if image is not None:
        ax_img, ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.6]})
        _draw_rois(ax_img, image, result["rois"])
    else:
        ax = fig.subplots()
    for r in result["rois"]:
        curve = np.asarray(r["curve"], dtype=float).reshape(-1, 2)
        label = f"ROI {','.join(map(str, r['roi']))}{' (auto)' if r['auto'] else ''}"
        line, = ax.plot(curve[:, 0], curve[:, 1], ".", ms=3, label=label)
        fit = r.get("fit")
        for key, style in (("arrival_s", ":"), ("peak_s", "--"), ("washout_s", "-.")):
            if r[key] is not None:
                ax.axvline(r[key], color=line.get_color(), ls=style, lw=0.8)
        if fit is not None:
            tt = np.linspace(curve[0, 0], curve[-1, 0], 400)
            ax.plot(tt, gamma_variate(tt, fit["t0_s"], fit["a"], fit["b_s"], fit["K"]), "-",
                    color=line.get_color(), lw=1)
    if result.get("injection_start_s") is not None:
        ax.axvline(result["injection_start_s"], color="k", lw=0.8, label="injection start")
    ax.set_xlabel("time from first frame (s)")
    ax.set_ylabel("mean opacity" + (" (ln units)" if result["intensity"] == "lin" else " (display levels)"))
    ax.set_title(f"{result['source']}: time-density curves (arrival : / peak -- / washout -.)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _draw_rois(ax, image: np.ndarray, rois: list[dict]) -> None:
    from matplotlib.patches import Rectangle

    ax.imshow(image, cmap="gray", interpolation="nearest")
    ax.set_axis_off()
    notes = []
    for k, r in enumerate(rois):
        x, y, w, h = r["roi"]
        color = f"C{k % 10}"
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, ec=color, lw=1.5))
        ax.text(x, y - 2, f"ROI {k + 1}{' (auto)' if r['auto'] else ''}", color=color, fontsize=7, va="bottom")
        if r.get("reason"):
            notes.append(f"ROI {k + 1}: {r['reason']}")
    if notes:
        ax.set_title("\n".join(textwrap.fill(n, 60) for n in notes), fontsize=6)
