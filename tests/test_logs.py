"""JSON-lines logs: one object per line, extra fields, tracebacks, journald priorities, patient keys redacted."""
from __future__ import annotations

import datetime as dt
import io
import json
import logging

import pytest

from core.ops.logs import REDACTED, setup_logging


@pytest.fixture
def capture():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    setup_logging("debug", "json", stream=stream, journald=False)
    yield stream
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def lines(stream):
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_one_object_per_line_with_the_standard_fields(capture):
    log = logging.getLogger("cathlab.test")
    log.info("run %s ended", "ab-1", extra={"run_id": "ab-1", "frames": 90})
    log.warning("multi\nline message")
    first, second = lines(capture)
    assert first["msg"] == "run ab-1 ended" and first["level"] == "info" and first["logger"] == "cathlab.test"
    assert first["run_id"] == "ab-1" and first["frames"] == 90
    ts = dt.datetime.fromisoformat(first["ts"])
    assert ts.tzinfo is not None and abs((dt.datetime.now(dt.timezone.utc) - ts).total_seconds()) < 60
    assert second["msg"] == "multi\nline message"          # escaped inside the one line
    assert len(capture.getvalue().splitlines()) == 2


def test_exception_traceback_and_odd_extras(capture):
    try:
        1 / 0
    except ZeroDivisionError:
        logging.getLogger("x").exception("failed", extra={"path": object(), "when": dt.date(2026, 1, 2)})
    (obj,) = lines(capture)
    assert "ZeroDivisionError" in obj["exc"] and obj["level"] == "error"
    assert obj["when"] == "2026-01-02" and obj["path"].startswith("<object")


def test_patient_keys_are_redacted_even_nested(capture):
    logging.getLogger("x").info("header", extra={"PatientName": "DOE^JANE", "dicom": {
        "patient_id": "123", "Modality": "XA", "items": [{"PatientBirthDate": "19700101"}]}})
    (obj,) = lines(capture)
    assert obj["PatientName"] == REDACTED
    assert obj["dicom"]["patient_id"] == REDACTED and obj["dicom"]["Modality"] == "XA"
    assert obj["dicom"]["items"][0]["PatientBirthDate"] == REDACTED
    assert "DOE" not in capture.getvalue() and "19700101" not in capture.getvalue()


def test_level_filter_and_journald_priority_prefix():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("warning", "json", stream=stream, journald=True)
        logging.getLogger("x").info("hidden")
        logging.getLogger("x").warning("shown")
        logging.getLogger("x").error("bad")
        out = stream.getvalue().splitlines()
        assert [line[:3] for line in out] == ["<4>", "<3>"]
        assert json.loads(out[0][3:])["msg"] == "shown"
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


def test_setting_up_twice_does_not_double_lines(capture):
    setup_logging("info", "json", stream=capture, journald=False)
    logging.getLogger("x").info("once")
    assert len(lines(capture)) == 1


def test_text_format_and_bad_arguments():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("info", "text", stream=stream)
        logging.getLogger("x").info("plain")
        assert "INFO x: plain" in stream.getvalue()
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    with pytest.raises(ValueError, match="format"):
        setup_logging("info", "xml")
    with pytest.raises(ValueError, match="level"):
        setup_logging("loud", "json")


def test_replaces_a_plain_stderr_handler_and_drops_uvicorns_colour_copy(capture, monkeypatch):
    import sys

    root = logging.getLogger()
    plain = logging.StreamHandler(sys.stderr)
    root.addHandler(plain)
    setup_logging("info", "json", stream=capture, journald=False)
    assert plain not in root.handlers
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 7, extra={"color_message": "\x1b[36m"})
    (obj,) = lines(capture)
    assert obj["msg"] == "Started server process [7]" and "color_message" not in obj


def test_library_chatter_is_quiet_unless_debugging(capture):
    setup_logging("info", "json", stream=capture, journald=False)
    logging.getLogger("linuxpy.device.video0").info("opening /dev/video0")
    logging.getLogger("linuxpy.device.video0").warning("real trouble")
    assert [o["msg"] for o in lines(capture)] == ["real trouble"]
    setup_logging("debug", "json", stream=capture, journald=False)
    logging.getLogger("linuxpy.device.video0").info("opening /dev/video0")
    assert lines(capture)[-1]["msg"] == "opening /dev/video0"
