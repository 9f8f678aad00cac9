"""The tray menu on a real menu-capable backend, end to end.

``emojicam run`` with pystray's GTK backends (``gtk``: Gtk.StatusIcon;
``appindicator``: libayatana-appindicator, which falls back to a
Gtk.StatusIcon when no StatusNotifier host runs) docks in a real XEmbed tray
(trayer) on Xvfb. The test right-clicks the icon with xdotool, walks the
real GTK menu with the keyboard (Mode → Label, Pause, Quit) and checks each
effect through the control channel. The key presses are counted from
``tray.build_menu``, the same data the menu is drawn from.

Needs Xvfb, trayer, xdotool, xwininfo, dbus-daemon (pystray's GTK backends
open a D-Bus session bus) and PyGObject with the GTK 3 typelibs. PyGObject
is not on PyPI as a wheel, so when this Python cannot import ``gi`` the
daemon is given the system's ``gi`` package (a python3 of the same version
with python3-gi), as a venv made with --system-site-packages would see it.
Debian: apt-get install xvfb trayer xdotool x11-utils dbus python3-gi
gir1.2-gtk-3.0 gir1.2-ayatanaappindicator3-0.1.

Set EMOJICAM_SCREENSHOTS=docs to write docs/tray_menu.png (the README's
screenshot of the open menu); otherwise it goes to the test's temp folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from emojicam import control, tray
from emojicam.config import MODES
from emojicam.status import EngineStatus
from tests.factories import SELFIE_MP4, daemon_env, end_process, wait_for, write_test_video
from tests.test_daemon_cli import REPO
from tests.test_daemon_xvfb import find_window, grab, screenshot_dir, varied, xvfb_display

TOOLS = {
    "Xvfb": "xvfb",
    "trayer": "trayer",
    "xdotool": "xdotool",
    "xwininfo": "x11-utils",
    "dbus-daemon": "dbus",
}
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11 tray (XEmbed): Linux only"),
    *[
        pytest.mark.skipif(shutil.which(tool) is None, reason=f"{tool} not installed (apt-get install {pkg})")
        for tool, pkg in TOOLS.items()
    ],
]

GTK_CHECK = "import gi; gi.require_version('Gtk', '3.0'); from gi.repository import Gtk"
BACKEND_CHECKS = {  # what pystray's backend imports, beyond GTK 3
    "gtk": "",
    "appindicator": (
        "import gi\ntry:\n    gi.require_version('AppIndicator3', '0.1')\n"
        "except ValueError:\n    gi.require_version('AyatanaAppIndicator3', '0.1')"
    ),
}
ICON = r"EmojiCam: [^\"]*"  # the tray icon's window name is the tray title


def _imports_gtk(pythonpath: str, code: str = GTK_CHECK) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": pythonpath}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def gi_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """What to add to the daemon's PYTHONPATH so that it imports gi and
    GTK 3: nothing when this Python can, else a folder holding a link to a
    same-version system python3's ``gi``. Skips with the reason otherwise."""
    if _imports_gtk("").returncode == 0:
        return ""
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    found = ""
    for python in dict.fromkeys(p for p in ("/usr/bin/python3", shutil.which("python3")) if p):
        done = subprocess.run(
            [python, "-c", "import sys, gi; print('%d.%d' % sys.version_info[:2], gi.__path__[0])"],
            capture_output=True,
            text=True,
        )
        if done.returncode == 0 and done.stdout.split()[0] == version:
            found = done.stdout.split()[1]
            break
    if not found:
        pytest.skip(
            f"PyGObject (gi) is not importable by {sys.executable}, and no system python{version} has it "
            "(apt-get install python3-gi gir1.2-gtk-3.0)"
        )
    shim = tmp_path_factory.mktemp("gi-shim")
    (shim / "gi").symlink_to(found, target_is_directory=True)
    check = _imports_gtk(str(shim))
    if check.returncode != 0:
        last = (check.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"the system's PyGObject cannot load GTK 3 ({last}); apt-get install gir1.2-gtk-3.0")
    return str(shim)


@contextlib.contextmanager
def background(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        end_process(proc)


def tray_host_running(display: str) -> bool:
    # a loaded X server may not take connections yet (None): not up, ask again
    return tray.xembed_tray_runs(display) is True


def open_menus(display: str) -> list[tuple[int, int, int, int]]:
    """(left, top, right, bottom) of each shown menu: top-level windows of
    type _NET_WM_WINDOW_TYPE_POPUP_MENU (GTK's menus; not its tooltips)."""
    from Xlib import X, Xatom
    from Xlib import display as xdisplay
    from Xlib.error import XError

    d = xdisplay.Display(display)
    try:
        wm_type = d.intern_atom("_NET_WM_WINDOW_TYPE")
        popup_menu = d.intern_atom("_NET_WM_WINDOW_TYPE_POPUP_MENU")
        boxes = []
        for w in d.screen().root.query_tree().children:
            try:
                if w.get_attributes().map_state != X.IsViewable:
                    continue
                prop = w.get_full_property(wm_type, Xatom.ATOM)
                if prop is not None and popup_menu in prop.value:
                    g = w.get_geometry()
                    boxes.append((g.x, g.y, g.x + g.width, g.y + g.height))
            except XError:  # the window went away meanwhile
                continue
        return boxes
    finally:
        d.close()


@contextlib.contextmanager
def x_session(tmp_path: Path, gi_path: str, **extra: str) -> Iterator[tuple[str, dict[str, str]]]:
    """Xvfb + a D-Bus session bus and nothing else: yields (display, the
    daemon's environment without PYSTRAY_BACKEND)."""
    pytest.importorskip("Xlib", reason="python-xlib (a pystray dependency on Linux) is not installed")
    with xvfb_display() as display:
        bus = tmp_path / "bus"
        env = daemon_env(
            tmp_path,
            DISPLAY=display,
            DBUS_SESSION_BUS_ADDRESS=f"unix:path={bus}",
            GDK_BACKEND="x11",
            NO_AT_BRIDGE="1",  # no accessibility bus to start: faster, and nothing else on the bus
            **extra,
        )
        if gi_path:
            env["PYTHONPATH"] += os.pathsep + gi_path
        with background(["dbus-daemon", "--session", "--nofork", f"--address=unix:path={bus}"], env):
            wait_for(bus.exists, timeout_s=30)  # generous: CI and this machine are often loaded
            yield display, env


@pytest.fixture
def desktop(tmp_path: Path, gi_path: str) -> Iterator[dict[str, str]]:
    """Xvfb + a D-Bus session bus + trayer; yields the daemon's environment
    (without PYSTRAY_BACKEND)."""
    with x_session(tmp_path, gi_path) as (display, env):
        trayer = [
            "trayer", "--edge", "top", "--align", "right", "--widthtype", "request",
            "--height", "32", "--transparent", "false", "--tint", "0x303030",
        ]  # fmt: skip
        # This setup once timed out in a full run beside a training run (session 15,
        # cause not found): a trayer that exits early is started again once, and a
        # timeout says whether trayer was still running.
        with background(trayer, env) as host:
            up = _wait_for_tray_host(display, host)
            if up:
                yield env
                return
        with background(trayer, env) as host:
            if not _wait_for_tray_host(display, host):
                raise AssertionError(
                    f"trayer exited twice (code {host.returncode}) without a tray on {display}"
                )
            yield env


def _wait_for_tray_host(display: str, host: subprocess.Popen[bytes], timeout_s: float = 30.0) -> bool:
    """True once a tray runs on ``display``; False if ``host`` exited first."""
    try:
        wait_for(lambda: tray_host_running(display) or host.poll() is not None,
                 timeout_s=timeout_s, poll_s=0.1)
    except AssertionError:
        raise AssertionError(f"no tray on {display} within {timeout_s:g} s; trayer still running") from None
    return tray_host_running(display)


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    if SELFIE_MP4.exists():
        return SELFIE_MP4
    return write_test_video(tmp_path / "clip.avi", n_frames=60, size_wh=(640, 480))


class Daemon:
    """``emojicam run`` on the tray backend ``backend``; its output goes to a file."""

    def __init__(self, env: dict[str, str], clip: Path, backend: str, log_file: Path) -> None:
        self.env = {**env, "PYSTRAY_BACKEND": backend}
        self.display = env["DISPLAY"]
        self.socket = Path(env["XDG_RUNTIME_DIR"]) / "emojicam" / "control.sock"
        self.log_file = log_file
        with open(log_file, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "emojicam", "run", "--source", str(clip), "--sink", "null"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def status(self) -> dict:
        if self.proc.poll() is not None:
            pytest.fail(f"the daemon exited ({self.proc.returncode}):\n{self.log()}")
        try:
            return control.send_request({"cmd": "status"}, path=self.socket, timeout_s=5)["status"]
        except control.NotRunning:
            return {}

    def wait_status(self, timeout_s: float = 15, **expected: object) -> dict:
        def matches() -> bool:
            st = self.status()
            return bool(st) and all(st[k] == v for k, v in expected.items())

        try:
            wait_for(matches, timeout_s=timeout_s, poll_s=0.1)
        except AssertionError:
            pytest.fail(f"status never had {expected}: {self.status()}\n{self.log()}")
        return self.status()

    def icon_box(self, status: dict | None = None) -> tuple[int, int, int, int]:
        """Where the docked icon is: in trayer's panel at the top right of the
        1280x800 screen. With ``status``, once its title shows that state and
        mode (the tray has caught up: a click while the AppIndicator fallback
        icon is still changing its picture is sometimes lost)."""
        state = f"{status['state']}, mode {status['mode']}" if status else ""
        _, box = find_window(self.display, ICON.replace(": ", f": {state}", 1), min_left=1100, max_right=1280)
        return box

    def click_icon(self, button: int, status: dict | None = None) -> None:
        left, top, right, bottom = self.icon_box(status)
        x, y = (left + right) // 2, (top + bottom) // 2
        subprocess.run(
            ["xdotool", "mousemove", str(x), str(y), "click", str(button)], env=self.env, check=True
        )

    def open_menu(self, status: dict) -> None:
        wait_for(lambda: not open_menus(self.display), timeout_s=5, poll_s=0.05)  # the last one closed
        self.click_icon(3, status)
        try:
            try:
                wait_for(lambda: len(open_menus(self.display)) == 1, timeout_s=5, poll_s=0.05)
            except AssertionError:
                # Under load a right click just after a menu closed is sometimes lost (the
                # AppIndicator backend, once in CI beside a training run, with a
                # Gdk-CRITICAL about toplevel updates); a user clicks again, and so do we.
                self.click_icon(3, status)
                wait_for(lambda: len(open_menus(self.display)) == 1, timeout_s=10, poll_s=0.05)
        except AssertionError:
            grab(self.display).save(self.log_file.with_suffix(".png"))
            tree = subprocess.run(
                ["xwininfo", "-root", "-tree"], env=self.env, capture_output=True, text=True
            ).stdout
            pytest.fail(f"no menu after a right click on {self.icon_box()}:\n{tree}\n{self.log()}")

    def keys(self, *keys: str) -> None:
        subprocess.run(["xdotool", "key", "--delay", "30", *keys], env=self.env, check=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            end_process(self.proc)


def downs_to(text: str, status: dict) -> list[str]:
    """The Down presses that select ``text`` in a freshly opened menu: the
    first selects the first item that is not insensitive or a separator."""
    entries = tray.build_menu(EngineStatus(**status))
    selectable = [e.text for e in entries if e is not tray.SEPARATOR and e.enabled]
    return ["Down"] * (selectable.index(text) + 1)


@pytest.fixture
def run_daemon(desktop: dict[str, str], clip: Path, tmp_path: Path, gi_path: str) -> Iterator:
    started: list[Daemon] = []

    def start(backend: str) -> Daemon:
        if BACKEND_CHECKS[backend] and _imports_gtk(gi_path, BACKEND_CHECKS[backend]).returncode != 0:
            pytest.skip(
                f"pystray's {backend} backend needs the AppIndicator typelib "
                "(apt-get install gir1.2-ayatanaappindicator3-0.1)"
            )
        daemon = Daemon(desktop, clip, backend, tmp_path / f"daemon-{backend}.log")
        started.append(daemon)
        daemon.wait_status(timeout_s=30, camera="ok")
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


@pytest.mark.parametrize("backend", ["gtk", "appindicator"])
def test_real_menu_switches_mode_pauses_and_quits(run_daemon, backend: str, tmp_path: Path) -> None:
    daemon = run_daemon(backend)
    daemon.icon_box()  # docked, so the GLib loop runs
    status = daemon.status()
    assert status["mode"] == "replace" and status["state"] == "running"

    # Mode → Label: the submenu opens on Right with its first item selected
    daemon.open_menu(status)
    daemon.keys(*downs_to("Mode", status), "Right")
    wait_for(lambda: len(open_menus(daemon.display)) == 2, timeout_s=5, poll_s=0.05)
    daemon.keys(*["Down"] * MODES.index("label"), "Return")
    status = daemon.wait_status(mode="label")
    assert f"tray icon via the {backend} backend" in daemon.log()

    # the menu drawn again from the new state: the screenshot shows Label checked
    daemon.open_menu(status)
    daemon.keys(*downs_to("Mode", status), "Right")
    wait_for(lambda: len(open_menus(daemon.display)) == 2, timeout_s=5, poll_s=0.05)
    boxes = [*open_menus(daemon.display), daemon.icon_box()]
    area = (
        max(0, min(b[0] for b in boxes) - 8),
        max(0, min(b[1] for b in boxes) - 4),
        min(1280, max(b[2] for b in boxes) + 4),
        min(800, max(b[3] for b in boxes) + 8),
    )
    shot = grab(daemon.display, area)
    assert varied(shot)  # drawn menus, not blank windows
    if backend == "gtk":
        shot.save(screenshot_dir(tmp_path) / "tray_menu.png", optimize=True)
    daemon.keys("Escape", "Escape")

    # Pause, a check item
    daemon.open_menu(status)
    daemon.keys(*downs_to("Pause", status), "Return")
    status = daemon.wait_status(state="paused")
    assert status["mode"] == "label"
    if backend == "gtk":  # a left click runs the default item (Pause): resume
        daemon.click_icon(1, status)
        status = daemon.wait_status(state="running")

    # Quit: the daemon stops cleanly, releasing its socket
    daemon.open_menu(status)
    daemon.keys(*downs_to("Quit", status), "Return")
    assert daemon.proc.wait(10) == 0
    assert not daemon.socket.exists()
    log = daemon.log()
    assert "EmojiCam stopped" in log
    assert "WARNING emojicam.tray" not in log, log


def test_ctrl_c_still_stops_cleanly_with_the_gtk_backend(run_daemon) -> None:
    """pystray's GTK backends reset SIGINT to "die at once"; the tray gives
    it back to the daemon, whose handler releases everything."""
    daemon = run_daemon("gtk")
    daemon.icon_box()  # shown: setup ran, and the SIGINT handler was put back before the icon
    daemon.proc.send_signal(signal.SIGINT)
    assert daemon.proc.wait(10) == 0, daemon.log()
    assert not daemon.socket.exists()
    assert "signal SIGINT received" in daemon.log() and "EmojiCam stopped" in daemon.log()


@pytest.mark.parametrize("backend", ["gtk", "appindicator"])
def test_a_desktop_without_a_tray_says_so(gi_path: str, clip: Path, tmp_path: Path, backend: str) -> None:
    """GNOME without its AppIndicator extension shows no tray icons at all: no
    StatusNotifierItem host on D-Bus, no XEmbed tray on X. pystray's GTK
    backends start without an error there, so the daemon must say itself
    that the icon cannot show, and what to do."""
    if BACKEND_CHECKS[backend] and _imports_gtk(gi_path, BACKEND_CHECKS[backend]).returncode != 0:
        pytest.skip(f"pystray's {backend} backend needs the AppIndicator typelib")
    with x_session(tmp_path, gi_path, XDG_CURRENT_DESKTOP="GNOME") as (_, env):
        daemon = Daemon(env, clip, backend, tmp_path / f"daemon-{backend}.log")
        try:
            daemon.wait_status(timeout_s=30, camera="ok")
            shown = f"tray icon via the {backend} backend"
            wait_for(lambda: shown in daemon.log(), timeout_s=30, poll_s=0.2)
            assert control.send_request({"cmd": "quit"}, path=daemon.socket, timeout_s=5)["ok"]
            assert daemon.proc.wait(15) == 0
        finally:
            daemon.stop()
    log = daemon.log()
    assert log.count("no system tray runs") == 1, log
    assert tray.GNOME_TRAY_ADVICE in log and "emojicam ctl" in log
    assert "EmojiCam stopped" in log
