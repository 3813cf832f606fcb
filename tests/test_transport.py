"""Transport and InjectorBridge on real ptys, sockets and injsim://: unplug, replug, backoff, stop."""
import logging
import os
import socket
import threading
import time
import tty

import pytest
import serial

from firmware_bridge.bridge import InjectorBridge
from firmware_bridge.messages import Summary, Xray
from firmware_bridge.scenarios import Scenario, SimInjection
from firmware_bridge.simulator import InjectorDevice
from firmware_bridge.transport import SerialTransport, backoff
from tests.waiting import wait_for

S = 1_000_000_000


class Recorder:
    def __init__(self):
        self.messages, self.links = [], []
        self.lock = threading.Lock()

    def on_message(self, msg, host_ns):
        with self.lock:
            self.messages.append((msg, host_ns))

    def on_link(self, old, new, reason):
        with self.lock:
            self.links.append((old, new, reason))

    def states(self):
        with self.lock:
            return [new for _, new, _ in self.links]


class PtyDevice:
    """A simulated injector on the master side of a pty reachable through a stable symlink (like
    /dev/serial/by-id/...). unplug() makes the tty vanish, replug() brings a new one at the same link."""

    def __init__(self, link_path, device, hear_acks_after_replug=True):
        self.link_path, self.dev = link_path, device
        self.hear_acks = True
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.master = None
        self.replug()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def replug(self):
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        path = os.ttyname(slave)
        os.close(slave)
        tmp = self.link_path + ".new"
        os.symlink(path, tmp)
        os.replace(tmp, self.link_path)
        with self._lock:
            self.master = master
            self.dev.poll(time.monotonic_ns())  # bytes "sent" while unplugged are lost
            self.dev.connected(time.monotonic_ns())

    def unplug(self):
        with self._lock:
            os.close(self.master)
            self.master = None
        os.unlink(self.link_path)

    def _run(self):
        while not self._stop.is_set():
            with self._lock:
                now = time.monotonic_ns()
                data = self.dev.poll(now)
                if self.master is not None:
                    try:
                        os.write(self.master, data)
                    except OSError:
                        pass
                    try:
                        incoming = os.read(self.master, 4096)
                    except OSError:
                        incoming = b""
                    if incoming and self.hear_acks:
                        self.dev.receive(incoming, now)
            time.sleep(0.005)

    def close(self):
        self._stop.set()
        self._thread.join(1)
        if self.master is not None:
            os.close(self.master)


def test_pty_unplug_and_replug(tmp_path):
    # One injection whose SUMMARY is sent at ~0.85 s; the device does not hear ACKs before the unplug,
    # so it keeps resending the SUMMARY across the unplug (every 500 ms, up to 10 times).
    sc = Scenario("unplug", "one short injection", 60.0, injections=(SimInjection(0.6, 1.0, 5.0, rise_ms=100),))
    dev = InjectorDevice(sc, t0_ns=time.monotonic_ns(), seed=5)
    line = PtyDevice(str(tmp_path / "ttyINJ0"), dev)
    line.hear_acks = False
    rec = Recorder()
    bridge = InjectorBridge(str(tmp_path / "ttyINJ0"), on_message=rec.on_message, on_link=rec.on_link,
                            reconnect_min_s=0.05, reconnect_max_s=0.2)
    try:
        bridge.start()
        wait_for(lambda: bridge.link_state == "up", 5)
        wait_for(lambda: any(isinstance(m, Summary) for m, _ in rec.messages), 5)
        wait_for(lambda: bridge.counters()["duplicates"] >= 1, 5)  # a resend, deduplicated
        line.unplug()
        wait_for(lambda: bridge.link_state == "down", 2)
        time.sleep(0.4)  # stays unplugged through a few reconnect attempts
        assert bridge.link_state == "down"
        line.replug()
        line.hear_acks = True
        wait_for(lambda: rec.states()[-2:] == ["silent", "up"], 3)
        wait_for(lambda: dev.acks_received >= 1, 2)  # the resends after the replug got their ACK
        time.sleep(0.3)  # time for a copy still on the line to arrive: it must not be delivered again
    finally:
        bridge.stop()
        line.close()
    states = rec.states()
    assert states[:2] == ["silent", "up"] and "down" in states
    after = states[states.index("down"):]
    assert after[:3] == ["down", "silent", "up"]
    summaries = [m for m, _ in rec.messages if isinstance(m, Summary)]
    assert len(summaries) == 1  # recorded once, however many copies crossed the unplug
    c = bridge.counters()
    assert c["reconnects"] >= 1 and c["packets_by_type"]["SUMMARY"] >= 2 and c["duplicates"] >= 1


def test_injsim_disconnect_scenario_delivers_the_summary_once():
    # Place the timeline so the unplug (4.1-6.5 s) starts 0.3 s from now, as the SUMMARY is due.
    t0 = time.monotonic_ns() - int(3.8 * S)
    rec = Recorder()
    bridge = InjectorBridge(f"injsim://?scenario=disconnects&seed=9&t0_ns={t0}", on_message=rec.on_message,
                            on_link=rec.on_link, reconnect_min_s=0.05, reconnect_max_s=0.25)
    bridge.start()
    try:
        wait_for(lambda: "down" in rec.states(), 2)
        wait_for(lambda: rec.states()[-1:] == ["up"] and "down" in rec.states(), 5)
        wait_for(lambda: any(isinstance(m, Summary) for m, _ in rec.messages), 3)
        time.sleep(0.6)  # time for resent copies to arrive: none may be delivered again
    finally:
        bridge.stop()
    assert [m.delivered_volume for m, _ in rec.messages if isinstance(m, Summary)] == [1000]
    assert "simulated unplug" in next(r for _, new, r in rec.links if new == "down")
    assert bridge.counters()["reconnects"] == 1


def test_events_line_up_with_the_timeline_within_a_frame():
    t0 = time.monotonic_ns() - int(0.6 * S)  # X-ray on at 1.0 s of the nominal scenario
    rec = Recorder()
    bridge = InjectorBridge(f"injsim://?scenario=nominal&seed=2&t0_ns={t0}", on_message=rec.on_message,
                            on_link=rec.on_link)
    bridge.start()
    try:
        wait_for(lambda: any(isinstance(m, Xray) for m, _ in rec.messages), 3)
    finally:
        bridge.stop()
    ((_, host_ns),) = [(m, t) for m, t in rec.messages if isinstance(m, Xray)]
    assert abs(host_ns - (t0 + 1 * S)) < S // 30  # within one 30 fps frame interval
    assert bridge.device["model"] == "SIM-INJECTOR"


def test_backoff_doubles_to_the_maximum_and_stop_is_prompt():
    attempts = []

    def opener(url, **kw):
        attempts.append(time.monotonic())
        raise serial.SerialException(f"could not open port {url}: [Errno 2] No such file or directory")

    t = SerialTransport("/dev/ttyUSB-missing", on_open=lambda n: None, on_data=lambda d, n: None,
                        on_lost=lambda n, r: None, reconnect_min_s=0.02, reconnect_max_s=0.16, opener=opener)
    t.start()
    try:
        wait_for(lambda: len(attempts) >= 7, 5)
    finally:
        t0 = time.monotonic()
        t.stop()
    assert time.monotonic() - t0 < 1.0
    gaps = [b - a for a, b in zip(attempts, attempts[1:])]
    # Each wait is its backoff step (0.02, 0.04, 0.08, then the 0.16 cap), bounded on both sides: from below
    # exactly, from above with room for a busy machine's scheduling, but less than the next step would need
    # (a wait stuck at the maximum, never capped, or not doubled, falls outside).
    for gap, step in zip(gaps, [0.02, 0.04, 0.08, 0.16, 0.16, 0.16]):
        assert step * 0.95 <= gap < step + 0.1, (gaps, step)
    assert t.open_failures == len(attempts) and "No such file" in t.last_error


def test_backoff_sequence():
    it = backoff(0.2, 5.0)
    assert [next(it) for _ in range(8)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]


def test_missing_port_never_raises_and_reports_down(caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connection refused
    rec = Recorder()
    bridge = InjectorBridge(f"socket://127.0.0.1:{port}", on_message=rec.on_message, on_link=rec.on_link,
                            reconnect_min_s=0.05, reconnect_max_s=0.1)
    with caplog.at_level(logging.WARNING, logger="firmware_bridge.transport"):
        bridge.start()
        # It really tried the port (and failed): without this, a bridge that never opens would pass too.
        wait_for(lambda: any("cannot open serial port" in r.getMessage() and "refused" in r.getMessage()
                                    for r in caplog.records), 2), caplog.text
    t0 = time.monotonic()
    bridge.stop()
    assert time.monotonic() - t0 < 1.0
    assert bridge.link_state == "down" and rec.links == [] and bridge.device is None
    with pytest.raises(RuntimeError):
        bridge.start()


def test_socket_server_goes_away_and_comes_back():
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    dev = InjectorDevice("nominal", t0_ns=time.monotonic_ns(), seed=3)
    rec = Recorder()
    bridge = InjectorBridge(f"socket://127.0.0.1:{port}", on_message=rec.on_message, on_link=rec.on_link,
                            reconnect_min_s=0.05, reconnect_max_s=0.1)
    bridge.start()
    try:
        for _ in range(2):
            conn, _ = srv.accept()
            # pyserial's open flushes what is already waiting: send once the bridge reports the open.
            wait_for(lambda: bridge.link_state == "silent", 2)
            dev.connected(time.monotonic_ns())
            conn.sendall(dev.poll(time.monotonic_ns()))
            wait_for(lambda: bridge.link_state == "up", 2)
            conn.close()
            wait_for(lambda: bridge.link_state == "down", 2)
    finally:
        bridge.stop()
        srv.close()
    assert rec.states() == ["silent", "up", "down", "silent", "up", "down"]
    assert bridge.counters()["reconnects"] == 1


def test_callback_errors_are_counted_not_fatal():
    def bad(*a):
        raise RuntimeError("appliance bug")

    bridge = InjectorBridge("injsim://?scenario=nominal&seed=21", on_message=bad, on_link=lambda *a: None)
    bridge.start()
    try:
        wait_for(lambda: bridge.counters()["callback_errors"] >= 3, 3)
        assert bridge.link_state == "up"
    finally:
        bridge.stop()


def test_bad_arguments():
    with pytest.raises(ValueError):
        SerialTransport("", on_open=None, on_data=None, on_lost=None)
    with pytest.raises(ValueError):
        SerialTransport("loop://", on_open=None, on_data=None, on_lost=None, reconnect_min_s=2, reconnect_max_s=1)
    with pytest.raises(ValueError):
        InjectorBridge("loop://", on_message=None, on_link=lambda *a: None)


def test_reader_survives_an_internal_error():
    events, calls = [], []

    def on_data(data, now):
        calls.append(len(data))
        if len(calls) == 1:
            raise KeyError("bug in the chain")

    t = SerialTransport("injsim://?scenario=nominal&seed=41", on_open=lambda n: events.append("open"),
                        on_data=on_data, on_lost=lambda n, r: events.append(r), reconnect_min_s=0.02)
    t.start()
    try:
        wait_for(lambda: events.count("open") >= 2 and len(calls) >= 2, 3)
    finally:
        t.stop()
    assert "internal error: KeyError('bug in the chain')" in events and "KeyError" in t.last_error


def test_raw_byte_tap_replays_to_the_same_messages():
    from firmware_bridge.link import Link
    taps, rec = [], Recorder()
    t0 = time.monotonic_ns() - int(1.9 * S)
    bridge = InjectorBridge(f"injsim://?scenario=nominal&seed=51&t0_ns={t0}", on_message=rec.on_message,
                            on_link=rec.on_link, on_bytes=lambda d, t: taps.append((t, d)))
    bridge.start()
    try:
        wait_for(lambda: len(rec.messages) > 20, 3)
    finally:
        bridge.stop()
    link = Link()
    link.port_opened(taps[0][0])
    replayed = [m for t, d in taps for m, _ in link.feed(d, t).messages]
    assert replayed == [m for m, _ in rec.messages]
