"""Every input error of the ``cathlab-edge`` command line is one line on stderr and exit status 2, never a
traceback: the eight tracebacks the red team found, through the real CLI in a subprocess, every numeric flag's
range, and the malformed files a user is likely to hand it."""
from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from api.cli.main import build_parser
from core.sources.phantom.config import PhantomConfig
from core.sources.phantom.render import render_run
from tests.dicom_files import write_multiframe

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, cwd=None, preexec_fn=None, prefix=(), timeout=60):
    """Run ``python -m api.cli ARGS`` (optionally behind ``prefix``): (exit status, stdout, stderr)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), CATHLAB_LOG_FORMAT="text")
    proc = subprocess.run([*prefix, sys.executable, "-m", "api.cli", *map(str, args)], cwd=cwd or ROOT, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=preexec_fn)
    return proc.returncode, proc.stdout, proc.stderr


def assert_one_line_error(result, *fragments):
    code, out, err = result
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err
    # A recording's file name may carry patient identity: an error names it by its content hash, never by name.
    assert not re.search(r"[\w^-]+\.(npy|dcm)\b", err) or "--plot" in err or "config file" in err, err
    for fragment in fragments:
        assert fragment in err, err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    run = render_run(PhantomConfig(size=(64, 64), intensity="log", seed=5, diameter_px=8.0))
    np.save(d / "run.npy", run.frames)
    np.save(d / "post.npy", run.frames)
    np.save(d / "noise.npy", np.random.default_rng(0).integers(0, 256, (120, 1, 1), dtype=np.uint8))
    # A .npy whose header promises a negative number of frames (numpy trusts it up to mmap).
    header = "{'descr': '|u1', 'fortran_order': False, 'shape': (-5, 64, 64), }"
    header = header.ljust(118) + "\n"
    (d / "negative.npy").write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode()
                                     + bytes(100))
    (d / "truncated.npy").write_bytes((d / "run.npy").read_bytes()[:500])
    (d / "empty.npy").write_bytes(b"")
    (d / "notes.dcm").write_text("not a DICOM file\n")
    (d / "folder.npy").mkdir()
    # A DICOM run whose Frame Time says 1e-300 ms: a rate of 1e303 frames/s.
    write_multiframe(d / "tiny_frame_time.dcm", run.frames[:20], frame_time_ms=None)
    ds = pydicom.dcmread(d / "tiny_frame_time.dcm")
    ds.FrameTime = "1e-300"
    ds.save_as(d / "tiny_frame_time.dcm")
    return d


# -- the eight tracebacks the red team found, and the 1x1 noise stack -------------------------------------------
@pytest.mark.parametrize("flag,value,fragment", [
    ("--fps", "1e300", "--fps: 1e300 is out of range; expected [0.1, 240] frames/s"),
    ("--fps", "1e-300", "--fps: 1e-300 is out of range; expected [0.1, 240] frames/s"),
    ("--injection-start", "1e300", "--injection-start: 1e300 is out of range; expected [-3600, 86400] s"),
])
def test_out_of_range_numbers(files, flag, value, fragment):
    args = ["analyze", files / "run.npy", flag, value] + (["--fps", "30"] if flag != "--fps" else [])
    assert_one_line_error(cli(*args), fragment)


@pytest.mark.parametrize("command", ["analyze", "clearance"])
def test_npy_header_with_a_negative_shape(files, command):
    inputs = [files / "negative.npy"] * (2 if command == "clearance" else 1)
    assert_one_line_error(cli(command, *inputs, "--fps", "30"),
                          "the .npy header declares an impossible shape (-5, 64, 64)")


def test_dicom_frame_time_of_1e_minus_300(files):
    assert_one_line_error(cli("analyze", files / "tiny_frame_time.dcm"),
                          "frame rate 1e+303 frames/s is outside [0.1, 240]")


def test_data_dir_where_no_file_can_be_made(tmp_path):
    assert_one_line_error(cli("run", "--data-dir", "/proc/self", "--port", "0"),
                          "cannot keep the API token in /proc/self")


def _full_tmpfs(mount_point: Path):
    """A command prefix that runs the CLI with ``mount_point`` a full 64 kB tmpfs (a private mount namespace,
    gone with the process), or None when this machine cannot mount one."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    script = ('mount -t tmpfs -o size=64k tmpfs "$0" && { dd if=/dev/zero of="$0/fill" bs=4k 2>/dev/null; '
              'exec "$@"; }')
    probe = subprocess.run([unshare, "-rm", "sh", "-c", script, str(mount_point), "true"], capture_output=True)
    return [unshare, "-rm", "sh", "-c", script, str(mount_point)] if probe.returncode == 0 else None


def _no_file_growth():
    # RLIMIT_FSIZE 0: the kernel refuses any write that grows a file (EFBIG), the way a quota would.
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))


def test_full_disk_while_creating_the_token(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    prefix = _full_tmpfs(data)
    if prefix is not None:
        # A real full file system: the token's write fails with ENOSPC.
        result = cli("run", "--data-dir", data, "--port", "0", prefix=prefix)
        assert_one_line_error(result, f"cannot keep the API token in {data}: No space left on device")
    else:
        # No mount namespace here: the write fails in the kernel for a file-size limit instead (EFBIG).
        result = cli("run", "--data-dir", data, "--port", "0", preexec_fn=_no_file_growth)
        assert_one_line_error(result, f"cannot keep the API token in {data}: File too large")
    assert not (data / "api-token").exists()


def test_a_1x1_noise_stack_is_not_fluoroscopy(files):
    for args in (["analyze", files / "noise.npy", "--fps", "30"],
                 ["clearance", files / "run.npy", files / "noise.npy", "--fps", "30"],
                 ["run", "--video", files / "noise.npy", "--fps", "30", "--data-dir", files / "data", "--port", "0"]):
        assert_one_line_error(cli(*args), "1x1 pixel frames are not fluoroscopy "
                                          "(need at least 16 pixels on a side)")


# -- every numeric flag, checked in one place -----------------------------------------------------------------
def numeric_flags():
    """(command argv prefix, flag) for every option whose type is one of api.argtypes' checked numbers."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    found = []
    for name, command in sub.choices.items():
        for action in command._actions:
            if action.type in (float, int):
                raise AssertionError(f"{name} {action.option_strings}: an unchecked number")
            if hasattr(action.type, "bounds"):
                found.append((name, action.option_strings[0]))
    return found


def test_the_numeric_flags_are_all_checked():
    flags = numeric_flags()
    assert ("analyze", "--fps") in flags and ("run", "--port") in flags and ("simulate-injector", "--ber") in flags
    assert len(flags) == 13


REQUIRED = {"analyze": ["x.npy"], "vessel": ["x.npy"], "clearance": ["a.npy", "b.npy"],
            "simulate-injector": ["--port", "pty"],
            "serial-check": ["--port", "loop://"]}


@pytest.mark.parametrize("command,flag", numeric_flags())
@pytest.mark.parametrize("value", ["nan", "inf", "-1e300", "1e300", "twelve"])
def test_every_numeric_flag_refuses_what_is_not_a_sensible_number(capsys, command, flag, value):
    with pytest.raises(SystemExit) as stop:   # parsing only: a value let through must not start the command
        build_parser().parse_args([command, *REQUIRED.get(command, []), f"{flag}={value}"])
    assert stop.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and f"argument {flag}: " in err, err
    assert "; expected [" in err or "; expected (" in err, err


# -- files and values a user is likely to get wrong -----------------------------------------------------------
@pytest.mark.parametrize("args,fragment", [
    (["analyze", "{d}/empty.npy", "--fps", "30"], "not a readable .npy array"),
    (["analyze", "{d}/truncated.npy", "--fps", "30"], "truncated .npy file"),
    (["analyze", "{d}/folder.npy", "--fps", "30"], "a directory, not a recording"),
    (["analyze", "{d}/notes.dcm"], "not a DICOM file"),
    (["analyze", "{d}/missing.dcm"], "no such file"),
    (["analyze", "{d}/run.npy", "--fps", "30", "--roi", "60,60,10,10"], "ROI 60,60,10,10 is not inside the 64x64"),
    (["analyze", "{d}/run.npy", "--fps", "30", "--roi", "99999999999999999999,0,4,4"], "64x64"),
    (["analyze", "{d}/run.npy", "--fps", "30", "--roi=-1,0,4,4"], "X and Y must be >= 0"),
    (["analyze", "{d}/run.npy", "--fps", "30", "--plot", "{d}/folder.npy"], "cannot write --plot"),
    (["clearance", "{d}/run.npy", "{d}/post.npy", "--fps", "30", "--centerline", "10,10"], "at least two"),
    (["clearance", "{d}/run.npy", "{d}/post.npy", "--fps", "30", "--centerline", "10,10;nan,20"], "not finite"),
    (["clearance", "{d}/run.npy", "{d}/post.npy", "--fps", "30", "--centerline", "10,10;90,20"], "outside"),
    (["run", "--video", "{d}/missing.npy", "--fps", "30", "--data-dir", "{d}/data", "--port", "0"], "no such file"),
    (["run", "--video", "{d}/run.npy", "--data-dir", "{d}/data", "--port", "0"], "give --fps"),
    (["analyze"], "the following arguments are required: frames"),
    (["run", "--data-dir", "", "--port", "0"], "argument --data-dir: must not be empty"),
    (["run", "--host", "not a host!", "--port", "0", "--data-dir", "{d}/data"], "cannot listen on not a host!:0"),
    (["--config", "{d}/run.npy", "config"], "config file {d}/run.npy is not UTF-8 text"),
])
def test_bad_files_and_values(files, args, fragment):
    assert_one_line_error(cli(*[a.format(d=files) for a in args]), fragment.format(d=files))


def test_a_config_nested_thousands_deep_is_one_line(tmp_path):
    # tomllib recurses per nesting level: 5,000 levels were a RecursionError traceback.
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    for command in (["config", "--show"], ["run", "--port", "0", "--data-dir", tmp_path / "data"]):
        assert_one_line_error(cli("--config", deep, *command), f"config file {deep} is not valid TOML: "
                                                               "arrays or tables nested too deeply")


def test_a_port_in_use_is_one_line_before_anything_starts(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_one_line_error(cli("run", "--port", port, "--data-dir", tmp_path / "data"),
                              f"cannot listen on 127.0.0.1:{port}: Address already in use")
    assert not (tmp_path / "data" / "events.sqlite3").exists()


@pytest.mark.parametrize("change,fragment", [
    (dict(FrameTime="inf"), "Frame Time inf ms is not a positive number"),
    (dict(FrameTime="-66"), "Frame Time -66 ms is not a positive number"),
    (dict(FrameTimeVector=["nan"] * 20), "the Frame Time Vector has a step that is not a positive number"),
    (dict(NumberOfFrames=-3), "cannot decode pixel data"),
    (dict(PixelData=bytes(10)), "cannot decode pixel data"),
    (dict(Rows=8, Columns=8, PixelData=bytes(20 * 64)), "8x8 pixel frames are not fluoroscopy"),
])
@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")   # writing the damage; the CLI must not warn
def test_damaged_dicom_headers(files, tmp_path, change, fragment):
    ds = pydicom.dcmread(files / "tiny_frame_time.dcm")
    ds.FrameTime = "66.7"
    for keyword, value in change.items():
        setattr(ds, keyword, value)
    ds.save_as(tmp_path / "damaged.dcm")
    # No warning from numpy or pydicom on stderr either: the one line is all the user sees.
    assert_one_line_error(cli("analyze", tmp_path / "damaged.dcm"), fragment)
