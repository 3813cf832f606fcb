"""doctor: each check on a real pty, real files and directories; exit 0 only when nothing failed."""
from __future__ import annotations

import io
import os
import secrets

import pytest

from api.cli.doctor import doctor_main
from core.ops.doctor import FAIL, OK, WARN, check_clock, check_data_dir, check_serial, check_token, check_video
from core.ops.settings import Settings


@pytest.fixture
def pty_path():
    master, slave = os.openpty()
    yield os.ttyname(slave)
    os.close(master)
    os.close(slave)


def good_token(data_dir):
    path = data_dir / "api-token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, (secrets.token_urlsafe(32) + "\n").encode())
    os.close(fd)
    return path


def test_serial_pty_opens_and_missing_port_says_what_to_do(pty_path, tmp_path):
    assert check_serial(pty_path, 115200).status == OK
    assert check_serial(None, 115200).status == OK
    missing = check_serial(str(tmp_path / "ttyUSB9"), 115200)
    assert missing.status == FAIL and "by-id" in missing.fix
    not_tty = tmp_path / "plain"
    not_tty.write_text("")
    wrong = check_serial(str(not_tty), 115200)
    assert wrong.status == FAIL and "not a serial device" in wrong.fix


def test_video_checks(tmp_path):
    assert check_video(None).status == OK
    gone = check_video("/dev/video97")
    assert gone.status == FAIL and "grabber" in gone.fix
    stack = tmp_path / "run.npy"
    stack.write_bytes(b"")
    assert check_video(str(stack)).status == OK
    assert check_video(str(tmp_path)).status == OK
    assert check_video(str(tmp_path / "nope.dcm")).status == FAIL
    # /dev/null opens but is no V4L2 device: the capability query fails (or linuxpy is missing: a warning).
    assert check_video("/dev/null").status in (FAIL, WARN)


def test_data_dir(tmp_path):
    ok = check_data_dir(tmp_path, 0)
    assert ok.status == OK and "MB free" in ok.detail
    assert check_data_dir(tmp_path / "new", 0).status == WARN
    full = check_data_dir(tmp_path, 10**12)
    assert full.status == FAIL and "below" in full.detail and full.fix
    afile = tmp_path / "f"
    afile.write_text("")
    assert check_data_dir(afile, 0).status == FAIL
    assert check_data_dir(afile / "sub", 0).status == FAIL      # parent is a file: cannot be created
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".doctor")]   # probe cleaned up


def test_data_dir_says_what_the_space_went_to(tmp_path):
    """Event log (with its WAL), recordings and kept run images, each counted in MB."""
    (tmp_path / "events.sqlite3").write_bytes(b"x" * 2**20)
    (tmp_path / "events.sqlite3-wal").write_bytes(b"x" * 2**19)
    (tmp_path / "recordings" / "p1").mkdir(parents=True)
    (tmp_path / "recordings" / "p1" / "r.npy").write_bytes(b"x" * 3 * 2**20)
    (tmp_path / "run_images" / "p1").mkdir(parents=True)
    (tmp_path / "run_images" / "p1" / "s-1.npy").write_bytes(b"x" * 2**21)
    detail = check_data_dir(tmp_path, 0).detail
    assert "event log 1.5 MB" in detail and "recordings 3.0 MB" in detail and "run images 2.0 MB" in detail


def test_token_states(tmp_path):
    path = tmp_path / "api-token"
    assert check_token(path).status == WARN
    good_token(tmp_path)
    assert check_token(path).status == OK
    os.chmod(path, 0o644)
    bad = check_token(path)
    assert bad.status == FAIL and "644" in bad.detail and "chmod 600" in bad.fix
    os.chmod(path, 0o600)
    path.write_text("short\n")
    assert check_token(path).status == FAIL
    path.unlink()
    path.mkdir()
    assert check_token(path).status == FAIL


@pytest.mark.parametrize("command, status", [
    (("echo", "yes"), OK), (("echo", "no"), WARN), (("false",), WARN), (("/no/such/timedatectl",), WARN)])
def test_ntp_state(command, status):
    clock, ntp = check_clock(command, probe_s=0.01)
    assert clock.status == OK and ntp.status == status
    if status != OK:
        assert ntp.fix


def test_doctor_main_exit_codes(tmp_path, pty_path):
    good_token(tmp_path)
    settings = Settings(data_dir=tmp_path, serial=pty_path, min_free_mb=0)
    out = io.StringIO()
    assert doctor_main(settings, out) == 0
    text = out.getvalue()
    assert "all checks passed" in text and "serial port" in text and "API token" in text
    out = io.StringIO()
    assert doctor_main(Settings(data_dir=tmp_path, serial=str(tmp_path / "ttyX"), min_free_mb=0), out) == 1
    assert "[FAIL] serial port" in out.getvalue() and "fix:" in out.getvalue() and "1 problem" in out.getvalue()
