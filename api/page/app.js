// Polls /api/status twice a second; shows STALE when the appliance has not answered for 5 s.
"use strict";
const STALE_MS = 5000;
let lastOk = Date.now();

const $ = (id) => document.getElementById(id);
const fmt = (v, digits = 1) => (v === null || v === undefined ? "—" : Number(v).toFixed(digits));

function render(s) {
  const inj = s.injector;
  $("link").textContent = inj.link.toUpperCase();
  $("link").className = "badge " + inj.link;
  $("inj-state").textContent = inj.state ?? "—";
  $("flow").textContent = fmt(inj.flow_ml_s);
  $("pressure").textContent = fmt(inj.pressure_kpa, 0);
  $("volume").textContent = fmt(inj.volume_ml);
  $("device").textContent = inj.device ? `${inj.device.model} · fw ${inj.device.fw_version}` : "no device identified";
  $("xray").textContent = s.xray.on ? "ON" : "OFF";
  $("xray").className = "xray " + (s.xray.on ? "on" : "off");
  $("run-timer").textContent = s.run ? fmt(s.run.duration_s) : "—";
  $("pulse-rate").textContent = fmt(s.xray.pulse_rate);
  $("run-count").textContent = s.last_runs.length ? s.last_runs[0].run + 1 : 0;
  const rows = s.last_runs.map((r) =>
    `<tr><td>${r.run + 1}</td><td>${fmt(r.duration_s)}</td><td>${r.pulses}</td><td>${fmt(r.pulse_rate)}</td></tr>`);
  $("runs").innerHTML = rows.length ? rows.join("") : '<tr><td colspan="4">none yet</td></tr>';
  const c = s.counters;
  $("counters").textContent = `frames ${c.frames} · pulses ${c.pulses} · dropped ${c.frames_dropped} · ` +
    `serial packets ${Object.values(c.serial.packets_by_type || {}).reduce((a, b) => a + b, 0)} · ` +
    `crc errors ${c.serial.crc_errors} · uptime ${fmt(s.uptime_s, 0)} s`;
  const alarms = $("alarms");
  alarms.hidden = s.alarms.length === 0;
  alarms.textContent = s.alarms.map((a) => "⚠ " + a.message).join("   ");
}

async function poll() {
  try {
    const response = await fetch("/api/status", { cache: "no-store", signal: AbortSignal.timeout(2000) });
    if (response.ok) {
      render(await response.json());
      lastOk = Date.now();
      $("conn").textContent = "live";
      $("conn").className = "badge up";
    }
  } catch (err) {
    // staleness is judged by time since the last good answer, in checkStale()
  }
}

function checkStale() {
  const stale = Date.now() - lastOk > STALE_MS;
  $("stale").hidden = !stale;
  if (stale) { $("conn").textContent = "stale"; $("conn").className = "badge down"; }
}

setInterval(poll, 500);
setInterval(checkStale, 250);
poll();
