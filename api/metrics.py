"""Prometheus text exposition (format 0.0.4) of the appliance's flat counters, plus the API's own.

The appliance decides what it counts (``appliance.metrics()``); this module only names and types the values.
Monotonic counts get a ``_total`` suffix and ``# TYPE counter`` so ``rate()`` handles restarts; the rest are
gauges. Non-numeric or missing values are left out rather than invented.
"""
from __future__ import annotations

import math
import re

PREFIX = "cathlab_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Gauges among the appliance's metrics: everything else it reports only ever grows.
_GAUGE_HINTS = ("age_s", "latency", "_ms", "pending", "bytes", "writable", "uptime", "clients", "state",
                "open", "rate", "level", "_ml", "kpa", "connected")
_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(key: str) -> str:
    name = _INVALID.sub("_", key.strip()).strip("_").lower() or "unnamed"
    if name[0].isdigit():
        name = "_" + name
    return PREFIX + name


def is_gauge(key: str) -> bool:
    return any(hint in key for hint in _GAUGE_HINTS)


def render(values: dict[str, float | int | bool | None], help_texts: dict[str, str] | None = None) -> str:
    """``{"frames": 12, "eventlog_commit_latency_p99_ms": 3.1}`` -> Prometheus text, one family per key."""
    help_texts = help_texts or {}
    lines: list[str] = []
    seen: set[str] = set()
    for key in sorted(values):
        value = values[key]
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, (int, float)):
            continue
        gauge = is_gauge(key)
        name = metric_name(key)
        if not gauge and not name.endswith("_total"):
            name += "_total"
        if name in seen:  # two keys that sanitise to one name: keep the first rather than emit a duplicate family
            continue
        seen.add(name)
        text = help_texts.get(key, key.replace("_", " "))
        lines.append(f"# HELP {name} {_escape_help(text)}")
        lines.append(f"# TYPE {name} {'gauge' if gauge else 'counter'}")
        lines.append(f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"


def _number(value: float | int) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")
