"""The status page in headless Chromium against `cathlab-edge run --serial injsim://?scenario=faults` (no video):
"no video" said plainly by the live script, not as an alarm, and the injector's fault in the alarm banner until
the injector is idle again."""
import json
import os
import subprocess
import sys
import urllib.request

from api.routes.page import NO_VIDEO_NOTE
from tests.test_api_stream import ROOT, free_port, stop_server
from tests.test_page_browser import browser, wait_js  # noqa: F401  (the module's Chromium fixture)
from tests.waiting import wait_for


def start_injector_only(data_dir) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CATHLAB_")}
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "run", "--port", str(port), "--data-dir",
                             str(data_dir), "--serial", "injsim://?scenario=faults"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"

    def link_up() -> bool:
        try:
            with urllib.request.urlopen(url + "/api/status", timeout=1) as r:
                return json.loads(r.read())["injector"]["link"] == "up"
        except OSError:
            return False
    try:
        wait_for(link_up, 30, interval=0.1)
    except AssertionError:
        proc.kill()
        raise AssertionError(f"server not ready in 30 s: {proc.communicate()[1][-3000:]}") from None
    return proc, url


def test_page_says_no_video_plainly_and_shows_the_injector_fault(browser, tmp_path):  # noqa: F811
    proc, url = start_injector_only(tmp_path / "data")
    try:
        page = browser.new_page(viewport={"width": 1920, "height": 1080})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(url + "/")
        wait_js(page, "document.getElementById('conn').textContent === 'LIVE'", timeout_ms=5000)
        assert page.evaluate("!document.getElementById('video').hidden")
        assert page.evaluate("document.getElementById('video').textContent") == "NO VIDEO"
        assert page.evaluate("getComputedStyle(document.getElementById('video')).backgroundColor") == "rgb(34, 43, 52)"
        assert page.evaluate("document.getElementById('run-note').textContent") == NO_VIDEO_NOTE
        assert page.evaluate("document.getElementById('counters').textContent").startswith("no video · serial packets")
        # The scenario's injection is aborted by the pressure limit (FAULT severity 2) at 2.8 s of every 15 s.
        wait_js(page, "document.getElementById('alarms').textContent.includes('pressure limit 2068 kPa exceeded')",
                timeout_ms=20000)
        assert page.evaluate("document.getElementById('flow').textContent") == "0.0"
        assert page.evaluate("document.getElementById('inj-state').textContent") == "aborted"
        (ROOT / "test-artifacts").mkdir(exist_ok=True)
        page.screenshot(path=str(ROOT / "test-artifacts" / "status-page-no-video-fault.png"))
        wait_js(page, "document.getElementById('alarms').hidden", timeout_ms=5000)   # idle: cleared
        assert page.evaluate("document.getElementById('xray-source').textContent") == "from the injector's signal"
        assert errors == []
    finally:
        stop_server(proc)
