"""The sizing figure (PNG bytes, matplotlib Agg): the vessel with its edges and the lesion, and the diameter
profile along it against the reference: the picture a physician looks at."""
from __future__ import annotations

import numpy as np

from core.analysis.sizing import LESION_FRACTION, Sizing


def render_sizing_png(peak: np.ndarray, sizing: Sizing) -> bytes:
    """Left: the peak-opacity image (contrast dark, as a venogram reads) with the lumen edges along the
    centreline, the lesion's stretch in red and the narrowest point marked. Right: diameter against arc
    length, the reference, its 80% line and the lesion. Title: the numbers."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    img = np.asarray(peak, dtype=np.float32)
    r = sizing.to_json()
    st = sizing.stations
    mm = sizing.mm_per_px
    fig = Figure(figsize=(12.0, 6.0), dpi=100)
    FigureCanvasAgg(fig)
    ax, pl = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.0, 1.2]})
    fig.subplots_adjust(left=0.02, right=0.97, top=0.86, bottom=0.1, wspace=0.12)
    finite = img[np.isfinite(img)]
    lo = float(np.percentile(finite, 5.0)) if finite.size else 0.0
    hi = float(np.percentile(finite, 99.7)) if finite.size else 1.0
    ax.imshow(np.nan_to_num(img, nan=lo), cmap="gray_r", vmin=lo, vmax=max(hi, lo + 1e-6),
              interpolation="nearest")
    ax.set_axis_off()
    centre = np.nan_to_num(sizing.lumen.centre)
    half = sizing.diameter / 2.0
    for sign in (-1.0, 1.0):
        e = st.xy + ((centre + sign * half)[:, None]) * st.normal
        ax.plot(e[:, 0], e[:, 1], color="#00a0ff", lw=0.9)
    ax.plot(st.xy[:, 0], st.xy[:, 1], color="#ffd000", lw=0.6, ls="--")
    s = st.s
    in_lesion = np.zeros(len(s), dtype=bool)
    if sizing.lesion_span is not None:
        a, b = sizing.lesion_span
        in_lesion = (s >= a) & (s <= b)
        for sign in (-1.0, 1.0):
            e = st.xy + ((centre + sign * half)[:, None]) * st.normal
            ax.plot(e[in_lesion, 0], e[in_lesion, 1], color="red", lw=1.8)
    k = sizing.lesion
    ax.plot([st.xy[k, 0]], [st.xy[k, 1]], marker="o", ms=9, mfc="none", mec="red", mew=1.8)
    ax.annotate(f"MLD {r['mld_px']:.1f} px" + (f" / {r['mld_mm']:.1f} mm" if r["mld_mm"] is not None else ""),
                (st.xy[k, 0], st.xy[k, 1]), xytext=(12, 12), textcoords="offset points", color="red", fontsize=9)

    unit, f = ("mm", mm) if mm else ("px", 1.0)
    pl.plot(s * f, sizing.diameter * f, color="#0060c0", lw=1.3, label="diameter")
    pl.plot(s * f, sizing.reference * f, color="black", lw=1.2, label="reference")
    pl.plot(s * f, LESION_FRACTION * sizing.reference * f, color="gray", lw=0.8, ls=":",
            label=f"{LESION_FRACTION:.0%} of reference")
    if in_lesion.any():
        pl.axvspan(s[in_lesion][0] * f, s[in_lesion][-1] * f, color="red", alpha=0.15, label="lesion")
    pl.plot([s[k] * f], [sizing.diameter[k] * f], marker="o", color="red")
    pl.set_xlabel(f"arc length from the centreline's first point ({unit})")
    pl.set_ylabel(f"lumen diameter ({unit})")
    pl.set_ylim(bottom=0)
    pl.grid(alpha=0.3)
    pl.legend(loc="lower right", fontsize=8)
    cal = r["calibration"] or "none (pixels only)"
    title = (f"Diameter stenosis {r['diameter_stenosis_pct']:.0f}%  (area {r['area_stenosis_pct']:.0f}%)   "
             f"MLD {r['mld_px']:.1f} px, reference {r['reference_diameter_px']:.1f} px, "
             f"lesion {r['lesion_length_px']:.0f} px")
    if mm:
        title += (f"\nMLD {r['mld_mm']:.1f} mm, reference {r['reference_diameter_mm']:.1f} mm, "
                  f"lesion {r['lesion_length_mm']:.1f} mm")
    title += f"   calibration: {cal}"
    if r["residual_stenosis_ge_50"]:
        title += "   residual stenosis >= 50%"
    fig.suptitle(title, fontsize=10, color="darkred" if r["residual_stenosis_ge_50"] else "black")
    if r["warnings"]:
        fig.text(0.02, 0.02, "; ".join(r["warnings"])[:220], fontsize=7, color="darkred")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
