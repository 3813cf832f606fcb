"""The ``cathlab-edge`` command line: an interface like the HTTP one, sitting above core/."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import traceback

from api import argtypes
from api.argtypes import OneLineParser


def _settings(args: argparse.Namespace):
    """Flags > environment (CATHLAB_*) > the --config TOML file > defaults; SettingsError names the culprit."""
    from core.settings import Settings

    overrides = {name: value for name, value in vars(args).items()
                 if name in Settings.model_fields and value is not None}
    return Settings.from_sources(args.config, **overrides)


def cmd_run(args: argparse.Namespace) -> int:
    import os

    import uvicorn

    from api.app import create_app
    from api.server import server_config, tls_context_check, trusted_host_names

    from core.logs import setup_logging

    # Event log, token and recordings are readable by this user only, whatever the caller's umask.
    os.umask(0o077)
    settings = _settings(args)
    tls_context_check(settings)
    setup_logging(args.log_level or settings.log_level, settings.log_format)
    log = logging.getLogger("cathlab.cli")
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"cathlab-edge: cannot use data directory {settings.data_dir}: {exc}", file=sys.stderr)
        return 2
    _check_listen(settings)
    replay_source = _open_replay(settings)
    from api.auth import TOKEN_FILE, ensure_token

    try:
        token, created = ensure_token(settings.data_dir)
    except OSError as exc:   # a full disk, a read-only or pseudo file system: say which, do not trace back
        print(f"cathlab-edge: cannot keep the API token in {settings.data_dir}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2
    try:
        _make_private(settings.data_dir)
    except OSError as exc:   # e.g. a directory owned by someone else: usable, but say it is not private
        log.warning("cannot restrict data directory %s to this user: %s", settings.data_dir, exc)
    if created:
        token_path = settings.data_dir / TOKEN_FILE
        if sys.stdout.isatty():
            print(f"cathlab-edge: API write token (shown once; kept in {token_path}): {token}", flush=True)
        else:   # a journal or a log file is read by more people than the token is meant for
            log.info("API write token created in %s (readable by this user only)", token_path)
    app = create_app(settings, source=replay_source, trusted_hosts=trusted_host_names(settings))
    config = server_config(app, settings)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    scheme = "https" if settings.tls_certfile is not None else "http"
    print(f"cathlab-edge: status page at {scheme}://{host}:{settings.port}/  (data in {settings.data_dir})",
          flush=True)
    # uvicorn turns SIGINT/SIGTERM into a graceful shutdown; the lifespan then stops the appliance.
    server = uvicorn.Server(config)
    # uvicorn re-raises the stop signal after its graceful shutdown; with these handlers restored in its
    # place, a requested stop ends with status 0 instead of death by signal.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    server.run()
    return 0 if server.started else 1


def _make_private(data_dir) -> None:
    """Directory 0700 and its files 0600: files created under an older, laxer umask are tightened too. Not
    the token: one that others could read may have leaked, and ``ensure_token`` refuses it with a message."""
    import os
    import stat

    from api.auth import TOKEN_FILE

    os.chmod(data_dir, 0o700)
    for entry in os.scandir(data_dir):
        if entry.name == TOKEN_FILE:
            continue
        if entry.is_file(follow_symlinks=False) and stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode) & 0o077:
            os.chmod(entry.path, 0o600)
        elif entry.is_dir(follow_symlinks=False):
            os.chmod(entry.path, 0o700)


def _open_replay(settings):
    """A replayed file or folder, opened before the server starts: a bad one is a one-line error (ValueError)
    here rather than a traceback from the lifespan, and the appliance plays this source (decoded once)."""
    from core.settings import VIDEO_NONE, VIDEO_PHANTOM

    video = settings.video_source
    if video in (VIDEO_NONE, VIDEO_PHANTOM) or video.startswith("/dev/"):
        return None   # the phantom always works; a grabber that is absent is waited for, with an alarm
    from core.appliance import open_video

    return open_video(settings, 0)   # replays start at their first read; t0 paces only the simulators


def _check_listen(settings) -> None:
    """The address is resolved and bound once before anything starts, so a mistyped host or a port in use is a
    one-line error (ValueError) rather than an appliance that starts and stops again with exit status 3."""
    import socket

    where = f"{settings.host}:{settings.port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as uvicorn binds
            probe.bind(address)
    except OSError as exc:   # socket.gaierror included
        raise ValueError(f"cannot listen on {where}: {exc.strerror or exc}") from None


def cmd_simulate_injector(args: argparse.Namespace) -> int:
    from firmware_bridge.simulator import simulate_main

    return simulate_main(args.port, args.scenario, seconds=args.seconds, bit_error_rate=args.ber)


def cmd_serial_check(args: argparse.Namespace) -> int:
    from firmware_bridge.checker import check_main

    return check_main(args.port, seconds=args.seconds, as_json=args.json)


def cmd_export(args: argparse.Namespace) -> int:
    from core.export import export_main

    return export_main(_settings(args).data_dir, args.procedure, args.format, sys.stdout)


def cmd_config(args: argparse.Namespace) -> int:
    from core.config_cmd import config_main

    return config_main(args.config, args.show, sys.stdout)


def cmd_doctor(args: argparse.Namespace) -> int:
    from core.doctor import doctor_main

    return doctor_main(_settings(args), sys.stdout)


def cmd_replay(args: argparse.Namespace) -> int:
    from core.recorder import replay_main

    return replay_main(args.directory, sys.stdout)


def cmd_analyze(args: argparse.Namespace) -> int:
    from core.analyze import analyze_main

    return analyze_main(args.frames, args.fps, args.intensity, args.roi or [], args.injection_start,
                        args.json, args.plot)


def cmd_clearance(args: argparse.Namespace) -> int:
    from core.clearance import clearance_main

    return clearance_main(args.baseline, args.post, args.fps, args.intensity, args.centerline, args.diameter,
                          args.segments, args.json, args.image)


def build_parser() -> argparse.ArgumentParser:
    from firmware_bridge.simulator import SCENARIOS

    parser = OneLineParser(prog="cathlab-edge", description="Passive cath-lab edge appliance for DVT venography.")
    parser.add_argument("--config", metavar="FILE.toml", help="settings file (flags and CATHLAB_* variables win)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                        help="log verbosity (default: the log_level setting, info)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the appliance (built-in simulators unless --serial / --video)")
    run.add_argument("--host", type=argtypes.TEXT, help="address to bind (default 127.0.0.1)")
    run.add_argument("--port", type=argtypes.PORT, help="HTTP port (default 8000)")
    run.add_argument("--data-dir", type=argtypes.TEXT,
                     help="where the event log lives (default: per-user data directory)")
    run.add_argument("--serial", type=argtypes.TEXT,
                     help="injector serial port or pyserial URL (default: built-in simulator)")
    run.add_argument("--video", help="none, phantom (the built-in fluoroscopy phantom), a grabber /dev/videoN, or "
                     "a .npy / DICOM file or folder to replay (default: phantom, but none when --serial is given)")
    run.add_argument("--fps", dest="video_fps", type=argtypes.FPS, help="frame rate of a replayed file (required for .npy; DICOM says its own)")
    run.add_argument("--phantom-intensity", choices=["lin", "log"],
                     help="phantom output: log = 8-bit display video (default), lin = 16-bit linear")
    run.add_argument("--replay-speed", type=argtypes.REPLAY_SPEED,
                     help="replayed files: times real time, 0 = as fast as possible")
    run.add_argument("--crop", dest="video_crop", metavar="X,Y,W,H",
                     help="the collimated field in frame pixels (default: found automatically)")
    run.add_argument("--record", action="store_true", default=None,
                     help="record contrast runs and the raw serial bytes for replay (data-dir/recordings)")
    run.set_defaults(func=cmd_run)

    sim = sub.add_parser("simulate-injector", help="play scripted injections on a serial port, pty or socket")
    sim.add_argument("--port", required=True, help="pty path, socket://host:port, or 'pty' to create one")
    sim.add_argument("--scenario", default="procedure", choices=sorted(SCENARIOS), metavar="NAME",
                     help=f"one of {', '.join(sorted(SCENARIOS))} (default procedure)")
    sim.add_argument("--seconds", type=argtypes.SIM_SECONDS,
                     help="stop after this many seconds (default: run until Ctrl-C)")
    sim.add_argument("--ber", type=argtypes.BIT_ERROR_RATE, default=0.0,
                     help="bit-error rate injected on the line (default 0)")
    sim.set_defaults(func=cmd_simulate_injector)

    check = sub.add_parser("serial-check", help="decode a device's stream and judge its conformance")
    check.add_argument("--port", required=True, help="serial port or pyserial URL")
    check.add_argument("--seconds", type=argtypes.CHECK_SECONDS, default=10.0, help="how long to listen (default 10)")
    check.add_argument("--json", action="store_true", help="one JSON object per packet, then a summary")
    check.set_defaults(func=cmd_serial_check)

    analyze = sub.add_parser("analyze", help="time a recorded contrast run (.npy or DICOM multi-frame)")
    analyze.add_argument("frames", help="a (T, H, W) .npy stack or a DICOM XA/XRF/secondary-capture file")
    analyze.add_argument("--fps", type=argtypes.FPS, help="the file's frame rate (required for .npy)")
    analyze.add_argument("--intensity", choices=["lin", "log"], help="default: lin for uint16, log for uint8, "
                         "or what the DICOM file says")
    analyze.add_argument("--roi", action="append", metavar="X,Y,W,H", help="region of interest (repeatable; "
                         "default: one placed automatically on the most-opacified vessel)")
    analyze.add_argument("--injection-start", type=argtypes.INJECTION_START, metavar="S",
                         help="injection start in seconds from the first frame")
    analyze.add_argument("--json", action="store_true", help="print one JSON object")
    analyze.add_argument("--plot", metavar="OUT.png", help="draw the time-density curves")
    analyze.set_defaults(func=cmd_analyze)

    clearance = sub.add_parser("clearance", help="thrombus burden and %% clearance, baseline against a later run")
    clearance.add_argument("baseline", help="baseline venogram (.npy or DICOM)")
    clearance.add_argument("post", help="later venogram (.npy or DICOM)")
    clearance.add_argument("--fps", type=argtypes.FPS, help="frame rate of .npy inputs")
    clearance.add_argument("--intensity", choices=["lin", "log"], help="as for analyze")
    clearance.add_argument("--centerline", metavar="X,Y;X,Y;...", help="vessel centreline in baseline pixels "
                           "(default: found automatically)")
    clearance.add_argument("--diameter", type=argtypes.DIAMETER_PX, metavar="PX",
                           help="reference lumen diameter in pixels")
    clearance.add_argument("--segments", metavar="NAME:A-B,...", help="named parts of the centreline by arc fraction")
    clearance.add_argument("--json", action="store_true", help="print one JSON object")
    clearance.add_argument("--image", metavar="OUT.png", help="both peak-opacity images with the findings")
    clearance.set_defaults(func=cmd_clearance)

    export = sub.add_parser("export", help="export recorded events")
    export.add_argument("--data-dir", type=argtypes.TEXT, help="data directory (default: per-user data directory)")
    export.add_argument("--procedure", help="only this procedure's events")
    export.add_argument("--format", required=True, choices=["jsonl", "csv"])
    export.set_defaults(func=cmd_export)

    config = sub.add_parser("config", help="validate the configuration; --show prints what is in force")
    config.add_argument("--show", action="store_true", help="print every setting as TOML, with its source")
    config.set_defaults(func=cmd_config)

    doctor = sub.add_parser("doctor", help="check serial port, grabber, data directory, clock and token")
    doctor.add_argument("--data-dir", type=argtypes.TEXT, help="data directory (default: from the configuration)")
    doctor.add_argument("--serial", help="injector serial port or URL (default: from the configuration)")
    doctor.add_argument("--video", help="video source (default: from the configuration)")
    doctor.set_defaults(func=cmd_doctor)

    replay = sub.add_parser("replay", help="run a recorded procedure (data-dir/recordings) through the pipeline")
    replay.add_argument("directory", help="a recordings directory")
    replay.set_defaults(func=cmd_replay)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Offline commands log plain text; `run` switches to the configured format (JSON lines by default).
    logging.basicConfig(level=(args.log_level or "warning").upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except UnicodeDecodeError:   # tomllib reads text; a binary file given as --config fails here
        print(f"cathlab-edge: config file {args.config} is not UTF-8 text (expected TOML)", file=sys.stderr)
        return 2
    except RecursionError as exc:
        if args.config is None or not any("tomllib" in frame.filename
                                          for frame in traceback.extract_tb(exc.__traceback__)):
            raise                # not the config file's doing: our bug, keep the traceback
        # tomllib parses nested arrays recursively: "a = [[[[...]]]]" thousands deep exhausts the stack.
        print(f"cathlab-edge: config file {args.config} is not valid TOML: arrays or tables nested too deeply",
              file=sys.stderr)
        return 2
    except ValueError as exc:   # SettingsError included: it names the setting and where it came from
        print(f"cathlab-edge: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
