"""What the commands share: the settings in force, and the flags several commands take (one definition each)."""
from __future__ import annotations

import argparse

from api import argtypes


def settings_from(args: argparse.Namespace):
    """Flags > environment (CATHLAB_*) > the --config TOML file > defaults; SettingsError names the culprit."""
    from core.ops.settings import Settings

    overrides = {name: value for name, value in vars(args).items()
                 if name in Settings.model_fields and value is not None}
    return Settings.from_sources(args.config, **overrides)


def _recording_flags() -> argparse.ArgumentParser:
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("--fps", type=argtypes.FPS,
                       help="frame rate of .npy input (required for .npy; DICOM says its own)")
    flags.add_argument("--intensity", choices=["lin", "log"], help="default: lin for uint16, log for uint8, "
                       "or what the DICOM file says")
    return flags


def _json_flag() -> argparse.ArgumentParser:
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("--json", action="store_true", help="print JSON instead of text")
    return flags


# Parent parsers (argparse ``parents=``): commands that read recorded runs, and commands that can print JSON.
RECORDING_FLAGS = _recording_flags()
JSON_FLAG = _json_flag()
