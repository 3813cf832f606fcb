"""What every command shares: the settings in force."""
from __future__ import annotations

import argparse


def settings_from(args: argparse.Namespace):
    """Flags > environment (CATHLAB_*) > the --config TOML file > defaults; SettingsError names the culprit."""
    from core.ops.settings import Settings

    overrides = {name: value for name, value in vars(args).items()
                 if name in Settings.model_fields and value is not None}
    return Settings.from_sources(args.config, **overrides)
