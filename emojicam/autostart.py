"""``emojicam autostart enable|disable|status``: start EmojiCam at login.

Linux: an XDG autostart entry (``~/.config/autostart/emojicam.desktop``,
the default: every desktop session starts it with the session's DISPLAY, so
the tray works), or a systemd user unit (``~/.config/systemd/user/
emojicam.service``, bound to ``graphical-session.target``; the desktop must
import DISPLAY into the user manager, which GNOME and KDE do).
macOS: a LaunchAgent (``~/Library/LaunchAgents/org.emojicam.EmojiCam.plist``).
Windows: not implemented yet; ``enable`` prints the shortcut to make in the
``shell:startup`` folder, and ``status`` looks for it there.

All paths derive from ``home`` so tests write into a temporary folder; the
``systemctl`` call goes through an injectable ``runner``.
"""

from __future__ import annotations

import contextlib
import os
import platform
import plistlib
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from emojicam.errors import EmojiCamError

UNIT_NAME = "emojicam.service"
PLIST_LABEL = "org.emojicam.EmojiCam"

Runner = Callable[[Sequence[str]], Any]


def _config_home(home: Path | None) -> Path:
    if home is not None:
        return home / ".config"
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return Path(xdg) if xdg else Path.home() / ".config"


def desktop_path(home: Path | None = None) -> Path:
    return _config_home(home) / "autostart" / "emojicam.desktop"


def unit_path(home: Path | None = None) -> Path:
    return _config_home(home) / "systemd" / "user" / UNIT_NAME


def plist_path(home: Path | None = None) -> Path:
    return (home or Path.home()) / "Library" / "LaunchAgents" / f"{PLIST_LABEL}.plist"


def startup_folder(home: Path | None = None) -> Path:
    """Windows' per-user ``shell:startup`` folder (under ``%APPDATA%``)."""
    appdata = os.environ.get("APPDATA") if home is None else None
    roaming = Path(appdata) if appdata else (home or Path.home()) / "AppData" / "Roaming"
    return roaming / "Microsoft" / "Windows" / "Start Menu" / "Programs" / "Startup"


def command_line(config: Path | None = None) -> list[str]:
    """How to start the daemon: the installed ``emojicam`` script beside this
    interpreter if there is one, else ``python -m emojicam``; with
    ``--config`` (as an absolute path) when one was given."""
    # pip's launcher on Windows is emojicam.exe, in a venv's Scripts folder beside python.exe
    script = Path(sys.executable).with_name("emojicam.exe" if sys.platform == "win32" else "emojicam")
    if script.exists():
        cmd = [str(script), "run"]
    elif found := shutil.which("emojicam"):
        cmd = [found, "run"]
    else:
        cmd = [sys.executable, "-m", "emojicam", "run"]
    if config is not None:
        cmd += ["--config", str(Path(config).expanduser().resolve())]
    return cmd


def _quote(arg: str, *, systemd: bool = False, executable: bool = False) -> str:
    """Quoting for .desktop Exec= and systemd ExecStart= (both take double
    quotes). In a .desktop file `` ` `` and ``$`` take a backslash; systemd has no
    such escapes (it would warn) and writes a literal ``$`` as ``$$``, except in
    the executable's path, which it takes literally."""
    if arg and not any(c in arg for c in " \t\n\"'\\`$;&|<>()*?#~=%"):
        return arg
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"')
    if systemd:
        escaped = escaped if executable else escaped.replace("$", "$$")
    else:
        escaped = escaped.replace("`", "\\`").replace("$", "\\$")
    return f'"{escaped}"'


def desktop_entry(cmd: Sequence[str]) -> str:
    # The spec's string escapes apply before its quoting: each backslash the quoting
    # wrote is doubled again (GLib refuses a key with "\\$" or "\\"").
    exec_line = " ".join(_quote(a) for a in cmd).replace("\\", "\\\\").replace("%", "%%")
    return (
        "[Desktop Entry]\n"
        "Type=Application\n"
        "Name=EmojiCam\n"
        "Comment=Emoji faces as a virtual camera\n"
        f"Exec={exec_line}\n"
        "Icon=camera-web\n"
        "Terminal=false\n"
        "X-GNOME-Autostart-enabled=true\n"
        "X-GNOME-Autostart-Delay=3\n"
    )


def systemd_unit(cmd: Sequence[str]) -> str:
    exec_line = " ".join(_quote(a, systemd=True, executable=i == 0)
                         for i, a in enumerate(cmd)).replace("%", "%%")
    return (
        "[Unit]\n"
        "Description=EmojiCam: emoji faces as a virtual camera\n"
        "PartOf=graphical-session.target\n"
        "After=graphical-session.target\n\n"
        "[Service]\n"
        f"ExecStart={exec_line}\n"
        "Restart=on-failure\n"
        "RestartSec=5\n"
        "TimeoutStopSec=5\n\n"
        "[Install]\n"
        "WantedBy=graphical-session.target\n"
    )


def launch_agent(cmd: Sequence[str]) -> str:
    from xml.sax.saxutils import escape

    args = "".join(f"    <string>{escape(a)}</string>\n" for a in cmd)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n'
        '<plist version="1.0">\n<dict>\n'
        f"  <key>Label</key><string>{PLIST_LABEL}</string>\n"
        f"  <key>ProgramArguments</key>\n  <array>\n{args}  </array>\n"
        "  <key>RunAtLoad</key><true/>\n"
        "</dict>\n</plist>\n"
    )


def _systemctl(runner: Runner | None, *args: str) -> str | None:
    """Run ``systemctl --user ARGS``; None on success, else why not."""
    if runner is None:
        if shutil.which("systemctl") is None:
            return "systemctl not found"

        def runner(cmd: Sequence[str]) -> Any:
            return subprocess.run(list(cmd), capture_output=True, text=True, timeout=15, check=False)  # noqa: S603

    try:
        done = runner(["systemctl", "--user", *args])
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if getattr(done, "returncode", 0) != 0:
        return (getattr(done, "stderr", "") or "").strip() or f"exit code {done.returncode}"
    return None


def _write(path: Path, data: str | bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise EmojiCamError(f"cannot write {path} ({exc.strerror or exc}); check that folder's owner "
                            "and permissions (a sudo run may have made it root's)") from exc


def enable(
    method: str = "xdg",
    *,
    home: Path | None = None,
    system: str | None = None,
    runner: Runner | None = None,
    cmd: Sequence[str] | None = None,
) -> str:
    """Install the login entry; returns what was done (for the user)."""
    system = system or platform.system()
    cmd = list(cmd or command_line())
    if system == "Darwin":
        _write(plist_path(home), launch_agent(cmd))
        return f"wrote {plist_path(home)}; EmojiCam starts at your next login"
    if system != "Linux":
        # The whole command, quoted as a shortcut's target needs (a path with spaces, the
        # --config the user asked for): "a shortcut to emojicam" lost both.
        raise EmojiCamError(
            "autostart is not implemented on Windows yet: press Win+R, type shell:startup, and in "
            "that folder make a shortcut (right-click, New, Shortcut) with this target: "
            f"{subprocess.list2cmdline(cmd)}"
        )
    if method == "systemd":
        if any(c in cmd[0] for c in "\"'\\"):
            # systemd refuses such an executable ("contains special characters")
            raise EmojiCamError(
                f"systemd cannot run a program whose path has a quote or backslash ({cmd[0]}); "
                "autostart is unchanged. Use the default method (emojicam autostart enable)"
            )
        unit = unit_path(home)
        try:
            before: bytes | None = unit.read_bytes()  # put back byte for byte if enabling fails
        except FileNotFoundError:
            before = None
        except OSError as exc:
            raise EmojiCamError(f"cannot read {unit} ({exc.strerror or exc}); autostart is "
                                "unchanged") from exc
        _write(unit, systemd_unit(cmd))
        problem = _systemctl(runner, "daemon-reload") or _systemctl(runner, "enable", UNIT_NAME)
        if problem:
            # Nothing changed: a unit from before is put back (else the new one goes), and an
            # XDG entry from before stays.
            if before is None:
                _remove(unit)
            else:
                _write(unit, before)
            raise EmojiCamError(
                f"enabling the systemd user unit failed ({problem}); autostart is unchanged. "
                "Use the default method (emojicam autostart enable), or once systemctl --user "
                "works, try again"
            )
        _remove(desktop_path(home))
        return (
            f"wrote and enabled {unit_path(home)}; EmojiCam starts with your next graphical session "
            f"(start it now with: systemctl --user start {UNIT_NAME})"
        )
    if method != "xdg":
        raise EmojiCamError(f"unknown autostart method {method!r}; use xdg or systemd")
    _disable_unit(home, runner)
    _write(desktop_path(home), desktop_entry(cmd))
    return f"wrote {desktop_path(home)}; EmojiCam starts at your next login"


def _remove(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise EmojiCamError(f"cannot remove {path} ({exc.strerror or exc}); check that it is a file "
                            "and its folder's owner and permissions") from exc


def _disable_unit(home: Path | None, runner: Runner | None) -> bool:
    if not unit_path(home).exists():
        return False
    _systemctl(runner, "disable", UNIT_NAME)
    _remove(unit_path(home))
    _systemctl(runner, "daemon-reload")
    return True


def disable(*, home: Path | None = None, system: str | None = None, runner: Runner | None = None) -> str:
    system = system or platform.system()
    removed = []
    if system == "Darwin":
        if _remove(plist_path(home)):
            removed.append(str(plist_path(home)))
    elif system == "Linux":
        if _disable_unit(home, runner):
            removed.append(str(unit_path(home)))
        if _remove(desktop_path(home)):
            removed.append(str(desktop_path(home)))
    else:
        raise EmojiCamError(
            "autostart is not implemented on Windows yet: remove the EmojiCam shortcut "
            "from the shell:startup folder"
        )
    return ("removed " + ", ".join(removed)) if removed else "autostart was not enabled"


def status(*, home: Path | None = None, system: str | None = None) -> str:
    """Which login entries there are. Raises ``EmojiCamError`` when one starts a
    program that no longer exists, saying how to fix it."""
    system = system or platform.system()
    if system == "Darwin":
        paths = [plist_path(home)]
    elif system == "Linux":
        paths = [desktop_path(home), unit_path(home)]
    else:  # the shortcut the user made as 'enable' said (it looked in Linux's folders before)
        try:
            paths = sorted(p for p in startup_folder(home).iterdir() if "emojicam" in p.name.lower())
        except OSError:
            paths = []
        if not paths:
            return f"autostart is not enabled (no EmojiCam shortcut in {startup_folder(home)})"
    found = [p for p in paths if p.is_file()]
    broken = [problem for p in found if (problem := _missing_program(p))]
    if broken:  # an error (exit code 1), as for any other autostart problem
        raise EmojiCamError("; ".join(broken))
    return ("enabled: " + ", ".join(map(str, found))) if found else "autostart is not enabled"


def _missing_program(entry: Path) -> str | None:
    """What to tell the user when ``entry`` starts a program that is gone (the
    venv it was enabled from was deleted or moved); None when it is there, or
    not known (a name looked up on the session's PATH, an entry not read)."""
    program = entry_program(entry)
    if program is None or not os.path.isabs(program) or os.path.isfile(program):
        return None
    again = "emojicam autostart enable" + (" --method systemd" if entry.suffix == ".service" else "")
    return (f"{entry} is there but starts {program}, which no longer exists (was its virtual "
            f"environment moved or deleted?), so EmojiCam does not start at login; run '{again}' "
            "again from the environment you use now, or 'emojicam autostart disable'")


def entry_program(entry: Path) -> str | None:
    """The program a login entry starts: the first word of a .desktop file's
    ``Exec=`` or a systemd unit's ``ExecStart=`` (read back as ``desktop_entry``
    and ``systemd_unit`` write them), or a LaunchAgent's first program argument.
    None when there is none or it cannot be read (a Windows shortcut, a file
    edited into another shape)."""
    from xml.parsers.expat import ExpatError

    try:
        data = entry.read_bytes()
        if entry.suffix == ".plist":
            plist = plistlib.loads(data)
            args = plist.get("ProgramArguments") if isinstance(plist, dict) else None
            return args[0] if isinstance(args, list) and args and isinstance(args[0], str) else None
        key = {".desktop": "Exec=", ".service": "ExecStart="}.get(entry.suffix)
        if key is None:
            return None
        value = next(line[len(key):] for line in data.decode("utf-8").splitlines() if line.startswith(key))
    except (OSError, ValueError, StopIteration, ExpatError):  # (a bad plist or UTF-8: ValueError)
        return None
    if entry.suffix == ".desktop":  # the spec's string escapes come off before its quoting
        value = re.sub(r"\\(.)", lambda m: {"s": " ", "n": "\n", "t": "\t", "r": "\r"}.get(m[1], m[1]), value)
    # The first word: in double quotes (where a backslash escapes the next character), or bare.
    # Split on ASCII whitespace only, as GLib and systemd do (a no-break space is part of a path).
    first = re.match(r'\s*(?:"((?:[^"\\]|\\.)*)"|([^\s"]+))', value, re.ASCII)
    if first is None:
        return None
    program = re.sub(r"\\(.)", r"\1", first[1]) if first[1] is not None else first[2]
    if entry.suffix == ".service":  # systemd's prefixes (-, @, :, +, !): never in a unit 'enable' wrote
        program = program.lstrip("-@:+!")
    return program.replace("%%", "%")
