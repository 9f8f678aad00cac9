"""Reliability, item 7: security.

* The daemon opens no network socket: a whole engine session (the real
  pipeline, the control socket, a mode switch, a hot reload) runs with
  ``socket.socket``/``create_connection``/``getaddrinfo`` refusing every
  internet family, and afterwards the process holds no TCP/UDP socket
  (``/proc/self/net``). (``test_daemon_cli.py`` checks the same on a daemon
  subprocess through ``/proc/<pid>/net``.)
* The control socket stays 0600 in a 0700 folder even when started under a
  0000 umask, in a folder left world-writable, or with a symlink planted at
  its path; malformed, oversized, fragmented or odd requests never reach the
  engine (``test_control.py`` has the basic cases; these are the others).
* Nothing is written outside the user's config and state folders (and the
  runtime folder for the socket and lock): a daemon subprocess runs with
  HOME, every XDG folder, TMPDIR and its working directory inside a temp
  folder, and everything created there is listed.
* Frames go to disk only when asked: the daemon writes no image or video;
  ``process`` writes exactly its output file.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from emojicam import control, engine
from emojicam.config import CameraConfig, Config, SinkConfig, load_config
from tests.factories import make_fake_pipeline, make_scene, network_sockets, wait_for, write_test_video

REPO = Path(__file__).resolve().parents[1]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Unix sockets and /proc: Linux")
INET = {socket.AF_INET, socket.AF_INET6}
MEDIA_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".mp4", ".avi", ".mkv", ".mov",
                  ".yuv", ".raw", ".npy", ".npz"}


class NetworkGuard:
    """Refuses internet sockets and name lookups, and records each attempt."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.attempts: list[str] = []
        real_socket = socket.socket
        guard = self

        class GuardedSocket(real_socket):  # type: ignore[misc,valid-type]
            def __init__(self, family=-1, type=-1, proto=-1, fileno=None):  # noqa: A002 - socket's own names
                fam = socket.AF_INET if family == -1 and fileno is None else family
                if fam in INET:
                    guard.attempts.append(f"socket({fam!r})")
                    raise PermissionError("network sockets are forbidden in this test")
                super().__init__(family, type, proto, fileno)

        def refuse(name: str):
            def _refused(*args, **kwargs):
                guard.attempts.append(f"{name}{args[:2]}")
                raise PermissionError(f"{name} is forbidden in this test")
            return _refused

        monkeypatch.setattr(socket, "socket", GuardedSocket)
        for name in ("create_connection", "create_server", "getaddrinfo", "gethostbyname"):
            monkeypatch.setattr(socket, name, refuse(name))


@linux_only
def test_engine_session_opens_no_network_socket(monkeypatch, tmp_path):
    from emojicam.pipeline import build_pipeline, reconfigure
    from emojicam.sinks import NullSink

    guard = NetworkGuard(monkeypatch)
    video = write_test_video(tmp_path / "clip.avi", 30, (320, 240))
    path = tmp_path / "config.yaml"
    path.write_text(f"camera:\n  source: {video}\n  width: 320\n  height: 240\n")

    def load() -> Config:
        return dataclasses.replace(
            load_config(path, use_user_file=False), sink=SinkConfig(kind="null", fps=20)
        )

    deps = engine.default_deps(
        make_pipeline=build_pipeline, reconfigure=reconfigure, make_sink=lambda c: NullSink(c.sink.fps)
    )
    eng = engine.Engine(load(), deps, load_config=load, watch_paths=[path], reload_poll_s=0.1)
    sock = tmp_path / "rt" / "control.sock"
    server = control.ControlServer(control.engine_handler(eng), sock)
    eng.start()
    server.start()
    try:
        wait_for(lambda: eng.status().frames_processed > 5, timeout_s=15)
        assert control.send_request({"cmd": "mode", "mode": "label"}, sock)["ok"]
        path.write_text(path.read_text() + "tracker:\n  hold_s: 0.3\n")
        wait_for(lambda: eng.config.tracker.hold_s == 0.3, timeout_s=5)
        assert control.send_request({"cmd": "status"}, sock)["status"]["state"] == "running"
        assert network_sockets() == []
    finally:
        server.stop()
        eng.close()
    assert guard.attempts == [], f"network access attempted: {guard.attempts}"
    assert network_sockets() == []


def test_guard_catches_a_network_socket(monkeypatch):
    guard = NetworkGuard(monkeypatch)
    with pytest.raises(PermissionError):
        socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(PermissionError):
        socket.create_connection(("example.org", 80))
    assert len(guard.attempts) == 2
    if hasattr(socket, "AF_UNIX"):
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()  # local sockets stay allowed


# ---------------------------------------------------------------- the control socket


@pytest.fixture
def served(tmp_path):
    """A real engine (fake detector) behind a real control socket."""
    cfg = Config(
        camera=CameraConfig(
            source=str(write_test_video(tmp_path / "c.avi", 20, (160, 120))), width=160, height=120
        ),
        sink=SinkConfig(kind="null", fps=20),
    )
    from emojicam.sinks import NullSink

    deps = engine.EngineDeps(
        make_pipeline=lambda c: make_fake_pipeline(mode=c.mode),
        reconfigure=lambda p, o, n: p,
        make_sink=lambda c: NullSink(20),
        watch_readers=None,
    )
    eng = engine.Engine(cfg, deps)
    eng.start()
    servers: list[control.ControlServer] = []

    def serve(path: Path) -> control.ControlServer:
        server = control.ControlServer(control.engine_handler(eng), path)
        server.start()
        servers.append(server)
        return server

    yield eng, serve
    for s in servers:
        s.stop()
    eng.close()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@linux_only
def test_socket_is_private_even_under_a_zero_umask(served, tmp_path):
    eng, serve = served
    old = os.umask(0)
    try:
        server = serve(tmp_path / "rt" / "control.sock")
    finally:
        os.umask(old)
    assert stat.S_ISSOCK(server.path.lstat().st_mode)
    assert _mode(server.path) == 0o600 and _mode(server.path.parent) == 0o700


@linux_only
def test_a_world_writable_runtime_folder_is_made_private(served, tmp_path):
    eng, serve = served
    folder = tmp_path / "rt"
    folder.mkdir()
    folder.chmod(0o777)
    server = serve(folder / "control.sock")
    assert _mode(folder) == 0o700 and _mode(server.path) == 0o600


@linux_only
def test_a_symlink_planted_at_the_socket_path_is_not_followed(served, tmp_path):
    eng, serve = served
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    victim_mode = _mode(victim)
    folder = tmp_path / "rt"
    folder.mkdir(mode=0o700)
    (folder / "control.sock").symlink_to(victim)
    server = serve(folder / "control.sock")
    assert victim.read_text() == "precious" and _mode(victim) == victim_mode  # not chmod-ed through the link
    assert stat.S_ISSOCK(server.path.lstat().st_mode)
    assert control.send_request({"cmd": "status"}, server.path)["ok"]


def _exchange(path: Path, chunks: list[bytes], pause_s: float = 0.0, half_close: bool = False) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(path))
        for chunk in chunks:
            s.sendall(chunk)
            time.sleep(pause_s)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        buf = b""
        while True:
            try:
                part = s.recv(65536)
            except TimeoutError:
                break
            if not part:
                break
            buf += part
    return buf


ODD_REQUESTS = {
    "cmd-is-a-list": b'{"cmd": ["quit"]}\n',
    "cmd-is-an-object": b'{"cmd": {"quit": true}}\n',
    "cmd-is-a-number": b'{"cmd": 1e999}\n',
    "mode-is-a-number": b'{"cmd": "mode", "mode": 3}\n',
    "mode-is-null": b'{"cmd": "mode", "mode": null}\n',
    "mode-with-nul": b'{"cmd": "mode", "mode": "off\\u0000"}\n',
    "nan": b'{"cmd": "mode", "mode": NaN}\n',
    "nul-bytes": b"\x00" * 100 + b"\n",
    "binary": bytes(range(256)) + b"\n",
    "exactly-the-limit": b'{"cmd": "quit", "x": "' + b"a" * (control.MAX_REQUEST_BYTES - 23) + b'"}\n',
    "two-requests-one-line": b'{"cmd": "status"}{"cmd": "quit"}\n',
    "no-newline-half-close": b'{"cmd": "pause", "extra": 1}',
    "utf16": '{"cmd": "quit"}\n'.encode("utf-16"),
}


@linux_only
@pytest.mark.parametrize("name", list(ODD_REQUESTS))
def test_odd_requests_are_refused_and_change_nothing(served, tmp_path, name):
    eng, serve = served
    server = serve(tmp_path / "rt" / "control.sock")
    wait_for(lambda: eng.status().state == "running", timeout_s=5)
    before = eng.status()
    reply = _exchange(server.path, [ODD_REQUESTS[name]], half_close=name.startswith("no-newline"))
    import json

    answer = json.loads(reply)
    assert answer["ok"] is False and answer["error"], answer
    time.sleep(0.1)
    after = eng.status()
    assert (
        (after.state, after.mode, after.paused)
        == (before.state, before.mode, before.paused)
        == ("running", "replace", False)
    )
    assert not eng.shutdown.is_set()
    assert control.send_request({"cmd": "status"}, server.path)["ok"]  # still serving


@linux_only
def test_a_request_sent_byte_by_byte_still_works(served, tmp_path):
    eng, serve = served
    server = serve(tmp_path / "rt" / "control.sock")
    payload = b'{"cmd": "mode", "mode": "label"}\n'
    reply = _exchange(server.path, [payload[i : i + 1] for i in range(len(payload))], pause_s=0.01)
    assert b'"ok": true' in reply and eng.status().mode == "label"


@linux_only
def test_a_flood_of_garbage_connections_leaves_the_daemon_serving(served, tmp_path):
    eng, serve = served
    server = serve(tmp_path / "rt" / "control.sock")
    rng = np.random.default_rng(0)
    for _ in range(60):
        _exchange(server.path, [rng.bytes(int(rng.integers(1, 6000))) + b"\n"])
    assert control.send_request({"cmd": "status"}, server.path)["status"]["state"] == "running"
    assert eng.status().mode == "replace"


# ---------------------------------------------------------------- what the daemon writes


def _sandbox(tmp_path: Path) -> tuple[dict[str, str], dict[str, Path]]:
    dirs = {
        name: tmp_path / name for name in ("home", "config", "state", "data", "cache", "run", "tmp", "cwd")
    }
    for d in dirs.values():
        d.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    env.update(
        HOME=str(dirs["home"]),
        XDG_CONFIG_HOME=str(dirs["config"]),
        XDG_STATE_HOME=str(dirs["state"]),
        XDG_DATA_HOME=str(dirs["data"]),
        XDG_CACHE_HOME=str(dirs["cache"]),
        XDG_RUNTIME_DIR=str(dirs["run"]),
        TMPDIR=str(dirs["tmp"]),
        PYTHONPATH=str(REPO),
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.pop("DISPLAY", None)
    return env, dirs


def _created(root: Path, before: set[Path]) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p not in before)


@linux_only
def test_daemon_writes_only_to_its_state_and_runtime_folders(tmp_path):
    clip = write_test_video(tmp_path / "clip.avi", 30, (320, 240))
    env, dirs = _sandbox(tmp_path)
    before = set(tmp_path.rglob("*"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "emojicam", "run", "--no-tray", "--source", str(clip), "--sink", "null"],
        env=env,
        cwd=dirs["cwd"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sock = dirs["run"] / "emojicam" / "control.sock"
    try:
        wait_for(lambda: proc.poll() is not None or sock.exists(), timeout_s=60)
        assert proc.poll() is None, proc.communicate()[1]
        wait_for(
            lambda: control.send_request({"cmd": "status"}, sock)["status"]["frames_processed"] > 10,
            timeout_s=30,
        )
        during = _created(tmp_path, before)
        for request in (
            {"cmd": "mode", "mode": "label"},
            {"cmd": "pause"},
            {"cmd": "resume"},
            {"cmd": "reload"},
            {"cmd": "quit"},
        ):
            control.send_request(request, sock)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    after = _created(tmp_path, before)
    allowed = (dirs["state"] / "emojicam", dirs["run"] / "emojicam", dirs["config"] / "emojicam")
    outside = [
        p
        for p in during + after
        if not any(p == a or a in p.parents for a in allowed)
        and p not in (dirs["state"], dirs["run"], dirs["config"])
    ]
    assert outside == [], f"written outside the config/state/runtime folders: {outside}"
    media = [p for p in during + after if p.suffix.lower() in MEDIA_SUFFIXES]
    assert media == [], f"frames written to disk: {media}"
    assert list(dirs["tmp"].iterdir()) == [] and list(dirs["cwd"].iterdir()) == []
    assert list(dirs["home"].iterdir()) == [] and list(dirs["cache"].iterdir()) == []
    assert (dirs["state"] / "emojicam" / "log" / "emojicam.log").is_file()
    assert not sock.exists()
    for p in after:
        if p.is_file() and dirs["run"] in p.parents:
            assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, f"{p} readable by others"


@linux_only
def test_process_writes_exactly_its_output(tmp_path):
    env, dirs = _sandbox(tmp_path)
    import cv2

    image = dirs["cwd"] / "in.png"
    cv2.imwrite(str(image), make_scene((160, 120)))
    before = set(tmp_path.rglob("*"))
    done = subprocess.run(
        [sys.executable, "-m", "emojicam", "process", "in.png", "-o", "out.png"],
        env=env,
        cwd=dirs["cwd"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert _created(tmp_path, before) == [dirs["cwd"] / "out.png"]
