"""Checked argument types shared by the ``cathlab-edge`` commands, and a parser whose errors are one line.

Every numeric flag goes through ``bounded``: finite, inside a range that makes sense for what it measures, and
the range is in the message. A value outside it stops at the command line (exit 2) instead of reaching the
pipeline as an overflow or a division by zero.
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from core.analysis.offline import INJECTION_START_RANGE_S
from core.sources.stacks import MAX_FPS, MIN_FPS


class OneLineParser(argparse.ArgumentParser):
    """argparse, but an input error is one line on stderr (no usage block) and exit status 2."""

    def error(self, message: str):
        first = message.splitlines()[0] if message else "invalid arguments"
        self.exit(2, f"{self.prog}: error: {first} (see {self.prog} --help)\n")


def bounded(kind: type, low: float, high: float, *, low_open: bool = False, unit: str = "",
            what: str = "a number") -> Callable[[str], float]:
    """An argparse ``type=``: text -> ``kind`` (int or float) in [low, high] (``(low, high]`` when ``low_open``)."""
    opening = "(" if low_open else "["
    span = f"{opening}{low:g}, {high:g}]{(' ' + unit) if unit else ''}"

    def parse(text: str):
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}; expected {span}") from None
        if not math.isfinite(value) or value < low or value > high or (low_open and value == low):
            raise argparse.ArgumentTypeError(f"{text} is out of range; expected {span}")
        return value

    parse.__name__ = what   # argparse names the type in its own messages
    parse.bounds = span     # type: ignore[attr-defined]
    return parse


def text(value: str) -> str:
    """A path, address or URL: empty would silently mean the current directory or nothing at all."""
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return value


TEXT = text
FPS = bounded(float, MIN_FPS, MAX_FPS, unit="frames/s", what="a frame rate")
INJECTION_START = bounded(float, *INJECTION_START_RANGE_S, unit="s from the first frame", what="a time")
REPLAY_SPEED = bounded(float, 0.0, 100.0, unit="x real time (0: as fast as possible)", what="a speed")
PORT = bounded(int, 0, 65535, unit="(0: any free port)", what="a port number")
DIAMETER_PX = bounded(float, 1.0, 4096.0, unit="px", what="a diameter")
SIM_SECONDS = bounded(float, 0.0, 7 * 86_400.0, low_open=True, unit="s", what="a duration")
CHECK_SECONDS = bounded(float, 0.0, 86_400.0, low_open=True, unit="s", what="a duration")
BIT_ERROR_RATE = bounded(float, 0.0, 0.5, unit="(errors per bit)", what="a bit-error rate")
MM_PER_PX = bounded(float, 0.0, 10.0, low_open=True, unit="mm/px", what="a pixel size")
CATHETER_FRENCH = bounded(float, 3.0, 30.0, unit="F (outer diameter F/3 mm)", what="a catheter size")
