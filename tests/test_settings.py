"""Settings from defaults, a TOML file, the environment and flags; errors that name setting and source."""
from __future__ import annotations

import io
import tomllib
from pathlib import Path

import pytest

from api.cli.config import config_main
from core.ops.config import render_toml
from core.ops.settings import Settings, SettingsError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    # The developer's or CI's own CATHLAB_* variables must not leak into these tests.
    import os

    for key in list(os.environ):
        if key.upper().startswith("CATHLAB_"):
            monkeypatch.delenv(key)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cathlab.toml"
    path.write_text(text)
    return path


def test_defaults_without_any_source():
    s = Settings.from_sources(None)
    assert s.port == 8000 and s.serial is None and s.video_crop is None
    assert s.source_of("port") == "default"


def test_precedence_cli_over_env_over_toml_over_default(tmp_path, monkeypatch):
    path = write(tmp_path, 'port = 8100\nbaudrate = 9600\nhost = "0.0.0.0"\nlink_silent_s = 4.5\n')
    monkeypatch.setenv("CATHLAB_PORT", "8200")
    monkeypatch.setenv("CATHLAB_BAUDRATE", "19200")
    s = Settings.from_sources(path, port=8300, serial=None)
    assert s.port == 8300 and s.source_of("port") == "command line"
    assert s.baudrate == 19200 and s.source_of("baudrate") == "environment CATHLAB_BAUDRATE"
    assert s.host == "0.0.0.0" and s.source_of("host") == str(path)
    assert s.link_silent_s == 4.5
    # None from argparse means "flag not given", so the lower sources still apply.
    assert s.serial is None and s.source_of("serial") == "default"


def test_relative_paths_in_the_file_are_relative_to_the_file(tmp_path):
    path = write(tmp_path, 'data_dir = "state"\n')
    assert Settings.from_sources(path).data_dir == tmp_path.resolve() / "state"


def test_crop_from_toml_array_and_env_text(tmp_path, monkeypatch):
    assert Settings.from_sources(write(tmp_path, "video_crop = [10, 20, 300, 400]\n")).video_crop == (10, 20, 300, 400)
    monkeypatch.setenv("CATHLAB_VIDEO_CROP", "1,2,3,4")
    assert Settings.from_sources(None).video_crop == (1, 2, 3, 4)


@pytest.mark.parametrize("text, fragments", [
    ("port = 70000\n", ["port = 70000", "cathlab.toml", "less than or equal to 65535"]),
    ('phantom_intensity = "linear"\n', ["phantom_intensity", "cathlab.toml", "pattern"]),
    ("video_crop = [0, 0, -5, 10]\n", ["video_crop", "w, h > 0"]),
    ("prot = 8000\n", ["unknown setting 'prot'", "did you mean 'port'"]),
    ("[server]\nport = 1\n", ["'server' is a table"]),
    ("port = \n", ["not valid TOML", "line 1"]),
    ("reconnect_min_s = 9.0\n", ["reconnect_min_s", "reconnect_max_s"]),
])
def test_bad_file_values_name_the_setting_and_the_file(tmp_path, text, fragments):
    path = write(tmp_path, text)
    with pytest.raises(SettingsError) as info:
        Settings.from_sources(path)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message


def test_bad_env_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("CATHLAB_PORT", "eighty")
    with pytest.raises(SettingsError, match=r"port = 'eighty' \(environment CATHLAB_PORT\)"):
        Settings.from_sources(None)


def test_missing_file_and_unknown_flag(tmp_path):
    with pytest.raises(SettingsError, match="does not exist"):
        Settings.from_sources(tmp_path / "nope.toml")
    with pytest.raises(SettingsError, match="unknown setting.*frobnicate"):
        Settings.from_sources(None, frobnicate=1)


def test_settings_error_is_a_value_error_for_the_cli():
    assert issubclass(SettingsError, ValueError)


def test_config_show_is_valid_toml_with_sources(tmp_path, monkeypatch):
    path = write(tmp_path, 'port = 8100\nvideo_crop = [1, 2, 30, 40]\nserial = "/dev/ttyUSB0"\n')
    monkeypatch.setenv("CATHLAB_PHANTOM_SIZE", "256")
    out = io.StringIO()
    assert config_main(str(path), True, out) == 0
    text = out.getvalue()
    parsed = tomllib.loads(text)
    assert parsed["port"] == 8100 and parsed["phantom_size"] == 256
    assert parsed["video_crop"] == [1, 2, 30, 40] and parsed["serial"] == "/dev/ttyUSB0"
    assert "video" not in parsed                       # None has no TOML value: shown commented out
    assert '# video = (not set)  # default; in force: "none"' in text    # beside the serial injector
    assert f"port = 8100  # {path}" in text
    assert "phantom_size = 256  # environment CATHLAB_PHANTOM_SIZE" in text
    # What --show prints loads back to the same settings.
    again = write(tmp_path, text)
    assert Settings.from_sources(again).model_dump() == Settings.from_sources(path).model_dump()


def test_config_reports_errors_with_status_2(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    assert config_main(str(write(tmp_path, "port = -1\n")), True, out, err) == 2
    assert out.getvalue() == "" and "port = -1" in err.getvalue()
    assert config_main(None, False, out, err) == 0 and "configuration ok" in out.getvalue()


def test_render_escapes_strings():
    s = Settings(host='a"b\\c')
    assert tomllib.loads(render_toml(s))["host"] == 'a"b\\c'


def test_replay_speed_zero_means_as_fast_as_possible(tmp_path):
    assert Settings.from_sources(write(tmp_path, "replay_speed = 0\n")).replay_speed == 0
    with pytest.raises(SettingsError, match="replay_speed"):
        Settings.from_sources(write(tmp_path, "replay_speed = -1\n"))


def test_video_follows_serial_unless_asked_for(tmp_path, monkeypatch):
    # Beside the built-in injector simulator the phantom plays; beside a real injector there is no video
    # unless the phantom is asked for, from any source.
    assert Settings.from_sources(None).video_source == "phantom"
    assert Settings.from_sources(None, serial="/dev/ttyUSB0").video_source == "none"
    assert Settings.from_sources(None, serial="/dev/ttyUSB0", video="phantom").video_source == "phantom"
    assert Settings.from_sources(write(tmp_path, 'serial = "/dev/ttyUSB0"\n')).video_source == "none"
    both = write(tmp_path, 'serial = "/dev/ttyUSB0"\nvideo = "phantom"\n')
    assert Settings.from_sources(both).video_source == "phantom"
    monkeypatch.setenv("CATHLAB_SERIAL", "/dev/ttyUSB1")
    assert Settings.from_sources(None).video_source == "none"
    monkeypatch.setenv("CATHLAB_VIDEO", "Phantom")
    s = Settings.from_sources(None)
    assert s.video == "phantom" and s.video_source == "phantom" and s.source_of("video") == "environment CATHLAB_VIDEO"
    monkeypatch.delenv("CATHLAB_SERIAL")
    monkeypatch.setenv("CATHLAB_VIDEO", "NONE")
    assert Settings.from_sources(None).video_source == "none"          # no video beside the simulator either
    assert Settings.from_sources(None, video="/dev/video0").video_source == "/dev/video0"


def test_an_empty_video_setting_is_refused_with_its_source(monkeypatch):
    monkeypatch.setenv("CATHLAB_VIDEO", "")
    with pytest.raises(SettingsError, match=r"video = '' \(environment CATHLAB_VIDEO\).*none.*phantom"):
        Settings.from_sources(None)
