"""One settings object for the whole appliance.

Precedence, highest first: command-line flags > environment (``CATHLAB_*``) > the TOML file (``--config``) >
defaults. ``Settings.from_sources`` builds it and remembers where each value came from, so ``cathlab-edge
config --show`` can say so and a validation error can name the setting, the bad value and where it was set.

The TOML file holds the same names as the fields below, flat, at top level (``port = 8080``). Relative paths
in the file are taken relative to the file, so a config installed in /etc/cathlab-edge does not depend on the
service's working directory.
"""
from __future__ import annotations

import contextvars
import difflib
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, get_args

from platformdirs import user_data_dir
from pydantic import Field, PrivateAttr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from core.vocab import VIDEO_NONE, VIDEO_PHANTOM

ENV_PREFIX = "CATHLAB_"
# The two words the video setting takes besides a device, file or folder.


def default_data_dir() -> Path:
    # A system service runs as its own user with a writable /var/lib/cathlab-edge (systemd StateDirectory).
    system = Path("/var/lib/cathlab-edge")
    if system.is_dir() and _writable(system):
        return system
    return Path(user_data_dir("cathlab-edge", appauthor=False))


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK | os.X_OK)


class SettingsError(ValueError):
    """Settings that cannot be used; the message names each bad setting and where it came from."""


# The TOML values of the from_sources() call in progress: pydantic-settings builds its sources per class,
# so the file reaches the source below through a context variable instead of class state.
_TOML_VALUES: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("cathlab_toml", default={})


class _TomlValues(PydanticBaseSettingsSource):
    def get_field_value(self, field, field_name):  # pragma: no cover - __call__ below does the work
        return _TOML_VALUES.get().get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_TOML_VALUES.get())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    data_dir: Path = Field(default_factory=default_data_dir)
    # None: the built-in injector simulator, through pyserial's URL handler.
    serial: str | None = None
    baudrate: int = Field(115200, gt=0)
    # "none": no video; "phantom": the built-in fluoroscopy phantom; /dev/videoN: a V4L2 grabber; else a .npy /
    # DICOM file or folder. Unset: the phantom beside the built-in injector simulator, no video beside a real
    # injector (``serial`` set), so a demo phantom never plays against real telemetry (see ``video_source``).
    video: str | None = None
    # Frame rate of the video line; None: the file's own (DICOM), the grabber's, or 30 fps for the phantom.
    video_fps: float | None = Field(None, gt=0, le=240)
    # The collimated field (x, y, w, h) in frame pixels; None: found automatically (core.sources.collimator).
    video_crop: Annotated[tuple[int, int, int, int] | None, NoDecode] = None
    # Lysis grade thresholds (% clearance): II from the first, III above the second (SIR 50,95; CaVenT 50,90).
    grade_thresholds: Annotated[tuple[float, float], NoDecode] = (50.0, 95.0)
    # Replayed files: times real time, 0 for as fast as possible (TOML has no None); start over at the end.
    replay_speed: float = Field(1.0, ge=0, le=100)
    replay_loop: bool = True
    # Phantom only: "log" is 8-bit display video, "lin" 16-bit linear detector frames.
    phantom_intensity: str = Field("log", pattern="^(lin|log)$")
    phantom_size: int = Field(512, ge=64, le=2048)
    # What the built-in simulators play (firmware_bridge.scenarios.TIMELINES): "procedure", the DVT procedure at
    # 15 pulses/s with the injector's venograms; "dsa", a hand-injected DSA venogram at 4 then 1 frames/s.
    phantom_timeline: str = Field("procedure", pattern="^(procedure|dsa)$")

    # Iodine concentration of the injector's contrast (mg iodine / ml; e.g. 300 for iohexol 300): the serial
    # protocol does not carry it. None: iodine grams unknown for injector volumes.
    contrast_concentration_mg_ml: float | None = Field(None, gt=0, le=1000)

    # Every run belongs to a procedure: open one automatically when X-ray starts and none is open.
    auto_procedure: bool = True

    # Serial link timing (protocol document): silent after 3 s without a packet.
    link_silent_s: float = Field(3.0, gt=0)
    reconnect_min_s: float = Field(0.2, gt=0)
    reconnect_max_s: float = Field(5.0, gt=0)

    # Procedure recording (core.store.recorder): contrast-run frames and raw serial bytes, oldest dropped first.
    record: bool = False
    record_retention_mb: float = Field(2048.0, gt=0)
    # Recordings are blanked outside the collimated field and in the burnt-in text boxes (where C-arms print
    # the patient's name); true keeps the frames as captured, for a device whose overlay shows no identity.
    record_raw: bool = False

    # Logs: one JSON object per line on stderr (journald), or plain text for a terminal.
    log_format: str = Field("json", pattern="^(json|text)$")
    log_level: str = Field("info", pattern="^(debug|info|warning|error)$")

    # Below this much free space on the data directory the doctor (and the alarm) complain.
    min_free_mb: int = Field(1024, ge=0)

    # HTTPS for the API and the page: a PEM certificate (chain) and its private key, both or neither. Without
    # them, listening beyond loopback is warned about (log and status page): the write token would travel in clear.
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    # A request (head and body) must be complete this long after its first byte, or after connecting (TLS
    # handshake included); else 408 and closed, so slow or silent clients hold no descriptor for long. Raise it
    # for clients on slow links uploading large bodies.
    request_timeout_s: float = Field(10.0, ge=1, le=300)
    # More Host header names the API answers (DNS rebinding protection: others get 400), "*.domain" or "*".
    # Always answered: localhost, 127.0.0.1, ::1, the machine's host name, the bound address and the address
    # of the interface a request came in on.
    allowed_hosts: Annotated[list[str] | None, NoDecode] = None
    # Event-log retention, enforced at start and every 10 minutes: closed procedures (with their runs and
    # results) older than the age, and the oldest beyond the size, are deleted; the open one never is.
    # About a year of a busy lab fits 1 GB; the recordings and min_free_mb leave the rest of a small disk.
    event_retention_days: float = Field(365.0, gt=0)
    event_retention_mb: float = Field(1024.0, gt=0)

    # Fleet (core.fleet, docs/fleet.md): the log forwarded to an MQTT broker. Off unless fleet_broker is set
    # (mqtt://host:1883 or mqtts://host:8883). The password is read from a file, never given as a value.
    fleet_broker: str | None = Field(None, pattern=r"^mqtts?://")
    fleet_username: str | None = None
    fleet_password_file: Path | None = None
    fleet_ca_file: Path | None = None
    fleet_client_cert: Path | None = None
    fleet_client_key: Path | None = None
    # Where the box stands, in the fleet's topics and reports; appliance_id unset: generated at first start and
    # kept in the data directory (brokers' ACLs often equal it to the username).
    site: str = Field("unassigned", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    room: str | None = None
    appliance_id: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

    _sources: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("video")
    @classmethod
    def _check_video(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise ValueError(f"empty; use {VIDEO_NONE!r}, {VIDEO_PHANTOM!r}, a /dev/videoN grabber or a file or folder")
        word = value.strip().lower()
        return word if word in (VIDEO_NONE, VIDEO_PHANTOM) else value

    @property
    def video_source(self) -> str:
        """The video in force: "none", "phantom", or a grabber, file or folder path."""
        if self.video is None:
            return VIDEO_PHANTOM if self.serial is None else VIDEO_NONE
        return self.video

    @field_validator("video_crop", mode="before")
    @classmethod
    def _parse_crop(cls, value: Any) -> Any:
        # From the environment or a flag the crop is the text "x,y,w,h".
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",")]
            if len(parts) != 4 or not all(p.lstrip("-").isdigit() for p in parts):
                raise ValueError(f"expected 'x,y,w,h' (four integers), got {value!r}")
            value = tuple(int(p) for p in parts)
        return value

    @field_validator("video_crop")
    @classmethod
    def _check_crop(cls, value: tuple[int, int, int, int] | None) -> tuple[int, int, int, int] | None:
        if value is not None:
            x, y, w, h = value
            if x < 0 or y < 0 or w <= 0 or h <= 0:
                raise ValueError(f"crop needs x, y >= 0 and w, h > 0, got {value}")
        return value

    @field_validator("grade_thresholds", mode="before")
    @classmethod
    def _parse_grades(cls, value: Any) -> Any:
        # From the environment or a flag the thresholds are the text "50,95".
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",")]
            try:
                value = tuple(float(p) for p in parts)
            except ValueError:
                raise ValueError(f"expected 'II,III' (two numbers), got {value!r}") from None
        return value

    @field_validator("grade_thresholds")
    @classmethod
    def _check_grades(cls, value: tuple[float, float]) -> tuple[float, float]:
        lo, hi = value
        if not (0.0 < lo < hi <= 100.0):
            raise ValueError(f"grade thresholds need 0 < II < III <= 100, got {value}")
        return value

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _parse_hosts(cls, value: Any) -> Any:
        # From the environment the list is the text "name,name".
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _check_hosts(cls, value: list[str] | None) -> list[str] | None:
        for host in value or ():
            if not host or any(c in host for c in " /@?#,") or "*" in host.lstrip("*").removeprefix("."):
                raise ValueError(f"{host!r} is not a host name, an address, '*.domain' or '*'")
        return value

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        # First wins: CLI (init) > environment > TOML file > defaults.
        return init_settings, env_settings, _TomlValues(settings_cls)

    @classmethod
    def from_sources(cls, config_path: Path | str | None = None, **cli_overrides: Any) -> "Settings":
        """Settings from flags (``None`` values mean "not given"), then the environment, the TOML file, defaults.

        Raises SettingsError naming every bad setting and its source.
        """
        cli = {k: v for k, v in cli_overrides.items() if v is not None}
        unknown = sorted(set(cli) - set(cls.model_fields))
        if unknown:
            raise SettingsError(f"unknown setting(s) from the command line: {', '.join(unknown)}")
        path = Path(config_path) if config_path is not None else None
        toml = load_toml(path) if path is not None else {}
        env = _env_names(cls)
        sources = {}
        for name in cls.model_fields:
            if name in cli:
                sources[name] = "command line"
            elif name in env:
                sources[name] = f"environment {env[name]}"
            elif name in toml:
                sources[name] = f"{path}"
            else:
                sources[name] = "default"
        token = _TOML_VALUES.set(toml)
        try:
            settings = cls(**cli)
        except ValidationError as exc:
            raise SettingsError(_describe(exc, sources)) from None
        finally:
            _TOML_VALUES.reset(token)
        if settings.reconnect_min_s > settings.reconnect_max_s:
            raise SettingsError(
                f"reconnect_min_s ({settings.reconnect_min_s}, {sources['reconnect_min_s']}) must not exceed "
                f"reconnect_max_s ({settings.reconnect_max_s}, {sources['reconnect_max_s']})")
        if (settings.tls_certfile is None) != (settings.tls_keyfile is None):
            given, missing = (("tls_certfile", "tls_keyfile") if settings.tls_keyfile is None
                              else ("tls_keyfile", "tls_certfile"))
            raise SettingsError(f"{given} is set ({sources[given]}) but {missing} is not: HTTPS needs both "
                                "the certificate and its private key")
        if (settings.fleet_client_cert is None) != (settings.fleet_client_key is None):
            raise SettingsError("fleet_client_cert and fleet_client_key go together: set both or neither")
        settings._sources = sources
        return settings

    def source_of(self, name: str) -> str:
        """Where the value in force came from: "default", "command line", "environment CATHLAB_X" or a file."""
        if name not in type(self).model_fields:
            raise ValueError(f"no setting {name!r}")
        return self._sources.get(name, "constructor")


def load_toml(path: Path) -> dict[str, Any]:
    """The flat table of a settings file; unknown keys, tables and syntax errors raise SettingsError."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise SettingsError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise SettingsError(f"config file {path} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path} is not valid TOML: {exc}") from None
    fields = Settings.model_fields
    problems = []
    for key, value in data.items():
        if isinstance(value, dict):
            problems.append(f"{key!r} is a table; settings are plain top-level keys")
        elif key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"unknown setting {key!r}{hint}")
    if problems:
        raise SettingsError(f"config file {path}: " + "; ".join(problems))
    base = path.resolve().parent
    for key, value in data.items():
        is_path = Path in (fields[key].annotation, *get_args(fields[key].annotation))   # Path or Path | None
        if is_path and isinstance(value, str) and not os.path.isabs(value):
            data[key] = str(base / value)
    return data


def _env_names(cls: type[Settings]) -> dict[str, str]:
    """field -> the CATHLAB_* variable that sets it (names are case-insensitive, like pydantic-settings)."""
    present = {k.upper(): k for k in os.environ}
    return {name: present[ENV_PREFIX + name.upper()] for name in cls.model_fields
            if ENV_PREFIX + name.upper() in present}


def _describe(exc: ValidationError, sources: dict[str, str]) -> str:
    lines = []
    for err in exc.errors():
        name = str(err["loc"][0]) if err["loc"] else "?"
        where = sources.get(name, "?")
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" = {value!r}"
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown setting {name!r} ({where})")
        else:
            lines.append(f"{name}{shown} ({where}): {err['msg']}")
    return "invalid settings: " + "; ".join(lines)
