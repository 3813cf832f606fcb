"""Structured logs: one JSON object per line on stderr, for journald and for grep/jq.

Each line has ``ts`` (UTC wall clock, for people; ordering inside the appliance uses monotonic time),
``level``, ``logger``, ``msg`` and any ``extra={...}`` fields of the call, plus ``exc`` with the traceback.

Under systemd (``$JOURNAL_STREAM`` set) each line starts with the syslog priority ``<N>``, which journald
strips and turns into PRIORITY, so ``journalctl -p warning`` works while MESSAGE stays plain JSON.

The appliance stores no patient identity and its messages carry none, but a DICOM header's fields could slip
into an ``extra`` by accident: keys that name patient attributes are redacted here, as a last line of defence.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
from typing import Any, TextIO

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName",
                                                                               "color_message"}  # uvicorn's ANSI copy
_SYSLOG = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}
_PATIENT_WORDS = ("patient", "birth", "ssn", "mrn", "accession", "physician", "operator_name", "referring")
REDACTED = "[redacted]"
_CHATTY = ("linuxpy",)


def _is_patient_key(key: str) -> bool:
    k = key.lower().replace("-", "_")
    return any(word in k for word in _PATIENT_WORDS)


class JsonFormatter(logging.Formatter):
    def __init__(self, syslog_prefix: bool = False) -> None:
        super().__init__()
        self.syslog_prefix = syslog_prefix

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key in _STANDARD or key.startswith("_") or key in obj:
                continue
            obj[key] = REDACTED if _is_patient_key(key) else _redact(value)
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            obj["stack"] = self.formatStack(record.stack_info)
        # default=str: a stray object in ``extra`` becomes text instead of losing the whole line.
        line = json.dumps(obj, default=str, ensure_ascii=False, separators=(",", ":"))
        if self.syslog_prefix:
            line = f"<{_SYSLOG.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)}>{line}"
        return line


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and _is_patient_key(k) else _redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact(v) for v in value]
    return value


class _Handler(logging.StreamHandler):
    """Marks the handler this module installed, so setting up twice replaces it instead of doubling lines."""


def setup_logging(level: str = "info", fmt: str = "json", stream: TextIO | None = None,
                  journald: bool | None = None) -> logging.Handler:
    """Send every logger's records to ``stream`` (stderr) as JSON lines (``fmt="json"``) or plain text.

    ``journald``: prefix syslog priorities; default: when stderr goes to the journal ($JOURNAL_STREAM).
    Library loggers (uvicorn included, when it is started with ``log_config=None``) propagate here too.
    """
    if fmt not in ("json", "text"):
        raise ValueError(f"log format must be 'json' or 'text', got {fmt!r}")
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise ValueError(f"log level must be debug, info, warning or error, got {level!r}")
    if journald is None:
        journald = bool(os.environ.get("JOURNAL_STREAM")) and stream is None
    handler = _Handler(stream if stream is not None else sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(syslog_prefix=journald))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    # Ours from an earlier call, and a plain stderr handler (logging.basicConfig) that would print every
    # record a second time; handlers writing elsewhere (files, test capture) stay.
    for old in [h for h in root.handlers if isinstance(h, _Handler)
                or (type(h) is logging.StreamHandler and h.stream in (sys.stderr, sys.__stderr__))]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    # linuxpy logs every open/close at INFO: with a grabber unplugged that is a line per reconnect attempt.
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.DEBUG if numeric <= logging.DEBUG else logging.WARNING)
    return handler
