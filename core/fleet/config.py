"""Where the fleet link goes and who the appliance is: the broker URL, credentials, TLS files, the topic names
and the appliance's id (generated at first start, kept in the data directory)."""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

TOPIC_ROOT = "cathlab/v1"
EVENT_SCHEMA = "cathlab.event/1"
STATUS_SCHEMA = "cathlab.status/1"
# Ids become topic levels and ACL user names: no MQTT wildcards, separators or spaces.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ID_FILE = "appliance_id"


class FleetConfigError(ValueError):
    """A fleet setting that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_broker(url: str, *, username: str | None = None, password_file: Path | None = None,
                 ca_file: Path | None = None, client_cert: Path | None = None,
                 client_key: Path | None = None) -> Broker:
    """``mqtt://host[:1883]`` or ``mqtts://host[:8883]`` and the credentials beside it."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise FleetConfigError(f"fleet broker {url!r}: expected mqtt://host:port or mqtts://host:port")
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise FleetConfigError(f"fleet broker {url!r}: bad port") from None
    if (client_cert is None) != (client_key is None):
        raise FleetConfigError("fleet_client_cert and fleet_client_key go together")
    if (ca_file or client_cert) and not tls:
        raise FleetConfigError(f"fleet broker {url!r}: a CA file or client certificate needs mqtts://")
    password = None
    if password_file is not None:
        try:
            password = Path(password_file).read_text().strip()
        except OSError as exc:
            raise FleetConfigError(f"fleet password file {password_file} cannot be read: {exc.strerror}") from None
    return Broker(parts.hostname, port, tls, username or parts.username, password or parts.password,
                  ca_file, client_cert, client_key)


def check_name(what: str, value: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise FleetConfigError(f"{what} {value!r}: use letters, digits, '.', '_' or '-' (it is an MQTT topic level)")
    return value


def appliance_id(data_dir: Path, configured: str | None) -> str:
    """The configured id, else the one generated at first start and kept in the data directory."""
    if configured:
        return check_name("appliance_id", configured)
    path = Path(data_dir) / ID_FILE
    try:
        return check_name("appliance_id", path.read_text().strip())
    except FileNotFoundError:
        pass
    new = f"ce-{uuid.uuid4().hex[:16]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(ID_FILE + ".tmp")
    tmp.write_text(new + "\n")
    tmp.replace(path)   # atomic: a crash leaves the old id or the new one, never half
    return new


def events_topic(site: str, aid: str) -> str:
    return f"{TOPIC_ROOT}/{site}/{aid}/events"


def status_topic(site: str, aid: str) -> str:
    return f"{TOPIC_ROOT}/{site}/{aid}/status"


def split_topic(topic: str) -> tuple[str, str, str] | None:
    """(site, appliance_id, leaf) of a fleet topic, or None."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != TOPIC_ROOT:
        return None
    return parts[2], parts[3], parts[4]
