"""``cathlab-edge replay``: a recorded procedure through the pipeline."""
from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path


def add_parser(sub) -> None:
    parser = sub.add_parser("replay", help="run a recorded procedure (data-dir/recordings) through the pipeline")
    parser.add_argument("directory", help="a recordings directory")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return replay_main(args.directory, sys.stdout)


def replay_main(directory: str | Path, out) -> int:
    """Run a recorded procedure through the pipeline and print what it finds; 2 when it cannot be read."""
    from core.appliance.replay import replay

    try:
        result = replay(directory)
    except (ValueError, OSError) as exc:
        print(f"cathlab-edge: cannot replay {directory}: {exc}", file=out)
        return 2
    by_type = collections.Counter(m.to_dict()["type"] for m, _ in result.messages)
    runs = [{"run": e.run.index, "start_ns": e.run.start_ns, "end_ns": e.run.end_ns, "pulses": e.run.pulses,
             "pulse_rate": None if e.run.pulse_rate is None else round(e.run.pulse_rate, 2)}
            for e in result.run_events if e.kind == "run_end"]
    print(json.dumps({"frames": result.frames, "messages": dict(sorted(by_type.items())),
                      "link_events": [list(e) for e in result.link_events], "runs": runs}, indent=1), file=out)
    return 0
