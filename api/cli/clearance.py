"""``cathlab-edge clearance``: clearance of a baseline against a later run."""
from __future__ import annotations

import argparse

from api import argtypes
from api.cli.common import JSON_FLAG, RECORDING_FLAGS


def add_parser(sub) -> None:
    parser = sub.add_parser("clearance", parents=[RECORDING_FLAGS, JSON_FLAG], help="thrombus burden and %% clearance, baseline against a later run")
    parser.add_argument("baseline", help="baseline venogram (.npy or DICOM)")
    parser.add_argument("post", help="later venogram (.npy or DICOM)")
    parser.add_argument("--centerline", metavar="X,Y;X,Y;...", help="vessel centreline in baseline pixels "
                        "(default: found automatically)")
    parser.add_argument("--diameter", type=argtypes.DIAMETER_PX, metavar="PX",
                        help="reference lumen diameter in pixels")
    parser.add_argument("--segments", metavar="NAME:A-B,...", help="named parts of the centreline by arc fraction")
    parser.add_argument("--image", metavar="OUT.png", help="both peak-opacity images with the findings")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.analysis.clearance import clearance_main

    return clearance_main(args.baseline, args.post, args.fps, args.intensity, args.centerline, args.diameter,
                          args.segments, args.json, args.image)
