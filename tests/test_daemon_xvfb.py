"""The daemon on a real (virtual) X display: the preview sink shows the live
emoji video, and the tray icon docks in a real tray host (trayer) and
follows the state. Skipped with a reason when Xvfb or trayer is
missing (Debian: apt-get install xvfb trayer x11-utils).

Set EMOJICAM_SCREENSHOTS=docs to write docs/preview.png and docs/tray.png
(the README's screenshots); otherwise they go to the test's temp folder.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.factories import FER_NPZ, SELFIE_MP4, daemon_env, end_process, write_face_video, write_test_video
from tests.test_daemon_cli import REPO, emojicam

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11 only"),
    pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb not installed (apt-get install xvfb)"),
    pytest.mark.skipif(
        shutil.which("xwininfo") is None, reason="xwininfo not installed (apt-get install x11-utils)"
    ),
]


def _free_display() -> int:
    for n in range(90, 140):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            return n
    raise RuntimeError("no free X display number")


@contextlib.contextmanager
def xvfb_display() -> Iterator[str]:
    n = _free_display()
    proc = subprocess.Popen(
        ["Xvfb", f":{n}", "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not Path(f"/tmp/.X11-unix/X{n}").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.skip("Xvfb did not start")
            time.sleep(0.05)
        yield f":{n}"
    finally:
        end_process(proc)


@pytest.fixture
def xvfb() -> Iterator[str]:
    with xvfb_display() as display:
        yield display


@pytest.fixture
def env(tmp_path: Path, xvfb: str) -> dict[str, str]:
    return daemon_env(tmp_path, DISPLAY=xvfb, QT_QPA_PLATFORM="xcb", PYSTRAY_BACKEND="xorg")


@pytest.fixture
def clip(tmp_path: Path) -> tuple[Path, bool]:
    """(video, has_faces)."""
    if SELFIE_MP4.exists():
        return SELFIE_MP4, True
    if FER_NPZ.exists():
        return write_face_video(tmp_path / "faces.avi", n_frames=150), True
    return write_test_video(tmp_path / "flat.avi", 60, (640, 480)), False


def screenshot_dir(tmp_path: Path) -> Path:
    if os.environ.get("EMOJICAM_SCREENSHOTS") == "docs":
        (REPO / "docs").mkdir(exist_ok=True)
        return REPO / "docs"
    return tmp_path


def grab(display: str, box: tuple[int, int, int, int] | None = None):
    from PIL import ImageGrab

    image = ImageGrab.grab(xdisplay=display)
    return image.crop(box) if box else image


def find_window(
    display: str, pattern: str, timeout_s: float = 15, min_left: int = 0, max_right: int = 1 << 16
) -> tuple[str, tuple[int, int, int, int]]:
    """(name, (left, top, right, bottom)) of the first *viewable* window whose
    name matches and whose left edge is at ``min_left`` or further right."""
    rx = re.compile(
        r'^\s*(0x[0-9a-f]+) "(' + pattern + r')".*?(\d+)x(\d+)\+-?\d+\+-?\d+\s+\+(-?\d+)\+(-?\d+)'
    )
    run_env = {**os.environ, "DISPLAY": display}
    deadline = time.monotonic() + timeout_s
    out = ""
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["xwininfo", "-root", "-tree"], env=run_env, capture_output=True, text=True
        ).stdout
        for line in out.splitlines():
            m = rx.search(line)
            if not m or int(m.group(3)) <= 1 or int(m.group(5)) < min_left:
                continue
            if int(m.group(5)) + int(m.group(3)) > max_right:  # still being laid out
                continue
            info = subprocess.run(
                ["xwininfo", "-id", m.group(1)], env=run_env, capture_output=True, text=True
            ).stdout
            if "IsViewable" in info:
                w, h, x, y = (int(m.group(i)) for i in (3, 4, 5, 6))
                return m.group(2), (x, y, x + w, y + h)
        time.sleep(0.2)
    raise AssertionError(f"no viewable window matching {pattern!r}:\n{out}")


def grab_until(display: str, box, predicate, timeout_s: float = 15.0):
    """Screenshots of ``box`` until ``predicate(image)`` holds (a window may
    take a moment to be painted on a busy machine); the last one otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        image = grab(display, box)
        if predicate(image) or time.monotonic() > deadline:
            return image
        time.sleep(0.2)


def varied(image) -> bool:
    return float(np.asarray(image.convert("RGB")).std()) > 10


def yellow_fraction(image) -> float:
    a = np.asarray(image.convert("RGB")).astype(int)
    yellow = (a[:, :, 0] > 200) & (a[:, :, 1] > 140) & (a[:, :, 2] < 110)
    return float(yellow.mean())


def start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "emojicam", "run", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"daemon exited early: {proc.communicate()[0]}")
        done = emojicam(env, "ctl", "status", "--json")
        if done.returncode == 0 and '"camera": "ok"' in done.stdout:
            return proc
        time.sleep(0.3)
    proc.kill()
    pytest.fail("daemon did not start")


def stop(env: dict[str, str], proc: subprocess.Popen[str]) -> float:
    assert emojicam(env, "ctl", "quit").returncode == 0
    t0 = time.monotonic()
    proc.wait(10)
    return time.monotonic() - t0


def wait_status(env: dict[str, str], key: str, value: object, timeout_s: float = 5) -> None:
    import json

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = emojicam(env, "ctl", "status", "--json")
        if done.returncode == 0 and json.loads(done.stdout).get(key) == value:
            return
        time.sleep(0.2)
    raise AssertionError(f"status {key} never became {value!r}")


def test_preview_sink_shows_the_live_emoji_video(env, clip, tmp_path: Path) -> None:
    video, has_faces = clip

    def shown(image) -> bool:
        return varied(image) and (not has_faces or yellow_fraction(image) > 0.02)

    # OpenCV's Qt window sometimes stays black for good on a loaded machine
    # under Xvfb (about 1 run in 10 here; reproduced with a 15-line OpenCV
    # script without EmojiCam), so up to three tries, each on a fresh server.
    for _attempt in range(3):
        with xvfb_display() as display:
            env = {**env, "DISPLAY": display}
            proc = start(env, "--no-tray", "--sink", "preview", "--source", str(video))
            try:
                _, box = find_window(display, "EmojiCam preview")
                shot = grab_until(display, box, shown, timeout_s=8)
            finally:
                if proc.poll() is None:
                    assert stop(env, proc) < 2.0
        if varied(shot):
            break
    assert varied(shot)  # video, not an empty window
    if has_faces:
        assert yellow_fraction(shot) > 0.02  # the emoji covers the face
        shot.save(screenshot_dir(tmp_path) / "preview.png")


@pytest.mark.skipif(shutil.which("trayer") is None, reason="no tray host (apt-get install trayer)")
def test_tray_icon_docks_and_follows_the_state(env, xvfb, clip, tmp_path: Path) -> None:
    video, has_faces = clip
    trayer = subprocess.Popen(
        [
            "trayer",
            "--edge",
            "top",
            "--align",
            "right",
            "--widthtype",
            "request",
            "--height",
            "32",
            "--transparent",
            "false",
            "--tint",
            "0x303030",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)
        proc = start(env, "--sink", "preview", "--source", str(video))
        try:
            # docked: inside trayer's panel at the top right of the 1280x800 screen
            name, icon_box = find_window(xvfb, r"EmojiCam: [^\"]*", min_left=1100, max_right=1280)
            assert "mode replace" in name
            _, t, r, b = icon_box
            assert r <= 1280 and t < 40
            icon = grab_until(xvfb, icon_box, varied)
            assert varied(icon)  # an image, not an empty slot
            running_yellow = yellow_fraction(icon)
            if has_faces:
                assert running_yellow > 0.1  # the current emotion's emoji
                grab(xvfb).save(screenshot_dir(tmp_path) / "tray.png")

            def differs(a, b) -> bool:
                return float(np.abs(np.asarray(a, int) - np.asarray(b, int)).mean()) > 5

            assert emojicam(env, "ctl", "pause").returncode == 0
            paused = grab_until(xvfb, icon_box, lambda im: varied(im) and differs(im, icon))
            assert differs(paused, icon)  # the paused icon replaced the emotion

            # (no click test: pystray's Xorg backend does not select ButtonPress events on
            # its icon window, so a click never reaches it; the menu needs AppIndicator)
            assert emojicam(env, "ctl", "resume").returncode == 0
            wait_status(env, "state", "running")
            resumed = grab_until(xvfb, icon_box, lambda im: varied(im) and differs(im, paused))
            # (failed now and then in full-suite runs while training used both cores; the
            # status and the daemon's log below are for finding out why)
            if not differs(resumed, paused):
                status = emojicam(env, "ctl", "status", "--json").stdout
                stop(env, proc)
                log_text = proc.stdout.read() if proc.stdout else ""
                pytest.fail(f"icon unchanged 15 s after resume; status: {status}\nlog:\n{log_text[-3000:]}")
        finally:
            if proc.poll() is None:
                assert stop(env, proc) < 2.0
        log = proc.stdout.read() if proc.stdout else ""
        assert "tray icon via the xorg backend" in log
    finally:
        end_process(trayer)
