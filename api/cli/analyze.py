"""``cathlab-edge analyze``: timing of a recorded run."""
from __future__ import annotations

import argparse

from api import argtypes
from api.cli.common import JSON_FLAG, RECORDING_FLAGS


def add_parser(sub) -> None:
    parser = sub.add_parser("analyze", parents=[RECORDING_FLAGS, JSON_FLAG], help="time a recorded contrast run (.npy or DICOM multi-frame)")
    parser.add_argument("frames", help="a (T, H, W) .npy stack or a DICOM XA/XRF/secondary-capture file")
    parser.add_argument("--roi", action="append", metavar="X,Y,W,H", help="region of interest (repeatable; "
                        "default: one placed automatically on the most-opacified vessel)")
    parser.add_argument("--injection-start", type=argtypes.INJECTION_START, metavar="S",
                        help="injection start in seconds from the first frame")
    parser.add_argument("--plot", metavar="OUT.png", help="draw the time-density curves")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.analysis.offline import analyze_main

    return analyze_main(args.frames, args.fps, args.intensity, args.roi or [], args.injection_start,
                        args.json, args.plot)
