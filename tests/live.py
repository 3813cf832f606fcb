"""`cathlab-edge run` in a subprocess for tests that need the real server: its socket, limits and files."""
from __future__ import annotations

import json
import os
import resource
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Live:
    """One appliance process; ``stop()`` ends it (SIGTERM, then SIGKILL) and returns (stdout, stderr)."""

    def __init__(self, data_dir: Path, *args: str, env: dict | None = None, nofile: int | None = None,
                 umask: int | None = None, scheme: str = "http", context: ssl.SSLContext | None = None) -> None:
        self.port = free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.context = context

        def limits() -> None:   # in the child: the descriptor limit and umask it would have as a plain service
            if nofile is not None:
                _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))
            if umask is not None:
                os.umask(umask)

        full_env = dict(os.environ, CATHLAB_PHANTOM_SIZE="256", PYTHONUNBUFFERED="1", **(env or {}))
        self.proc = subprocess.Popen([sys.executable, "-m", "api.cli", "run", "--port", str(self.port),
                                      "--data-dir", str(data_dir), *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env,
                                     cwd=ROOT, preexec_fn=limits)

    def get(self, path: str, timeout: float = 5.0, headers: dict | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self.context) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def status(self) -> dict:
        return self.get("/api/status")[1]

    def wait_ready(self, seconds: float = 30.0) -> dict:
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"appliance exited: {self.proc.communicate()}")
            try:
                status = self.status()
            except OSError:
                return None
            return status if status["counters"]["frames"] > 30 else None
        return wait_for(ready, seconds, interval=0.2)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self) -> tuple[str, str]:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.communicate()


def raise_own_nofile(wanted: int) -> None:
    """Let this (test) process open ``wanted`` sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def timed_healthz(url: str, context: ssl.SSLContext | None = None, timeout: float = 5.0) -> float:
    """Seconds one fresh GET /healthz took (any status: it answered)."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=timeout, context=context) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        exc.read()
    return time.monotonic() - started


# -- the attacks of the hospital-network hardening --------------------------------------------------------------
def header_bomb(port: int, megabytes: int) -> int:
    """A request whose header never ends, 1 MB at a time; the bytes sent before the server closed on us."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        chunk = b"a" * 2**20
        try:
            for _ in range(megabytes):
                s.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
    return sent


def half_sent_requests(port: int, count: int) -> list[socket.socket]:
    """``count`` connections, each with a request head started and never finished."""
    held = []
    for k in range(count):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        held.append(s)
    deadline = time.monotonic() + 10
    for s in held:
        while True:
            try:
                s.send(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                break
            except (BlockingIOError, OSError) as exc:
                if not isinstance(exc, BlockingIOError) and exc.errno not in (11, 107):   # EAGAIN, ENOTCONN
                    break      # refused or reset: the server chose to close it
                if time.monotonic() > deadline:
                    break
                time.sleep(0.001)
    return held


def closed_by_server(sockets: list[socket.socket]) -> int:
    """How many of ``sockets`` the server has answered or closed: it sends a half-sent request nothing but a
    refusal (408) followed by the close, so any bytes, EOF or a reset count."""
    closed = 0
    for s in sockets:
        try:
            s.recv(4096, socket.MSG_PEEK)
            closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    return closed


class HealthProber:
    """A thread that GETs /healthz on a fresh connection every ``period_s``: latencies and failures."""

    def __init__(self, url: str, period_s: float = 0.2, context: ssl.SSLContext | None = None) -> None:
        import threading

        self.url, self.period_s, self.context = url, period_s, context
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HealthProber:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                timed_healthz(self.url, self.context, timeout=5.0)
                self.latencies.append(time.monotonic() - started)
            except OSError as exc:
                self.failures.append(f"{time.monotonic() - started:.2f} s: {exc}")
            self._stop.wait(self.period_s)
