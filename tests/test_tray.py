"""The tray menu as data, its pystray wrapping on the dummy backend, icons,
dispatch, and the no-tray fallback. The real menu on a real GTK backend:
tests/test_tray_gtk_menu.py."""

from __future__ import annotations

import dataclasses
import importlib
import logging
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from emojicam import tray
from emojicam.config import Config, EmojiConfig, TrayConfig
from emojicam.status import EngineStatus
from emojicam.types import Emotion
from tests.factories import wait_for

BASE = EngineStatus(
    state="running",
    mode="replace",
    fps=29.7,
    faces=2,
    camera="ok",
    camera_detail="",
    sink="ok",
    sink_detail="",
    sink_kind="virtual",
    device="/dev/video10",
    readers=1,
    dominant="happy",
    mirror=False,
    preview=False,
    config_error=None,
    frames_processed=100,
    frames_sent=100,
)


def status(**changes) -> EngineStatus:
    return dataclasses.replace(BASE, **changes)


def flatten(entries) -> dict[str, tray.MenuEntry]:
    out = {}
    for e in entries:
        out[e.text] = e
        out.update(flatten(e.submenu))
    return out


def test_menu_is_a_pure_function_of_status() -> None:
    assert tray.build_menu(status()) == tray.build_menu(status())
    menu = flatten(tray.build_menu(status()))
    assert {"Mode", "Pause", "Mirror", "Show preview", "Open config file", "Reload config", "Quit"} <= set(
        menu
    )
    line = tray.build_menu(status())[0]
    assert line.action is None and not line.enabled
    assert "30 fps" in line.text and "2 face(s)" in line.text and "camera on" in line.text


def test_mode_radio_follows_the_mode() -> None:
    for mode in ("replace", "decorate", "label", "off"):
        modes = flatten(tray.build_menu(status(mode=mode)))["Mode"].submenu
        assert all(e.radio for e in modes)
        assert [e.action for e in modes if e.checked] == [f"mode:{mode}"]


def test_check_marks_and_lines_follow_state() -> None:
    menu = flatten(
        tray.build_menu(
            status(state="paused", mirror=True, preview=True, camera="unavailable", config_error="mode: bad")
        )
    )
    assert menu["Pause"].checked and menu["Mirror"].checked and menu["Show preview"].checked
    assert "camera unavailable" in tray.build_menu(status(camera="unavailable"))[0].text
    assert "Config edit not applied (see log)" in menu
    assert not flatten(tray.build_menu(status(sink_kind="preview")))["Show preview"].enabled
    haar = "Haar face detector: turned faces may show (see 'emojicam doctor')"
    assert haar in flatten(tray.build_menu(status(detector_warning=haar)))
    assert not any("Haar" in text for text in menu)
    sink_line = "Virtual camera unavailable (see 'emojicam doctor')"
    assert sink_line in flatten(tray.build_menu(status(sink="unavailable")))
    assert sink_line not in menu


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({}, "happy"),
        ({"dominant": None}, "neutral"),
        ({"state": "paused"}, "paused"),
        ({"state": "idle"}, "paused"),
        ({"mode": "off"}, "paused"),
        ({"dominant": "sad"}, "sad"),
    ],
)
def test_icon_name(changes, name) -> None:
    assert tray.icon_name(status(**changes)) == name


#: Every picture the tray icon shows (``icon_name``), each a bundled PNG.
ICON_NAMES = [e.value for e in Emotion] + ["paused"]


def bundled_png_at(name: str, size_px: int) -> np.ndarray:
    """The bundled ``<name>.png`` scaled to ``size_px``, as int16 RGBA (the PNGs are square)."""
    from PIL import Image

    from emojicam import assets

    with Image.open(assets.emoji_dir() / f"{name}.png") as im:
        art = im.convert("RGBA").resize((size_px, size_px), Image.Resampling.LANCZOS)
    return np.asarray(art, np.int16)


def shows_bundled_png(icon: Any, name: str) -> bool:
    return bool(np.abs(np.asarray(icon, np.int16) - bundled_png_at(name, icon.width)).mean() < 2)


def test_icon_images_from_pngs_or_drawn(tmp_path: Path, monkeypatch) -> None:
    from emojicam import assets

    tray.icon_image.cache_clear()
    with monkeypatch.context() as m:
        m.setattr(assets, "emoji_dir", lambda: tmp_path / "not-installed")
        drawn = {name: tray.icon_image(name, 32, str(tmp_path)) for name in ICON_NAMES}  # no PNG anywhere
    tray.icon_image.cache_clear()
    happy = drawn["happy"]
    assert happy.size == (32, 32) and happy.mode == "RGBA"
    assert happy.getpixel((16, 16))[:3] == (250, 200, 40) and happy.getpixel((0, 0))[3] == 0

    for name in ICON_NAMES:  # a missing or unreadable bundled PNG fails here, it is not skipped
        real = tray.icon_image(name, 32)
        assert real.size == (32, 32) and real.mode == "RGBA" and real.getpixel((16, 16))[3] == 255
        assert shows_bundled_png(real, name), name
        assert real.tobytes() != drawn[name].tobytes(), name


def test_the_tray_icon_uses_the_users_emoji_folder(tmp_path: Path) -> None:
    """The icon once always showed the bundled emoji, whatever emoji.folder said."""
    from tests.factories import write_png

    tray.icon_image.cache_clear()
    art = np.zeros((40, 40, 4), np.uint8)
    art[...] = (10, 200, 30, 255)  # a plain green square
    write_png(tmp_path / "happy.png", art)
    eng = FakeEngine(status(dominant="happy"))
    eng.config = Config(emoji=EmojiConfig(folder=str(tmp_path)))
    icon = RecordingIcon()
    tray._IconUpdater(icon, eng).tick()
    assert icon.icons[-1].getpixel((16, 16)) == (10, 200, 30, 255)
    eng.st = status(state="paused")  # no paused.png in the user's folder: the bundled one
    tray._IconUpdater(icon, eng).tick()
    assert shows_bundled_png(icon.icons[-1], "paused")
    # A PNG the video refuses (nothing drawn) is refused in the tray too: the bundled one.
    write_png(tmp_path / "sad.png", np.zeros((40, 40, 4), np.uint8))
    assert shows_bundled_png(tray.icon_image("sad", folder=str(tmp_path)), "sad")


def test_an_edit_of_the_icon_rate_applies_while_running(monkeypatch) -> None:
    engine = FakeEngine(status())
    engine.shutdown = threading.Event()
    waits: list[float] = []

    def wait(timeout: float) -> bool:
        waits.append(timeout)
        engine.config = Config(tray=TrayConfig(icon_update_hz=10))  # the user's edit, applied
        return len(waits) >= 3

    engine.shutdown.wait = wait  # type: ignore[method-assign]
    monkeypatch.setattr(tray._IconUpdater, "tick", lambda self: None)
    tray._IconUpdater(RecordingIcon(), engine).run()
    assert waits == [0.25, 0.1, 0.1]


class FakeEngine:
    def __init__(self, st: EngineStatus) -> None:
        self.st = st
        self.calls: list[tuple] = []
        self.config = Config()

    def status(self) -> EngineStatus:
        return self.st

    def _rec(self, *call) -> Future:
        self.calls.append(call)
        fut: Future = Future()
        fut.set_result(None)
        return fut

    def set_mode(self, m):
        return self._rec("mode", m)

    def pause(self):
        return self._rec("pause")

    def resume(self):
        return self._rec("resume")

    def set_mirror(self, on):
        return self._rec("mirror", on)

    def set_preview(self, on):
        self.calls.append(("preview", on))

    def reload(self):
        return self._rec("reload")

    def request_stop(self):
        self.calls.append(("quit",))


def test_dispatcher_toggles_from_current_state(tmp_path: Path) -> None:
    opened: list[Path] = []
    eng = FakeEngine(status())
    d = tray.Dispatcher(eng, tmp_path / "cfg" / "config.yaml", opener=opened.append)
    for action in ("mode:label", "pause", "mirror", "preview", "reload", "open-config", "quit"):
        d(action)
    eng.st = status(state="paused", mirror=True)
    d("pause")
    d("mirror")
    assert eng.calls == [
        ("mode", "label"),
        ("pause",),
        ("mirror", True),
        ("preview", True),
        ("reload",),
        ("quit",),
        ("resume",),
        ("mirror", False),
    ]
    assert opened == [tmp_path / "cfg" / "config.yaml"] and "Your EmojiCam settings" in opened[0].read_text()
    with pytest.raises(ValueError):
        d("format-disk")


def test_open_config_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("mode: label\n")
    tray.Dispatcher(FakeEngine(status()), path, opener=lambda p: None)("open-config")
    assert path.read_text() == "mode: label\n"


@pytest.fixture
def dummy_pystray(monkeypatch):
    monkeypatch.setenv("PYSTRAY_BACKEND", "dummy")
    for name in [m for m in sys.modules if m == "pystray" or m.startswith("pystray.")]:
        monkeypatch.delitem(sys.modules, name)
    return importlib.import_module("pystray")


def test_pystray_menu_reads_the_current_status(dummy_pystray) -> None:
    eng = FakeEngine(status())
    actions: list[str] = []
    menu = tray.to_pystray(dummy_pystray, eng.status, actions.append)
    items = list(menu)
    texts = [i.text for i in items]
    assert texts[0].startswith("Running") and "Quit" in texts and "Pause" in texts
    mode_item = next(i for i in items if i.text == "Mode")
    modes = list(mode_item.submenu)
    assert [m.text for m in modes if m.checked] == ["Replace face"] and all(m.radio for m in modes)
    next(m for m in modes if m.text == "Label")(None)  # click
    next(i for i in items if i.text == "Quit")(None)
    assert actions == ["mode:label", "quit"]
    assert not items[0].enabled
    pause = next(i for i in items if i.text == "Pause")
    assert pause.default and pause.checked is False
    menu(None)  # the default action (icon click on backends without a menu) = Pause
    assert actions[-1] == "pause"

    eng.st = status(mode="label", state="paused")  # the menu follows without rebuilding it
    items = list(menu)
    assert [m.text for m in next(i for i in items if i.text == "Mode").submenu if m.checked] == ["Label"]
    assert next(i for i in items if i.text == "Pause").checked is True


def test_dummy_icon_accepts_menu_and_image(dummy_pystray) -> None:
    eng = FakeEngine(status())
    icon = dummy_pystray.Icon(
        "emojicam",
        icon=tray.icon_image("happy"),
        title="EmojiCam",
        menu=tray.to_pystray(dummy_pystray, eng.status, lambda a: None),
    )
    assert icon.HAS_MENU and len(list(icon.menu)) >= 8
    updater = tray._IconUpdater(icon, eng)
    updater.tick()  # sets icon, title; update_menu is not implemented by the dummy: tolerated
    assert icon.title.startswith("EmojiCam: running") and updater._name == "happy"
    eng.st = status(state="paused")
    updater.tick()
    assert updater._name == "paused"


def test_no_tray_backend_explains_and_returns_false(monkeypatch, caplog) -> None:
    monkeypatch.setitem(sys.modules, "pystray", None)  # import fails
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setenv("XDG_CURRENT_DESKTOP", "ubuntu:GNOME")
    with caplog.at_level(logging.WARNING):
        assert tray.run_tray(FakeEngine(status())) is False
    text = caplog.text
    assert "AppIndicator extension" in text and "ayatanaappindicator" in text and "emojicam ctl" in text


def test_explain_without_display(monkeypatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if not sys.platform.startswith("linux"):
        pytest.skip("Linux message")
    assert "--no-tray" in tray.explain_failure(RuntimeError("Bad display name"))


def test_explain_xorg_says_how_to_get_the_menu(monkeypatch) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("Linux message")
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setenv("XDG_CURRENT_DESKTOP", "XFCE")
    text = tray.explain_failure(None, "xorg", headless=False)
    assert tray.menu_howto() in text and "gir1.2-gtk-3.0" in text and "without a menu" in text
    assert "emojicam ctl" in text and "GNOME" not in text
    assert "gir1.2-gtk-3.0" not in tray.explain_failure(None, "gtk", headless=False)  # it has a menu
    no_bus = tray.explain_failure(RuntimeError("Failed to execute child process “dbus-launch”"), "gtk")
    assert "D-Bus session bus" in no_bus and "dbus-run-session" in no_bus


def test_menu_howto_for_an_isolated_venv() -> None:
    isolated = tray.menu_howto(True)
    assert "sudo apt install python3-gi gir1.2-gtk-3.0 gir1.2-ayatanaappindicator3-0.1" in isolated
    assert "python3 -m venv --system-site-packages" in isolated and "pip install PyGObject" in isolated
    shared = tray.menu_howto(False)
    assert "python3-gi gir1.2-gtk-3.0" in shared and "--system-site-packages" not in shared


@pytest.mark.parametrize(
    ("cfg", "isolated"),
    [
        ("home = /usr/bin\ninclude-system-site-packages = false\n", True),
        ("home = /usr/bin\ninclude-system-site-packages = true\n", False),
        (None, True),  # no pyvenv.cfg: assume the default (isolated)
    ],
)
def test_isolated_venv_reads_pyvenv_cfg(monkeypatch, tmp_path: Path, cfg, isolated) -> None:
    if cfg is not None:
        (tmp_path / "pyvenv.cfg").write_text(cfg)
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    monkeypatch.setattr(sys, "base_prefix", "/usr")
    assert tray.isolated_venv() is isolated
    monkeypatch.setattr(sys, "base_prefix", str(tmp_path))
    assert tray.isolated_venv() is False  # not a venv


class RecordingIcon:
    def __init__(self) -> None:
        self.icons: list = []
        self.titles: list = []
        self.icon = self.title = None

    def __setattr__(self, name, value) -> None:
        if name == "icon" and value is not None:
            self.icons.append(value)
        if name == "title" and value is not None:
            self.titles.append(value)
        object.__setattr__(self, name, value)


@pytest.mark.parametrize(("refresh_s", "sent"), [(None, 1), (2.0, 2)])
def test_icon_and_tooltip_are_resent_only_with_refresh_s(monkeypatch, refresh_s, sent) -> None:
    """The Xorg backend gets the picture and the tooltip again every refresh_s
    (it may drop an update, the Xvfb test once kept the bare "EmojiCam" title);
    the GTK backends (a temporary PNG per update) only on a change."""
    now = [100.0]
    monkeypatch.setattr(tray.time, "monotonic", lambda: now[0])
    icon = RecordingIcon()
    updater = tray._IconUpdater(icon, FakeEngine(status()), refresh_s)
    updater.tick()
    now[0] += 1.0
    updater.tick()  # nothing changed, not yet stale: nothing sent
    assert (len(icon.icons), len(icon.titles)) == (1, 1)
    now[0] += 5.0
    updater.tick()
    assert (len(icon.icons), len(icon.titles)) == (sent, sent)
    assert icon.titles[-1].startswith("EmojiCam: ")


class MenuIcon:
    HAS_MENU = True

    def __init__(self) -> None:
        self.menu_updates = 0

    def update_menu(self) -> None:
        self.menu_updates += 1


@pytest.mark.parametrize(
    "change",
    [
        {"sink": "unavailable"},  # the "Virtual camera unavailable" line
        {"sink_kind": "preview"},  # "Show preview" greyed out
        {"detector_warning": "Haar face detector (slower)"},
        {"mode": "decorate"},
    ],
)
def test_the_menu_is_rebuilt_when_a_line_it_shows_changes_and_only_then(change) -> None:
    """The GTK and AppIndicator backends show a new menu only on update_menu();
    the virtual camera's warning line once never appeared (sink was not in the key)."""
    engine, icon = FakeEngine(status()), MenuIcon()
    updater = tray._IconUpdater(icon, engine)
    updater.tick()
    engine.st = status(frames_processed=999, frames_sent=998)  # not in the menu
    updater.tick()
    assert icon.menu_updates == 1
    engine.st = status(**change)
    assert tray.build_menu(engine.st) != tray.build_menu(status())
    updater.tick()
    assert icon.menu_updates == 2
    engine.st = status()
    updater.tick()  # recovered: the line goes again
    assert icon.menu_updates == 3


def test_a_failing_icon_update_is_logged_once_and_retried(caplog) -> None:
    class BrokenIcon(RecordingIcon):
        def __setattr__(self, name, value) -> None:
            if name == "icon" and value is not None:
                self.icons.append(value)
                raise OSError("X connection broke")
            object.__setattr__(self, name, value)

    engine = FakeEngine(status())
    engine.shutdown = threading.Event()
    engine.config = Config(tray=TrayConfig(icon_update_hz=30))
    icon = BrokenIcon()
    updater = tray._IconUpdater(icon, engine)
    thread = threading.Thread(target=updater.run)
    with caplog.at_level(logging.DEBUG, logger="emojicam"):
        thread.start()
        deadline = time.monotonic() + 5
        while len(icon.icons) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        engine.shutdown.set()
        thread.join(5)
    assert len(icon.icons) >= 3  # retried on every tick
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "X connection broke" in warnings[0].getMessage()


class RunnableEngine(FakeEngine):
    def __init__(self, st: EngineStatus) -> None:
        super().__init__(st)
        self.shutdown = threading.Event()
        self.listeners: list = []

    def add_listener(self, listener) -> None:
        self.listeners.append(listener)


def test_a_loop_that_fails_to_start_leaves_no_thread_behind(dummy_pystray, monkeypatch, caplog) -> None:
    """pystray starts a (non-daemon) setup thread before its loop; when the
    loop fails first (the dummy backend has none; the GTK ones fail without a
    D-Bus session bus) that thread must not wait forever, or the daemon
    could never exit."""
    made: list = []

    class Icon(dummy_pystray.Icon):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(dummy_pystray, "Icon", Icon)
    monkeypatch.setenv("DISPLAY", ":0")
    engine = RunnableEngine(status())
    try:
        with caplog.at_level(logging.WARNING):
            assert tray.run_tray(engine) is False  # no tray: the daemon goes on headless
        assert "no tray icon (NotImplementedError" in caplog.text
        (icon,) = made
        wait_for(lambda: not icon._setup_thread.is_alive(), timeout_s=5)
        assert not icon.visible  # setup saw the failure and showed nothing
    finally:
        engine.shutdown.set()
        for icon in made:  # without the fix: release the thread, so that pytest can exit
            if icon._setup_thread.is_alive():
                icon._mark_ready()


class LoopIcon:
    """A pystray backend with a loop, as far as run_tray uses one: ``run``
    starts ``setup`` on its own thread (as pystray does), then runs what
    ``PyObjCTools.AppHelper.callAfter`` queued, on this thread, until ``stop``.
    Every change to the icon is recorded with the thread that made it."""

    HAS_MENU = True
    HAS_NOTIFICATION = True
    queued: Any = None  # the callAfter queue, when the test fakes PyObjC

    def __init__(self, name, icon=None, title=None, menu=None) -> None:
        object.__setattr__(self, "changes", [])
        object.__setattr__(self, "notes", [])
        object.__setattr__(self, "stopped", threading.Event())
        self.icon, self.title, self.menu, self.visible = icon, title, menu, False

    def __setattr__(self, name, value) -> None:
        self.changes.append((name, threading.current_thread()))
        object.__setattr__(self, name, value)

    def update_menu(self) -> None:
        self.changes.append(("menu", threading.current_thread()))

    def notify(self, message, title=None) -> None:
        self.notes.append((message, title))

    def run(self, setup) -> None:
        threading.Thread(target=setup, args=(self,), daemon=True).start()
        while not self.stopped.is_set():
            try:
                self.queued.get(timeout=0.02)()
            except (queue.Empty, AttributeError):
                continue
        object.__setattr__(self, "sigint_at_exit", signal.getsignal(signal.SIGINT))

    def stop(self) -> None:
        self.stopped.set()


def loop_backend(monkeypatch, dummy_pystray, module: str):
    made: list[LoopIcon] = []

    class Icon(LoopIcon):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    Icon.__module__ = module  # what backend_name reads
    monkeypatch.setattr(dummy_pystray, "Icon", Icon)
    return Icon, made


def test_macos_icon_changes_happen_on_the_main_thread(dummy_pystray, monkeypatch) -> None:
    """pystray's macOS backend passes icon, tooltip and menu changes straight to
    AppKit, which takes them on the main thread only (-[NSStatusItem setMenu:]
    from another thread: SIGTRAP); the updater thread made them every tick."""
    Icon, made = loop_backend(monkeypatch, dummy_pystray, "pystray._darwin")
    Icon.queued = queue.Queue()
    apphelper = types.ModuleType("PyObjCTools.AppHelper")
    apphelper.callAfter = lambda fn, *args: Icon.queued.put(lambda: fn(*args))  # type: ignore[attr-defined]
    pyobjctools = types.ModuleType("PyObjCTools")
    pyobjctools.AppHelper = apphelper  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "PyObjCTools", pyobjctools)
    monkeypatch.setitem(sys.modules, "PyObjCTools.AppHelper", apphelper)
    engine = RunnableEngine(status())
    engine.config = Config(tray=TrayConfig(icon_update_hz=30))
    main = threading.current_thread()

    def daemon_sigint(signum, frame) -> None:
        pass

    def user() -> None:
        wait_for(lambda: made and any(what == "visible" for what, _ in made[0].changes), timeout_s=5)
        for st in (status(dominant="sad", fps=12.0), status(state="paused"), status(mode="label")):
            engine.st = st
            time.sleep(0.15)
        engine.shutdown.set()

    previous = signal.signal(signal.SIGINT, daemon_sigint)
    try:
        driver = threading.Thread(target=user, daemon=True)
        driver.start()
        assert tray.run_tray(engine, exit_timeout_s=5) is True
        driver.join(5)
    finally:
        signal.signal(signal.SIGINT, previous)
    (icon,) = made
    kinds = {what for what, _ in icon.changes}
    assert {"icon", "title", "menu", "visible"} <= kinds
    elsewhere = [(what, t.name) for what, t in icon.changes if t is not main]
    assert elsewhere == []
    assert icon.sigint_at_exit is daemon_sigint  # Ctrl-C stops the daemon cleanly


@pytest.mark.parametrize("backend", ["win32", "xorg"])
def test_a_long_config_error_still_makes_a_notification(
    dummy_pystray, monkeypatch, tmp_path, backend
) -> None:
    """pystray's win32 backend copies the text into NOTIFYICONDATAW.szInfo (256
    WCHARs with the NUL): a longer one raised ValueError, and the user saw no
    notification for exactly the errors with the most to say."""
    import ctypes

    class Balloon(ctypes.Structure):  # the two fields of NOTIFYICONDATAW that notify fills
        _fields_ = [("szInfo", ctypes.c_wchar * 256), ("szInfoTitle", ctypes.c_wchar * 64)]

    Icon, made = loop_backend(monkeypatch, dummy_pystray, f"pystray._{backend}")
    Icon.notify = lambda self, message, title=None: self.notes.append(  # type: ignore[method-assign]
        Balloon(szInfo=message, szInfoTitle=title).szInfo if backend == "win32" else message
    )
    (tmp_path / "config.yaml").write_text("detector:\n  discovery_every_n_frame: 8\n")  # one letter off
    from emojicam.config import ConfigError, load_config

    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "config.yaml", use_user_file=False)
    windows_file = r"C:\Users\Jane Doe\AppData\Local\emojicam\config.yaml"
    message = windows_file + str(err.value).split("config.yaml", 1)[1]
    assert len(message) > 255
    engine = RunnableEngine(status())

    def user() -> None:
        wait_for(lambda: engine.listeners and made and made[0].changes, timeout_s=5)
        for listener in engine.listeners:
            listener("config-error", message)
        engine.shutdown.set()

    driver = threading.Thread(target=user, daemon=True)
    driver.start()
    assert tray.run_tray(engine, exit_timeout_s=5) is True
    driver.join(5)
    ((shown),) = made[0].notes
    if backend == "win32":
        assert len(shown) <= 255 and shown.endswith("…") and shown.startswith(message[:200])
    else:
        assert shown == message  # the other backends show it whole


class MenuCountingIcon(RecordingIcon):
    HAS_MENU = True

    def __init__(self) -> None:
        super().__init__()
        object.__setattr__(self, "menu_updates", 0)

    def update_menu(self) -> None:
        object.__setattr__(self, "menu_updates", self.menu_updates + 1)


def test_a_steady_menu_is_rebuilt_only_when_a_choice_or_state_changes() -> None:
    """pystray's Windows backend destroys the native menu on each update (an
    open menu closed under the pointer whenever the fps or the faces changed,
    about every second), and AppKit has crashed apps that replaced an open
    menu: there the menu leaves those figures out (the tooltip has the faces)."""
    eng = FakeEngine(status(fps=30.0, faces=1))
    icon = MenuCountingIcon()
    steady = tray._IconUpdater(icon, eng, live_menu=False)
    steady.tick()
    for fps, faces in ((29.0, 1), (31.0, 2), (30.0, 0)):
        eng.st = status(fps=fps, faces=faces)
        steady.tick()
    assert icon.menu_updates == 1
    eng.st = status(fps=30.0, faces=0, mode="label")
    steady.tick()
    assert icon.menu_updates == 2  # a choice changed: rebuilt
    assert tray.build_menu(eng.st, live=False)[0].text == "Running · camera on"
    live_icon = MenuCountingIcon()
    live = tray._IconUpdater(live_icon, eng)  # GTK, AppIndicator, Xorg: the live line as before
    live.tick()
    eng.st = status(fps=12.0, faces=0, mode="label")
    live.tick()
    assert live_icon.menu_updates == 2
    assert set(tray.STEADY_MENU_BACKENDS) == {"win32", "darwin"}


def test_a_pystray_backend_setting_that_cannot_work_is_named(monkeypatch, caplog) -> None:
    """PYSTRAY_BACKEND makes pystray try that backend only; when it fails, the
    user is told that the variable is why and to unset it."""
    monkeypatch.setenv("PYSTRAY_BACKEND", "appindicatorr")  # a typo
    monkeypatch.setenv("DISPLAY", ":0")
    for name in [m for m in sys.modules if m == "pystray" or m.startswith("pystray.")]:
        monkeypatch.delitem(sys.modules, name)
    with caplog.at_level(logging.WARNING):
        assert tray.run_tray(RunnableEngine(status())) is False
    assert "unknown backend" in caplog.text  # pystray's own reason
    assert "PYSTRAY_BACKEND=appindicatorr" in caplog.text and "unset PYSTRAY_BACKEND" in caplog.text


def _tray_clip(tmp_path: Path) -> Path:
    from tests.factories import SELFIE_MP4, write_test_video

    if SELFIE_MP4.exists():
        return SELFIE_MP4
    return write_test_video(tmp_path / "clip.avi", n_frames=45, size_wh=(640, 480))


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11 tray (XEmbed): Linux only")
@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb not installed (apt-get install xvfb)")
@pytest.mark.skipif(shutil.which("trayer") is None, reason="no tray host (apt-get install trayer)")
@pytest.mark.skipif(shutil.which("xwininfo") is None, reason="no xwininfo (apt-get install x11-utils)")
def test_a_bare_x_session_without_a_tray_says_so_once_and_docks_when_one_starts(tmp_path: Path) -> None:
    """A bare X session (a window manager, no panel): pystray's Xorg backend
    cannot dock. The daemon keeps running, says once why there is no icon and
    what to do, does not fill the log with pystray's "Failed to dock icon"
    tracebacks, and the icon docks once a tray starts."""
    pytest.importorskip("Xlib", reason="python-xlib (a pystray dependency on Linux) is not installed")
    from tests.factories import daemon_env, end_process
    from tests.test_daemon_cli import REPO, emojicam
    from tests.test_daemon_xvfb import find_window, xvfb_display

    with xvfb_display() as display:
        env = daemon_env(tmp_path, DISPLAY=display, PYSTRAY_BACKEND="xorg", XDG_CURRENT_DESKTOP="i3")
        out_file = tmp_path / "daemon.log"
        clip = str(_tray_clip(tmp_path))
        with open(out_file, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "emojicam", "run", "--source", clip, "--sink", "null"],
                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
            )  # fmt: skip
        try:

            def said(text: str) -> bool:
                assert proc.poll() is None, out_file.read_text()
                return text in out_file.read_text()

            wait_for(lambda: said("tray icon via the xorg backend"), timeout_s=60, poll_s=0.2)
            wait_for(lambda: said("no system tray runs"), timeout_s=10, poll_s=0.2)
            trayer = subprocess.Popen(
                ["trayer", "--edge", "top", "--align", "right", "--widthtype", "request", "--height", "32"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:  # the icon docks at its next update (the Xorg backend re-sends it every 2 s)
                find_window(display, r"EmojiCam: [^\"]*", timeout_s=30, min_left=1100, max_right=1280)
            finally:
                end_process(trayer)
            assert emojicam(env, "ctl", "quit").returncode == 0
            assert proc.wait(15) == 0
        finally:
            if proc.poll() is None:
                end_process(proc)
    text = out_file.read_text()
    assert text.count("no system tray runs") == 1, text
    assert "stalonetray" in text and "emojicam ctl" in text
    assert "Failed to dock icon" not in text and "Traceback" not in text, text
    assert "EmojiCam stopped" in text


def test_open_config_without_xdg_open_says_where_the_file_is(
    dummy_pystray, tmp_path: Path, monkeypatch, caplog
) -> None:
    """A bare X session may lack xdg-open: the menu's "Open config file" then
    tells which file to open, and how to get xdg-open, instead of a traceback."""
    if not sys.platform.startswith("linux"):
        pytest.skip("xdg-open: Linux")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    config = tmp_path / "cfg" / "config.yaml"
    eng = FakeEngine(status())
    menu = tray.to_pystray(dummy_pystray, eng.status, tray.Dispatcher(eng, config))
    with caplog.at_level(logging.WARNING):
        next(i for i in menu if i.text == "Open config file")(None)  # click
    assert config.exists()  # created, as before
    assert [r.levelno for r in caplog.records] == [logging.WARNING], caplog.text
    assert f"open {config} in a text editor" in caplog.text and "xdg-utils" in caplog.text


def _notes_of_a_run(monkeypatch, dummy_pystray, engine, events=()) -> list:
    """Run the tray on ``engine`` until its icon is up, send ``events`` to its
    listeners, stop; the notifications the icon showed."""
    _, made = loop_backend(monkeypatch, dummy_pystray, "pystray._dummy")

    def user() -> None:
        wait_for(lambda: engine.listeners and made and made[0].changes, timeout_s=5)
        for listener in engine.listeners:
            for kind, message in events:
                listener(kind, message)
        engine.shutdown.set()

    driver = threading.Thread(target=user, daemon=True)
    driver.start()
    assert tray.run_tray(engine, exit_timeout_s=5) is True
    driver.join(5)
    return made[0].notes


def test_a_virtual_camera_that_cannot_open_makes_a_notification(dummy_pystray, monkeypatch) -> None:
    """The first run without v4l2loopback: the icon looks as usual, so the
    user must be told (once: the engine reports each new sink problem once)
    that the EmojiCam camera is missing, not only in a greyed menu line."""
    detail = "no v4l2loopback device labelled 'EmojiCam': load the module (see 'emojicam doctor')"
    # "config-reloaded" is not worth a notification
    events = [("sink", detail), ("config-reloaded", "settings applied")]
    notes = _notes_of_a_run(monkeypatch, dummy_pystray, RunnableEngine(status(sink="unavailable")), events)
    assert notes == [(detail, "EmojiCam: virtual camera unavailable")]


def test_a_sink_failure_before_the_icon_existed_is_notified_once(dummy_pystray, monkeypatch) -> None:
    """The engine starts before the tray: on a first run without v4l2loopback
    the sink fails, and its event is sent, before the tray listens. The tray
    says so when its icon is up, once."""
    detail = "no video device with the label 'EmojiCam' (devices: none)"
    engine = RunnableEngine(status(sink="unavailable", sink_detail=detail))
    notes = _notes_of_a_run(monkeypatch, dummy_pystray, engine)
    assert notes == [(detail, "EmojiCam: virtual camera unavailable")]
