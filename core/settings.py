"""One settings object for the whole appliance: defaults, then environment (CATHLAB_*), then CLI flags."""
from __future__ import annotations

from pathlib import Path

from platformdirs import user_data_dir
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    # A system service runs as its own user with a writable /var/lib/cathlab-edge (systemd StateDirectory).
    system = Path("/var/lib/cathlab-edge")
    if system.is_dir() and _writable(system):
        return system
    return Path(user_data_dir("cathlab-edge", appauthor=False))


def _writable(path: Path) -> bool:
    import os

    return os.access(path, os.W_OK | os.X_OK)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CATHLAB_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    data_dir: Path = Field(default_factory=default_data_dir)
    # None: the built-in injector simulator, through pyserial's URL handler.
    serial: str | None = None
    baudrate: int = Field(115200, gt=0)
    # None: the built-in fluoroscopy phantom.
    video: str | None = None
    # Frame rate of the video line; None: the file's own (DICOM) or 30 fps for the phantom.
    video_fps: float | None = Field(None, gt=0, le=240)
    # Phantom only: "log" is 8-bit display video, "lin" 16-bit linear detector frames.
    phantom_intensity: str = Field("log", pattern="^(lin|log)$")
    phantom_size: int = Field(512, ge=64, le=2048)

    # Every run belongs to a procedure: open one automatically when X-ray starts and none is open.
    auto_procedure: bool = True

    # Serial link timing (protocol document): silent after 3 s without a packet.
    link_silent_s: float = Field(3.0, gt=0)
    reconnect_min_s: float = Field(0.2, gt=0)
    reconnect_max_s: float = Field(5.0, gt=0)
