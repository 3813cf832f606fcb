"""The figure of an offline analysis: each ROI's time-density curve with its fit and timing marks (PNG bytes)."""
from __future__ import annotations

import io

import numpy as np

from core.analysis.tdc import gamma_variate


def render_curves_png(result: dict) -> bytes:
    """``analyze_stack``'s result drawn: curves, gamma-variate fits, arrival / peak / washout, injection start."""
    # The object API with the Agg canvas: no pyplot state shared with other threads or callers.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
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
