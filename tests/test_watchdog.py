"""sd_notify and the watchdog against a real AF_UNIX datagram socket standing in for systemd."""
from __future__ import annotations

import os
import socket
import time

import pytest

from core.ops.watchdog import ProgressCheck, Watchdog, notify_socket_address, sd_notify, watchdog_interval_s
from tests.waiting import received_datagrams


@pytest.fixture
def systemd(tmp_path, monkeypatch):
    """A bound datagram socket as NOTIFY_SOCKET; yields a function returning what was received."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.05)
    monkeypatch.setenv("NOTIFY_SOCKET", path)

    def received() -> list[str]:
        return received_datagrams(sock)

    yield received
    sock.close()


def test_ready_status_and_stopping_reach_the_socket(systemd):
    wd = Watchdog(lambda: True, interval_s=10)
    assert wd.ready("warming up")
    assert wd.stopping()
    assert systemd() == ["READY=1\nSTATUS=warming up", "STOPPING=1\nSTATUS=stopping"]


def test_abstract_namespace_socket(monkeypatch):
    name = f"cathlab-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(1)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sd_notify("READY=1")
        assert sock.recv(100) == b"READY=1"
    finally:
        sock.close()


def test_no_notify_socket_is_a_quiet_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not sd_notify("READY=1")
    wd = Watchdog(lambda: True, interval_s=0.01)
    assert not wd.enabled and not wd.ready() and not wd.step()
    wd.start()   # not under systemd: no thread
    assert wd._thread is None


def test_bad_inputs():
    with pytest.raises(ValueError, match="absolute path"):
        notify_socket_address("relative/path")
    with pytest.raises(ValueError, match="NUL"):
        sd_notify("READY=1\0")
    with pytest.raises(ValueError, match="callable"):
        Watchdog(True)
    with pytest.raises(ValueError, match="integer"):
        watchdog_interval_s({"WATCHDOG_USEC": "ten"})
    with pytest.raises(ValueError, match="positive"):
        watchdog_interval_s({"WATCHDOG_USEC": "0"})


def test_interval_is_half_of_watchdogsec_and_only_for_this_pid():
    assert watchdog_interval_s({"WATCHDOG_USEC": "20000000"}) == 10.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}) == 10.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_interval_s({}) is None


def test_sending_to_a_vanished_socket_is_reported_not_raised(tmp_path):
    assert not sd_notify("READY=1", str(tmp_path / "gone"))


def test_pets_only_while_the_check_passes(systemd):
    healthy = [True, True, False, True]
    wd = Watchdog(lambda: healthy.pop(0), interval_s=10, status=lambda: "frames 42")
    results = [wd.step() for _ in range(4)]
    assert results == [True, True, False, True]
    got = systemd()
    assert got == ["WATCHDOG=1\nSTATUS=frames 42", "WATCHDOG=1\nSTATUS=frames 42",
                   "STATUS=stalled: frames 42", "WATCHDOG=1\nSTATUS=frames 42"]
    assert (wd.pets, wd.misses) == (3, 1)


def test_a_raising_check_is_a_miss(systemd):
    def broken():
        raise RuntimeError("boom")
    wd = Watchdog(broken, interval_s=10)
    assert not wd.step()
    assert systemd() == ["STATUS=stalled: check failed"]


def test_thread_pets_periodically_and_stops(systemd, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "40000")           # WatchdogSec=40 ms -> pet every 20 ms
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    wd = Watchdog(lambda: True)
    assert wd.enabled and wd.interval_s == pytest.approx(0.02)
    wd.start()
    time.sleep(0.3)      # the window the pets are counted in: about 15 at 20 ms
    wd.stop()
    pets = [m for m in systemd() if m.startswith("WATCHDOG=1")]
    assert 5 <= len(pets) <= 20
    after = wd.pets
    time.sleep(0.1)      # five periods: a watchdog still running would have petted
    assert wd.pets == after


def status(frames, packets, link="up"):
    return {"counters": {"frames": frames, "serial": {"packets_by_type": {"SAMPLE": packets}}},
            "injector": {"link": link}}


def test_progress_check_needs_new_frames_and_new_packets_while_the_link_is_up():
    feed = iter([status(0, 0), status(30, 50), status(30, 100), status(60, 100), status(90, 100, "down"),
                 status(120, 150)])
    check = ProgressCheck(lambda: next(feed))
    assert check()                       # first call: baseline
    assert check()                       # frames and packets moved
    assert not check() and "no new frames" in check.reason
    assert not check() and "no packets" in check.reason
    assert check()                       # link down: the reader reconnects, frames still flow
    assert check() and "frames 120" in check.status_text()


def test_without_video_by_design_only_telemetry_is_judged():
    feed = iter([status(0, 0), status(0, 50), status(0, 50), status(0, 50, "down"), status(0, 50, "silent"),
                 status(0, 90)])
    check = ProgressCheck(lambda: next(feed), video=False)
    assert check()
    assert check() and "no video" in check.reason          # no frames ever: not a reason to restart
    assert not check() and "no packets" in check.reason   # link up, nothing decoded: the reader is stuck
    assert check() and check()                           # injector off or unplugged: reconnecting is its job
    assert check()


def unit_sections():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "packaging" / "cathlab-edge.service").read_text()
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return text, sections


def test_unit_is_a_notify_service_with_watchdog_restart_and_its_own_user():
    _, s = unit_sections()
    svc = s["Service"]
    assert svc["Type"] == ["notify"] and svc["Restart"] == ["on-failure"]
    assert svc["WatchdogSec"] and int(svc["WatchdogSec"][0].rstrip("s")) >= 10
    assert svc["User"] == ["cathlab-edge"] and svc["StateDirectory"] == ["cathlab-edge"]
    assert svc["NoNewPrivileges"] == ["yes"] and svc["ProtectSystem"] == ["strict"]
    assert any("run" in cmd.split() for cmd in svc["ExecStart"])
    assert "StartLimitBurst" in s["Unit"] and s["Install"]["WantedBy"] == ["multi-user.target"]
    # One BLAS thread: spinning BLAS workers would take the frame thread's core on a 2-core box.
    env = " ".join(svc["Environment"]).split()
    assert "OPENBLAS_NUM_THREADS=1" in env and "OMP_NUM_THREADS=1" in env


def test_unit_passes_systemd_analyze_where_available(tmp_path):
    import shutil
    import subprocess

    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not installed")
    text, _ = unit_sections()
    unit = tmp_path / "cathlab-edge.service"
    unit.write_text(text)
    proc = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=30)
    # The install path of the program does not exist on a development machine; anything else is a finding.
    findings = [line for line in (proc.stderr + proc.stdout).splitlines()
                if line.strip() and "is not executable" not in line and "No such file" not in line]
    assert not findings, findings
