"""The technicians' status page: server-rendered HTML (the current values are there before any script runs),
kept live by app.js over /api/stream. Everything it needs is served from here: the room has no internet."""
from __future__ import annotations

import html
import math
from datetime import datetime, timezone
from importlib.resources import files
from string import Template

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from api.routes.deps import ApplianceDep
from api.routes.models import Message, Status

router = APIRouter(tags=["page"])
_PAGE = files("api") / "page"
_ASSETS = {"style.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}
# The room has no internet: the browser itself is told to load nothing from anywhere but here.
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_HEADERS = {"Cache-Control": "no-store", "Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff"}
# The clearance panel before the first result; app.js says the same. The baseline is chosen automatically
# (core.analysis.clearance.tracker.ClearanceTracker): the operator only has to act to choose another one.
CLEARANCE_WAITING = "No clearance yet. Baseline: the first contrast run, unless a run is labelled baseline."
# The sizing panel before the first result; app.js says the same.
VESSEL_WAITING = "No vessel sizing yet: measured on runs labelled completion."
# Without video by configuration (app.js says the same): said plainly, not as an alarm.
NO_VIDEO_NOTE = "no video: runs are not timed; X-ray from the injector's signal"


def _num(value, digits: int = 1) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}f}"


def _mmss(seconds) -> str:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "—"
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def render(status: dict) -> str:
    """The page with ``status`` filled in (every value HTML-escaped)."""
    inj, xray, run, proc = status["injector"], status["xray"], status["run"], status["procedure"]
    totals = dict(proc or {}, **((proc or {}).get("totals") or {}))
    device = inj.get("device") or {}
    runs = status.get("last_runs") or []
    run_rows = "".join(
        f"<tr><td>{html.escape(str(r.get('run_id', '')))}</td><td>{html.escape(str(r.get('label') or ''))}</td>"
        f"<td>{_num(r.get('duration_s'))}</td><td>{_num(r.get('pulse_rate'))}</td>"
        f"<td>{_num(r.get('injection_delay_s'))}</td><td>{_num(r.get('delivered_volume_ml'))}</td>"
        f"<td>{_num(r.get('arrival_s'))}</td><td>{_num(r.get('peak_s'))}</td><td>{_num(r.get('washout_s'))}</td></tr>"
        for r in runs[:5]) or '<tr><td colspan="9">no runs yet</td></tr>'
    alarms = status.get("alarms") or []
    warnings = status.get("warnings") or []
    clearance = status.get("clearance") or {}
    counters = status.get("counters") or {}
    no_video = (status.get("video") or {}).get("enabled") is False
    if no_video:
        run_note = NO_VIDEO_NOTE
    else:
        run_note = "no run in progress" if run is None else f"run {run.get('run_id', run.get('index'))}"
    values = {
        "procedure": "no procedure open" if proc is None else
                     " · ".join(str(v) for v in ("procedure", proc.get("label"), str(proc.get("id", ""))[:8]) if v),
        "clock": datetime.now(timezone.utc).strftime("%H:%M:%S UTC"),
        "alarms_hidden": "" if alarms else "hidden",
        "alarms": "".join(f"<div>⚠ {html.escape(str(a.get('message', '')))}</div>" for a in alarms),
        "warnings_hidden": "" if warnings else "hidden",
        "warnings": "".join(f"<div>{html.escape(str(w))}</div>" for w in warnings),
        "link": inj["link"], "link_text": str(inj["link"]).upper(),
        "state": inj.get("state") or "—",
        "flow": _num(inj.get("flow_ml_s")), "pressure": _num(inj.get("pressure_kpa"), 0),
        "volume": _num(inj.get("volume_ml")),
        "device": " · ".join(str(v) for v in (device.get("model"), device.get("serial_no")) if v)
                  or "no injector identified",
        "xray_class": "on" if xray.get("on") else "off",
        # No video and no X-ray signal from the injector: nobody knows, so the page does not say OFF.
        "xray_text": "X-RAY ON" if xray.get("on") else "—" if no_video and not xray.get("source") else "OFF",
        "xray_source": _xray_source(xray.get("source")), "video_hidden": "" if no_video else "hidden",
        "run_timer": _num(run.get("duration_s")) if run else "—", "pulse_rate": _num(xray.get("pulse_rate")),
        "fluoro": _mmss(totals.get("fluoro_time_s")),
        "run_note": run_note,
        "contrast_ml": _num(totals.get("contrast_ml"), 0), "contrast_limit": _num(totals.get("max_contrast_ml"), 0),
        "contrast_note": "",
        "contrast_split": contrast_split(totals),
        "clearance_pct": f"{_num(clearance.get('clearance_pct'), 0)}%" if clearance else "—",
        "clearance_grade": _clearance_grade(clearance),
        "clearance_note": _clearance_note(clearance) if clearance else CLEARANCE_WAITING,
        "vessel": vessel_text(status.get("vessel")),
        **vessel_numbers(status.get("vessel")),
        "runs": run_rows,
        "tdc_roi": _tdc_roi(run, runs),
        "counters": "no video" if no_video else
                    f"frames {counters.get('frames', '—')} · dropped {counters.get('frames_dropped', '—')}",
    }
    safe = {k: v if k in ("alarms", "warnings", "runs") else html.escape(str(v)) for k, v in values.items()}
    return Template(_PAGE.joinpath("index.html").read_text(encoding="utf-8")).substitute(safe)


def _tdc_roi(run: dict | None, runs: list[dict]) -> str:
    """The live run's ROI while it grows, else the newest run's final one (what app.js shows under the curve)."""
    tdc = (run or {}).get("tdc")
    if tdc:
        return roi_text(tdc.get("roi"), tdc.get("auto"), None, provisional=bool(tdc.get("auto")))
    for r in runs:
        if r.get("roi"):
            return f"run {r.get('run_id')} · " + roi_text(r["roi"], r.get("roi_auto"), r.get("roi_reason"))
    return ""


def _clearance_grade(c: dict) -> str:
    """As app.js words it: progression and not gradable in the grade's place."""
    if c.get("progression") is True:
        return "PROGRESSION"
    if c.get("gradable") is False:
        return "NOT GRADABLE"
    return f"grade {c['grade']}" if c.get("grade") else ""


def _clearance_note(c: dict) -> str:
    parts = []
    if c.get("residual_defects"):
        parts.append(f"residual defects: {len(c['residual_defects'])} (marked on the image)")
    if c.get("warnings"):
        parts.append("not gradable: " + "; ".join(str(w) for w in c["warnings"]))
    return " · ".join(parts)


def vessel_text(v: dict | None) -> str:
    """The latest sizing as app.js words it: millimetres when calibrated, else pixels."""
    if not v:
        return VESSEL_WAITING
    mm = v.get("calibration") is not None and v.get("mm_per_px") is not None

    def size(key: str) -> str:
        return f"{_num(v.get(key + '_mm'))} mm" if mm else f"{_num(v.get(key + '_px'))} px"
    return " · ".join([
        f"run {v.get('run_id')}", f"reference {size('reference_diameter')}", f"MLD {size('mld')}",
        f"stenosis {_num(v.get('diameter_stenosis_pct'), 0)}%", f"lesion {size('lesion_length')}",
        "RESIDUAL STENOSIS ≥ 50%" if v.get("residual_stenosis_ge_50") else "residual stenosis < 50%",
        f"{v['calibration']} calibration {v['mm_per_px']:.3f} mm/px" if mm else "pixels (no calibration)",
        *(str(w) for w in v.get("warnings") or ())])


def vessel_numbers(v: dict | None) -> dict:
    """The big numbers of the sizing panel as app.js shows them (its plot is drawn by app.js)."""
    if not v:
        return {"vessel_pct": "—", "vessel_mld": "", "vessel_flag": ""}
    mm = v.get("calibration") is not None and v.get("mm_per_px") is not None
    mld = f"{_num(v.get('mld_mm'))} mm" if mm else f"{_num(v.get('mld_px'))} px"
    pct = _num(v.get("diameter_stenosis_pct"), 0)
    return {"vessel_pct": f"{pct}%" if pct != "—" else pct, "vessel_mld": f"MLD {mld}",
            "vessel_flag": "RESIDUAL ≥ 50%" if v.get("residual_stenosis_ge_50") else ""}


def _xray_source(source) -> str:
    """As app.js words what decided X-ray on (the injector's signal or the image)."""
    return {"device": "from the injector's signal", "image": "from the image"}.get(source, "")


@router.get("/", response_class=HTMLResponse, summary="Status page")
def index(appliance: ApplianceDep, request: Request) -> HTMLResponse:
    live = dict(appliance.status(), warnings=request.app.state.warnings)
    status = Status.model_validate(live).model_dump(mode="json")
    return HTMLResponse(render(status), headers=_HEADERS)


@router.get("/static/{name}", summary="Status page assets (style.css, app.js)",
            responses={200: {"content": {"text/css": {}, "text/javascript": {}}, "description": "The asset"},
                       404: {"model": Message, "description": "No such asset"}})
def asset(name: str) -> Response:
    if name not in _ASSETS:
        return Response('{"detail":"no such asset"}', status_code=404, media_type="application/json")
    return Response(_PAGE.joinpath(name).read_text(encoding="utf-8"), media_type=_ASSETS[name],
                    headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


def roi_text(roi, auto, reason, provisional: bool = False) -> str:
    """The ROI under the time-density curve, as app.js words it: where it is and, automatic, why there."""
    if not isinstance(roi, (list, tuple)) or len(roi) != 4:
        return ""
    x, y, w, h = roi
    where = f"ROI {x},{y} {w}×{h} px"
    if not auto:
        return f"{where} · configured"
    if provisional:
        return f"{where} · automatic, provisional: where contrast rose first (chosen when the run ends)"
    return f"{where} · automatic: {reason}" if reason else f"{where} · automatic"


def contrast_split(totals: dict) -> str:
    """Injector and hand contrast, and iodine grams, as the page shows them under the total."""
    if not totals:
        return ""
    iodine = totals.get("iodine_g")
    return (f"injector {_num(totals.get('contrast_ml_injector'), 0)} ml · hand {_num(totals.get('contrast_ml_hand'), 0)} ml"
            f" · iodine {'unknown' if iodine is None else _num(iodine, 1) + ' g'}")
