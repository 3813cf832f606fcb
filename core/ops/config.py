"""The settings in force as a TOML file (``cathlab-edge config --show`` prints it).

The output is itself a valid settings file (TOML), each line commented with where its value came from, so a
biomedical engineer can copy it to /etc/cathlab-edge/config.toml as a starting point. Settings that are not
set (None: the built-in simulators, an automatic crop) have no TOML spelling and appear commented out.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.ops.settings import Settings


def render_toml(settings: Settings, config_path: str | Path | None = None) -> str:
    lines = ["# cathlab-edge settings in force",
             f"# precedence: command line > environment CATHLAB_* > {config_path or '(no config file)'} > default",
             ""]
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        source = settings.source_of(name)
        if value is None:
            # An unset video still means something: the phantom, or none beside a serial injector.
            meaning = f"; in force: {_toml_value(settings.video_source)}" if name == "video" else ""
            lines.append(f"# {name} = (not set)  # {source}{meaning}")
        else:
            lines.append(f"{name} = {_toml_value(value)}  # {source}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    # TOML basic strings share JSON's escapes for quotes, backslashes and control characters.
    return json.dumps(str(value))
