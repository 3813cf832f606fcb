"""A real injector and no video, end to end: `cathlab-edge run --serial URL` with no --video starts no phantom,
raises and clears the injector's fault alarm, and refuses implausible values (counted, logged, not taken)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.routes.page import NO_VIDEO_NOTE, render
from core.ops.doctor import OK, check_video
from core.ops.settings import Settings
from firmware_bridge.messages import Hello, InjectorState, Sample, State, Summary, Xray
from firmware_bridge.simulator import DEFAULT_HELLO
from tests.waiting import received_datagrams, wait_for

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:   # /healthz answers 503 with a body
        return exc.code, json.loads(exc.read())


@pytest.fixture
def injector_only(tmp_path):
    """`cathlab-edge run --serial injsim://?scenario=faults` as a user starts it: no --video anywhere, under a
    stand-in for systemd's notify socket with a 4 s watchdog (petted every 2 s; HEARTBEAT comes every 1 s)."""
    port = free_port()
    sock_dir = tempfile.mkdtemp(prefix="cathlab-notify-")   # AF_UNIX paths are short; tmp_path may not be
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(os.path.join(sock_dir, "notify"))
    notify.settimeout(0.05)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CATHLAB_") and k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env.update(PYTHONUNBUFFERED="1", NOTIFY_SOCKET=os.path.join(sock_dir, "notify"), WATCHDOG_USEC="4000000")
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "run", "--port", str(port), "--data-dir",
                             str(tmp_path / "data"), "--serial", "injsim://?scenario=faults"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)

    def notifications() -> list[str]:
        return received_datagrams(notify)

    yield proc, f"http://127.0.0.1:{port}", notifications
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    notify.close()
    os.unlink(os.path.join(sock_dir, "notify"))
    os.rmdir(sock_dir)


def test_serial_without_video_runs_no_phantom_and_alarms_an_injector_fault(injector_only):
    proc, url, notifications = injector_only
    seen: list[dict] = []

    def status(predicate):
        def poll():
            try:
                s = get(url + "/api/status")[1]
            except OSError:
                return None
            seen.append(s)
            return s if predicate(s) else None
        return poll

    first = wait_for(status(lambda s: s["injector"]["link"] == "up"), 20)
    assert first["video"] == {"enabled": False, "source": "none"}
    # The scenario: X-ray on at 1 s, an injection at 2 s aborted by the pressure limit at 2.8 s (FAULT of
    # severity 2, STATE aborted, SUMMARY), STATE idle at 3.8 s; an info and a warning fault later; every 15 s.
    # /healthz is asked while the fault stands (about 1 s); missed, the next cycle's fault is waited for.
    def faulted_and_unhealthy():
        s = status(lambda s: s["injector"]["fault"] is not None)()
        code, health = get(url + "/healthz") if s is not None else (None, None)
        return (s, health) if code == 503 else None
    faulted, health = wait_for(faulted_and_unhealthy, 20)
    assert health["reasons"] == ["injector fault 0x0101 (error): pressure limit 2068 kPa exceeded"]
    assert faulted["injector"]["fault"] == {"code": 0x0101, "severity": 2,
                                            "text": "pressure limit 2068 kPa exceeded"}
    assert [a["kind"] for a in faulted["alarms"]] == ["injector_fault"]
    assert "pressure limit 2068 kPa exceeded" in faulted["alarms"][0]["message"]
    assert faulted["injector"]["flow_ml_s"] == 0.0 and faulted["injector"]["pressure_kpa"] == 0.0
    cleared = wait_for(status(lambda s: s["injector"]["state"] == "idle" and s["injector"]["fault"] is None), 5)
    assert cleared["alarms"] == []
    wait_for(lambda: get(url + "/healthz")[0] == 200, 5)
    with urllib.request.urlopen(url + "/", timeout=2) as page:
        html = page.read().decode()
    assert 'id="video" class="badge novideo" >NO VIDEO' in html and NO_VIDEO_NOTE.replace("'", "&#x27;") in html

    # No phantom, no frames, no runs; nothing ever alarmed about video or X-ray disagreement, though the
    # injector's X-ray signal went on and off.
    assert all(s["counters"]["frames"] == 0 and s["run"] is None and s["last_runs"] == [] for s in seen)
    assert all(a["kind"] == "injector_fault" for s in seen for a in s["alarms"])
    assert any(s["xray"]["on"] and s["xray"]["source"] == "device" for s in seen)
    # The status is ahead of the event log (its own writer thread): wait for the clearing to be written.
    events = wait_for(lambda: (ev := get(url + "/api/events?limit=1000")[1]["events"])
                      and any(e["kind"] == "injector_fault_cleared" for e in ev) and ev, 10)
    kinds = [e["kind"] for e in events]
    assert events[0]["data"]["video"] == "none" and events[0]["data"]["serial"] == "injsim://?scenario=faults"
    assert "xray_on" not in kinds and "run" not in kinds
    faults = [e["data"] for e in events if e["kind"] == "injector_fault"]
    assert faults[0]["severity"] == 2 and faults[0]["alarm"] is True
    assert {"reason": "injector state idle"} in [e["data"] for e in events if e["kind"] == "injector_fault_cleared"]
    injection = next(e for e in events if e["kind"] == "injection")
    assert injection["procedure_id"] is not None        # without runs the injection opened the procedure

    # Many seconds without a single frame, and systemd's watchdog was petted all along: telemetry is judged.
    sent: list[str] = []

    def watchdog_pets() -> list[str] | None:
        sent.extend(notifications())
        pets = [m for m in sent if m.startswith("WATCHDOG=1")]
        return pets if len(pets) >= 3 else None
    pets = wait_for(watchdog_pets, 10)    # every 2 s: half the 4 s watchdog period
    assert sent[0].startswith("READY=1") and [m for m in sent if "stalled" in m] == []
    assert "STATUS=no video (by configuration), injector link up, packets" in pets[-1]

    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    assert proc.returncode == 0, proc.communicate()[1][-2000:]


def test_implausible_values_from_a_device_are_counted_logged_and_not_taken(tmp_path):
    """The real appliance (in-process) on a socket device that sends a volume going backwards and an X-ray
    delay from a stale X-ray-on. A serial URL and no video setting: no video either."""
    srv = socket.create_server(("127.0.0.1", 0))
    settings = Settings(data_dir=tmp_path / "data", serial=f"socket://127.0.0.1:{srv.getsockname()[1]}",
                        reconnect_min_s=0.05, reconnect_max_s=0.1)
    try:
        with TestClient(create_app(settings)) as client:
            conn, _ = srv.accept()
            wait_for(lambda: client.get("/api/status").json()["injector"]["link"] == "silent", 5)
            packets = [Hello(0, 9_000, **DEFAULT_HELLO), Xray(1, 10_000, on=1), Xray(2, 14_000, on=0),
                       State(3, 19_000, state=InjectorState.ARMED), State(4, 19_500, state=InjectorState.INJECTING,
                                                                        phase=1)]
            packets += [Sample(5 + k, 19_520 + 20 * k, flow=500, volume=10 * (k + 1), pressure=920, phase=1)
                        for k in range(5)]
            packets += [Sample(10, 19_620, flow=500, volume=20, pressure=920, phase=1),    # backwards
                        State(11, 21_500, state=InjectorState.COMPLETE),
                        Summary(12, 21_500, programmed_volume=1000, delivered_volume=1000, programmed_flow=500,
                                peak_flow=500, duration_ms=2_000, xray_delay_ms=-9_500)]
            conn.sendall(b"".join(p.encode() for p in packets))
            status = wait_for(lambda: (lambda s: s if s["counters"]["serial"]["protocol_violations"] == 2
                                       else None)(client.get("/api/status").json()), 5)
            assert status["counters"]["serial"]["protocol_violations_by_kind"] == {
                "volume_backwards": 1, "stale_xray_delay": 1}
            assert status["alarms"] == []           # a protocol violation is counted, not an alarm
            metrics = client.get("/metrics").text
            assert "cathlab_serial_protocol_violations_total 2.0" in metrics
            assert "cathlab_serial_protocol_violations_by_kind_stale_xray_delay_total 1.0" in metrics

            def events():
                return client.get("/api/events", params={"limit": 1000}).json()["events"]
            wait_for(lambda: any(e["kind"] == "injection" for e in events()), 5)
            got = events()
            violations = [e["data"] for e in got if e["kind"] == "protocol_violation"]
            assert [(v["kind"], v["field"], v["held_back"]) for v in violations] == [
                ("volume_backwards", "volume", 0), ("stale_xray_delay", "xray_delay_ms", 0)]
            (injection,) = [e["data"] for e in got if e["kind"] == "injection"]
            assert injection["xray_delay_ms"] is None and injection["implausible"] == ["xray_delay_ms"]
            assert injection["delivered_volume_ml"] == 10.0          # the rest of the SUMMARY is taken
            conn.close()
    finally:
        srv.close()


def test_doctor_and_page_say_no_video_plainly():
    assert check_video("none").status == OK and "no video" in check_video("none").detail
    assert check_video("phantom").status == OK
    status = {"injector": {"link": "up", "state": "idle"}, "video": {"enabled": False, "source": "none"},
              "xray": {"on": True, "source": "device"}, "run": None, "procedure": None, "alarms": [],
              "counters": {"frames": 0, "frames_dropped": 0}}
    html = render(status)
    assert 'class="badge novideo" >NO VIDEO' in html and "from the injector&#x27;s signal" in html
    assert "frames 0" not in html and 'id="alarms" class="alarms" role="alert" hidden' in html
    with_video = render(dict(status, video={"enabled": True, "source": "phantom"}))
    assert 'class="badge novideo" hidden>NO VIDEO' in with_video and NO_VIDEO_NOTE not in with_video
    unknown = render(dict(status, xray={"on": False, "source": None}))
    assert 'class="xray off">—<' in unknown                  # no video, no X-ray signal: not "OFF"
    assert 'class="xray off">OFF<' in render(dict(status, xray={"on": False, "source": "device"}))
