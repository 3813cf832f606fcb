// Live status page: one EventSource on /api/stream, no reloads, no external resources.
// STALE covers the page when no message arrived for STALE_MS (the server sends status at least every 0.4 s),
// whether the server is gone, hung, or the network is; a stream silent for much longer is reopened.
"use strict";
const STALE_MS = 2500;
const REOPEN_MS = 8000;
const MAX_RUN_ROWS = 5;  // what fits a 1080p screen with everything else
// Before the first clearance result (as api/routes/page.py renders it): the baseline is chosen automatically.
const CLEARANCE_WAITING = "No clearance yet. Baseline: the first contrast run, unless a run is labelled baseline.";
const VESSEL_WAITING = "No vessel sizing yet: measured on runs labelled completion.";
// Without video by configuration (as api/routes/page.py renders it): said plainly, not as an alarm.
const NO_VIDEO_NOTE = "no video: runs are not timed; X-ray from the injector's signal";
let lastMessage = 0;
let source = null;
let lastClearanceKey = null;
let curve = { runKey: null, points: [], live: false, finalId: null, finalDrawn: false, roi: "" };
const recorded = new Map();   // run_id -> its newest record from the stream (keepRecord)

const $ = (id) => document.getElementById(id);
const num = (v) => typeof v === "number" && Number.isFinite(v);
const fmt = (v, digits = 1) => (num(v) ? v.toFixed(digits) : "—");
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const mmss = (s) => (num(s) ? `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, "0")}` : "—");
const setText = (id, text) => { const el = $(id); if (el.textContent !== text) el.textContent = text; };

// Procedure totals may sit on the procedure itself or under "totals".
function totals(proc) { return proc ? Object.assign({}, proc, proc.totals || {}) : {}; }

function renderInjector(inj) {
  setText("link", String(inj.link).toUpperCase());
  $("link").className = "badge " + inj.link;
  setText("inj-state", inj.state ?? "—");
  $("inj-state").className = "state " + (inj.state || "");
  setText("flow", fmt(inj.flow_ml_s));
  setText("pressure", fmt(inj.pressure_kpa, 0));
  setText("volume", fmt(inj.volume_ml));
  const d = inj.device;
  setText("device", d ? [d.model, d.serial_no && `s/n ${d.serial_no}`, d.fw_version && `fw ${d.fw_version}`]
    .filter(Boolean).join(" · ") : "no injector identified");
}

function renderXray(s, t) {
  const noVideo = !!s.video && s.video.enabled === false;
  // No video and no X-ray signal from the injector: nobody knows, so the page does not say OFF.
  setText("xray", s.xray.on ? "X-RAY ON" : noVideo && !s.xray.source ? "—" : "OFF");
  $("xray").className = "xray " + (s.xray.on ? "on" : "off");
  setText("xray-source", s.xray.source ? `from the ${s.xray.source === "device" ? "injector's signal" : "image"}` : "");
  setText("run-timer", s.run ? fmt(s.run.duration_s) : "—");
  setText("pulse-rate", fmt(s.xray.pulse_rate));
  setText("fluoro", mmss(t.fluoro_time_s));
  $("video").hidden = !noVideo;
  setText("run-note", noVideo ? NO_VIDEO_NOTE : runNote(s.run));
}

function runNote(run) {
  if (!run) return "no run in progress";
  const parts = [`run ${run.run_id ?? run.index}`, run.contrast ? "contrast run" : "fluoroscopy"];
  if (num(run.injection_delay_s)) parts.push(`injection ${run.injection_delay_s >= 0 ? "+" : ""}${fmt(run.injection_delay_s)} s after X-ray on`);
  return parts.join(" · ");
}

function renderProcedure(proc, t) {
  if (!proc) { setText("procedure", "no procedure open"); return; }
  const started = proc.started_wall ? new Date(proc.started_wall).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : "";
  setText("procedure", `procedure ${proc.label ? proc.label + " · " : ""}${proc.id.slice(0, 8)}` +
    (started ? ` · since ${started}` : "") + (num(t.runs) ? ` · ${t.runs} run${t.runs === 1 ? "" : "s"}` : ""));
}

function renderContrast(t) {
  setText("contrast-ml", fmt(t.contrast_ml, 0));
  setText("contrast-split", `injector ${fmt(t.contrast_ml_injector, 0)} ml · hand ${fmt(t.contrast_ml_hand, 0)} ml` +
    ` · iodine ${num(t.iodine_g) ? fmt(t.iodine_g, 1) + " g" : "unknown"}`);
  setText("contrast-limit", fmt(t.max_contrast_ml, 0));
  const pct = num(t.contrast_pct) ? t.contrast_pct : null;
  const bar = $("contrast-bar");
  bar.style.width = `${Math.min(100, pct ?? 0)}%`;
  bar.className = "fill" + (pct === null ? "" : pct >= 100 ? " over" : pct >= 80 ? " warn" : "");
  setText("contrast-note", pct === null
    ? "limit unknown: set weight and creatinine (5 ml × kg / creatinine, max 300 ml)"
    : `${fmt(pct, 0)}% of the maximum allowable contrast` +
      (num(t.weight_kg) ? ` · ${fmt(t.weight_kg, 0)} kg, creatinine ${fmt(t.creatinine_mg_dl, 2)} mg/dl` : ""));
}

// A curve is a list of [t, value] pairs. The live run carries its first ROI's growing curve as
// tdc = {roi, auto, curve}; a finished run's rois[] each carry theirs.
function curvesOf(run) {
  if (!run) return [];
  if (run.tdc && Array.isArray(run.tdc.curve)) return [run.tdc.curve];
  if (Array.isArray(run.rois)) return run.rois.map((r) => r && (r.curve || r.tdc)).filter(Array.isArray);
  return [];
}

const COLOURS = ["#5dade2", "#f5b041", "#af7ac5", "#58d68d"];
// The ROI under the curve, as api/routes/page.py words it (roi_text): where it is and, automatic, why there.
function roiText(roi, auto, reason, provisional = false) {
  if (!Array.isArray(roi) || roi.length !== 4) return "";
  const [x, y, w, h] = roi;
  const where = `ROI ${x},${y} ${w}×${h} px`;
  if (!auto) return `${where} · configured`;
  if (provisional) return `${where} · automatic, provisional: where contrast rose first (chosen when the run ends)`;
  return reason ? `${where} · automatic: ${reason}` : `${where} · automatic`;
}

function renderCurve(s) {
  // The last run that had a curve stays on screen (a fluoroscopy-only run has none) until another one has.
  const run = s.run;
  const curves = curvesOf(run).filter((c) => c.length > 0);
  if (run && curves.length) {
    const tdc = run.tdc || {};
    curve = { runKey: run.run_id ?? run.index, points: curves, live: true, finalId: null, finalDrawn: false,
              roi: roiText(tdc.roi, tdc.auto, null, !!tdc.auto) };
  } else if (curve.live && (!run || (run.run_id ?? run.index) !== curve.runKey)) curve.live = false;
  if (!curve.live) showFinal(s.last_runs || []);
  drawCurve();
}

// An ended run's own record holds its final curves and ROI (the live curve was of a provisional automatic
// ROI): taken from the stream's run event once the record is committed. A page opened later shows the
// newest contrast run's, read from the API.
function showFinal(runs) {
  const key = curve.runKey;
  const brief = key === null ? runs.find((r) => r.roi && r.contrast)
    : runs.find((r) => r.roi && (r.run_id === key || String(r.run_id).endsWith(`-${key}`)));
  if (!brief) return;
  if (curve.finalId !== brief.run_id) {
    curve.finalId = brief.run_id;
    curve.finalDrawn = false;
    curve.roi = `run ${brief.run_id} · ${roiText(brief.roi, brief.roi_auto, brief.roi_reason)}`;
    if (key === null) {
      fetch(`/api/runs/${encodeURIComponent(brief.run_id)}`).then((r) => (r.ok ? r.json() : null))
        .then((rec) => { if (rec) keepRecord(rec); }).catch(() => {});
    }
  }
  const rec = recorded.get(brief.run_id);
  if (rec && !curve.finalDrawn && !curve.live) {
    const points = (rec.rois || []).map((r) => r && r.curve).filter((c) => Array.isArray(c) && c.length);
    if (points.length) { curve.points = points; curve.runKey = brief.run_id; }
    curve.finalDrawn = true;
  }
}

// Run records as the stream commits them (the newest few), for the curve panel.
function keepRecord(rec) {
  if (!rec || !rec.run_id) return;
  recorded.set(rec.run_id, rec);
  while (recorded.size > 8) recorded.delete(recorded.keys().next().value);
}

function onEvent(text) {
  let ev;
  try { ev = JSON.parse(text); } catch (e) { return; }
  if (ev && ev.kind === "run") keepRecord(ev.data);
}

function drawCurve() {
  setText("tdc-title", curve.runKey === null ? "no contrast run yet"
    : `run ${curve.runKey}${curve.live ? " · live" : " · ended"}`);
  setText("tdc-roi", curve.roi || "");
  let tMax = 10, yMax = 0;
  for (const c of curve.points) for (const [t, y] of c) { if (t > tMax) tMax = t; if (y > yMax) yMax = y; }
  yMax = yMax > 0 ? yMax * 1.1 : 1;
  const W = 800, H = 170, x = (t) => (t / tMax) * W, y = (v) => H - (Math.max(0, v) / yMax) * (H - 10);
  let grid = "";
  const step = tMax > 30 ? 10 : tMax > 12 ? 5 : 2;
  for (let t = step; t < tMax; t += step) {
    grid += `<line class="grid" x1="${x(t)}" x2="${x(t)}" y1="0" y2="${H}"/><text class="axis-label" x="${x(t) + 4}" y="${H - 6}">${t}s</text>`;
  }
  $("tdc-grid").innerHTML = grid;
  $("tdc-lines").innerHTML = curve.points.map((c, i) =>
    `<polyline stroke="${COLOURS[i % COLOURS.length]}" points="${c.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ")}"/>`).join("");
}

function renderClearance(c) {
  if (!c) {
    setText("clearance-pct", "—"); setText("clearance-grade", "");
    $("clearance-grade").className = "grade"; $("clearance-img").hidden = true;
    setText("clearance-note", CLEARANCE_WAITING);
    return;
  }
  const pct = c.clearance_pct ?? c.pct;
  setText("clearance-pct", num(pct) ? `${pct.toFixed(0)}%` : "—");
  const grade = c.grade ?? c.lysis_grade ?? "";
  // Progression and not gradable say so in the grade's place (as api/routes/page.py words them).
  const flag = c.progression === true ? "PROGRESSION" : c.gradable === false ? "NOT GRADABLE" : "";
  setText("clearance-grade", flag || (grade ? `grade ${grade}` : ""));
  const g = String(grade).toUpperCase();
  $("clearance-grade").className = "grade " + (c.progression === true ? "g1" : c.gradable === false ? "ng"
    : g === "III" || g === "3" ? "g3" : g === "II" || g === "2" ? "g2" : g ? "g1" : "");
  const burden = num(c.burden_baseline_pct) && num(c.burden_post_pct)
    ? `thrombus burden ${fmt(c.burden_baseline_pct, 0)}% → ${fmt(c.burden_post_pct, 0)}%` : "";
  const removal = c.removal_ge_75 === true ? "≥ 75% removed" : c.removal_ge_75 === false ? "< 75% removed" : "";
  const defects = Array.isArray(c.residual_defects) && c.residual_defects.length
    ? `residual defects: ${c.residual_defects.length} (marked on the image)` : "";
  const why = Array.isArray(c.warnings) && c.warnings.length ? `not gradable: ${c.warnings.join("; ")}` : "";
  setText("clearance-note", [c.baseline_run_id && `baseline ${c.baseline_run_id}`, c.run_id && `${c.label || "post"} ${c.run_id}`,
    burden, removal, defects, why].filter(Boolean).join(" · "));
  const key = JSON.stringify([c.baseline_run_id, c.run_id, pct, c.grade, c.gradable, c.burden_post_pct]);
  if (key !== lastClearanceKey) {
    lastClearanceKey = key;
    const img = $("clearance-img");
    img.onload = () => { img.hidden = false; };
    img.onerror = () => { img.hidden = true; };
    img.src = `/api/clearance/latest.png?v=${encodeURIComponent(key)}`;
  }
}

// The latest vessel sizing, worded as api/routes/page.py words it: millimetres when calibrated, else pixels.
function renderVessel(v) {
  const flag = $("vessel-flag");
  if (!v) {
    setText("vessel", VESSEL_WAITING); setText("vessel-pct", "—"); setText("vessel-mld", "");
    setText("vessel-flag", ""); flag.className = "grade"; renderVesselPlot(null);
    return;
  }
  const mm = v.calibration != null && num(v.mm_per_px);
  const size = (k) => mm ? `${fmt(v[k + "_mm"])} mm` : `${fmt(v[k + "_px"])} px`;
  setText("vessel-pct", num(v.diameter_stenosis_pct) ? `${v.diameter_stenosis_pct.toFixed(0)}%` : "—");
  setText("vessel-mld", `MLD ${size("mld")}`);
  setText("vessel-flag", v.residual_stenosis_ge_50 ? "RESIDUAL ≥ 50%" : "");
  flag.className = "grade" + (v.residual_stenosis_ge_50 ? " stent" : "");
  const warnings = Array.isArray(v.warnings) ? v.warnings : [];
  setText("vessel", [`run ${v.run_id}`, `reference ${size("reference_diameter")}`, `MLD ${size("mld")}`,
    `stenosis ${fmt(v.diameter_stenosis_pct, 0)}%`, `lesion ${size("lesion_length")}`,
    v.residual_stenosis_ge_50 ? "RESIDUAL STENOSIS ≥ 50%" : "residual stenosis < 50%",
    mm ? `${v.calibration} calibration ${v.mm_per_px.toFixed(3)} mm/px` : "pixels (no calibration)",
    ...warnings].join(" · "));
  renderVesselPlot(v.plot);
}

// Diameter and reference along the vessel (core/analysis/sizing_plot.py thins them), the lesion's stretch
// shaded and its narrowest point marked: what the operator reads from across the room.
let lastPlotKey = null;
function renderVesselPlot(p) {
  const ok = p && Array.isArray(p.s) && p.s.length > 1;
  // An <svg> has no .hidden property (HTMLElement only): the attribute itself.
  $("vessel-plot").toggleAttribute("hidden", !ok); $("vessel-legend").hidden = !ok;
  const key = ok ? JSON.stringify([p.s.length, p.s[0], p.s[p.s.length - 1], p.lesion_s, p.diameter[0], p.unit]) : null;
  if (key === lastPlotKey) return;
  lastPlotKey = key;
  if (!ok) { $("vessel-grid").innerHTML = ""; $("vessel-lines").innerHTML = ""; return; }
  const W = 600, H = 180, top = 10, bottom = 26;
  const s0 = p.s[0], s1 = p.s[p.s.length - 1];
  const yMax = Math.max(...p.reference, ...p.diameter) * 1.1 || 1;
  const x = (s) => ((s - s0) / (s1 - s0 || 1)) * W;
  const y = (d) => H - bottom - (Math.max(0, d) / yMax) * (H - top - bottom);
  const line = (vals, cls) => `<polyline class="${cls}" points="${p.s.map((s, i) =>
    `${x(s).toFixed(1)},${y(vals[i]).toFixed(1)}`).join(" ")}"/>`;
  const yStep = [0.5, 1, 2, 5, 10, 20, 50].find((st) => yMax / st <= 5) || 100;
  let grid = "";
  for (let d = yStep; d < yMax; d += yStep) {
    grid += `<line class="grid" x1="0" x2="${W}" y1="${y(d)}" y2="${y(d)}"/>` +
      `<text class="axis-label" x="4" y="${y(d) - 3}">${d} ${p.unit}</text>`;
  }
  grid += `<text class="axis-label" x="${W - 4}" y="${H - 6}" text-anchor="end">${fmt(s1 - s0, 0)} ${p.unit} along the vessel</text>`;
  $("vessel-grid").innerHTML = grid;
  let lesion = "";
  if (num(p.lesion_from_s) && num(p.lesion_to_s)) {
    lesion = `<rect class="lesion" x="${x(p.lesion_from_s)}" y="${top}" width="${Math.max(3, x(p.lesion_to_s) - x(p.lesion_from_s))}" height="${H - top - bottom}"/>`;
  }
  const k = p.s.indexOf(p.lesion_s);
  const mld = k >= 0 ? `<line class="mld" x1="${x(p.lesion_s)}" x2="${x(p.lesion_s)}" y1="${y(p.diameter[k])}" y2="${y(p.reference[k])}"/>` +
    `<text class="mld-label" x="${Math.min(W - 60, x(p.lesion_s) + 6)}" y="${y(p.diameter[k]) + 20}">MLD</text>` : "";
  $("vessel-lines").innerHTML = lesion + line(p.reference.map((r) => 0.8 * r), "eighty") +
    line(p.reference, "reference") + line(p.diameter, "diameter") + mld;
}

function renderRuns(runs) {
  const rows = runs.slice(0, MAX_RUN_ROWS).map((r) => `<tr><td>${esc(r.run_id ?? r.index)}</td><td>${esc(r.label ?? (r.contrast ? "contrast" : ""))}</td>` +
    `<td>${fmt(r.duration_s)}</td><td>${fmt(r.pulse_rate)}</td><td>${fmt(r.injection_delay_s)}</td>` +
    `<td>${fmt(r.delivered_volume_ml)}</td><td>${fmt(r.arrival_s)}</td><td>${fmt(r.peak_s)}</td><td>${fmt(r.washout_s)}</td></tr>`);
  const html = rows.length ? rows.join("") : '<tr><td colspan="9">no runs yet</td></tr>';
  if ($("runs").innerHTML !== html) $("runs").innerHTML = html;
}

function renderAlarms(alarms) {
  const box = $("alarms");
  box.hidden = alarms.length === 0;
  const html = alarms.map((a) => `<div>⚠ ${esc(a.message)}</div>`).join("");
  if (box.innerHTML !== html) box.innerHTML = html;
}

function renderWarnings(warnings) {
  const box = $("warnings");
  box.hidden = warnings.length === 0;
  const html = warnings.map((w) => `<div>${esc(w)}</div>`).join("");
  if (box.innerHTML !== html) box.innerHTML = html;
}

function renderCounters(s) {
  const c = s.counters, serial = c.serial || {}, log = c.eventlog || {};
  const packets = Object.values(serial.packets_by_type || {}).reduce((a, b) => a + b, 0);
  const video = s.video && s.video.enabled === false ? "no video · "
    : `frames ${c.frames} · dropped ${c.frames_dropped} · pulses ${c.pulses} · `;
  setText("counters", video +
    `serial packets ${packets} · crc errors ${serial.crc_errors ?? "—"} · ` +
    `protocol violations ${serial.protocol_violations ?? "—"} · events ${log.committed ?? "—"}` +
    (num(log.commit_latency_p99_ms) ? ` (commit p99 ${fmt(log.commit_latency_p99_ms)} ms)` : "") +
    fleetText(s.fleet) + ` · up ${mmss(s.uptime_s)}`);
}

// The fleet link: up or why not, the backlog still to forward, the last id the broker acknowledged.
function fleetText(f) {
  if (!f || !f.enabled) return "";
  const problem = f.link !== "up" && f.problem ? ` (${f.problem})` : "";
  return ` · fleet ${f.link}${problem} · backlog ${f.backlog ?? "—"} · forwarded to #${f.last_forwarded_id ?? "—"}`;
}

function render(s) {
  const t = totals(s.procedure);
  renderInjector(s.injector);
  renderXray(s, t);
  renderProcedure(s.procedure, t);
  renderContrast(t);
  renderCurve(s);
  renderClearance(s.clearance);
  renderVessel(s.vessel);
  renderRuns(s.last_runs || []);
  renderAlarms(s.alarms || []);
  renderWarnings(s.warnings || []);
  renderCounters(s);
}

function alive() {
  lastMessage = Date.now();
  setText("conn", "LIVE");
  $("conn").className = "badge live";
  $("stale").hidden = true;
}

function connect() {
  if (source) source.close();
  source = new EventSource("/api/stream");
  source.addEventListener("status", (e) => { alive(); render(JSON.parse(e.data)); });
  source.addEventListener("event", (e) => { alive(); onEvent(e.data); });
  source.onerror = () => {
    // The browser retries by itself while CONNECTING; a refused or non-stream answer closes it for good.
    if (source.readyState === EventSource.CLOSED) setTimeout(connect, 1000);
  };
}

function tick() {
  const age = Date.now() - lastMessage;
  const stale = age > STALE_MS;
  $("stale").hidden = !stale;
  document.body.classList.toggle("is-stale", stale);
  if (stale) { setText("conn", "STALE"); $("conn").className = "badge stale"; }
  if (age > REOPEN_MS && lastMessage) { lastMessage = Date.now() - STALE_MS - 1; connect(); }
  setText("clock", new Date().toLocaleTimeString([], { hour12: false }));
}

lastMessage = Date.now();  // the server-rendered values are fresh; judge staleness from now
connect();
setInterval(tick, 250);

// When a hand injection was given: the time of day typed (this browser's local time), the latest such moment
// not after now (an injection just before midnight entered after it is yesterday's); empty: now.
function givenAt(hhmmss) {
  if (!hhmmss) return null;
  const [h, m, sec] = hhmmss.split(":").map(Number);
  const when = new Date();
  when.setHours(h, m, sec || 0, 0);
  if (when.getTime() > Date.now() + 60000) when.setDate(when.getDate() - 1);
  return when.toISOString();
}

// Contrast given by hand: entered with the write token, counted in the totals (and the limit) at once; its time
// (when given) times the run going on then (mtt_s from it).
$("hand-form")?.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const conc = $("hand-conc").value;
  const body = { volume_ml: Number($("hand-ml").value), concentration_mg_ml: conc === "" ? null : Number(conc),
                 at: givenAt($("hand-at").value) };
  try {
    const r = await fetch("/api/procedures/current/injections", {
      method: "POST", body: JSON.stringify(body),
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${$("hand-token").value}` } });
    setText("hand-result", r.ok ? `added ${fmt(body.volume_ml, 1)} ml` : `refused (${r.status})`);
    if (r.ok) { renderContrast(await r.json()); $("hand-ml").value = ""; $("hand-at").value = ""; }
  } catch (e) { setText("hand-result", "not sent"); }
});
