"""The Windows control channel (``control_pipe``): a named pipe guarded by a
per-start key.

The transport is ``multiprocessing.connection``, which carries the same
messages over a Unix socket when the address is a file path; so on Linux
the very server and client classes run end to end here: a real server
thread, a real client, the key check both ways, bad input, stop. The
Windows-only glue (the pipe's name, where the key lives, the dispatch of
``platform_server`` / ``send_request``) is checked as pure functions; what
truly needs a named pipe runs only on Windows.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import stat
import sys
import threading
from multiprocessing.connection import Client, Listener
from pathlib import Path
from types import SimpleNamespace

import pytest

from emojicam import commands_daemon, control, control_pipe
from tests.test_control import FakeEngine, raw_exchange

windows_only = pytest.mark.skipif(sys.platform != "win32", reason="named pipes exist only on Windows")
unix_only = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="runs the transport over a Unix socket")


def make_server(tmp_path: Path, handler: control.Handler | None = None, address: str | None = None):
    """A started pipe server (over a Unix socket off Windows) around a
    FakeEngine; ``.calls`` lists the requests that reached the handler."""
    eng = FakeEngine()
    calls: list[dict] = []

    def recording(request: dict) -> dict:
        calls.append(request)
        return (handler or control.engine_handler(eng))(request)

    if address is None:
        address = str(tmp_path / "p.sock")
    srv = control_pipe.PipeControlServer(recording, address=address, key_file=tmp_path / "rt" / "control.key")
    srv.start()
    srv.calls = calls  # type: ignore[attr-defined]
    srv.engine = eng  # type: ignore[attr-defined]
    return srv


@pytest.fixture
def server(tmp_path: Path):
    srv = make_server(tmp_path)
    yield srv
    srv.stop()


def ask(srv: control_pipe.PipeControlServer, request: dict, **kw) -> dict:
    return control_pipe.send_pipe_request(request, srv.address, srv.key_file, **kw)


def raw_pipe_exchange(srv: control_pipe.PipeControlServer, payload: bytes) -> dict:
    """Pass the key check, then send ``payload`` as it is."""
    with control_pipe.open_connection(srv.address, srv.key_file) as conn:
        conn.send_bytes(payload)
        assert conn.poll(5), "no reply"
        return json.loads(conn.recv_bytes())


# ---------------------------------------------------------------- Windows glue, as pure functions


@pytest.mark.parametrize(
    ("user", "name"),
    [
        ("alice", "emojicam-alice"),
        ("Jane.Doe-2", "emojicam-Jane.Doe-2"),
        ("CORP\\bob smith", "emojicam-CORP_bob_smith"),  # a backslash would start a sub-path
        ("José", "emojicam-José"),
        ("", "emojicam-user"),
    ],
)
def test_pipe_address_is_per_user_and_safe(user: str, name: str) -> None:
    assert control_pipe.pipe_address(user) == "\\\\.\\pipe\\" + name


def test_pipe_address_defaults_to_the_login_name(monkeypatch) -> None:
    monkeypatch.setattr(control_pipe.getpass, "getuser", lambda: "carol")
    assert control_pipe.pipe_address() == r"\\.\pipe\emojicam-carol"


def test_pipe_address_without_a_login_name_uses_the_home_folder(monkeypatch, tmp_path: Path) -> None:
    def no_user() -> str:
        raise OSError("No username set in the environment")

    monkeypatch.setattr(control_pipe.getpass, "getuser", no_user)
    monkeypatch.setattr(control_pipe.Path, "home", classmethod(lambda cls: tmp_path / "dave"))
    assert control_pipe.pipe_address() == r"\\.\pipe\emojicam-dave"


def test_key_lives_in_the_runtime_folder_beside_the_lock(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(control_pipe, "runtime_dir", lambda: tmp_path / "rt")
    assert control_pipe.key_path() == tmp_path / "rt" / "control.key"
    assert control_pipe.key_path(tmp_path / "x") == tmp_path / "x" / "control.key"
    assert control.InstanceLock(tmp_path / "x").folder == control_pipe.key_path(tmp_path / "x").parent


def test_write_key_is_random_private_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "control.key"
    first = control_pipe.write_key(path)
    assert path.read_bytes() == first and len(first) == control_pipe.KEY_BYTES
    second = control_pipe.write_key(path)  # each start writes a new one over the old
    assert second != first and control_pipe.read_key(path) == second
    assert [p.name for p in tmp_path.iterdir()] == ["control.key"]
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_missing_or_damaged_key_is_reported(tmp_path: Path) -> None:
    with pytest.raises(control.ControlError, match="missing; restart EmojiCam"):
        control_pipe.read_key(tmp_path / "control.key")
    (tmp_path / "control.key").write_bytes(b"short")
    with pytest.raises(control.ControlError, match=r"damaged \(5 bytes, expected 32\)"):
        control_pipe.read_key(tmp_path / "control.key")


@pytest.mark.parametrize(("platform", "pipe"), [("win32", True), ("linux", False), ("darwin", False)])
def test_windows_gets_the_named_pipe(monkeypatch, platform: str, pipe: bool) -> None:
    monkeypatch.setattr(sys, "platform", platform)
    assert control.uses_named_pipe() is pipe


def test_platform_server_picks_the_transport(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(control, "uses_named_pipe", lambda: False)
    unix = control.platform_server(lambda r: {"ok": True}, folder=tmp_path)
    assert isinstance(unix, control.ControlServer) and unix.path == tmp_path / "control.sock"
    given = control.platform_server(lambda r: {"ok": True}, socket_file=tmp_path / "s.sock")
    assert isinstance(given, control.ControlServer) and given.path == tmp_path / "s.sock"

    monkeypatch.setattr(control, "uses_named_pipe", lambda: True)
    monkeypatch.setattr(control_pipe.getpass, "getuser", lambda: "erin")
    pipe = control.platform_server(lambda r: {"ok": True}, folder=tmp_path)
    assert isinstance(pipe, control_pipe.PipeControlServer)
    assert pipe.address == r"\\.\pipe\emojicam-erin"
    assert pipe.key_file == tmp_path / "control.key"


def test_a_socket_path_on_windows_is_a_usage_error(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(control, "uses_named_pipe", lambda: True)
    with pytest.raises(ValueError, match="named pipe"):
        control.send_request({"cmd": "status"}, tmp_path / "control.sock")


# ---------------------------------------------------------------- the transport, end to end


@unix_only
def test_round_trip_status_mode_quit(server) -> None:
    assert ask(server, {"cmd": "status"})["status"]["state"] == "running"
    assert ask(server, {"cmd": "mode", "mode": "label"}) == {"ok": True, "mode": "label"}
    assert ask(server, {"cmd": "mirror", "on": True}) == {"ok": True}
    assert ask(server, {"cmd": "quit"}) == {"ok": True}
    assert server.engine.stopped
    assert [r["cmd"] for r in server.calls] == ["status", "mode", "mirror", "quit"]
    assert server.engine.calls == [("mode", "label"), ("mirror", True)]


@unix_only
def test_an_engine_error_comes_back_as_a_reply(server) -> None:
    reply = ask(server, {"cmd": "reload"})  # FakeEngine.reload fails with a ConfigError
    assert reply["ok"] is False and "mode: expected" in reply["error"]


@unix_only
def test_a_wrong_key_is_refused_and_never_reaches_the_engine(server, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.key"
    control_pipe.write_key(wrong)
    with pytest.raises(control.ControlError, match="refused the key"):
        control_pipe.send_pipe_request({"cmd": "quit"}, server.address, wrong)
    assert server.calls == [] and not server.engine.stopped
    assert ask(server, {"cmd": "status"})["ok"]  # still serving the right key


@unix_only
def test_a_peer_that_skips_the_key_check_gets_nothing(server) -> None:
    with Client(server.address) as conn:
        assert conn.poll(5)
        hello = conn.recv_bytes()
        assert hello.startswith(b"emojicam-control-1 ")
        conn.send_bytes(json.dumps({"cmd": "quit"}).encode())  # a request in place of the proof
        assert conn.poll(5)
        with pytest.raises(EOFError):
            conn.recv_bytes()  # hung up without a word more
    assert server.calls == [] and not server.engine.stopped


@unix_only
def test_an_impostor_that_does_not_know_the_key_is_detected(tmp_path: Path) -> None:
    """A program that took the name first cannot pose as EmojiCam: the
    client checks the daemon's proof too."""
    address = str(tmp_path / "p.sock")
    key_file = tmp_path / "control.key"
    control_pipe.write_key(key_file)
    with Listener(address) as listener:

        def impostor() -> None:
            with listener.accept() as conn:
                conn.send_bytes(b"emojicam-control-1 " + secrets.token_bytes(32))
                conn.recv_bytes()
                conn.send_bytes(secrets.token_bytes(32))  # a guess at the proof
                conn.poll(5)

        t = threading.Thread(target=impostor, daemon=True)
        t.start()
        with pytest.raises(control.ControlError, match="not your EmojiCam"):
            control_pipe.send_pipe_request({"cmd": "status"}, address, key_file)
        t.join(5)


@unix_only
def test_something_else_on_the_address_is_named(tmp_path: Path) -> None:
    address = str(tmp_path / "p.sock")
    control_pipe.write_key(tmp_path / "control.key")
    with Listener(address) as listener:

        def other() -> None:
            with listener.accept() as conn:
                conn.send_bytes(b"HTTP/1.1 400 Bad Request")
                conn.poll(5)

        t = threading.Thread(target=other, daemon=True)
        t.start()
        with pytest.raises(control.ControlError, match="something other than EmojiCam answers"):
            control_pipe.send_pipe_request({"cmd": "status"}, address, tmp_path / "control.key")
        t.join(5)


@unix_only
def test_an_oversized_request_is_refused_with_a_clear_error(server) -> None:
    reply = ask(server, {"cmd": "status", "pad": "a" * (control.MAX_REQUEST_BYTES + 100)})
    assert reply == {"ok": False, "error": f"request too long (more than {control.MAX_REQUEST_BYTES} bytes)"}
    assert server.calls == []
    assert ask(server, {"cmd": "status"})["ok"]  # still serving


@unix_only
@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not json", "malformed request"),
        (b"{'cmd': 'status'}", "malformed request"),
        (b"\xff\xfe", "malformed request"),
        (b"", "empty request"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"cmd": "shutdown -h now"}', "unknown command"),
        (b'{"cmd": "mode", "mode": "sepia"}', "mode: expected one of"),
        (b'{"cmd": "mirror", "on": "yes"}', "true or false"),
        (b'{"cmd": "status", "extra": 1}', "unexpected field"),
    ],
)
def test_bad_input_is_answered_exactly_as_on_the_unix_socket(
    server, tmp_path: Path, payload, message
) -> None:
    pipe_reply = raw_pipe_exchange(server, payload)
    assert pipe_reply["ok"] is False and message in pipe_reply["error"]
    unix = control.ControlServer(lambda r: {"ok": True}, tmp_path / "u" / "c.sock")
    unix.start()
    try:
        assert raw_exchange(unix.path, payload + b"\n") == pipe_reply
    finally:
        unix.stop()
    assert server.calls == []


@unix_only
def test_a_silent_client_does_not_block_others_and_is_dropped(server, monkeypatch) -> None:
    monkeypatch.setattr(control_pipe, "REQUEST_TIMEOUT_S", 0.3)
    with Client(server.address) as idle:  # connects and never answers the challenge
        assert ask(server, {"cmd": "status"}, timeout_s=5)["ok"]
        assert idle.poll(5)
        idle.recv_bytes()  # the challenge
        assert idle.poll(5)
        with pytest.raises(EOFError):
            idle.recv_bytes()  # then, unanswered, the daemon hangs up


@unix_only
def test_more_clients_than_slots_are_all_answered(server) -> None:
    results: list[bool] = []

    def one() -> None:
        results.append(ask(server, {"cmd": "status"})["ok"])

    threads = [threading.Thread(target=one) for _ in range(control_pipe.MAX_CONNECTIONS + 8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [True] * len(threads)


@unix_only
def test_stop_frees_the_address_and_removes_the_key(tmp_path: Path) -> None:
    srv = make_server(tmp_path)
    assert srv.key_file.exists()
    srv.stop()
    assert not Path(srv.address).exists() and not srv.key_file.exists()
    with pytest.raises(control.NotRunning, match="not running .*start it with 'emojicam run'"):
        ask(srv, {"cmd": "status"})
    again = make_server(tmp_path, handler=lambda r: {"ok": True, "fresh": True})  # same address, new key
    try:
        assert ask(again, {"cmd": "status"}) == {"ok": True, "fresh": True}
    finally:
        again.stop()
    srv.stop()  # a second stop is harmless


@unix_only
def test_a_name_already_taken_is_reported_and_leaves_no_key(tmp_path: Path) -> None:
    address = str(tmp_path / "p.sock")
    with Listener(address):
        srv = control_pipe.PipeControlServer(lambda r: {"ok": True}, address, tmp_path / "rt" / "control.key")
        with pytest.raises(control.ControlError, match="another program may hold that name"):
            srv.start()
    assert not (tmp_path / "rt" / "control.key").exists()


def test_no_server_means_not_running(tmp_path: Path) -> None:
    address = (
        str(tmp_path / "p.sock")
        if os.name == "posix"
        else control_pipe.pipe_address("nobody-" + secrets.token_hex(4))
    )
    with pytest.raises(control.NotRunning) as info:
        control_pipe.send_pipe_request({"cmd": "status"}, address, tmp_path / "control.key")
    assert "EmojiCam is not running" in str(info.value) and "emojicam run" in str(info.value)


# ---------------------------------------------------------------- the daemon's and ctl's call sites


@unix_only
def test_ctl_and_platform_server_use_the_pipe_on_windows(monkeypatch, tmp_path: Path, capsys) -> None:
    """With the platform switched to the pipe, ``platform_server`` (what
    ``emojicam run`` starts) and ``emojicam ctl`` (``send_request``) find each
    other through the default address and key file, with no path given."""
    monkeypatch.setattr(control, "uses_named_pipe", lambda: True)
    monkeypatch.setattr(control_pipe, "pipe_address", lambda user=None: str(tmp_path / "p.sock"))
    monkeypatch.setattr(control_pipe, "runtime_dir", lambda: tmp_path / "rt")
    eng = FakeEngine()
    srv = control.platform_server(control.engine_handler(eng))
    assert isinstance(srv, control_pipe.PipeControlServer)
    srv.start()
    try:
        assert commands_daemon.cmd_ctl(SimpleNamespace(ctl_command="mode", mode="label")) == 0
        assert capsys.readouterr().out == "mode: label\n"
        assert commands_daemon.cmd_ctl(SimpleNamespace(ctl_command="status", json=True)) == 0
        assert json.loads(capsys.readouterr().out)["state"] == "running"
        assert control.send_request({"cmd": "quit"}) == {"ok": True} and eng.stopped
    finally:
        srv.stop()
    assert commands_daemon.cmd_ctl(SimpleNamespace(ctl_command="status", json=False)) == 3  # EXIT_NOT_RUNNING
    assert "not running" in capsys.readouterr().err


# ---------------------------------------------------------------- on Windows, the real pipe


@windows_only
def test_real_named_pipe_round_trip_and_key(tmp_path: Path) -> None:
    address = control_pipe.pipe_address("test-" + secrets.token_hex(6))
    srv = make_server(tmp_path, address=address)
    try:
        assert ask(srv, {"cmd": "status"})["status"]["state"] == "running"
        assert ask(srv, {"cmd": "mode", "mode": "label"})["mode"] == "label"
        assert raw_pipe_exchange(srv, b"not json")["error"].startswith("malformed request")
        reply = ask(srv, {"cmd": "status", "pad": "a" * (control.MAX_REQUEST_BYTES + 100)})
        assert reply["ok"] is False and "too long" in reply["error"]
        wrong = tmp_path / "wrong.key"
        control_pipe.write_key(wrong)
        with pytest.raises(control.ControlError, match="refused the key"):
            control_pipe.send_pipe_request({"cmd": "quit"}, address, wrong)
        taken = control_pipe.PipeControlServer(
            lambda r: {"ok": True}, address, tmp_path / "k2" / "control.key"
        )
        with pytest.raises(control.ControlError, match="another program may hold that name"):
            taken.start()  # the first instance of a pipe name is exclusive
        assert ask(srv, {"cmd": "quit"}) == {"ok": True}
    finally:
        srv.stop()
    with pytest.raises(control.NotRunning):
        ask(srv, {"cmd": "status"})
    again = make_server(tmp_path, address=address)  # the name is free again
    again.stop()


@windows_only
def test_windows_default_pipe_and_key_locations() -> None:
    assert control.uses_named_pipe()
    assert control_pipe.pipe_address().startswith("\\\\.\\pipe\\emojicam-")
    local = Path(os.environ["LOCALAPPDATA"]).resolve()
    assert local in control_pipe.key_path().resolve().parents
