"""The status page in real headless Chromium (Debian's chromium via Playwright), against `cathlab-edge run` on
its simulators: it loads, live values follow the simulators within 1 s, STALE appears when the server stops.
Screenshots are kept in test-artifacts/ (gitignored) for people to look at.

Chromium is a requirement of this test, not an option: without it the test fails with what to install.
"""
import signal
import time
from datetime import datetime
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.test_api_stream import ROOT, start_server, stop_server
from tests.waiting import wait_for

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "test-artifacts"

# Records, in the page, the wall-clock time at which an element's text first satisfied a condition.
WATCH = """([id, pattern]) => {
  const el = document.getElementById(id), re = new RegExp(pattern);
  window.__seen = window.__seen || {};
  const check = () => { if (!(id in window.__seen) && re.test(el.textContent)) window.__seen[id] = Date.now(); };
  new MutationObserver(check).observe(el, {childList: true, characterData: true, subtree: true});
}"""


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser test needs Playwright's Python API: .venv/bin/pip install playwright "
                    "(no browser download: it drives Debian's chromium)")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: the browser test needs Debian's chromium "
                    "(apt-get update && apt-get install -y chromium)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def wait_js(page, expression: str, timeout_ms: float) -> None:
    """Poll a JS expression until true. Playwright's wait_for_function evaluates through `new Function`, which the
    page's Content-Security-Policy (rightly) forbids; page.evaluate goes through the debugger and is not affected."""
    wait_for(lambda: page.evaluate(expression), timeout_ms / 1000, interval=0.02, explain=lambda: expression)


def mono_to_wall_ms(t_mono_ns: int) -> float:
    """CLOCK_MONOTONIC is system-wide: the appliance's event times map to this process's wall clock."""
    return (time.time_ns() - time.monotonic_ns() + t_mono_ns) / 1e6


def first_event(url: str, kind: str, seconds: float) -> dict:
    def find():
        events = httpx.get(url + "/api/events", params={"limit": 1000}).json()["events"]
        return next((e for e in events if e["kind"] == kind), None)
    return wait_for(find, seconds, interval=0.1, explain=lambda: f"no {kind} event")


def test_status_page_live_and_stale(browser, tmp_path):
    proc, url = start_server(tmp_path / "data")
    try:
        page = browser.new_page(viewport={"width": 1920, "height": 1080})
        errors = []  # page errors, console errors and CSP violations all land here
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(url + "/")
        assert page.title() == "cathlab-edge status"
        wait_js(page, "document.getElementById('conn').textContent === 'LIVE'", timeout_ms=3000)
        assert page.text_content("#link") == "UP"
        assert "SIM-INJECTOR" in page.text_content("#device")

        # The scripted procedure: X-ray on at 8 s, injection (5 ml/s) from 9 s; the page must follow within 1 s
        # of the moment the simulators changed it (first frame of the run, first sample with flow).
        wait_js(page, "document.getElementById('xray').textContent === 'OFF'", timeout_ms=10000)
        page.evaluate(WATCH, ["xray", "^X-RAY ON$"])
        page.evaluate(WATCH, ["flow", "^[1-9]"])
        page.evaluate(WATCH, ["tdc-roi", "automatic, provisional"])
        wait_js(page, "window.__seen && 'xray' in window.__seen", timeout_ms=15000)
        wait_js(page, "'flow' in window.__seen", timeout_ms=15000)
        seen = page.evaluate("window.__seen")

        # The run the page saw begin: the last one that began before the page showed it.
        starts = [mono_to_wall_ms(e["t_mono_ns"]) for e in
                  httpx.get(url + "/api/events", params={"limit": 1000}).json()["events"] if e["kind"] == "xray_on"]
        xray_on = max(t for t in starts if t <= seen["xray"])
        injection = mono_to_wall_ms(first_event(url, "injection_start", 3)["t_mono_ns"])
        assert 0 <= seen["xray"] - xray_on < 1000, f"X-ray ON shown {seen['xray'] - xray_on:.0f} ms after the run began"
        assert 0 <= seen["flow"] - injection < 1000, \
            f"flow shown {seen['flow'] - injection:.0f} ms after the injection began"

        # The run timer counts while X-ray is on, and the run's time-density curve grows as it is drawn.
        points = "(document.querySelector('#tdc-lines polyline')?.getAttribute('points') || '').split(' ').length"
        wait_js(page, f"{points} > 3", timeout_ms=5000)
        t1, n1 = float(page.text_content("#run-timer")), page.evaluate(points)
        time.sleep(0.6)   # time passing is what is under test: the timer and the curve move with it
        assert float(page.text_content("#run-timer")) > t1
        assert page.evaluate(points) > n1, "the curve did not grow"
        # Weight and creatinine set through the API give the Cigarroa limit on the contrast bar (70 kg, 2.0 -> 175).
        token = (tmp_path / "data" / "api-token").read_text().strip()
        r = httpx.put(url + "/api/procedures/current/patient", json={"weight_kg": 70, "creatinine_mg_dl": 2.0},
                      headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        wait_js(page, "document.getElementById('contrast-limit').textContent === '175'", timeout_ms=1000)
        # While the run grows its automatic ROI is provisional; once the run is recorded its own record gives the
        # final ROI, why it is there, and its curve.
        wait_js(page, "'tdc-roi' in window.__seen", timeout_ms=1000)
        wait_js(page, "/· automatic: venous segment/.test(document.getElementById('tdc-roi').textContent)",
                timeout_ms=15000)
        ended = "/^run .*-\\d+ · ended$/.test(document.getElementById('tdc-title').textContent)"
        wait_js(page, ended, timeout_ms=3000)
        # A page opened after the run shows the same run's final curve and ROI (read from the API).
        later = browser.new_page(viewport={"width": 1920, "height": 1080})
        later.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        later.goto(url + "/")
        wait_js(later, ended, timeout_ms=3000)
        assert later.text_content("#tdc-title") == page.text_content("#tdc-title")
        assert later.text_content("#tdc-roi") == page.text_content("#tdc-roi")
        later.close()
        # Contrast given by hand half a minute ago, entered on the page with the time it was given.
        given = time.time() - 30
        page.fill("#hand-ml", "4")
        page.fill("#hand-at", time.strftime("%H:%M:%S", time.localtime(given)))
        page.fill("#hand-token", token)
        page.click("#hand-form button")
        wait_js(page, "document.getElementById('hand-result').textContent === 'added 4.0 ml'", timeout_ms=3000)
        hand = [e["data"] for e in httpx.get(url + "/api/events", params={"limit": 1000}).json()["events"]
                if e["kind"] == "injection" and e["data"].get("source") == "hand"]
        assert [h["delivered_volume_ml"] for h in hand] == [4.0]
        assert abs(datetime.fromisoformat(hand[0]["at"]).timestamp() - given) < 1.5, hand
        # A contrast run labelled completion is sized: its diameter profile is drawn with the reference and the
        # lesion marked, big enough to read across the room, and the numbers agree with the API's.
        auth = {"Authorization": f"Bearer {token}"}
        run_id = wait_for(lambda: next((r["run_id"] for r in httpx.get(url + "/api/runs").json()["runs"]
                                        if r.get("contrast")), None), 30, interval=0.2)
        assert httpx.put(f"{url}/api/runs/{run_id}/label", json={"label": "completion"}, headers=auth).status_code == 200
        diameter = "(document.querySelector('#vessel-lines polyline.diameter')?.getAttribute('points') || '')"
        wait_js(page, f"{diameter}.split(' ').length > 20", timeout_ms=15000)
        vessel = httpx.get(f"{url}/api/runs/{run_id}").json()["vessel"]
        assert page.text_content("#vessel-pct") == f"{vessel['diameter_stenosis_pct']:.0f}%"
        assert page.evaluate("document.querySelectorAll('#vessel-lines polyline.reference').length") == 1
        assert page.evaluate("document.querySelectorAll('#vessel-lines .mld').length") == 1
        plot = page.evaluate("(() => { const r = document.getElementById('vessel-plot').getBoundingClientRect();"
                             " return [r.width, r.height]; })()")
        assert plot[0] >= 400 and plot[1] >= 160, plot
        # The MLD is marked at the lesion the numbers report (the greatest % stenosis, not the thinnest point of a
        # tapering vein; on a flat bottom its middle): on a plotted station whose diameter against its reference
        # reads the reported % stenosis. y grows downwards from y0 = 154.
        points = "document.querySelector('#vessel-lines polyline.%s').getAttribute('points')" \
                 ".split(' ').map((p) => p.split(',').map(Number))"
        d_xy, r_xy = page.evaluate(points % "diameter"), page.evaluate(points % "reference")
        mld_x = float(page.evaluate("document.querySelector('#vessel-lines line.mld').getAttribute('x1')"))
        marked_d, marked_r = min(zip(d_xy, r_xy), key=lambda dr: abs(dr[0][0] - mld_x))
        assert abs(marked_d[0] - mld_x) < 1.0
        ratio = (154 - marked_d[1]) / (154 - marked_r[1])
        assert abs(ratio - (1 - vessel["diameter_stenosis_pct"] / 100)) < 0.03, (ratio, vessel["diameter_stenosis_pct"])
        deepest = min((154 - d[1]) / (154 - r[1]) for d, r in zip(d_xy, r_xy))
        assert ratio - deepest < 0.06, (ratio, deepest)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "status-page.png"))

        assert not errors, errors  # before the stop: afterwards reconnect attempts log refused connections
        # Stop the server: STALE must cover the page within 5 s.
        proc.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        page.wait_for_selector("#stale", state="visible", timeout=5000)
        shown = time.monotonic() - stopped
        assert shown < 5.0
        assert page.text_content("#conn") == "STALE"
        page.screenshot(path=str(ARTIFACTS / "status-page-stale.png"))
        proc.wait(timeout=5)

        # The appliance comes back (same port, same data): the page recovers by itself, no reload.
        proc, _ = start_server(tmp_path / "data", port=int(url.rsplit(":", 1)[1]))
        wait_js(page, "document.getElementById('conn').textContent === 'LIVE'", timeout_ms=10000)
        assert page.is_hidden("#stale")
        # The sizing outlived the server: rebuilt from the event log, drawn again.
        assert page.text_content("#vessel-pct") == f"{vessel['diameter_stenosis_pct']:.0f}%"
        assert page.is_visible("#vessel-plot")
        page.reload()
        wait_js(page, f"{diameter}.split(' ').length > 20", timeout_ms=3000)
    finally:
        stop_server(proc)



def test_page_says_the_fleet_broker_refuses_this_box(browser, tmp_path):
    """Another box's appliance_id with this box's credentials: the broker's ACL refuses every event, and the
    page's counters line says so (the issue: refused boxes say so in doctor and on the page)."""
    from tests.fleet_parts import Mosquitto, have_parts
    if have_parts() is not None:
        pytest.skip(have_parts())
    broker = Mosquitto({"box1": "box1-pw"})
    broker.start()
    pw = tmp_path / "box1.pw"
    pw.write_text("box1-pw")
    proc = None
    try:
        proc, url = start_server(tmp_path / "data", CATHLAB_FLEET_BROKER=broker.url, CATHLAB_FLEET_USERNAME="box1",
                                 CATHLAB_FLEET_PASSWORD_FILE=str(pw), CATHLAB_FLEET_CA_FILE=str(broker.ca_file),
                                 CATHLAB_APPLIANCE_ID="box2")
        page = browser.new_page(viewport={"width": 1920, "height": 1080})
        page.goto(url + "/")
        wait_js(page, "/fleet denied \\(.*refused to take events.*'box2'/.test("
                      "document.getElementById('counters').textContent)", timeout_ms=20000)
        assert httpx.get(url + "/api/status").json()["fleet"]["last_forwarded_id"] == 0
    finally:
        if proc is not None:
            stop_server(proc)
        broker.close()
