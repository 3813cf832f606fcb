"""Exposure on the hospital network, against live appliances: TLS, the warning without it, the Host check
(DNS rebinding), the token kept out of logs, private files whatever the umask; and the watchdog that needs the
API to answer."""
import http.client
import os
import socket
import ssl
import stat
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest

from api.server import TrustedHosts, host_of
from core.ops.settings import Settings, SettingsError
from core.ops.watchdog import ApiProbe, Watchdog
from tests.live import ROOT, Live, timed_healthz
from tests.waiting import wait_for

NO_TLS_WARNING = "without TLS"


def raw_get(address: tuple[str, int], host_header: str, path: str = "/healthz") -> int:
    """Status of a GET sent to ``address`` with exactly this Host header."""
    conn = http.client.HTTPConnection(*address, timeout=5)
    try:
        conn.putrequest("GET", path, skip_host=True)
        conn.putheader("Host", host_header)
        conn.endheaders()
        return conn.getresponse().status
    finally:
        conn.close()


# -- plain HTTP on every interface, started with a lax umask ------------------------------------------------
@pytest.fixture(scope="module")
def exposed(tmp_path_factory):
    data = tmp_path_factory.mktemp("exposed") / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    (data / "notes.txt").write_text("left by an older version")
    os.chmod(data / "notes.txt", 0o644)
    live = Live(data, "--host", "0.0.0.0", "--record", umask=0o022)
    live.wait_ready()
    yield live
    live.stop()


def test_beyond_loopback_without_tls_is_warned_in_log_status_and_page(exposed):
    status = exposed.status()
    assert any(NO_TLS_WARNING in w for w in status["warnings"])
    assert status["alarms"] == [] or all(NO_TLS_WARNING not in a["message"] for a in status["alarms"])
    with socket.create_connection(("127.0.0.1", exposed.port)) as s:
        s.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{exposed.port}\r\nConnection: close\r\n\r\n".encode())
        page = b""
        while chunk := s.recv(65536):
            page += chunk
    assert b'id="warnings" class="warnings" >' in page and NO_TLS_WARNING.encode() in page


def test_host_header_must_name_this_appliance(exposed):
    port = exposed.port
    assert raw_get(("127.0.0.1", port), f"127.0.0.1:{port}") == 200
    assert raw_get(("127.0.0.1", port), f"localhost:{port}") == 200
    assert raw_get(("127.0.0.1", port), f"{socket.gethostname()}:{port}") == 200
    # DNS rebinding: a foreign name that resolves to this box.
    assert raw_get(("127.0.0.1", port), f"evil.example:{port}") == 400
    assert raw_get(("127.0.0.1", port), "evil.example") == 400
    # Bound to 0.0.0.0: an address of the interface the request came in on is this appliance, another is not.
    assert raw_get(("127.0.0.2", port), f"127.0.0.2:{port}") == 200
    assert raw_get(("127.0.0.2", port), f"127.0.0.3:{port}") == 400
    assert raw_get(("127.0.0.1", port), "") == 400


def raw_status(port: int, head: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(head.encode())
        return s.recv(4096).split(b"\r\n")[0]


def test_malformed_duplicated_and_absolute_form_hosts_are_refused(exposed):
    port = exposed.port
    # A loopback name followed by something else is not that name (each passed before: 200).
    for host in ("[::1]:80@evil", "127.0.0.1:80@evil", "[::1]evil", "[127.0.0.1]", "[localhost]",
                 "localhost:evil", "localhost:99999", "localhost..", f"127.0.0.1:{port}:evil"):
        assert raw_get(("127.0.0.1", port), host) == 400, host
    # Two Host headers (RFC 9112 3.2: 400), whichever comes first.
    for pair in ("evil.example\r\nHost: 127.0.0.1", "127.0.0.1\r\nHost: evil.example"):
        assert raw_status(port, f"GET /api/status HTTP/1.1\r\nHost: {pair}\r\n\r\n").endswith(b" 400 Bad Request")
    # Absolute form: the target's authority is the host, not the Host header (RFC 9112 3.2.2).
    assert raw_status(port, "GET http://evil.example/api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").endswith(
        b" 400 Bad Request")
    assert raw_status(port, f"GET http://127.0.0.1:{port}/api/status HTTP/1.1\r\nHost: evil\r\n\r\n").endswith(
        b" 200 OK")
    assert raw_get(("127.0.0.1", port), f"[::1]:{port}") == 200 and raw_get(("127.0.0.1", port), "LOCALHOST.") == 200


def test_oversized_heads_and_targets_are_refused(exposed):
    port = exposed.port
    many = "".join(f"X-H{k}: v\r\n" for k in range(150))
    for head, expected in ((f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n{many}\r\n", b" 431 "),
                           (f"GET /healthz?{'q' * 9000} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", b" 414 "),
                           (f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {'a' * 20000}\r\n\r\n", b" 431 ")):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(head.encode())
            assert expected in s.recv(4096)


def test_token_not_printed_and_files_private_despite_umask(exposed):
    assert exposed.proc.poll() is None
    wait_for(lambda: any((exposed.data_dir / "recordings").rglob("*.*")), 20, interval=0.2)
    out, err = exposed.stop()
    token = (exposed.data_dir / "api-token").read_text().strip()
    assert token not in out and token not in err
    assert f"API write token created in {exposed.data_dir / 'api-token'}" in err
    assert NO_TLS_WARNING in err                            # the warning is in the log too
    assert stat.S_IMODE(exposed.data_dir.stat().st_mode) == 0o700
    checked = 0
    for path in [exposed.data_dir, *exposed.data_dir.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {mode:o}"
        checked += 1
    names = {p.name for p in exposed.data_dir.iterdir()}
    assert {"api-token", "events.sqlite3", "notes.txt", "recordings"} <= names and checked > 6


# -- HTTPS ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=cathlab-edge",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    return cert, key


def test_https_with_the_configured_certificate_and_watchdog_probe(tmp_path, certificate):
    cert, key = certificate
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(15)
    context = ssl.create_default_context(cafile=str(cert))
    live = Live(tmp_path / "data", "--host", "0.0.0.0", scheme="https", context=context,
                env={"CATHLAB_TLS_CERTFILE": str(cert), "CATHLAB_TLS_KEYFILE": str(key),
                     "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "3000000"})
    try:
        status = live.wait_ready()
        assert status["warnings"] == []                 # on every interface, but encrypted
        assert timed_healthz(live.url, context) < 5
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):   # really that certificate
            timed_healthz(live.url, ssl.create_default_context())
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            plain = http.client.HTTPConnection("127.0.0.1", live.port, timeout=5)
            plain.request("GET", "/healthz")
            plain.getresponse().read()
        # systemd's watchdog is petted only while its probe gets an answer through TLS, on the real socket.
        messages = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any(m.startswith("WATCHDOG=1") for m in messages[1:]):
            messages.append(notify.recv(4096).decode())
        assert messages[0].startswith("READY=1")
        assert any(m.startswith("WATCHDOG=1") for m in messages[1:]), messages
    finally:
        out, err = live.stop()
        notify.close()
    assert "https://0.0.0.0:" in out and NO_TLS_WARNING not in err
    assert "API on" not in err and "does not answer" not in err


def test_a_tls_handshake_never_finished_is_closed_like_an_unfinished_request(tmp_path, certificate):
    cert, key = certificate
    context = ssl.create_default_context(cafile=str(cert))
    live = Live(tmp_path / "data", scheme="https", context=context,
                env={"CATHLAB_TLS_CERTFILE": str(cert), "CATHLAB_TLS_KEYFILE": str(key)})
    held = []
    try:
        live.wait_ready()
        baseline = live.open_fds()
        for _ in range(200):   # connected, then silent: no ClientHello, so the server waits in its handshake
            held.append(socket.create_connection(("127.0.0.1", live.port), timeout=5))
        wait_for(lambda: live.open_fds() >= baseline + 150, 10)
        assert timed_healthz(live.url, context) < 5   # the API answers meanwhile
        # Closed by the server after REQUEST_TIMEOUT_S (10 s), not after the event loop's default 60 s.
        wait_for(lambda: live.open_fds() <= baseline + 10, 25)
        for s in held:
            s.settimeout(1)
            assert s.recv(1) == b""   # the server closed it (EOF)
    finally:
        for s in held:
            s.close()
        live.stop()


def test_tls_file_errors_name_the_setting(tmp_path, certificate):
    cert, _ = certificate
    env = dict(os.environ, CATHLAB_TLS_CERTFILE=str(cert), CATHLAB_TLS_KEYFILE=str(tmp_path / "missing.pem"))
    done = subprocess.run([sys.executable, "-m", "api.cli", "run", "--port", "0", "--data-dir", str(tmp_path / "d")],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "tls_" in done.stderr and "missing.pem" in done.stderr
    with pytest.raises(SettingsError, match="tls_certfile is set .* but tls_keyfile is not"):
        Settings.from_sources(None, tls_certfile=str(cert))


# -- pieces ---------------------------------------------------------------------------------------------
def test_allowed_hosts_setting_from_environment_and_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CATHLAB_ALLOWED_HOSTS", "edge.lab.example, 10.1.2.3,*.lab.example")
    assert Settings.from_sources(None).allowed_hosts == ["edge.lab.example", "10.1.2.3", "*.lab.example"]
    monkeypatch.setenv("CATHLAB_ALLOWED_HOSTS", "http://edge/")
    with pytest.raises(SettingsError, match="allowed_hosts"):
        Settings.from_sources(None)
    monkeypatch.delenv("CATHLAB_ALLOWED_HOSTS")
    config = tmp_path / "config.toml"
    config.write_text('tls_certfile = "tls/cert.pem"\ntls_keyfile = "tls/key.pem"\n')
    settings = Settings.from_sources(config)
    assert settings.tls_certfile == tmp_path / "tls" / "cert.pem"    # relative to the file, like data_dir
    shown = subprocess.run([sys.executable, "-m", "api.cli", "--config", str(config), "config", "--show"],
                           cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    assert f'tls_certfile = "{tmp_path / "tls" / "cert.pem"}"' in shown
    assert "# allowed_hosts = (not set)  # default" in shown


def test_host_header_parsing_and_matching():
    assert host_of("[::1]:8000") == "::1" and host_of("Edge.Lab.:80") == "edge.lab" and host_of("::1") == "::1"
    assert host_of("[::1]:80@evil") is None and host_of("[fe80::1%eth0]:80") == "fe80::1%eth0"
    assert host_of("a:65536") is None and host_of("a:65535") == "a"
    hosts = TrustedHosts(None, ["localhost", "*.lab.example"])
    assert hosts.allowed("ward.lab.example", None) and not hosts.allowed("lab.example.evil", None)
    assert hosts.allowed("10.0.0.5", "10.0.0.5") and not hosts.allowed("10.0.0.6", "10.0.0.5")
    assert hosts.allowed("fe80::1", "fe80::1%eth0")
    assert not TrustedHosts(None, ["*"]).allowed(None, "127.0.0.1")    # malformed even where any name goes


def test_watchdog_stops_petting_when_the_api_does_not_answer():
    with socket.create_server(("127.0.0.1", 0)) as silent:   # accepts (backlog) and never answers
        probe = ApiProbe("0.0.0.0", silent.getsockname()[1], timeout_s=0.3)
        dog = Watchdog(lambda: True, interval_s=1.0, address=None)
        dog.also_require(probe, probe.status_text)
        assert dog.step() is False and dog.misses == 1
        assert "does not answer" in probe.reason and "127.0.0.1" in probe.reason
