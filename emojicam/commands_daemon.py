"""Daemon subcommands: ``run`` (the default), ``ctl``, ``doctor``, ``autostart``.

``cli.py`` calls ``register(subparsers)``; the global ``--config`` and
``--debug`` options arrive as ``args.config`` / ``args.debug``. Each handler
takes the parsed arguments and returns the exit code.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from emojicam.config import MODES, Config, ConfigError, load_config, user_config_path
from emojicam.errors import EmojiCamError

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_NOT_RUNNING = 0, 1, 2, 3


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run",
        help="start the live daemon: webcam -> emoji -> the EmojiCam camera (the default)",
        description="Read the webcam, put emoji on faces and publish the result as the virtual camera "
        "EmojiCam, with a tray icon. Control a running daemon with 'emojicam ctl'.",
    )
    p.add_argument("--no-tray", action="store_true", help="run without the tray icon (headless)")
    p.add_argument(
        "--source",
        metavar="SRC",
        help="webcam index (0), device path (/dev/video0) or a video file (looped); overrides camera.source",
    )
    p.add_argument(
        "--sink",
        choices=("virtual", "preview", "null"),
        help="where frames go: the virtual camera, a preview window, or nowhere; overrides sink.kind",
    )
    p.set_defaults(handler=cmd_run)

    p = subparsers.add_parser(
        "ctl", help="control the running daemon", description="Send a command to the running EmojiCam daemon."
    )
    ctl = p.add_subparsers(dest="ctl_command", metavar="ACTION", required=True)
    s = ctl.add_parser("status", help="state, mode, fps, faces, camera")
    s.add_argument("--json", action="store_true", help="print the status as one JSON object")
    s = ctl.add_parser("mode", help="switch mode")
    s.add_argument("mode", choices=MODES)
    ctl.add_parser("pause", help="release the camera and send a paused frame")
    ctl.add_parser("resume", help="undo pause")
    ctl.add_parser("reload", help="re-read the config files now")
    ctl.add_parser("quit", help="stop the daemon")
    for name, what in (("mirror", "flip the picture horizontally"), ("preview", "show the preview window")):
        s = ctl.add_parser(name, help=what)
        s.add_argument("on", choices=("on", "off"))
    p.set_defaults(handler=cmd_ctl)

    p = subparsers.add_parser(
        "doctor",
        help="check the setup and say exactly how to fix what is wrong",
        description="Checks v4l2loopback, the EmojiCam device, permissions, the "
        "camera, the tray and the model/emoji files. Exit code 0 only when all is well.",
    )
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.set_defaults(handler=cmd_doctor)

    p = subparsers.add_parser("autostart", help="start EmojiCam when you log in (or stop doing so)")
    p.add_argument("action", choices=("enable", "disable", "status"))
    p.add_argument(
        "--method",
        choices=("xdg", "systemd"),
        default="xdg",
        help="Linux: an XDG autostart entry (default; works in every desktop session) or a systemd user unit",
    )
    p.set_defaults(handler=cmd_autostart)


def default_command(args: argparse.Namespace) -> int:
    """``emojicam`` without a subcommand: the daemon with its defaults."""
    for name, value in (("no_tray", False), ("source", None), ("sink", None)):
        if not hasattr(args, name):
            setattr(args, name, value)
    return cmd_run(args)


# ---------------------------------------------------------------- run


def apply_cli_overrides(config: Config, args: argparse.Namespace) -> Config:
    """Command-line choices win over every config file, also after a reload."""
    from emojicam.sources import parse_source

    if getattr(args, "source", None):
        config = dataclasses.replace(
            config, camera=dataclasses.replace(config.camera, source=parse_source(args.source))
        )
    if getattr(args, "sink", None):
        config = dataclasses.replace(config, sink=dataclasses.replace(config.sink, kind=args.sink))
    if getattr(args, "no_tray", False):
        config = dataclasses.replace(config, tray=dataclasses.replace(config.tray, enabled=False))
    return config


def _source_option_problem(args: argparse.Namespace) -> str | None:
    """A ``--source`` file that is not there: a typo on the command line is
    refused at once (a missing webcam, or a ``camera.source`` file on a drive
    not mounted yet, is retried instead)."""
    from emojicam.sources import missing_file, parse_source

    if not getattr(args, "source", None):
        return None
    spec = parse_source(args.source)
    what = missing_file(spec)
    return what and (f"--source {spec}: {what}; give a video file, a webcam index (0, 1, ...) "
                     "or a device path (/dev/video0)")


def watched_config_paths(args: argparse.Namespace) -> list[Path]:
    paths = [user_config_path()]
    if getattr(args, "config", None):
        paths.append(Path(args.config).expanduser())
    return paths


def cmd_run(
    args: argparse.Namespace,
    *,
    deps: Any = None,
    lock_folder: Path | None = None,
    socket_file: Path | None = None,
    log_folder: Path | None = None,
    install_signals: bool = True,
) -> int:
    """Run the daemon until quit. The keyword arguments exist for tests."""
    from emojicam import control, engine, logs

    debug = bool(getattr(args, "debug", False))

    def load() -> Config:
        return apply_cli_overrides(load_config(getattr(args, "config", None)), args)

    try:
        config = load()
    except ConfigError as exc:
        print(f"emojicam: {exc}", file=sys.stderr)
        return EXIT_USAGE
    problem = _source_option_problem(args)
    if problem:
        print(f"emojicam: {problem}", file=sys.stderr)
        return EXIT_USAGE
    log_file = logs.setup_logging(debug=debug, level=config.logging.level, folder=log_folder)
    lock = control.InstanceLock(lock_folder)
    try:
        lock.acquire()
    except control.AlreadyRunning as exc:
        print(f"emojicam: {exc}", file=sys.stderr)
        return EXIT_FAIL
    server = None
    eng = None
    cleanup_lock = threading.Lock()
    cleaned: list[float] = []

    def cleanup() -> None:
        """Release camera, device, socket and lock; once, from whichever
        thread gets here first (the tray's stop thread or the main thread)."""
        with cleanup_lock:
            if cleaned:
                return
            t0 = time.monotonic()
            if eng is not None:
                eng.close(timeout_s=2.0)
            if server is not None:
                server.stop()
            lock.release()
            cleaned.append(time.monotonic() - t0)
            log.info("EmojiCam stopped (%.2f s to release camera, device and socket)", cleaned[0])

    try:
        log.info("EmojiCam starting (log file: %s)", log_file)
        eng = engine.Engine(
            config, deps or engine.default_deps(), load_config=load, watch_paths=watched_config_paths(args)
        )
        if not debug:

            def follow_log_level(kind: str, _message: str) -> None:
                if kind == "config-reloaded" and eng is not None:
                    logs.set_level(eng.config.logging.level)

            eng.add_listener(follow_log_level)
        try:
            eng.start()
        except EmojiCamError as exc:
            print(f"emojicam: {exc}", file=sys.stderr)
            return EXIT_USAGE
        server = control.platform_server(
            control.engine_handler(eng), folder=lock.folder if lock_folder else None, socket_file=socket_file
        )
        try:
            server.start()
        except (OSError, EmojiCamError) as exc:
            log.error("no control channel (%s); 'emojicam ctl' will not reach this daemon", exc)
            server = None
        if install_signals:
            _install_signals(eng)
        ran_tray = False
        if config.tray.enabled:
            from emojicam import tray

            ran_tray = tray.run_tray(eng, config_file=_editable_config(args), on_shutdown=cleanup)
        if not ran_tray:
            while not eng.shutdown.wait(0.5):
                pass
        return EXIT_OK
    finally:
        cleanup()


def _editable_config(args: argparse.Namespace) -> Path:
    return Path(args.config).expanduser() if getattr(args, "config", None) else user_config_path()


def _install_signals(eng: Any) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    count = [0]

    def handler(signum: int, _frame: Any) -> None:
        count[0] += 1
        if count[0] > 1:  # a second Ctrl-C while stopping: stop now
            sys.stderr.write("emojicam: forced exit\n")
            import os

            os._exit(130)
        log.info("signal %s received", signal.Signals(signum).name)
        eng.request_stop()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    # The terminal that started us closed: stop as cleanly (not Windows). Not when
    # started with SIGHUP ignored ('nohup emojicam run &'): that asks to outlive it.
    if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signal.signal(signal.SIGHUP, handler)


# ---------------------------------------------------------------- ctl


def cmd_ctl(args: argparse.Namespace, *, socket_file: Path | None = None) -> int:
    from emojicam import control

    cmd = args.ctl_command
    request: dict[str, Any] = {"cmd": cmd}
    if cmd == "mode":
        request["mode"] = args.mode
    elif cmd in ("mirror", "preview"):
        request["on"] = args.on == "on"
    try:
        reply = control.send_request(request, socket_file)
    except control.NotRunning as exc:
        print(f"emojicam: {exc}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    except EmojiCamError as exc:
        print(f"emojicam: {exc}", file=sys.stderr)
        return EXIT_FAIL
    if not reply.get("ok"):
        print(f"emojicam: {reply.get('error', 'refused')}", file=sys.stderr)
        return EXIT_FAIL
    if cmd == "status":
        status = reply.get("status", {})
        if getattr(args, "json", False):
            print(json.dumps(status))
        else:
            print(_format_status(status))
    elif cmd == "mode":
        print(f"mode: {reply.get('mode')}")
    elif cmd == "quit":
        print("EmojiCam is stopping")
    else:
        print("ok")
    return EXIT_OK


def _format_status(status: dict[str, Any]) -> str:
    camera = status.get("camera", "?")
    if status.get("camera_detail"):
        camera += f" ({status['camera_detail']})"
    sink = f"{status.get('sink_kind', '?')} {status.get('sink', '?')}"
    if status.get("device"):
        sink += f" {status['device']}"
    if status.get("sink_detail"):
        sink += f" ({status['sink_detail']})"
    if status.get("readers") is not None:
        sink += f", {status['readers']} app(s) watching"
    lines = [
        f"state:   {status.get('state')}",
        f"mode:    {status.get('mode')}",
        f"fps:     {status.get('fps')}",
        f"faces:   {status.get('faces')}" + (f" ({status['dominant']})" if status.get("dominant") else ""),
        f"camera:  {camera}",
        f"output:  {sink}",
    ]
    if status.get("config_error"):
        lines.append(f"config:  last edit NOT applied: {status['config_error']}")
    if status.get("detector_warning"):
        lines.append(f"warning: {status['detector_warning']}")
    return "\n".join(lines)


# ---------------------------------------------------------------- doctor, autostart


def cmd_doctor(args: argparse.Namespace, *, probe: Any = None) -> int:
    from emojicam import doctor

    probe = probe or doctor.SystemProbe.from_system(config_path=getattr(args, "config", None))
    checks = doctor.run_checks(probe)
    if getattr(args, "json", False):
        print(json.dumps([c.as_dict() for c in checks], indent=2))
    else:
        print(doctor.format_report(checks))
    return EXIT_OK if doctor.all_ok(checks) else EXIT_FAIL


def cmd_autostart(args: argparse.Namespace, *, home: Path | None = None) -> int:
    from emojicam import autostart

    try:
        if args.action == "enable":
            config = getattr(args, "config", None)  # the login instance reads the same settings file
            if config is not None:
                load_config(config)  # a file that fails now would fail at every login, unseen
            message = autostart.enable(args.method, home=home, cmd=autostart.command_line(config))
        elif args.action == "disable":
            message = autostart.disable(home=home)
        else:
            message = autostart.status(home=home)
    except EmojiCamError as exc:
        print(f"emojicam: {exc}", file=sys.stderr)
        return EXIT_FAIL
    print(message)
    return EXIT_OK
