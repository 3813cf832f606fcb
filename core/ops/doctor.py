"""The box check: what the appliance needs from its box, and what to fix (``cathlab-edge doctor`` prints it).

Checks the injector serial port, the frame grabber (or replay file), the data directory (exists, writable,
free space), the clock (monotonic against wall, NTP synchronisation) and the API token file. Each ``Check``
says ok / warn / FAIL with the reason, and for anything not ok, the fix.
"""
from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from core.identity import content_label
from core.ops.settings import Settings

OK, WARN, FAIL = "ok", "warn", "FAIL"
TOKEN_FILE = "api-token"            # api/auth.py creates it on first start; core/ must not import api/
TOKEN_MIN_LEN = 32
CLOCK_PROBE_S = 0.2                 # wall and monotonic must advance alike over this interval
CLOCK_TOLERANCE_S = 0.05
EARLIEST_PLAUSIBLE_YEAR = 2024      # an unset real-time clock starts in 1970 or 2000


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


def run_checks(settings: Settings) -> list[Check]:
    data_dir = Path(settings.data_dir)
    return [check_serial(settings.serial, settings.baudrate), check_video(settings.video_source),
            check_data_dir(data_dir, settings.min_free_mb), *check_clock(),
            check_token(data_dir / TOKEN_FILE)]


# -- serial ----------------------------------------------------------------------------------------------
def check_serial(url: str | None, baudrate: int) -> Check:
    name = "serial port"
    if url is None:
        return Check(name, OK, "none configured: the built-in injector simulator is used")
    import serial

    try:
        port = serial.serial_for_url(url, baudrate=baudrate, timeout=0.1, exclusive=True) \
            if "://" not in url else serial.serial_for_url(url, baudrate=baudrate, timeout=0.1)
    except (serial.SerialException, OSError, ValueError) as exc:
        return Check(name, FAIL, f"{url} cannot be opened: {exc}", _serial_fix(url, exc))
    try:
        port.close()
    except (serial.SerialException, OSError):
        pass
    return Check(name, OK, f"{url} opens at {baudrate} baud")


def _serial_fix(url: str, exc: Exception) -> str:
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code == errno.ENOENT or "No such file" in text:
        return "plug in the USB-serial adapter and use its stable name from `ls -l /dev/serial/by-id/`"
    if code == errno.EACCES or "Permission denied" in text:
        return "add the service user to the dialout group (the unit has SupplementaryGroups=dialout)"
    if code == errno.EBUSY or "lock" in text.lower() or "busy" in text.lower():
        return "another program holds the port (a terminal, ModemManager?): stop it; `fuser -v " + url + "`"
    if "configure" in text or code == errno.ENOTTY:
        return f"{url} is not a serial device: check the serial setting"
    return "check the serial setting and the cable"


# -- video -----------------------------------------------------------------------------------------------
def check_video(video: str | None) -> Check:
    name = "grabber"
    if video is None or video == "phantom":
        return Check(name, OK, "none configured: the built-in fluoroscopy phantom is used")
    if video == "none":
        return Check(name, OK, "no video by configuration: the injector alone is watched")
    path = Path(video)
    if not path.exists():
        if video.startswith("/dev/"):
            return Check(name, FAIL, f"{video} does not exist",
                         "plug in the frame grabber and check `ls -l /dev/v4l/by-id/`")
        return Check(name, FAIL, "the video file or folder to replay does not exist",
                     "check the video setting (its value is not shown: file names may carry patient identity)")
    if path.is_dir() or path.is_file():
        if not os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)):
            return Check(name, FAIL, "the video file or folder to replay is not readable",
                         "give the service user read access")
        # Named by content hash, as the appliance logs it: study exports are named after the patient.
        return Check(name, OK, f"{content_label(path)} is a {'folder' if path.is_dir() else 'file'} to replay")
    if not stat.S_ISCHR(path.stat().st_mode):
        return Check(name, FAIL, f"{video} is neither a video device nor a file", "check the video setting")
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    except OSError as exc:
        fix = ("add the service user to the video group (the unit has SupplementaryGroups=video)"
               if exc.errno == errno.EACCES else "check the grabber and its driver (`dmesg`, `v4l2-ctl --all`)")
        return Check(name, FAIL, f"{video} cannot be opened: {exc.strerror}", fix)
    os.close(fd)
    try:
        from core.sources.v4l2 import probe_device
    except ImportError as exc:  # linuxpy missing: the device opened, its formats cannot be read
        return Check(name, WARN, f"{video} opens, formats not checked ({exc})", "pip install linuxpy")
    try:
        summary = probe_device(video)
    except (OSError, ValueError) as exc:
        return Check(name, FAIL, f"{video}: {exc}", "check the grabber's input signal and mode")
    return Check(name, OK, f"{video}: {summary}")


# -- data directory --------------------------------------------------------------------------------------
def check_data_dir(data_dir: Path, min_free_mb: int) -> Check:
    name = "data directory"
    if not data_dir.exists():
        parent = next((p for p in data_dir.parents if p.exists()), None)
        if parent is not None and os.access(parent, os.W_OK | os.X_OK):
            return Check(name, WARN, f"{data_dir} does not exist yet; it will be created at first start")
        return Check(name, FAIL, f"{data_dir} does not exist and cannot be created",
                     "create it for the service user, or use StateDirectory=cathlab-edge in the unit")
    if not data_dir.is_dir():
        return Check(name, FAIL, f"{data_dir} is not a directory", "point data_dir at a directory")
    probe = data_dir / f".doctor-{os.getpid()}"
    try:
        with open(probe, "wb") as fh:
            fh.write(b"x")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        return Check(name, FAIL, f"{data_dir} is not writable: {exc.strerror}",
                     f"chown the directory to the service user (`chown -R cathlab-edge: {data_dir}`)")
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    free_mb = shutil.disk_usage(data_dir).free / 2**20
    if free_mb < min_free_mb:
        return Check(name, FAIL, f"{data_dir} has {free_mb:.0f} MB free, below {min_free_mb} MB",
                     "free space, lower record_retention_mb, or move data_dir to a larger disk")
    return Check(name, OK, f"{data_dir} writable, {free_mb:.0f} MB free; {_usage(data_dir)}")


USAGE_PARTS = (("event log", "events.sqlite3*"), ("recordings", "recordings"), ("run images", "run_images"))


def _usage(data_dir: Path) -> str:
    """What the appliance's own files take, by part: where the space went when it runs short."""
    parts = []
    for label, pattern in USAGE_PARTS:
        size = sum(_tree_bytes(p) for p in data_dir.glob(pattern))
        parts.append(f"{label} {size / 2**20:.1f} MB")
    return "uses " + ", ".join(parts)


def _tree_bytes(path: Path) -> int:
    try:
        if path.is_symlink() or not path.is_dir():
            return path.lstat().st_size
        return sum(_tree_bytes(p) for p in path.iterdir())
    except OSError:      # vanished while counted (a rotation, a deleted procedure): counts nothing
        return 0


# -- clock -----------------------------------------------------------------------------------------------
def check_clock(ntp_command: tuple[str, ...] = ("timedatectl", "show", "-p", "NTPSynchronized", "--value"),
                probe_s: float = CLOCK_PROBE_S) -> list[Check]:
    checks = []
    year = time.gmtime().tm_year
    w0, m0 = time.time(), time.monotonic()
    time.sleep(probe_s)
    drift = (time.time() - w0) - (time.monotonic() - m0)
    if year < EARLIEST_PLAUSIBLE_YEAR:
        checks.append(Check("clock", FAIL, f"wall clock says {year}: the real-time clock is not set",
                            "set the time and enable NTP (`timedatectl set-ntp true`); displayed times are wrong"))
    elif abs(drift) > CLOCK_TOLERANCE_S:
        checks.append(Check("clock", WARN, f"wall clock moved {drift:+.3f} s against monotonic in {probe_s} s "
                            "(being stepped?)", "let NTP finish synchronising; run doctor again"))
    else:
        checks.append(Check("clock", OK, f"wall and monotonic agree ({drift * 1e3:+.1f} ms in {probe_s} s)"))
    checks.append(_ntp(ntp_command))
    return checks


def _ntp(command: tuple[str, ...]) -> Check:
    name = "NTP"
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=3)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check(name, WARN, f"synchronisation state unknown ({command[0]}: {exc})",
                     "install systemd-timesyncd or chrony, or check the time by hand")
    answer = proc.stdout.strip().lower()
    if proc.returncode != 0 or answer not in ("yes", "no"):
        reason = (proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}").splitlines()[0]
        return Check(name, WARN, f"synchronisation state unknown ({reason})",
                     "on a systemd host: `timedatectl status`")
    if answer == "yes":
        return Check(name, OK, "clock synchronised")
    return Check(name, WARN, "clock not synchronised", "enable NTP: `timedatectl set-ntp true` and reach an NTP "
                 "server (hospital networks often have their own)")


# -- token -----------------------------------------------------------------------------------------------
def check_token(path: Path) -> Check:
    name = "API token"
    if not path.exists():
        return Check(name, WARN, f"{path} does not exist yet; it is created at first start")
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        return Check(name, FAIL, f"{path} is not a regular file", "remove it; a new one is made at start")
    if st.st_mode & 0o077:
        return Check(name, FAIL, f"{path} has mode {stat.S_IMODE(st.st_mode):o}, readable by others",
                     f"`chmod 600 {path}` (or delete it and restart to issue a new token)")
    if st.st_uid != os.geteuid():
        return Check(name, FAIL, f"{path} belongs to uid {st.st_uid}, not to this user ({os.geteuid()})",
                     f"`chown cathlab-edge: {path}`; run doctor as the service user")
    try:
        token = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        return Check(name, FAIL, f"{path} cannot be read: {exc}", "delete it and restart to issue a new token")
    if len(token) < TOKEN_MIN_LEN or not token.isprintable() or " " in token:
        return Check(name, FAIL, f"{path} is empty or malformed", "delete it and restart to issue a new token")
    return Check(name, OK, f"{path} present, mode 600")
