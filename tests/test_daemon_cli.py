"""The issue's "Done when", for real: ``emojicam run --no-tray --source CLIP
--sink null`` in a subprocess with the real pipeline, controlled with
``emojicam ctl``; a second ``run`` is refused; ``ctl quit``, SIGTERM and
SIGINT stop it within 2 s, removing the socket."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.factories import SELFIE_MP4, daemon_env, network_sockets, write_test_video

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="Unix socket + /proc checks: Linux"
)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return daemon_env(tmp_path)


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    if SELFIE_MP4.exists():
        return SELFIE_MP4
    return write_test_video(tmp_path / "clip.avi", n_frames=45, size_wh=(640, 480))


def emojicam(env: dict[str, str], *args: str, timeout_s: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "emojicam", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=REPO,
    )


def _default_sighup() -> None:
    """In the child: SIGHUP as a terminal gives it, even if these tests run
    under 'nohup' (an ignored SIGHUP is inherited, and the daemon keeps it)."""
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_DFL)


def start_daemon(env: dict[str, str], clip: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "emojicam", "run", "--no-tray", "--source", str(clip), "--sink", "null"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        preexec_fn=_default_sighup if os.name == "posix" else None,  # noqa: PLW1509 - no threads start there
    )
    sock = Path(env["XDG_RUNTIME_DIR"]) / "emojicam" / "control.sock"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"daemon exited early ({proc.returncode}): {err}")
        if sock.exists():
            status = emojicam(env, "ctl", "status", "--json")
            if status.returncode == 0 and json.loads(status.stdout)["camera"] == "ok":
                return proc
        time.sleep(0.2)
    proc.kill()
    pytest.fail("daemon did not come up within 30 s")


def test_run_ctl_second_instance_and_quit(env: dict[str, str], clip: Path) -> None:
    proc = start_daemon(env, clip)
    try:
        sock = Path(env["XDG_RUNTIME_DIR"]) / "emojicam" / "control.sock"
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700

        status = emojicam(env, "ctl", "status", "--json")
        assert status.returncode == 0, status.stderr
        data = json.loads(status.stdout)
        assert {"state", "mode", "fps", "faces", "camera"} <= set(data)
        assert data["state"] == "running" and data["mode"] == "replace" and data["camera"] == "ok"
        assert data["fps"] > 0 and isinstance(data["faces"], int)

        switched = emojicam(env, "ctl", "mode", "label")
        assert switched.returncode == 0 and "label" in switched.stdout
        assert json.loads(emojicam(env, "ctl", "status", "--json").stdout)["mode"] == "label"

        human = emojicam(env, "ctl", "status")
        assert "mode:    label" in human.stdout

        second = emojicam(env, "run", "--no-tray", "--sink", "null")
        assert second.returncode != 0
        assert "already running" in second.stderr and str(proc.pid) in second.stderr

        assert network_sockets(proc.pid) == []  # no network socket, only the Unix one

        quit_ = emojicam(env, "ctl", "quit")
        assert quit_.returncode == 0
        t0 = time.monotonic()
        rc = proc.wait(timeout=10)
        exit_s = time.monotonic() - t0
        assert rc == 0
        assert exit_s < 2.0, f"exited {exit_s:.2f} s after ctl quit"
        assert not sock.exists()
        log_file = Path(env["XDG_STATE_HOME"]) / "emojicam" / "log" / "emojicam.log"
        assert "EmojiCam stopped" in log_file.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    gone = emojicam(env, "ctl", "status")
    assert gone.returncode == 3 and "not running" in gone.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_within_two_seconds(env: dict[str, str], clip: Path, signum: int) -> None:
    proc = start_daemon(env, clip)
    try:
        t0 = time.monotonic()
        proc.send_signal(signum)
        rc = proc.wait(timeout=10)
        exit_s = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 0
    assert exit_s < 2.0, f"exited {exit_s:.2f} s after {signal.Signals(signum).name}"
    assert not (Path(env["XDG_RUNTIME_DIR"]) / "emojicam" / "control.sock").exists()


def test_bad_config_at_start_is_one_clear_line(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("camera:\n  fps: -3\n")
    done = emojicam(env, "--config", str(bad), "run", "--no-tray", "--sink", "null")
    assert done.returncode == 2
    assert "camera.fps" in done.stderr and "Traceback" not in done.stderr


def test_no_subcommand_runs_the_daemon_and_survives_without_a_tray(
    env: dict[str, str], clip: Path, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"camera:\n  source: {clip}\nsink:\n  kind: 'null'\n")  # quoted: YAML null is None
    proc = subprocess.Popen(
        [sys.executable, "-m", "emojicam", "--config", str(config)],
        env=env,  # no DISPLAY: the tray cannot start
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = emojicam(env, "ctl", "status", "--json")
            if done.returncode == 0 and json.loads(done.stdout)["camera"] == "ok":
                break
            assert proc.poll() is None, proc.communicate()[0]
            time.sleep(0.3)
        else:
            pytest.fail("daemon did not come up")
        assert emojicam(env, "ctl", "quit").returncode == 0
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = proc.stdout.read() if proc.stdout else ""
    assert "no tray icon" in out and "--no-tray" in out  # says why and how to fix
    assert "EmojiCam stopped" in out


def test_help_lists_the_daemon_commands(env: dict[str, str]) -> None:
    done = emojicam(env, "--help")
    assert done.returncode == 0
    for command in ("run", "ctl", "doctor", "autostart"):
        assert command in done.stdout
    ctl = emojicam(env, "ctl", "--help")
    assert all(a in ctl.stdout for a in ("status", "mode", "pause", "resume", "reload", "quit"))


def test_ctl_status_text_shows_the_detector_warning() -> None:
    from emojicam.commands_daemon import _format_status

    base = {"state": "running", "mode": "replace", "fps": 30.0, "faces": 1, "camera": "ok"}
    assert "warning" not in _format_status(base)
    text = _format_status({**base, "detector_warning": "Haar face detector: turned faces may show"})
    assert text.splitlines()[-1] == "warning: Haar face detector: turned faces may show"


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on Windows")
def test_sighup_stops_cleanly(env: dict[str, str], clip: Path) -> None:
    """Closing the terminal that runs 'emojicam run' sends SIGHUP: the daemon
    stops as for SIGTERM (camera, device and socket released, said in the
    log) instead of dying at once and leaving its socket behind."""
    proc = start_daemon(env, clip)
    try:
        proc.send_signal(signal.SIGHUP)
        rc = proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _, err = proc.communicate()
    assert rc == 0, err
    assert not (Path(env["XDG_RUNTIME_DIR"]) / "emojicam" / "control.sock").exists()
    assert "signal SIGHUP received" in err and "EmojiCam stopped" in err


def test_a_source_file_given_on_the_command_line_must_exist(env: dict[str, str], tmp_path: Path) -> None:
    """'run --source clip.mp4' with a typo started a daemon that showed the
    placeholder and retried the missing file forever."""
    done = emojicam(env, "run", "--no-tray", "--sink", "null", "--source", str(tmp_path / "nosuch.mp4"))
    assert done.returncode == 2
    assert "nosuch.mp4: no such video file" in done.stderr and "Traceback" not in done.stderr
    assert "--source" in done.stderr


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on Windows")
def test_sighup_ignored_by_nohup_stays_ignored() -> None:
    """'nohup emojicam run &' starts the daemon with SIGHUP ignored, so that it
    outlives the terminal; the SIGHUP handler must not undo that (it made the
    daemon stop when that terminal closed)."""
    from emojicam.commands_daemon import _install_signals

    names = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
    saved = {s: signal.getsignal(s) for s in names}
    try:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        _install_signals(object())
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert callable(signal.getsignal(signal.SIGTERM))  # the others are still handled
        signal.signal(signal.SIGHUP, signal.SIG_DFL)  # started from a terminal: SIGHUP stops cleanly
        _install_signals(object())
        assert callable(signal.getsignal(signal.SIGHUP))
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
