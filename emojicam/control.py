r"""The local control channel: one JSON request, one JSON reply.

Two transports share everything but the wire: the request validation
(``validate``, ``decode_request``, ``MAX_REQUEST_BYTES``), ``answer`` (raw
bytes to a reply), the ``engine_handler`` and ``parse_reply``.
``platform_server`` and ``send_request`` pick this platform's transport, so
the daemon, ``emojicam ctl`` and ``emojicam doctor`` never care which it is.

Unix (Linux, macOS): one JSON object per line over a Unix socket in the
user's runtime folder (``$XDG_RUNTIME_DIR/emojicam`` on Linux), created with
mode 0600 (bound under a 0177 umask, so it is never world-accessible, not
even for an instant); on Linux each peer's uid is checked with
``SO_PEERCRED``.

Windows: one JSON object per message over the named pipe
``\\.\pipe\emojicam-<user>``, guarded by a random key that each daemon start
writes into the user's runtime folder; only a client that can read that file
gets in (``emojicam.control_pipe``).

On both, requests larger than ``MAX_REQUEST_BYTES``, malformed JSON, unknown
commands and bad arguments are answered with ``{"ok": false, "error": ...}``
and never reach the engine.

Requests and answers::

    {"cmd": "status"}                 -> {"ok": true, "status": {...}}
    {"cmd": "mode", "mode": "label"}  -> {"ok": true, "mode": "label"}
    {"cmd": "pause"} / {"cmd": "resume"} / {"cmd": "reload"} / {"cmd": "quit"}
    {"cmd": "mirror", "on": true} / {"cmd": "preview", "on": false}

Single instance: ``InstanceLock`` holds a ``filelock`` lock in the runtime
folder; a second daemon fails to take it and says which pid runs.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import os
import socket
import socketserver
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from emojicam.config import MODES
from emojicam.errors import EmojiCamError

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 4096
MAX_REPLY_BYTES = 1 << 20
REQUEST_TIMEOUT_S = 2.0
COMMANDS = ("status", "mode", "pause", "resume", "reload", "quit", "mirror", "preview")

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class NotRunning(EmojiCamError):
    """No daemon answers on the control socket."""


class AlreadyRunning(EmojiCamError):
    """Another daemon holds the instance lock."""


class ControlError(EmojiCamError):
    """The daemon refused a request or the channel is unusable."""


class ChannelServer(Protocol):
    """What the daemon needs of a control server, whatever its transport."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


def uses_named_pipe() -> bool:
    """Windows has no Unix sockets in Python; it gets the named pipe."""
    return sys.platform == "win32"


def runtime_dir() -> Path:
    """``$XDG_RUNTIME_DIR/emojicam`` on Linux; without XDG_RUNTIME_DIR,
    platformdirs' fallback (``/run/user/$UID/emojicam`` when ``/run/user/$UID``
    exists, else a folder under the temporary directory), which ``_ensure_private_dir`` checks is ours."""
    import warnings

    from emojicam.assets import user_dirs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback warning; we check the folder ourselves
        return user_dirs().user_runtime_path


def socket_path(folder: Path | None = None) -> Path:
    return (folder or runtime_dir()) / "control.sock"


# sockaddr_un.sun_path holds 108 bytes on Linux and 104 on macOS and the BSDs,
# the closing NUL included. Python's own error ("AF_UNIX path too long") names
# neither the path nor the way out, and the client showed it as a closed connection.
SOCKET_PATH_MAX_BYTES = 107 if sys.platform.startswith("linux") else 103


def check_socket_path_length(path: Path) -> None:
    """Raise ``ControlError`` with the fix when ``path`` is too long for a Unix socket."""
    size = len(os.fsencode(path))
    if size > SOCKET_PATH_MAX_BYTES:
        raise ControlError(
            f"the control socket path {path} is {size} bytes, more than the {SOCKET_PATH_MAX_BYTES} "
            "a Unix socket allows; set XDG_RUNTIME_DIR to a shorter folder (for example /run/user/"
            f"{os.getuid() if hasattr(os, 'getuid') else 'UID'}) for both the daemon and 'emojicam ctl'"
        )


def _ensure_private_dir(folder: Path) -> None:
    """Create ``folder`` (0700); refuse one that another user owns or could
    swap for their own: a link, or one inside a folder that another user owns
    (e.g. a pre-made ``/tmp/runtime-UID`` meant to intercept the socket) or
    that anyone may write to without the sticky bit ``/tmp`` has."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not hasattr(os, "getuid"):  # Windows: the folder is inside the user's profile
        return
    if folder.is_symlink() or folder.stat().st_uid != os.getuid():
        raise ControlError(
            f"{folder} belongs to another user or is a link; set XDG_RUNTIME_DIR to a private folder"
        )
    parent = folder.parent.stat()
    if parent.st_uid not in (os.getuid(), 0):
        raise ControlError(
            f"{folder.parent} belongs to another user, who could replace {folder.name} in it; "
            "set XDG_RUNTIME_DIR to a private folder"
        )
    if parent.st_mode & stat.S_IWOTH and not parent.st_mode & stat.S_ISVTX:
        fix = f"make it private (chmod 700 {folder.parent}) or " if parent.st_uid == os.getuid() else ""
        raise ControlError(
            f"{folder.parent} is writable by every user, who could replace {folder.name} in it; "
            f"{fix}set XDG_RUNTIME_DIR to a private folder"
        )
    with contextlib.suppress(OSError):  # not ours to change (a shared tmp): the socket itself is 0600
        os.chmod(folder, 0o700)


# ---------------------------------------------------------------- validation


def validate(request: Any) -> dict[str, Any]:
    """The request if well-formed; raises ValueError with a message otherwise."""
    if not isinstance(request, dict):
        raise ValueError("request must be a JSON object")
    cmd = request.get("cmd")
    if cmd not in COMMANDS:
        raise ValueError(f"unknown command {cmd!r}; known: {', '.join(COMMANDS)}")
    allowed = {"cmd"} | {"mode": {"mode"}, "mirror": {"on"}, "preview": {"on"}}.get(cmd, set())
    extra = set(request) - allowed
    if extra:
        raise ValueError(f"{cmd}: unexpected field(s) {', '.join(sorted(map(str, extra)))}")
    if cmd == "mode" and request.get("mode") not in MODES:
        raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {request.get('mode')!r}")
    if cmd in ("mirror", "preview") and not isinstance(request.get("on"), bool):
        raise ValueError(f"{cmd}: 'on' must be true or false")
    return request


TOO_LONG = f"request too long (more than {MAX_REQUEST_BYTES} bytes)"
DENIED = (
    "permission denied: this EmojiCam runs as another user; "
    "run 'emojicam ctl' as the user who started it"
)


def decode_request(line: bytes) -> dict[str, Any]:
    if len(line) > MAX_REQUEST_BYTES:
        raise ValueError(TOO_LONG)
    try:
        data = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"malformed request: {exc}") from None
    return validate(data)


def answer(raw: bytes, handler: Handler) -> dict[str, Any]:
    """The reply to one raw request, for every transport: bad input is
    answered here and never reaches ``handler``; a handler that raises is
    reported, never crashes the channel."""
    raw = raw.strip()
    if not raw:
        return {"ok": False, "error": "empty request"}
    try:
        request = decode_request(raw)
    except ValueError as exc:
        return {"ok": False, "error": str(exc)}
    try:
        return handler(request)
    except Exception as exc:  # noqa: BLE001 - the channel reports, never crashes
        log.exception("control command %s failed", request.get("cmd"))
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def parse_reply(buf: bytes) -> dict[str, Any]:
    """The daemon's reply as a dict; raises ``ControlError`` when unreadable."""
    if not buf:
        raise ControlError("EmojiCam closed the connection without answering")
    try:
        reply = json.loads(buf.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ControlError(f"unreadable reply: {exc}") from exc
    if not isinstance(reply, dict):
        raise ControlError("unreadable reply: not a JSON object")
    return reply


@contextlib.contextmanager
def connect_errors(address: object) -> Iterator[None]:
    """While connecting to ``address`` (either transport): nobody listening
    becomes ``NotRunning`` and a refused permission ``ControlError``, with
    what to do."""
    try:
        yield
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise NotRunning(
            f"EmojiCam is not running (nothing answers on {address}); start it with 'emojicam run'"
        ) from exc
    except PermissionError as exc:
        raise ControlError(f"{address}: permission denied; it belongs to another user") from exc


# ---------------------------------------------------------------- this platform's transport


def platform_server(
    handler: Handler, folder: Path | None = None, socket_file: Path | None = None
) -> ChannelServer:
    """The control server for this platform, not started yet: the Unix
    socket ``socket_file`` (default ``control.sock`` in ``folder``, default
    the runtime folder), or on Windows the named pipe with its key file in
    ``folder``."""
    if uses_named_pipe():
        from emojicam import control_pipe

        return control_pipe.PipeControlServer(handler, key_file=control_pipe.key_path(folder))
    return ControlServer(handler, socket_file or socket_path(folder))


def send_request(request: dict[str, Any], path: Path | None = None, timeout_s: float = 5.0) -> dict[str, Any]:
    """Send one request to the daemon over this platform's channel and return
    the reply; raises ``NotRunning`` when no daemon listens, ``ControlError``
    when the channel fails. ``path`` names a Unix socket (tests); Windows
    has none and always uses the user's named pipe."""
    if uses_named_pipe():
        if path is not None:
            raise ValueError(
                "a socket path needs Unix sockets; on Windows the control channel is a named pipe"
            )
        from emojicam import control_pipe

        return control_pipe.send_pipe_request(request, timeout_s=timeout_s)
    return send_socket_request(request, path, timeout_s)


# ---------------------------------------------------------------- Unix socket server


def _peer_uid(sock: socket.socket) -> int | None:
    if not sys.platform.startswith("linux"):
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


class _RequestHandler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        self.request.settimeout(REQUEST_TIMEOUT_S)
        try:
            # Read before any answer: a reply sent over an unread request reached the
            # client as a broken pipe, never as the reason.
            line = self.rfile.readline(MAX_REQUEST_BYTES + 2)  # + room for b"\r\n"
            uid = _peer_uid(self.request)
            if uid is not None and uid != os.getuid():
                self._reply({"ok": False, "error": DENIED})
                return
            if len(line.rstrip(b"\r\n")) > MAX_REQUEST_BYTES:
                self._reply({"ok": False, "error": TOO_LONG})
                return
            self._reply(answer(line, self.server.handler))
        except (TimeoutError, OSError) as exc:
            log.debug("control connection dropped: %s", exc)

    def _reply(self, reply: dict[str, Any]) -> None:
        self.wfile.write(json.dumps(reply).encode() + b"\n")


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = False
    request_queue_size = 64

    def __init__(self, path: str, handler: Handler) -> None:
        super().__init__(path, _RequestHandler, bind_and_activate=False)
        self.handler = handler


class ControlServer:
    """Serves ``handler`` on a Unix socket; ``start()`` binds, ``stop()``
    closes and removes the socket file. Call only while holding the
    ``InstanceLock`` (a leftover socket file is removed on start)."""

    def __init__(self, handler: Handler, path: Path | None = None) -> None:
        self.path = path or socket_path()
        self._handler = handler
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not hasattr(socket, "AF_UNIX"):
            raise ControlError(
                "Unix sockets are not available on this platform; "
                "platform_server() picks the named pipe there"
            )
        _ensure_private_dir(self.path.parent)
        # Bound and listening under a temporary name, then renamed into place: the
        # socket file appears only once it answers (a client that saw it during
        # startup was once refused, and told EmojiCam was not running).
        staging = self.path.with_name(self.path.name + ".new")
        check_socket_path_length(staging)
        for leftover in (self.path, staging):  # stale, from a daemon that was killed
            if leftover.exists() or leftover.is_symlink():
                leftover.unlink()
        server = _Server(str(staging), self._handler)
        old_umask = os.umask(0o177)
        try:
            server.server_bind()
        finally:
            os.umask(old_umask)
        os.chmod(staging, 0o600)
        server.server_activate()
        os.replace(staging, self.path)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="emojicam-control", daemon=True
        )
        self._thread.start()
        log.info("control socket: %s", self.path)

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


# ---------------------------------------------------------------- Unix socket client


def send_socket_request(
    request: dict[str, Any], path: Path | None = None, timeout_s: float = 5.0
) -> dict[str, Any]:
    """Send one request over the Unix socket, return the reply; raises
    ``NotRunning`` when no daemon listens."""
    path = path or socket_path()
    if not hasattr(socket, "AF_UNIX"):
        raise ControlError("Unix sockets are not available on this platform; use send_request()")
    check_socket_path_length(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        with connect_errors(path):
            for attempt in range(20):
                try:
                    sock.connect(str(path))
                    break
                except BlockingIOError:  # the listen backlog is full: a burst of clients
                    if attempt == 19:
                        raise ControlError("EmojiCam is too busy to answer; try again") from None
                    time.sleep(0.05)
        server_uid = _peer_uid(sock)
        if server_uid is not None and server_uid != os.getuid():  # a socket planted in a shared folder
            raise ControlError(
                f"{path} is served by another user's program (uid {server_uid}), not your EmojiCam; "
                "nothing was sent. Set XDG_RUNTIME_DIR to a folder only you can write, or remove that socket"
            )
        sock.sendall(json.dumps(request).encode() + b"\n")
        buf = bytearray()
        while not buf.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
            if len(buf) > MAX_REPLY_BYTES:
                raise ControlError("reply too long")
    except TimeoutError as exc:
        raise ControlError(f"EmojiCam did not answer within {timeout_s:g} s") from exc
    except OSError as exc:  # e.g. reset by a daemon closing its socket while stopping
        raise ControlError(
            f"EmojiCam closed the control connection ({exc}); if it is stopping, start it again "
            "with 'emojicam run'"
        ) from exc
    finally:
        sock.close()
    return parse_reply(bytes(buf))


# ---------------------------------------------------------------- engine adapter


def engine_handler(engine: Any, wait_s: float = 4.0) -> Handler:
    """Maps validated requests onto an ``engine.Engine``; waits ``wait_s``
    for a command to finish (less than a client waits for the reply)."""

    def handle(request: dict[str, Any]) -> dict[str, Any]:
        cmd = request["cmd"]
        if cmd == "status":
            return {"ok": True, "status": engine.status().as_dict()}
        if cmd == "quit":
            engine.request_stop()
            return {"ok": True}
        if cmd == "preview":
            engine.set_preview(request["on"])
            return {"ok": True}
        futures = {
            "mode": lambda: engine.set_mode(request["mode"]),
            "pause": engine.pause,
            "resume": engine.resume,
            "reload": engine.reload,
            "mirror": lambda: engine.set_mirror(request["on"]),
        }
        try:
            futures[cmd]().result(timeout=wait_s)
        except concurrent.futures.TimeoutError:  # not yet the builtin one on Python 3.10
            return {
                "ok": False,
                "error": f"EmojiCam is busy: {cmd!r} did not finish within {wait_s:g} s and is still queued; "
                "check with 'emojicam ctl status'",
            }
        except Exception as exc:  # noqa: BLE001 - ConfigError, SetupError, shutting down
            return {"ok": False, "error": str(exc) or type(exc).__name__}
        reply: dict[str, Any] = {"ok": True}
        if cmd == "mode":
            reply["mode"] = request["mode"]
        return reply

    return handle


# ---------------------------------------------------------------- single instance


class InstanceLock:
    """One daemon per user: a ``filelock`` lock in the runtime folder, with
    the holder's pid written beside it for the error message."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or runtime_dir()
        self._lock: Any = None

    @property
    def pid_path(self) -> Path:
        return self.folder / "emojicam.pid"

    def acquire(self) -> None:
        from filelock import FileLock, Timeout

        _ensure_private_dir(self.folder)
        lock = FileLock(str(self.folder / "emojicam.lock"), mode=0o600)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            pid = ""
            with contextlib.suppress(OSError):
                pid = self.pid_path.read_text().strip()
            who = f" (pid {pid})" if pid else ""
            raise AlreadyRunning(
                f"EmojiCam is already running{who}; control it with 'emojicam ctl status' "
                "or stop it with 'emojicam ctl quit'"
            ) from None
        self._lock = lock
        self.pid_path.write_text(f"{os.getpid()}\n")

    def release(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                self.pid_path.unlink()
            self._lock.release()
            self._lock = None
