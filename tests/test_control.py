"""The control channel: validation, the socket's safety, the client, the
single-instance lock, and the mapping onto engine commands."""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import threading
from concurrent.futures import Future
from pathlib import Path

import pytest

from emojicam import control
from emojicam.config import ConfigError

unix_only = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="Unix sockets only")


@pytest.mark.parametrize(
    "request_",
    [
        {"cmd": "status"},
        {"cmd": "mode", "mode": "label"},
        {"cmd": "pause"},
        {"cmd": "resume"},
        {"cmd": "reload"},
        {"cmd": "quit"},
        {"cmd": "mirror", "on": True},
        {"cmd": "preview", "on": False},
    ],
)
def test_valid_requests_pass(request_: dict) -> None:
    assert control.validate(request_) == request_


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"not json", "malformed"),
        (b"[1, 2]", "JSON object"),
        (b'"status"', "JSON object"),
        (b"{}", "unknown command"),
        (b'{"cmd": "rm -rf"}', "unknown command"),
        (b'{"cmd": "mode"}', "mode: expected one of"),
        (b'{"cmd": "mode", "mode": "sepia"}', "sepia"),
        (b'{"cmd": "status", "extra": 1}', "unexpected field"),
        (b'{"cmd": "mirror", "on": "yes"}', "true or false"),
        (b"\xff\xfe", "malformed"),
        (b"[" * 100_000, "too long"),
        (b"[" * 4000 + b"]" * 4000, "too long"),
        (b"[" * 2000 + b"]" * 2000, "malformed"),  # deep nesting within the size limit: refused, no crash
    ],
)
def test_malformed_requests_are_refused(line: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        control.decode_request(line)


class FakeEngine:
    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.stopped = False

    def _done(self, *call, error: Exception | None = None) -> Future:
        self.calls.append(call)
        fut: Future = Future()
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)
        return fut

    def status(self):
        class S:
            def as_dict(self_inner):
                return {"state": "running", "mode": "replace", "fps": 30.0, "faces": 1, "camera": "ok"}

        return S()

    def set_mode(self, mode):
        return self._done("mode", mode)

    def pause(self):
        return self._done("pause")

    def resume(self):
        return self._done("resume")

    def reload(self):
        return self._done("reload", error=ConfigError("config.yaml: mode: expected one of ..., got 'x'"))

    def set_mirror(self, on):
        return self._done("mirror", on)

    def set_preview(self, on):
        self.calls.append(("preview", on))

    def request_stop(self):
        self.stopped = True


def test_engine_handler_maps_commands() -> None:
    eng = FakeEngine()
    handle = control.engine_handler(eng)
    assert handle({"cmd": "status"})["status"]["camera"] == "ok"
    assert handle({"cmd": "mode", "mode": "label"}) == {"ok": True, "mode": "label"}
    assert handle({"cmd": "pause"}) == {"ok": True}
    assert handle({"cmd": "mirror", "on": True}) == {"ok": True}
    assert handle({"cmd": "preview", "on": True}) == {"ok": True}
    reply = handle({"cmd": "reload"})
    assert reply["ok"] is False and "mode: expected" in reply["error"]
    assert handle({"cmd": "quit"}) == {"ok": True} and eng.stopped
    assert eng.calls == [("mode", "label"), ("pause",), ("mirror", True), ("preview", True), ("reload",)]


@pytest.fixture
def server(tmp_path: Path):
    eng = FakeEngine()
    calls: list[dict] = []

    def handler(request: dict) -> dict:
        calls.append(request)
        return control.engine_handler(eng)(request)

    srv = control.ControlServer(handler, tmp_path / "rt" / "control.sock")
    srv.start()
    srv.calls = calls  # type: ignore[attr-defined]
    yield srv
    srv.stop()


def raw_exchange(path: Path, payload: bytes, timeout_s: float = 3.0) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        s.connect(str(path))
        s.sendall(payload)
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)


@unix_only
def test_socket_is_private(server) -> None:
    assert stat.S_ISSOCK(server.path.stat().st_mode)
    assert stat.S_IMODE(server.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(server.path.parent.stat().st_mode) == 0o700


@unix_only
def test_client_round_trip(server) -> None:
    assert control.send_request({"cmd": "status"}, server.path)["status"]["state"] == "running"
    assert control.send_request({"cmd": "mode", "mode": "decorate"}, server.path)["mode"] == "decorate"


@unix_only
def test_oversized_and_malformed_never_reach_the_engine(server) -> None:
    reply = raw_exchange(server.path, b"{" + b" " * (control.MAX_REQUEST_BYTES + 10) + b"}\n")
    assert reply["ok"] is False and "too long" in reply["error"]
    reply = raw_exchange(server.path, b"{'cmd': 'status'}\n")
    assert reply["ok"] is False and "malformed" in reply["error"]
    reply = raw_exchange(server.path, b"\n")
    assert reply["ok"] is False
    reply = raw_exchange(server.path, b'{"cmd": "shutdown -h now"}\n')
    assert reply["ok"] is False and "unknown command" in reply["error"]
    assert server.calls == []
    assert raw_exchange(server.path, b'{"cmd": "status"}\n')["ok"] is True  # still serving


@unix_only
@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
def test_a_request_of_exactly_the_limit_is_served_and_one_byte_more_is_not(server, ending) -> None:
    """MAX_REQUEST_BYTES counts the request, not its line ending (as on the named pipe)."""
    request = b'{"cmd": "status"}'
    at_limit = request + b" " * (control.MAX_REQUEST_BYTES - len(request))
    assert raw_exchange(server.path, at_limit + ending)["ok"] is True
    reply = raw_exchange(server.path, at_limit + b" " + ending)
    assert reply["ok"] is False and "too long" in reply["error"]


@unix_only
def test_a_connection_reset_by_a_stopping_daemon_is_a_control_error(tmp_path: Path) -> None:
    """A client queued in the listen backlog when the daemon closes its socket is
    reset; 'emojicam ctl' must say so in one line, not print a traceback."""
    path = tmp_path / "c.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)  # never accepts: the client waits in the backlog
    closer = threading.Timer(0.3, listener.close)
    closer.start()
    try:
        with pytest.raises(control.ControlError, match="closed the control connection"):
            control.send_socket_request({"cmd": "status"}, path, timeout_s=5)
    finally:
        closer.join()


@unix_only
def test_a_silent_client_does_not_block_others(server, monkeypatch) -> None:
    # The server gives up on a silent client after REQUEST_TIMEOUT_S; made far longer
    # than the client's wait here, a server that served one client at a time could
    # only answer once the silent one was dropped: never, within the test.
    monkeypatch.setattr(control, "REQUEST_TIMEOUT_S", 60.0)
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.connect(str(server.path))  # connects first, and says nothing
    try:
        assert control.send_request({"cmd": "status"}, server.path, timeout_s=10)["ok"]
        with pytest.raises(BlockingIOError):  # answered while the silent one is still connected
            idle.recv(1, socket.MSG_DONTWAIT)
    finally:
        idle.close()


@unix_only
def test_many_concurrent_clients(server) -> None:
    results: list[bool] = []

    def ask() -> None:
        results.append(control.send_request({"cmd": "status"}, server.path)["ok"])

    threads = [threading.Thread(target=ask) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert results == [True] * 20


@unix_only
def test_stop_removes_socket_and_client_says_not_running(tmp_path: Path) -> None:
    srv = control.ControlServer(lambda r: {"ok": True}, tmp_path / "c.sock")
    srv.start()
    srv.stop()
    assert not (tmp_path / "c.sock").exists()
    with pytest.raises(control.NotRunning, match="not running"):
        control.send_request({"cmd": "status"}, tmp_path / "c.sock")


@unix_only
def test_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    stale = tmp_path / "c.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))
    s.close()  # the file stays behind, as after a crash
    with pytest.raises(control.NotRunning):
        control.send_request({"cmd": "status"}, stale)
    srv = control.ControlServer(lambda r: {"ok": True, "fresh": True}, stale)
    srv.start()
    try:
        assert control.send_request({"cmd": "status"}, stale)["fresh"] is True
    finally:
        srv.stop()


@unix_only
def test_the_socket_file_appears_only_once_it_answers(tmp_path: Path, monkeypatch) -> None:
    """The file once existed between bind and listen: a client that saw it
    during startup was refused and told EmojiCam was not running."""
    path = tmp_path / "c.sock"
    seen_before_listening: list[bool] = []
    activate = control._Server.server_activate

    def watched_activate(self) -> None:
        seen_before_listening.append(path.exists())
        activate(self)

    monkeypatch.setattr(control._Server, "server_activate", watched_activate)
    srv = control.ControlServer(lambda r: {"ok": True}, path)
    srv.start()
    try:
        assert seen_before_listening == [False]
        assert control.send_request({"cmd": "status"}, path)["ok"] is True
        assert path.stat().st_mode & 0o777 == 0o600 and not path.with_name("c.sock.new").exists()
    finally:
        srv.stop()


@unix_only
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_PEERCRED is Linux")
def test_peer_uid_is_read(tmp_path: Path) -> None:
    import os

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert control._peer_uid(a) == os.getuid()


def test_instance_lock_refuses_a_second_daemon(tmp_path: Path) -> None:
    first = control.InstanceLock(tmp_path)
    first.acquire()
    try:
        second = control.InstanceLock(tmp_path)
        with pytest.raises(control.AlreadyRunning, match=r"already running \(pid \d+\)"):
            second.acquire()
    finally:
        first.release()
    again = control.InstanceLock(tmp_path)
    again.acquire()  # free again after release
    again.release()


@unix_only
def test_a_runtime_folder_that_is_a_link_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere"
    real.mkdir()
    (tmp_path / "rt").symlink_to(real)
    srv = control.ControlServer(lambda r: {"ok": True}, tmp_path / "rt" / "control.sock")
    with pytest.raises(control.ControlError, match="another user or is a link"):
        srv.start()


@unix_only
def test_a_runtime_folder_inside_a_folder_anyone_may_rename_in_is_refused(tmp_path: Path) -> None:
    """In a parent folder that others may write (and that is not sticky like
    /tmp), another user can swap our private folder for one of theirs after
    we checked it, and take over the socket's name."""
    import os

    shared = tmp_path / "runtime-1000"
    shared.mkdir()
    os.chmod(shared, 0o777)
    srv = control.ControlServer(lambda r: {"ok": True}, shared / "emojicam" / "control.sock")
    with pytest.raises(control.ControlError, match=r"runtime-1000 .*set XDG_RUNTIME_DIR to a private folder"):
        srv.start()
    with pytest.raises(control.ControlError, match="set XDG_RUNTIME_DIR to a private folder"):
        control.InstanceLock(shared / "emojicam").acquire()
    os.chmod(shared, 0o1777)  # sticky, like /tmp: nobody may rename what is ours
    srv.start()
    srv.stop()


@unix_only
@pytest.mark.skipif(not hasattr(control.os, "geteuid") or control.os.geteuid() != 0,
                    reason="needs root to make a folder that another user owns")
def test_a_runtime_folder_inside_another_users_folder_is_refused(tmp_path: Path) -> None:
    """Without XDG_RUNTIME_DIR the runtime folder is /tmp/runtime-UID/emojicam;
    another user may have made /tmp/runtime-UID first, and can then swap our
    emojicam folder for theirs after we checked it."""
    import os

    theirs = tmp_path / "runtime-1000"
    theirs.mkdir()
    os.chown(theirs, 54321, 54321)
    srv = control.ControlServer(lambda r: {"ok": True}, theirs / "emojicam" / "control.sock")
    with pytest.raises(control.ControlError, match="belongs to another user"):
        srv.start()
    with pytest.raises(control.ControlError, match="belongs to another user"):
        control.InstanceLock(theirs / "emojicam").acquire()


@unix_only
def test_a_client_of_another_user_is_told_why_it_is_refused(server, monkeypatch) -> None:
    """root (e.g. 'sudo -E emojicam ctl ...') can open the 0600 socket, and was
    refused with a bare 'permission denied'."""
    import os

    # the server (in its handler thread) sees root; the client sees its own daemon
    def peer_uid(sock: object) -> int:
        return os.getuid() + 1 if threading.current_thread() is not threading.main_thread() else os.getuid()

    monkeypatch.setattr(control, "_peer_uid", peer_uid)
    reply = control.send_request({"cmd": "quit"}, server.path)
    assert reply["ok"] is False
    assert "permission denied" in reply["error"] and "run 'emojicam ctl' as the user" in reply["error"]
    assert server.calls == []


def test_a_command_the_engine_is_slow_to_finish_is_explained() -> None:
    """The reply said only 'TimeoutError', and came as the client's own wait
    ran out, so 'emojicam ctl' said 'did not answer' instead."""
    import inspect

    class SlowEngine(FakeEngine):
        def set_mode(self, mode):
            self.calls.append(("mode", mode))
            return Future()  # never finishes: the processing thread is busy

    reply = control.engine_handler(SlowEngine(), wait_s=0.05)({"cmd": "mode", "mode": "label"})
    assert reply["ok"] is False
    assert reply["error"] == (
        "EmojiCam is busy: 'mode' did not finish within 0.05 s and is still queued; "
        "check with 'emojicam ctl status'"
    )
    handler_wait = inspect.signature(control.engine_handler).parameters["wait_s"].default
    client_wait = inspect.signature(control.send_request).parameters["timeout_s"].default
    assert handler_wait + 0.5 <= client_wait  # the reply must reach the client before it gives up


def _folder_for_socket_of(tmp_path: Path, total_bytes: int) -> Path:
    """A folder whose ``control.sock.new`` (the name the server binds first) is ``total_bytes`` long."""
    pad = total_bytes - len(str(tmp_path / "x" / "control.sock.new")) + 1
    assert pad > 0
    return tmp_path / ("d" * pad)


@unix_only
def test_a_socket_path_too_long_for_unix_sockets_is_named_with_the_fix(tmp_path: Path) -> None:
    """A long XDG_RUNTIME_DIR made the server fail with Python's bare "AF_UNIX
    path too long" and the client say EmojiCam "closed the control connection"."""
    folder = _folder_for_socket_of(tmp_path, control.SOCKET_PATH_MAX_BYTES + 1)
    srv = control.ControlServer(lambda r: {"ok": True}, folder / "control.sock")
    with pytest.raises(control.ControlError, match="XDG_RUNTIME_DIR") as err:
        srv.start()
    assert str(folder / "control.sock.new") in str(err.value)
    long_client_path = tmp_path / ("e" * (control.SOCKET_PATH_MAX_BYTES - len(str(tmp_path)))) / "c.sock"
    with pytest.raises(control.ControlError, match="bytes, more than the .*XDG_RUNTIME_DIR"):
        control.send_request({"cmd": "status"}, long_client_path)


@unix_only
def test_the_longest_socket_path_unix_allows_still_works(tmp_path: Path) -> None:
    folder = _folder_for_socket_of(tmp_path, control.SOCKET_PATH_MAX_BYTES)
    srv = control.ControlServer(lambda r: {"ok": True, "pong": True}, folder / "control.sock")
    srv.start()
    try:
        assert control.send_request({"cmd": "status"}, folder / "control.sock")["pong"] is True
    finally:
        srv.stop()


@unix_only
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_PEERCRED is Linux-only")
@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to serve a socket as another user"
)
def test_the_client_sends_nothing_to_a_socket_served_by_another_user() -> None:
    """Without XDG_RUNTIME_DIR the runtime folder may sit in a shared /tmp; the
    client used to talk to whoever answered on the socket there."""
    import shutil
    import subprocess
    import tempfile

    # a system python: the other user cannot run one inside root's home
    python = shutil.which("python3", path="/usr/bin:/usr/local/bin")
    if python is None:
        pytest.skip("no system python3 for the other user's server")
    shared = Path(tempfile.mkdtemp(prefix="emojicam-shared-"))  # pytest's own folder is closed to other users
    shared.chmod(0o777)
    path, got = shared / "c.sock", shared / "got"
    planted = subprocess.Popen(
        [python, "-c", (
            "import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(); print('up', flush=True)\n"
            "c, _ = s.accept(); c.settimeout(2)\n"
            "open(sys.argv[2], 'wb').write(c.recv(100))\n"
        ), str(path), str(got)],
        user=65534, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert planted.stdout is not None and planted.stdout.readline() == "up\n"
        with pytest.raises(control.ControlError, match="another user's program .uid 65534.*nothing was sent"):
            control.send_request({"cmd": "set_mode", "mode": "off"}, path, timeout_s=2)
        planted.wait(5)
        assert got.read_bytes() == b""
    finally:
        planted.kill()
        shutil.rmtree(shared)
