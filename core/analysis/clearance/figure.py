"""The clearance figure: both peak-opacity images side by side with the findings (PNG bytes, matplotlib Agg)."""
from __future__ import annotations

import io

import numpy as np

from core.analysis.clearance.measure import check_peak_image


def render_clearance_png(baseline_peak: np.ndarray, post_peak: np.ndarray, result: dict, *,
                         titles: tuple[str, str] = ("Baseline", "Post")) -> bytes:
    """Both peak-opacity images side by side (contrast dark, as a venogram reads) with the findings.

    Beside the vessel, right of the direction of the centreline: a strip coloured by station burden and the
    defects (red, with their mean burden: the baseline's on the left, the residual ones on the later run); left: the named segments (blue, with their burden). Titles carry
    each run's burden, the banner the clearance, grade and the >= 75% flag: the picture a physician reads.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    base = check_peak_image(baseline_peak, "baseline")
    post = check_peak_image(post_peak, "post")
    h, w = base.shape
    fig = Figure(figsize=(12.5, 6.8), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    fig.subplots_adjust(left=0.01, right=0.9, top=0.88, bottom=0.02, wspace=0.03)
    dx, dy = result.get("shift_px") or (0.0, 0.0)
    stations = result.get("stations") or []
    xy = np.array([[st["x"], st["y"]] for st in stations], dtype=float).reshape(-1, 2)
    frac = np.array([st["frac"] for st in stations], dtype=float)
    normal = _normals(xy)
    off = 0.5 * float(result.get("diameter_px") or 8.0) + max(4.0, 0.01 * max(h, w))
    sc = None
    for k, (ax, img, key, shift) in enumerate(zip(
            axes, (base, post), ("burden_baseline_pct", "burden_post_pct"), ((0.0, 0.0), (dx, dy)))):
        finite = img[np.isfinite(img)]
        lo = float(np.percentile(finite, 5.0)) if finite.size else 0.0
        hi = float(np.percentile(finite, 99.7)) if finite.size else 1.0
        ax.imshow(np.where(np.isfinite(img), img, lo), cmap="gray_r", vmin=lo, vmax=max(hi, lo + 1e-6),
                  interpolation="antialiased")
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_axis_off()
        p = xy + np.asarray(shift)
        if len(p):
            vals = np.array([np.nan if st[key] is None else st[key] for st in stations], dtype=float)
            strip = p + off * normal
            sc = ax.scatter(strip[:, 0], strip[:, 1], c=np.clip(np.nan_to_num(vals, nan=0.0), 0, 100), s=7,
                            cmap="RdYlGn_r", vmin=0, vmax=100, linewidths=0)
            miss = ~np.isfinite(vals)
            ax.scatter(strip[miss, 0], strip[miss, 1], s=7, c="#999999", linewidths=0)
            for d in result.get("defects" if k == 0 else "residual_defects", []):
                _mark_span(ax, p, normal, frac, d["start_frac"], d["end_frac"], off + max(6.0, 0.5 * off),
                           _fmt_pct(d["mean_burden_pct"]), "#d62728", w)
            for seg in result.get("segments", []):
                _mark_span(ax, p, normal, frac, seg["start"], seg["end"], -off,
                           f"{seg['name']} {_fmt_pct(seg.get(key))}", "#1f77b4", w)
        title = f"{titles[k]}: burden {_fmt_pct(result.get(key))}"
        if k == 1:
            title += f"   (moved {dx:+.1f}, {dy:+.1f} px)"
        ax.set_title(title, fontsize=11)
    if sc is not None:
        cax = fig.add_axes([0.915, 0.2, 0.015, 0.55])
        fig.colorbar(sc, cax=cax, label="station burden %")
    clear = result.get("clearance_pct")
    if clear is None:
        why = next((n for n in result.get("notes", []) if "burden" in n), "baseline burden too low")
        head = f"Clearance not measurable: {why}"
        size = 11
    elif result.get("progression"):
        head = f"PROGRESSION: clearance {clear:.1f}% (more thrombus than at baseline), not graded"
        size = 14
    elif result.get("gradable") is False:
        why = (result.get("warnings") or ["doubtful comparison"])[0]
        head = f"Clearance {clear:.1f}%   NOT GRADABLE: {why}"
        size = 11
    else:
        head = (f"Clearance {clear:.1f}%   grade {result.get('grade')}   "
                f">=75% removal: {'yes' if result.get('removal_ge_75') else 'no'}")
        size = 14
    fig.suptitle(head, fontsize=size, fontweight="bold")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _normals(xy: np.ndarray) -> np.ndarray:
    if len(xy) < 2:
        return np.zeros_like(xy)
    t = np.gradient(xy, axis=0)
    t /= np.maximum(np.hypot(t[:, 0], t[:, 1]), 1e-9)[:, None]
    return np.column_stack([-t[:, 1], t[:, 0]])


def _fmt_pct(v) -> str:
    return "n/a" if v is None else f"{v:.0f}%"


def _mark_span(ax, p, normal, frac, a, b, off, text, color, width):
    """A bracket beside the stations with arc fraction in [a, b], ``off`` px along the normal, and its label
    further out on the same side (a few % of the image width, so it stays readable at any size)."""
    sel = (frac >= a) & (frac <= b)
    if sel.sum() < 2:
        return
    q = p[sel] + off * normal[sel]
    ax.plot(q[:, 0], q[:, 1], color=color, lw=2.5, alpha=0.8, solid_capstyle="butt")
    mid = len(q) // 2
    label = q[mid] + np.sign(off) * 0.035 * width * normal[sel][mid]
    ax.annotate(text, xy=q[mid], xytext=label, color=color, fontsize=8, fontweight="bold",
                ha="left" if label[0] >= q[mid][0] else "right", va="center",
                arrowprops=dict(arrowstyle="-", color=color, lw=0.8),
                bbox=dict(boxstyle="round,pad=0.15", fc="white", ec=color, alpha=0.85, lw=0.6))

