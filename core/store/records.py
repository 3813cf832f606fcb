"""What a record may hold and how it is written: the wall-time format, JSON encoding and argument checks
shared by the event log's writer, its reads and the procedures."""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone

from core.identity import check_text

MAX_KIND = 64
_MAX_KEY = 256
_MAX_LIMIT = 10_000
_MAX_PROCEDURE_ID = 64
_KIND_RE = re.compile(r"^[a-z][a-z0-9_.]*$")


class _OpenProcedure:
    def __repr__(self) -> str:
        return "OPEN_PROCEDURE"


# Default ``procedure_id`` of every record: the procedure open when it is queued (None if none is).
OPEN_PROCEDURE = _OpenProcedure()


def utc_iso(wall_ns: int) -> str:
    """Fixed-width UTC ISO-8601 with microseconds, so text order is time order."""
    sec, ns = divmod(wall_ns, 1_000_000_000)
    dt = datetime.fromtimestamp(sec, tz=timezone.utc).replace(microsecond=ns // 1000)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json_default(obj):
    # NumPy scalars and arrays arrive from the kernels; anything else is a caller bug.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def dumps(data: dict) -> str:
    try:
        return json.dumps(data, separators=(",", ":"), allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"event data is not JSON-serialisable (NaN/inf are refused): {exc}") from None


def check_kind(kind) -> None:
    if not isinstance(kind, str) or not _KIND_RE.match(kind) or len(kind) > MAX_KIND:
        raise ValueError(f"event kind must be lower_snake_case (dots allowed), at most {MAX_KIND} "
                         f"characters, got {kind!r}")


def check_data(data) -> str:
    """The stored JSON text of ``data``."""
    if not isinstance(data, dict):
        raise ValueError(f"event data must be a dict, got {type(data).__name__}")
    # Operator labels travel in events and run records: whoever writes them, they pass the identity check.
    if data.get("label") is not None:
        check_text(data["label"], "label")
    return dumps(data)


def check_key(key) -> None:
    if key is not None and (not isinstance(key, str) or not key or len(key) > _MAX_KEY):
        raise ValueError(f"idempotency key must be a non-empty string of at most {_MAX_KEY} characters, "
                         f"got {key!r}")


def check_procedure_id(procedure_id) -> None:
    if procedure_id is OPEN_PROCEDURE or procedure_id is None:
        return
    if not isinstance(procedure_id, str) or not procedure_id or len(procedure_id) > _MAX_PROCEDURE_ID:
        raise ValueError(f"procedure_id must be a procedure's id, None or OPEN_PROCEDURE, got {procedure_id!r}")


def check_limit(limit) -> int:
    if type(limit) is not int or not 1 <= limit <= _MAX_LIMIT:
        raise ValueError(f"limit must be an int in 1..{_MAX_LIMIT}, got {limit!r}")
    return limit
