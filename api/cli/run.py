"""``cathlab-edge run``: the appliance."""
from __future__ import annotations

import argparse
import logging
import signal
import sys

from api import argtypes
from api.cli.common import settings_from


def add_parser(sub) -> None:
    parser = sub.add_parser("run", help="run the appliance (built-in simulators unless --serial / --video)")
    parser.add_argument("--host", type=argtypes.TEXT, help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=argtypes.PORT, help="HTTP port (default 8000)")
    parser.add_argument("--data-dir", type=argtypes.TEXT,
                        help="where the event log lives (default: per-user data directory)")
    parser.add_argument("--serial", type=argtypes.TEXT,
                        help="injector serial port or pyserial URL (default: built-in simulator)")
    parser.add_argument("--video", help="none, phantom (the built-in fluoroscopy phantom), a grabber /dev/videoN, or "
                        "a .npy / DICOM file or folder to replay (default: phantom, but none when --serial is given)")
    parser.add_argument("--fps", dest="video_fps", type=argtypes.FPS,
                        help="frame rate of a replayed file (required for .npy; DICOM says its own)")
    parser.add_argument("--phantom-intensity", choices=["lin", "log"],
                        help="phantom output: log = 8-bit display video (default), lin = 16-bit linear")
    parser.add_argument("--replay-speed", type=argtypes.REPLAY_SPEED,
                        help="replayed files: times real time, 0 = as fast as possible")
    parser.add_argument("--crop", dest="video_crop", metavar="X,Y,W,H",
                        help="the collimated field in frame pixels (default: found automatically)")
    parser.add_argument("--record", action="store_true", default=None,
                        help="record contrast runs and the raw serial bytes for replay (data-dir/recordings)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    import uvicorn

    from api.app import create_app
    from api.server import server_config, tls_context_check, trusted_host_names
    from core.ops.logs import setup_logging

    # Event log, token and recordings are readable by this user only, whatever the caller's umask.
    os.umask(0o077)
    settings = settings_from(args)
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
    from core.vocab import VIDEO_NONE, VIDEO_PHANTOM

    video = settings.video_source
    if video in (VIDEO_NONE, VIDEO_PHANTOM) or video.startswith("/dev/"):
        return None   # the phantom always works; a grabber that is absent is waited for, with an alarm
    from core.sources.open import open_video

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
