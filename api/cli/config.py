"""``cathlab-edge config``: validate the configuration, and with ``--show`` print what is in force (as TOML)."""
from __future__ import annotations

import argparse
import sys
from typing import TextIO


def add_parser(sub) -> None:
    parser = sub.add_parser("config", help="validate the configuration; --show prints what is in force")
    parser.add_argument("--show", action="store_true", help="print every setting as TOML, with its source")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return config_main(args.config, args.show, sys.stdout)


def config_main(config_path: str | None, show: bool, out: TextIO, err: TextIO | None = None) -> int:
    """0: the configuration is valid (printed with ``show``); 2: it is not, and ``err`` says why."""
    from core.ops.config import render_toml
    from core.ops.settings import Settings, SettingsError

    err = err if err is not None else sys.stderr
    try:
        settings = Settings.from_sources(config_path)
    except SettingsError as exc:
        print(f"cathlab-edge: {exc}", file=err)
        return 2
    if show:
        out.write(render_toml(settings, config_path))
    else:
        print(f"configuration ok ({config_path or 'no config file'}; environment CATHLAB_*)", file=out)
    return 0
