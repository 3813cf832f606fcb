"""The real parts of a fleet for the tests: a Mosquitto broker (TLS, password file, ACL, persistence) and a
PostgreSQL server, each on a free port in its own temporary directory, started and stopped by the test.

Both are the Debian packages (``apt-get install mosquitto postgresql``); their system services are never used.
Mosquitto started as root drops to the ``mosquitto`` user and PostgreSQL refuses root, so their directories
belong to those users.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None) \
    if Path("/usr/lib/postgresql").is_dir() else None

# The ingesters read every appliance's topics; an appliance writes only under its own id (= its user name).
ACL = """\
pattern write cathlab/v1/+/%u/#
user ingest
topic read cathlab/v1/#
"""


def have_parts() -> str | None:
    """Why the fleet tests cannot run here, or None."""
    if not Path(MOSQUITTO).exists() or shutil.which("mosquitto_passwd") is None:
        return "mosquitto is not installed (apt-get install mosquitto)"
    if PG_BIN is None or not (PG_BIN / "initdb").exists():
        return "postgresql is not installed (apt-get install postgresql)"
    if os.geteuid() != 0:
        return "the fleet tests start mosquitto and postgres under their own users and need root"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}): {log.read_text() if log else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def _owned_tempdir(prefix: str, user: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    shutil.chown(path, user, user)
    return path


def make_ca(directory: Path) -> dict[str, Path]:
    """A test CA and a server certificate for localhost / 127.0.0.1 signed by it (openssl, EC keys: fast)."""
    d = Path(directory)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", *ec, "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"), "-days", "2",
        "-subj", "/CN=cathlab test CA")
    run("req", *ec, "-keyout", str(d / "server.key"), "-out", str(d / "server.csr"), "-subj", "/CN=localhost")
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
        "-CAcreateserial", "-out", str(d / "server.pem"), "-days", "2", "-extfile", str(d / "san.ext"))
    return {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key"}


def make_client_cert(directory: Path, name: str) -> tuple[Path, Path]:
    """A client certificate with CN ``name`` signed by the CA that ``make_ca`` left in ``directory``."""
    d = Path(directory)
    cert, key, csr = d / f"{name}.pem", d / f"{name}.key", d / f"{name}.csr"
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa: E731
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key),
        "-out", str(csr), "-subj", f"/CN={name}")
    run("x509", "-req", "-in", str(csr), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"), "-CAcreateserial",
        "-out", str(cert), "-days", "2")
    return cert, key


class Mosquitto:
    """One broker: ``users`` {name: password}; ``start()``, ``stop()`` (a clean shutdown saves the persistence
    file), ``start()`` again on the same port and data, ``close()`` removes everything.

    ``cert_users``: a second TLS listener (``cert_url``) where these log in by client certificate alone, the
    certificate's CN being the user name (``client_certs[name]`` = (cert, key)); the same ACL applies."""

    def __init__(self, users: dict[str, str], *, tls: bool = True, cert_users: tuple[str, ...] = ()) -> None:
        self.dir = _owned_tempdir("fleet-mqtt-", "mosquitto")
        self.port = free_port()
        self.cert_port = free_port() if cert_users else None
        self.users = dict(users)
        self.tls = tls or bool(cert_users)
        self.cert_users = cert_users
        self.client_certs: dict[str, tuple[Path, Path]] = {}
        self.proc: subprocess.Popen | None = None
        self.ca_file: Path | None = None
        self._write_config()

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://localhost:{self.port}"

    @property
    def cert_url(self) -> str:
        return f"mqtts://localhost:{self.cert_port}"

    def _write_config(self) -> None:
        d = self.dir
        passwd = d / "passwd"
        passwd.touch()
        for name, password in self.users.items():
            subprocess.run(["mosquitto_passwd", "-b", str(passwd), name, password], check=True,
                           capture_output=True)
        (d / "acl").write_text(ACL)
        (d / "data").mkdir()
        ca = make_ca(d) if self.tls else None
        tls = [f"cafile {ca['ca']}", f"certfile {ca['cert']}", f"keyfile {ca['key']}"] if ca else []
        lines = ["per_listener_settings true"] if self.cert_users else []
        lines += [f"listener {self.port} 127.0.0.1", "allow_anonymous false", f"password_file {passwd}",
                  f"acl_file {d / 'acl'}", *tls]
        if self.cert_users:
            lines += [f"listener {self.cert_port} 127.0.0.1", "allow_anonymous false", f"acl_file {d / 'acl'}",
                      *tls, "require_certificate true", "use_identity_as_username true"]
            self.client_certs = {name: make_client_cert(d, name) for name in self.cert_users}
        lines += [
            "persistence true",
            f"persistence_location {d / 'data'}/",
            "autosave_interval 1",
            # Sessions of offline ingesters queue far more than any test sends: a restarted one must find every
            # message. Not 0 (no limit): mosquitto 2.0.x (Debian's 2.0.11) then closes the connection after
            # every PUBLISH its ACL denies, racing its own "not authorized" PUBACK (docs/fleet.md).
            "max_queued_messages 10000000",
            "max_inflight_messages 0",
            "set_tcp_nodelay true",
            f"log_dest file {d / 'mosquitto.log'}",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
        ]
        if ca is not None:
            self.ca_file = ca["ca"]
        (d / "mosquitto.conf").write_text("\n".join(lines) + "\n")
        for path in d.rglob("*"):
            shutil.chown(path, "mosquitto", "mosquitto")
        for name in ("passwd", "acl", "server.key", "ca.key"):
            if (d / name).exists():
                os.chmod(d / name, 0o600)
        if self.ca_file is not None:
            os.chmod(self.ca_file, 0o644)

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.dir / "mosquitto.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, 10.0, self.proc, self.dir / "mosquitto.log")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self) -> str:
        try:
            return (self.dir / "mosquitto.log").read_text()
        except OSError:
            return ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Postgres:
    """One PostgreSQL cluster (initdb, pg_ctl, as the postgres user); ``new_db()`` gives a test its own
    database's URL."""

    def __init__(self) -> None:
        self.dir = _owned_tempdir("fleet-pg-", "postgres")
        self.port = free_port()
        self._n = 0
        self._as_postgres(str(PG_BIN / "initdb"), "-D", str(self.dir / "data"), "-U", "postgres", "-A", "trust",
                          "-E", "UTF8", "--no-sync")

    def _as_postgres(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True,
                              text=True, cwd=self.dir)

    def start(self) -> None:
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off")
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.dir / "data"), "-o", opts,
                          "-l", str(self.dir / "postgres.log"), "-w", "-t", "30", "start")

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def new_db(self) -> str:
        import psycopg
        self._n += 1
        name = f"fleet{self._n}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def close(self) -> None:
        try:
            self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "-w",
                              "stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
