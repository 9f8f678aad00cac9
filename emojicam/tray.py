"""The tray icon. The only module that imports pystray (importing it on a
box without a display raises, so it happens inside ``run_tray``).

The menu is a pure function of the engine status: ``build_menu(status)``
returns plain ``MenuEntry`` data, which ``to_pystray`` wraps so pystray
re-reads it every time the menu is drawn. The icon is the emoji of the
dominant expression (at most ``tray.icon_update_hz`` changes per second),
or the paused icon while paused, idle or in mode ``off``.

``run_tray`` owns the main thread (pystray requires it, macOS strictly) and
returns when the engine stops. When no tray works it logs why and how to
fix it and returns False; the daemon then keeps running headless. When the
icon starts but nothing on the desktop can show it (a bare X session, GNOME
without its AppIndicator extension), ``no_tray_host`` says so, once.

On Linux pystray picks its backend at import: ``appindicator`` or ``gtk``
(both need PyGObject and the GTK 3 typelibs; both have a menu) or else
``xorg`` (python-xlib only: an icon, no menu). ``menu_howto`` says how to
get the menu; ``emojicam doctor`` and the tray's warning both print it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from emojicam.config import MODES
from emojicam.status import EngineStatus

log = logging.getLogger(__name__)

ICON_SIZE_PX = 64
ICON_REFRESH_S = 2.0  # the Xorg backend only (see _IconUpdater.tick)
GLIB_BACKENDS = ("appindicator", "gtk")  # pystray backends that run a GLib main loop
# pystray backends that build the native menu on each update: Windows destroys the menu
# being shown (an open menu would close under the user's pointer every second), and AppKit
# has crashed apps that replaced an open menu. Their menu leaves out the figures that
# change every second (fps, faces: the tooltip has the faces), so it is rebuilt only when
# a choice or a state changes.
STEADY_MENU_BACKENDS = ("win32", "darwin")
GNOME_TRAY_ADVICE = (
    "GNOME shows tray icons only with the AppIndicator extension: install "
    "gnome-shell-extension-appindicator, enable it, and log in again."
)
LINUX_MENU_PACKAGES = "python3-gi gir1.2-gtk-3.0 gir1.2-ayatanaappindicator3-0.1"
_MODE_LABELS = {"replace": "Replace face", "decorate": "Decorate", "label": "Label", "off": "Off"}
_EMOTION_RGB = {
    "angry": (230, 60, 50),
    "disgust": (90, 170, 60),
    "fear": (150, 100, 200),
    "happy": (250, 200, 40),
    "sad": (70, 130, 220),
    "surprise": (250, 150, 40),
    "neutral": (200, 200, 200),
    "paused": (120, 120, 120),
}


@dataclass(frozen=True)
class MenuEntry:
    """One menu line as data. ``action`` is what ``dispatch`` receives
    (None: an inert line); ``checked`` None means no check mark."""

    text: str
    action: str | None = None
    checked: bool | None = None
    radio: bool = False
    enabled: bool = True
    default: bool = False
    submenu: tuple[MenuEntry, ...] = ()


SEPARATOR = MenuEntry("-")


def status_line(status: EngineStatus, live: bool = True) -> str:
    """The menu's first line; ``live``: with the frame rate and faces."""
    camera = "camera on" if status.camera == "ok" else f"camera {status.camera}"
    if not live:
        return f"{status.state.capitalize()} · {camera}"
    return f"{status.state.capitalize()} · {status.fps:.0f} fps · {status.faces} face(s) · {camera}"


def build_menu(status: EngineStatus, live: bool = True) -> tuple[MenuEntry, ...]:
    """The whole menu for this status (``live``: see ``status_line``). Pure:
    same status, same menu."""
    paused = status.paused
    entries = [
        MenuEntry(status_line(status, live), enabled=False),
    ]
    if status.sink not in ("ok", "closed"):
        entries.append(MenuEntry(f"Virtual camera {status.sink} (see 'emojicam doctor')", enabled=False))
    if status.config_error:
        entries.append(MenuEntry("Config edit not applied (see log)", enabled=False))
    if status.detector_warning:
        entries.append(MenuEntry(status.detector_warning, enabled=False))
    entries += [
        SEPARATOR,
        MenuEntry(
            "Mode",
            submenu=tuple(
                MenuEntry(_MODE_LABELS[m], f"mode:{m}", checked=status.mode == m, radio=True) for m in MODES
            ),
        ),
        MenuEntry("Pause", "pause", checked=paused, default=True),
        MenuEntry("Mirror", "mirror", checked=status.mirror),
        MenuEntry("Show preview", "preview", checked=status.preview, enabled=status.sink_kind != "preview"),
        SEPARATOR,
        MenuEntry("Open config file", "open-config"),
        MenuEntry("Reload config", "reload"),
        SEPARATOR,
        MenuEntry("Quit", "quit"),
    ]
    return tuple(entries)


def icon_name(status: EngineStatus) -> str:
    """Which picture the icon shows: an emotion value or "paused"."""
    if status.state in ("paused", "idle", "stopping", "stopped") or status.mode == "off":
        return "paused"
    return status.dominant or "neutral"


@lru_cache(maxsize=16)
def icon_image(name: str, size_px: int = ICON_SIZE_PX, folder: str | None = None) -> Any:
    """A PIL RGBA image for ``icon_name``: ``<name>.png`` from the user's
    ``emoji.folder`` (``folder``) when the emoji loader accepts it, else the
    bundled one, else a drawn circle. (Edits to a PNG show in the tray after a
    restart: the images are cached.)"""
    from PIL import Image, ImageDraw

    from emojicam import assets
    from emojicam.emoji import BadArt, read_art

    candidates = [Path(folder).expanduser() / f"{name}.png"] if folder else []
    with contextlib.suppress(FileNotFoundError):
        candidates.append(assets.emoji_dir() / f"{name}.png")
    for path in candidates:
        try:
            read_art(path)  # what the video would refuse (fully transparent, too large...), the tray does too
            with Image.open(path) as im:
                art = im.convert("RGBA")
        except (BadArt, OSError, ValueError) as exc:
            log.debug("icon %s from %s: %s", name, path, exc)
            continue
        side = max(art.size)  # centred on a square, as the emoji loader does
        square = Image.new("RGBA", (side, side), (0, 0, 0, 0))
        square.paste(art, ((side - art.width) // 2, (side - art.height) // 2))
        return square.resize((size_px, size_px), Image.Resampling.LANCZOS)
    image = Image.new("RGBA", (size_px, size_px), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    m = size_px // 16
    draw.ellipse(
        (m, m, size_px - m, size_px - m),
        fill=(*_EMOTION_RGB.get(name, (200, 200, 200)), 255),
        outline=(60, 60, 60, 255),
        width=max(1, size_px // 32),
    )
    return image


class Dispatcher:
    """Turns menu actions into engine commands."""

    def __init__(
        self, engine: Any, config_file: Path | None = None, opener: Callable[[Path], None] | None = None
    ) -> None:
        self.engine = engine
        self.config_file = config_file
        self._opener = opener or open_path

    def __call__(self, action: str) -> None:
        status = self.engine.status()
        if action.startswith("mode:"):
            self.engine.set_mode(action.split(":", 1)[1])
        elif action == "pause":
            (self.engine.resume if status.paused else self.engine.pause)()
        elif action == "mirror":
            self.engine.set_mirror(not status.mirror)
        elif action == "preview":
            self.engine.set_preview(not status.preview)
        elif action == "reload":
            self.engine.reload()
        elif action == "open-config":
            if self.config_file is not None:
                self._opener(ensure_config_file(self.config_file))
        elif action == "quit":
            self.engine.request_stop()
        else:
            raise ValueError(f"unknown tray action {action!r}")


def ensure_config_file(path: Path) -> Path:
    """Create an empty, commented user config if there is none (never
    overwrites an existing file)."""
    if not path.exists():
        from emojicam.config import default_config_path

        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "x", encoding="utf-8") as f:
            f.write(
                "# Your EmojiCam settings: copy the lines you want to change from\n"
                f"# {default_config_path()}\n# Saved edits apply within a second.\n"
            )
    return path


def open_path(path: Path) -> None:
    if sys.platform == "win32":
        os.startfile(path)  # type: ignore[attr-defined]  # noqa: S606
    else:
        opener = "open" if sys.platform == "darwin" else "xdg-open"
        try:
            subprocess.Popen(
                [opener, str(path)],  # noqa: S603
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:  # a bare X session may have no xdg-open
            fix = " (install xdg-utils: sudo apt install xdg-utils)" if opener == "xdg-open" else ""
            log.warning("cannot open the config file with %s (%s)%s; open %s in a text editor",
                        opener, exc.strerror or exc, fix, path)


def to_pystray(pystray: Any, get_status: Callable[[], EngineStatus], dispatch: Callable[[str], None],
               live: bool = True) -> Any:
    """A ``pystray.Menu`` regenerated from ``build_menu(get_status(), live)``
    whenever it is drawn."""

    def item(entry: MenuEntry) -> Any:
        if entry is SEPARATOR:
            return pystray.Menu.SEPARATOR
        if entry.submenu:
            subs = entry.submenu
            return pystray.MenuItem(entry.text, pystray.Menu(*[item(e) for e in subs]), enabled=entry.enabled)
        action = entry.action

        def on_click(_icon: Any, _item: Any) -> None:
            if action is not None:
                try:
                    dispatch(action)
                except Exception:  # noqa: BLE001 - a menu click must never kill the tray
                    log.exception("tray action %s failed", action)

        checked = None if entry.checked is None else (lambda _item, v=entry.checked: v)
        return pystray.MenuItem(
            entry.text,
            on_click,
            checked=checked,
            radio=entry.radio,
            enabled=entry.enabled,
            default=entry.default,
        )

    return pystray.Menu(lambda: [item(e) for e in build_menu(get_status(), live)])


def isolated_venv() -> bool:
    """True in a virtual environment that cannot see the system's Python
    packages (python3 -m venv without --system-site-packages)."""
    if sys.prefix == sys.base_prefix:
        return False
    try:
        cfg = (Path(sys.prefix) / "pyvenv.cfg").read_text(encoding="utf-8")
    except OSError:
        return True
    for line in cfg.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "include-system-site-packages":
            return value.strip().lower() != "true"
    return True


def menu_howto(in_isolated_venv: bool | None = None) -> str:
    """How to get the tray menu on Linux: pystray's menu-capable backends
    (appindicator, gtk) need PyGObject with the GTK 3 typelibs."""
    if in_isolated_venv is None:
        in_isolated_venv = isolated_venv()
    text = (
        "For the tray menu, pystray needs PyGObject and GTK 3: "
        f"sudo apt install {LINUX_MENU_PACKAGES} "
        "(Fedora: sudo dnf install python3-gobject gtk3 libayatana-appindicator-gtk3)"
    )
    if in_isolated_venv:
        text += (
            f", then let EmojiCam's virtual environment ({sys.prefix}) see them: recreate it with the "
            "system's Python, '/usr/bin/python3 -m venv --system-site-packages', and reinstall EmojiCam "
            "into it, or "
            "'pip install PyGObject' in it (this builds from source: it needs libgirepository1.0-dev, "
            "libcairo2-dev, pkg-config and a C compiler)"
        )
    return text + "; then restart EmojiCam. The Xorg fallback backend shows the icon without a menu."


def explain_failure(
    exc: BaseException | None = None, backend: str | None = None, headless: bool = True
) -> str:
    """Why there is no usable tray (or menu), and how to get one."""
    parts = []
    if exc is not None:
        parts.append(f"no tray icon ({type(exc).__name__}: {exc}).")
    desktop = os.environ.get("XDG_CURRENT_DESKTOP", "")
    chosen = os.environ.get("PYSTRAY_BACKEND", "")
    linux = sys.platform.startswith("linux")
    if linux and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        parts.append(
            "There is no graphical session (DISPLAY is not set): start EmojiCam from your desktop "
            "session, or use --no-tray."
        )
        linux = False  # nothing below applies
    elif exc is not None and backend is None and chosen:  # pystray tried that backend only
        parts.append(
            f"PYSTRAY_BACKEND={chosen} in your environment makes pystray try only that backend: unset "
            "PYSTRAY_BACKEND to let it pick one that works."
        )
    if linux:
        if exc is not None and backend in GLIB_BACKENDS and "dbus" in str(exc).lower():
            parts.append(
                f"The {backend} tray backend needs a D-Bus session bus: start EmojiCam from your desktop "
                "session (or under dbus-run-session)."
            )
        if "GNOME" in desktop.upper():
            parts.append(GNOME_TRAY_ADVICE)
        if backend in (None, "xorg"):
            parts.append(menu_howto())
    if headless:
        parts.append("EmojiCam keeps running without a tray; use 'emojicam ctl' to control it.")
    else:
        parts.append("Meanwhile use 'emojicam ctl' to control it.")
    return " ".join(parts)


def xembed_tray_runs(display: str | None = None) -> bool | None:
    """Whether a system tray (the XEmbed "notification area" of XFCE's, MATE's,
    LXQt's panels, trayer, stalonetray...) owns its selection on the X
    ``display`` (default: $DISPLAY): where the xorg and gtk backends dock, and
    the appindicator one when no StatusNotifierItem host runs. None: cannot
    tell (no Xlib, or the display takes no connection)."""
    try:
        from Xlib import X
        from Xlib import display as xdisplay

        conn = xdisplay.Display(display)
    except Exception:  # noqa: BLE001 - no Xlib, no X display: cannot tell
        return None
    try:
        atom = conn.intern_atom(f"_NET_SYSTEM_TRAY_S{conn.get_default_screen()}")
        return bool(conn.get_selection_owner(atom) != X.NONE)
    except Exception:  # noqa: BLE001
        return None
    finally:
        conn.close()


def _status_notifier_host_runs() -> bool | None:
    """Whether a StatusNotifierItem host (KDE Plasma, GNOME's AppIndicator
    extension, the XFCE and LXQt plugins) is on the D-Bus session bus: where
    the appindicator backend shows its icon. None: cannot tell."""
    try:
        from gi.repository import Gio, GLib

        bus = Gio.bus_get_sync(Gio.BusType.SESSION, None)
        reply = bus.call_sync(
            "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "NameHasOwner",
            GLib.Variant("(s)", ("org.kde.StatusNotifierWatcher",)), GLib.VariantType("(b)"),
            Gio.DBusCallFlags.NONE, 2000, None,
        )  # fmt: skip
        return bool(reply.unpack()[0])
    except Exception:  # noqa: BLE001 - no gi, no bus: cannot tell
        return None


def no_tray_host(backend: str) -> str | None:
    """Why the icon of this Linux backend cannot show (no tray runs on this
    desktop) and what to do; None when one runs or when we cannot tell."""
    if backend not in ("xorg", *GLIB_BACKENDS):
        return None
    hosts = [xembed_tray_runs()]
    if backend == "appindicator":
        hosts.append(_status_notifier_host_runs())
    if not all(h is False for h in hosts):
        return None
    text = (
        f"no system tray runs on this desktop (DISPLAY {os.environ.get('DISPLAY', '')}), so the tray icon "
        "cannot show: add a system tray (notification area) to your panel, or start one "
        "(stalonetray, trayer); the icon appears when it runs."
    )
    if "GNOME" in os.environ.get("XDG_CURRENT_DESKTOP", "").upper():
        text += " " + GNOME_TRAY_ADVICE
    return text + " Meanwhile use 'emojicam ctl' to control EmojiCam."


class _DockFailures(logging.Filter):
    """pystray's Xorg backend logs "Failed to dock icon" with a traceback at
    every icon update while no tray runs (it docks at the next one after a
    tray starts); ``no_tray_host`` has said why, once: to the debug log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() != "Failed to dock icon":
            return True
        log.debug("pystray: the icon is not docked (no system tray yet)")
        return False


_DOCK_FAILURES = _DockFailures()


def backend_name(pystray: Any) -> str:
    """The backend pystray picked: "xorg", "gtk", "appindicator", "win32", "darwin", "dummy"."""
    return str(pystray.Icon.__module__).rsplit(".", 1)[-1].lstrip("_")


UiCall = Callable[[Callable[[], None]], None]


def _at_once(fn: Callable[[], None]) -> None:
    fn()


def main_thread_caller(backend: str) -> UiCall:
    """How to make a change to the icon from another thread.

    pystray's macOS backend hands icon, tooltip and menu changes straight to
    AppKit, which allows them on the main thread only (recent macOS kills the
    process with SIGTRAP in ``-[NSStatusItem setMenu:]``; pystray issue #60).
    There they are queued to the main thread's run loop, which pystray runs
    (``PyObjCTools.AppHelper.callAfter``, from PyObjC, which pystray needs
    there); running Python there each tick also lets the daemon's SIGTERM
    handler run, which Python runs on the main thread only. The other
    backends take them from any thread."""
    if backend != "darwin":
        return _at_once
    try:
        from PyObjCTools import AppHelper
    except ImportError:  # a PyObjC without it: as before, from the calling thread
        log.debug("no PyObjCTools.AppHelper; tray changes come from the updater thread")
        return _at_once

    def call_after(fn: Callable[[], None]) -> None:
        AppHelper.callAfter(fn)

    return call_after


# pystray's win32 backend copies a notification into NOTIFYICONDATAW, whose szInfo holds
# 255 characters and a NUL: a longer text raises ValueError there, and no balloon shows.
WIN32_NOTIFY_CHARS = 255


def fit_notification(message: str, backend: str) -> str:
    if backend != "win32" or len(message) <= WIN32_NOTIFY_CHARS:
        return message
    return message[: WIN32_NOTIFY_CHARS - 1] + "…"  # the whole message is in the log


class _IconUpdater:
    """Keeps the icon picture, tooltip and menu in step with the engine.
    Each tick runs through ``on_ui`` (see ``main_thread_caller``)."""

    def __init__(
        self, icon: Any, engine: Any, refresh_s: float | None = None, on_ui: UiCall = _at_once,
        live_menu: bool = True,
    ) -> None:
        self.icon, self.engine = icon, engine
        self.live_menu = live_menu
        self.refresh_s = refresh_s
        self._on_ui = on_ui
        self._warned = False
        self._name: str | None = None
        self._icon_set_s = 0.0
        self._title = ""
        self._menu_key: tuple[Any, ...] | None = None

    def tick(self) -> None:
        status = self.engine.status()
        name = icon_name(status)
        now = time.monotonic()
        # with refresh_s, picture and tooltip are also re-sent that often: pystray's Xorg backend
        # drops an update, rarely (the GTK backends write a temporary PNG per update, so they get
        # changes only)
        stale = self.refresh_s is not None and now - self._icon_set_s > self.refresh_s
        if name != self._name or stale:
            self.icon.icon = icon_image(name, folder=self.engine.config.emoji.folder)
            self._name, self._icon_set_s = name, now
        title = (
            f"EmojiCam: {status.state}, mode {status.mode}, {status.faces} face(s), camera {status.camera}"
        )
        if title != self._title or stale:  # not per fps change: fewer cross-thread calls into the backend
            self.icon.title = self._title = title
        # The menu is pure data (build_menu), so it is its own key: every line it shows, and only
        # those, triggers a rebuild.
        menu_key = build_menu(status, self.live_menu)
        if menu_key != self._menu_key and getattr(self.icon, "HAS_MENU", False):
            self._menu_key = menu_key
            with contextlib.suppress(NotImplementedError):
                self.icon.update_menu()

    def run(self) -> None:
        # The rate is read every turn: an edit of tray.icon_update_hz applies at once.
        while not self.engine.shutdown.wait(1.0 / max(0.1, self.engine.config.tray.icon_update_hz)):
            self._on_ui(self._safe_tick)

    def _safe_tick(self) -> None:
        try:
            self.tick()
        except Exception as exc:  # noqa: BLE001 - the icon must not take the daemon down
            # The first failure is worth a line in the log (a stuck icon is
            # otherwise unexplained); the next ones only with --debug.
            if not self._warned:
                log.warning("tray icon update failed (%s: %s); retrying", type(exc).__name__, exc)
                self._warned = True
            log.debug("tray update failed", exc_info=True)


def _xorg_waker(icon: Any, done: threading.Event, period_s: float = 0.25) -> None:
    """Keep pystray's Xorg event loop responsive.

    pystray (0.19.5) runs every icon change and ``stop()`` made from another
    thread by sending an X ClientMessage to itself and blocking until its
    loop handles it. With python-xlib that message is sometimes read into the
    event queue by the sending thread while the loop thread sits in
    ``select()``, so both wait forever (icon frozen, stop hangs). A harmless
    ClientMessage sent from a second X connection wakes the loop, which then
    drains its queue. Uses pystray's private ``_window``; without it, no-op.
    """
    window = getattr(icon, "_window", None)
    if window is None:
        return
    try:
        from Xlib import X
        from Xlib import display as xdisplay
        from Xlib.protocol import event

        conn = xdisplay.Display()
        target = conn.create_resource_object("window", window.id)
        atom = conn.intern_atom("_EMOJICAM_WAKE")
    except Exception:  # noqa: BLE001 - no second connection: live without it
        log.debug("no Xorg waker", exc_info=True)
        return
    try:
        while not done.wait(period_s):
            target.send_event(
                event.ClientMessage(window=target, client_type=atom, data=(32, [0, 0, 0, 0, 0])),
                event_mask=X.NoEventMask,
            )
            conn.flush()
    except Exception:  # noqa: BLE001 - the icon window is gone: we are stopping
        log.debug("Xorg waker stopped", exc_info=True)
    finally:
        conn.close()


def run_tray(
    engine: Any,
    config_file: Path | None = None,
    on_shutdown: Callable[[], None] | None = None,
    exit_timeout_s: float = 1.0,
) -> bool:
    """Show the tray icon and run its loop on this (main) thread until the
    engine stops. False when no tray could be shown (already logged).

    When the engine stops, ``on_shutdown`` (release camera, device, socket)
    runs first, then the icon is stopped. pystray's Xorg backend does not
    always leave its event loop when stopped from another thread (its Xlib
    connection is not thread-safe); if the loop has not returned
    ``exit_timeout_s`` later, the process exits (everything is released by
    then)."""
    try:
        import pystray
    except Exception as exc:  # noqa: BLE001 - Xlib raises DisplayNameError, gi raises ValueError...
        log.warning("%s", explain_failure(exc))
        return False
    backend = backend_name(pystray)
    dispatch = Dispatcher(engine, config_file)
    try:
        icon = pystray.Icon(
            "emojicam",
            icon=icon_image(icon_name(engine.status()), folder=engine.config.emoji.folder),
            title="EmojiCam",
            menu=to_pystray(pystray, engine.status, dispatch, live=backend not in STEADY_MENU_BACKENDS),
        )
    except Exception as exc:  # noqa: BLE001
        log.warning("%s", explain_failure(exc, backend))
        return False
    if not icon.HAS_MENU:
        log.warning(
            "the %s tray backend shows the icon only, without a menu. %s",
            backend,
            explain_failure(None, backend, headless=False),
        )
    missing = no_tray_host(backend) if sys.platform.startswith("linux") else None
    if missing:
        log.warning("%s", missing)
    if backend == "xorg":
        logging.getLogger("pystray._base").addFilter(_DOCK_FAILURES)

    titles = {  # the events that need the user (the engine reports a sink problem once, not per retry)
        "config-error": "EmojiCam: config edit not applied",
        "sink": "EmojiCam: virtual camera unavailable",
    }

    notified: set[str] = set()

    def on_event(kind: str, message: str) -> None:
        notified.add(kind)
        if kind in titles and icon.HAS_NOTIFICATION:
            try:
                icon.notify(fit_notification(message, backend), titles[kind])
            except Exception:  # noqa: BLE001
                log.debug("tray notification failed", exc_info=True)

    engine.add_listener(on_event)
    on_ui = main_thread_caller(backend)
    updater = _IconUpdater(icon, engine, ICON_REFRESH_S if backend == "xorg" else None, on_ui,
                           live_menu=backend not in STEADY_MENU_BACKENDS)

    returned = threading.Event()
    sigint_handler = (
        signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    )

    def setup(icon_: Any) -> None:
        if returned.is_set():  # the loop failed before it started (see below): nothing to set up
            return
        if backend in GLIB_BACKENDS and sigint_handler is not None:
            _restore_sigint(sigint_handler)
        if backend == "darwin" and sigint_handler is not None:
            # pystray's loop takes SIGINT to quit the app at once (NSApp terminate:,
            # no cleanup); the daemon's handler runs at the next tick on the main thread
            handler = sigint_handler

            def restore() -> None:
                signal.signal(signal.SIGINT, handler)

            on_ui(restore)
        if backend == "xorg":
            threading.Thread(
                target=_xorg_waker, args=(icon_, returned), name="emojicam-tray-waker", daemon=True
            ).start()
        on_ui(lambda: setattr(icon_, "visible", True))
        # The engine starts first: a virtual camera that failed to open before the icon
        # existed was reported to no listener (on a first run without v4l2loopback).
        now = engine.status()
        if now.sink == "unavailable" and now.sink_detail and "sink" not in notified:
            on_event("sink", now.sink_detail)
        threading.Thread(target=updater.run, name="emojicam-tray-icon", daemon=True).start()

    def hard_exit() -> None:
        if not returned.is_set():
            log.warning("the %s tray loop did not stop; exiting now", backend)
            logging.shutdown()
            os._exit(0)

    def stop_when_engine_stops() -> None:
        engine.shutdown.wait()
        if on_shutdown is not None:
            on_shutdown()
        if returned.is_set():  # the loop failed long ago: nothing to stop
            return
        timer = threading.Timer(exit_timeout_s, hard_exit)
        timer.daemon = True
        timer.start()
        icon.stop()

    threading.Thread(target=stop_when_engine_stops, name="emojicam-tray-stop", daemon=True).start()
    log.info("tray icon via the %s backend", backend)
    try:
        icon.run(setup=setup)
    except Exception as exc:  # noqa: BLE001 - the tray died: keep running headless
        if engine.shutdown.is_set():
            # e.g. the GTK backends hide their notification on the way out, over D-Bus
            log.debug("the %s tray loop failed while stopping", backend, exc_info=True)
        else:
            log.warning("%s", explain_failure(exc, backend))
    finally:
        returned.set()
        _release_setup_thread(icon)
    return engine.shutdown.is_set()


def _restore_sigint(handler: Any) -> None:
    """Give Ctrl-C back to the daemon's handler (a clean stop).

    pystray's GTK backends set SIGINT to the default action (die at once,
    leaving the control socket behind) when their loop starts. A handler
    can only be set on the main thread, which is then inside the GLib
    loop, so the change is queued there."""
    from gi.repository import GLib

    def restore() -> bool:
        signal.signal(signal.SIGINT, handler)
        return False  # run once

    GLib.idle_add(restore)


def _release_setup_thread(icon: Any) -> None:
    """pystray starts its setup thread (not a daemon thread) before the loop,
    and it waits for the backend to mark the icon ready. When the loop
    failed first (the GTK backends need a D-Bus session bus, for example),
    nothing ever does, and the process could not exit. ``_mark_ready`` is
    pystray's own (protected) way to release it; ``setup`` then returns at
    once."""
    thread = getattr(icon, "_setup_thread", None)
    if thread is None or not thread.is_alive() or getattr(icon, "_running", True):
        return
    try:
        icon._mark_ready()
    except Exception:  # noqa: BLE001 - update_menu on a dead backend may raise; the thread is released
        log.debug("releasing the tray setup thread", exc_info=True)
