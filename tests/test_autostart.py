"""``emojicam autostart``: files written and removed under a fake home;
``systemctl`` through a recording runner."""

from __future__ import annotations

import argparse
import configparser
import plistlib
import shutil
import subprocess
from pathlib import Path

import pytest

from emojicam import autostart, commands_daemon
from emojicam.errors import EmojiCamError

CMD = ["/opt/emoji cam/bin/emojicam", "run"]


class Runner:
    def __init__(self, returncode: int = 0) -> None:
        self.calls: list[list[str]] = []
        self.returncode = returncode

    def __call__(self, cmd):
        self.calls.append(list(cmd))
        return subprocess.CompletedProcess(
            cmd, self.returncode, "", "Failed to connect to bus" if self.returncode else ""
        )


def make_program(folder: Path) -> list[str]:
    """A command whose program exists (``status`` checks it), in a folder with a space."""
    program = folder / "emoji cam" / "emojicam"
    program.parent.mkdir(parents=True, exist_ok=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    return [str(program), "run"]


def test_xdg_enable_disable(tmp_path: Path) -> None:
    cmd = make_program(tmp_path)
    message = autostart.enable("xdg", home=tmp_path, system="Linux", cmd=cmd)
    path = tmp_path / ".config" / "autostart" / "emojicam.desktop"
    assert str(path) in message
    entry = configparser.ConfigParser(interpolation=None)
    entry.read(path)
    desktop = entry["Desktop Entry"]
    assert desktop["Type"] == "Application" and desktop["Name"] == "EmojiCam"
    assert desktop["Exec"] == f'"{cmd[0]}" run'
    assert "enabled" in autostart.status(home=tmp_path, system="Linux")
    assert "removed" in autostart.disable(home=tmp_path, system="Linux")
    assert not path.exists()
    assert autostart.disable(home=tmp_path, system="Linux") == "autostart was not enabled"


def test_systemd_enable_disable(tmp_path: Path) -> None:
    runner = Runner()
    message = autostart.enable("systemd", home=tmp_path, system="Linux", runner=runner, cmd=CMD)
    unit = tmp_path / ".config" / "systemd" / "user" / "emojicam.service"
    text = unit.read_text()
    assert 'ExecStart="/opt/emoji cam/bin/emojicam" run' in text
    assert "WantedBy=graphical-session.target" in text and "TimeoutStopSec=5" in text
    assert runner.calls == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "emojicam.service"],
    ]
    assert "enabled" in message
    runner.calls.clear()
    autostart.disable(home=tmp_path, system="Linux", runner=runner)
    assert not unit.exists()
    assert ["systemctl", "--user", "disable", "emojicam.service"] in runner.calls


def test_systemd_failure_changes_nothing_and_says_so(tmp_path: Path) -> None:
    autostart.enable("xdg", home=tmp_path, system="Linux", runner=Runner(), cmd=CMD)
    with pytest.raises(EmojiCamError) as err:
        autostart.enable("systemd", home=tmp_path, system="Linux", runner=Runner(1), cmd=CMD)
    assert "Failed to connect to bus" in str(err.value) and "autostart is unchanged" in str(err.value)
    assert autostart.desktop_path(tmp_path).exists()  # the working entry stays
    assert not autostart.unit_path(tmp_path).exists()


def test_a_failed_systemd_reenable_keeps_the_unit_that_was_enabled(tmp_path: Path) -> None:
    """Run again over SSH (no user bus), enable used to delete the working unit
    while saying "autostart is unchanged"."""
    autostart.enable("systemd", home=tmp_path, system="Linux", runner=Runner(), cmd=make_program(tmp_path))
    unit = autostart.unit_path(tmp_path)
    before = unit.read_text()
    with pytest.raises(EmojiCamError, match="autostart is unchanged"):
        autostart.enable("systemd", home=tmp_path, system="Linux", runner=Runner(1),
                         cmd=["/new/emojicam", "run"])
    assert unit.read_text() == before
    assert "enabled" in autostart.status(home=tmp_path, system="Linux")


def test_a_failed_systemd_enable_puts_back_a_unit_that_is_not_utf8(tmp_path: Path) -> None:
    """A unit the user wrote in Latin-1 was taken for no unit, and deleted."""
    unit = autostart.unit_path(tmp_path)
    unit.parent.mkdir(parents=True)
    unit.write_bytes(b"# my own unit, caf\xe9\n[Service]\nExecStart=/usr/bin/true\n")
    with pytest.raises(EmojiCamError, match="autostart is unchanged"):
        autostart.enable("systemd", home=tmp_path, system="Linux", runner=Runner(1), cmd=CMD)
    assert unit.read_bytes() == b"# my own unit, caf\xe9\n[Service]\nExecStart=/usr/bin/true\n"


def test_files_that_cannot_be_written_or_removed_are_one_line_errors(tmp_path: Path) -> None:
    entry = autostart.desktop_path(tmp_path)
    entry.parent.parent.mkdir(parents=True)
    entry.parent.write_text("a file where the autostart folder should be")
    with pytest.raises(EmojiCamError, match="cannot write .*emojicam.desktop"):
        autostart.enable("xdg", home=tmp_path, system="Linux", runner=Runner(), cmd=CMD)
    entry.parent.unlink()
    entry.mkdir(parents=True)  # a folder where the entry should be
    with pytest.raises(EmojiCamError, match="cannot write"):
        autostart.enable("xdg", home=tmp_path, system="Linux", runner=Runner(), cmd=CMD)
    with pytest.raises(EmojiCamError, match="cannot remove"):
        autostart.disable(home=tmp_path, system="Linux", runner=Runner())
    assert autostart.status(home=tmp_path, system="Linux") == "autostart is not enabled"
    assert sorted(p.name for p in entry.parent.iterdir()) == ["emojicam.desktop"]  # no .tmp left


def test_enable_refuses_a_config_file_that_would_fail_at_every_login(tmp_path: Path, capsys) -> None:
    import platform

    if platform.system() != "Linux":
        pytest.skip("Linux paths")
    args = argparse.Namespace(action="enable", method="xdg", config=tmp_path / "missing.yaml")
    assert commands_daemon.cmd_autostart(args, home=tmp_path) != 0
    assert "config file not found" in capsys.readouterr().err
    assert not autostart.desktop_path(tmp_path).exists()


def test_switching_method_leaves_one_entry(tmp_path: Path) -> None:
    runner = Runner()
    autostart.enable("xdg", home=tmp_path, system="Linux", runner=runner, cmd=CMD)
    autostart.enable("systemd", home=tmp_path, system="Linux", runner=runner, cmd=CMD)
    assert not autostart.desktop_path(tmp_path).exists() and autostart.unit_path(tmp_path).exists()
    autostart.enable("xdg", home=tmp_path, system="Linux", runner=runner, cmd=CMD)
    assert autostart.desktop_path(tmp_path).exists() and not autostart.unit_path(tmp_path).exists()


def test_macos_launch_agent(tmp_path: Path) -> None:
    autostart.enable(home=tmp_path, system="Darwin", cmd=CMD)
    path = tmp_path / "Library" / "LaunchAgents" / "org.emojicam.EmojiCam.plist"
    data = plistlib.loads(path.read_bytes())
    assert data["ProgramArguments"] == CMD and data["RunAtLoad"] is True
    assert "removed" in autostart.disable(home=tmp_path, system="Darwin")


def test_windows_says_what_to_do_instead(tmp_path: Path) -> None:
    with pytest.raises(EmojiCamError, match="shell:startup"):
        autostart.enable(home=tmp_path, system="Windows")


@pytest.mark.parametrize(
    ("arg", "quoted"), [("plain", "plain"), ("a b", '"a b"'), ('x"y', '"x\\"y"'), ("$HOME", '"\\$HOME"')]
)
def test_quoting(arg: str, quoted: str) -> None:
    assert autostart._quote(arg) == quoted


def test_a_dollar_sign_is_doubled_for_systemd() -> None:
    assert autostart._quote("/opt/$app/emojicam", systemd=True) == '"/opt/$$app/emojicam"'
    assert autostart._quote("/opt/`a`/x", systemd=True) == '"/opt/`a`/x"'  # no escape in systemd
    # (but not in the executable's path, which systemd takes literally)
    unit = autostart.systemd_unit(["/opt/$app/emojicam", "run", "$x"])
    assert 'ExecStart="/opt/$app/emojicam" run "$$x"' in unit


def test_command_line_starts_the_daemon() -> None:
    cmd = autostart.command_line()
    assert cmd[-1] == "run" and Path(cmd[0]).is_absolute()


def test_autostart_keeps_the_config_file_it_was_enabled_with(tmp_path: Path, monkeypatch) -> None:
    import platform

    if platform.system() != "Linux":
        pytest.skip("Linux paths")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my.yaml").write_text("mode: decorate\n")
    args = argparse.Namespace(action="enable", method="xdg", config=Path("my.yaml"))
    assert commands_daemon.cmd_autostart(args, home=tmp_path) == 0
    entry = configparser.ConfigParser(interpolation=None)
    entry.read(autostart.desktop_path(tmp_path))
    assert entry["Desktop Entry"]["Exec"].endswith(f"run --config {tmp_path / 'my.yaml'}")


def test_cmd_autostart(tmp_path: Path, capsys) -> None:
    import platform

    if platform.system() != "Linux":
        pytest.skip("Linux paths")
    assert (
        commands_daemon.cmd_autostart(argparse.Namespace(action="enable", method="xdg"), home=tmp_path) == 0
    )
    assert "emojicam.desktop" in capsys.readouterr().out
    assert (
        commands_daemon.cmd_autostart(argparse.Namespace(action="status", method="xdg"), home=tmp_path) == 0
    )
    assert "enabled" in capsys.readouterr().out
    assert (
        commands_daemon.cmd_autostart(argparse.Namespace(action="disable", method="xdg"), home=tmp_path) == 0
    )


def test_windows_names_the_whole_shortcut_target(tmp_path: Path) -> None:
    """It said "put a shortcut to 'emojicam'": the login instance then lost the
    --config the user enabled it with, and the script's folder was left to guess."""
    cmd = [r"C:\Users\José Q\emoji cam\.venv\Scripts\emojicam.exe", "run",
           "--config", r"C:\Users\José Q\my settings.yaml"]
    with pytest.raises(EmojiCamError) as err:
        autostart.enable(home=tmp_path, system="Windows", cmd=cmd)
    assert ('"C:\\Users\\José Q\\emoji cam\\.venv\\Scripts\\emojicam.exe" run '
            '--config "C:\\Users\\José Q\\my settings.yaml"') in str(err.value)
    assert not any(tmp_path.iterdir())  # nothing written


def test_windows_finds_the_emojicam_exe_beside_python(tmp_path: Path, monkeypatch) -> None:
    scripts = tmp_path / "Scripts"
    scripts.mkdir()
    (scripts / "emojicam.exe").write_bytes(b"MZ")
    monkeypatch.setattr(autostart.sys, "platform", "win32")
    monkeypatch.setattr(autostart.sys, "executable", str(scripts / "python.exe"))
    monkeypatch.setattr(autostart.shutil, "which", lambda name: None)  # the venv is not on PATH
    assert autostart.command_line() == [str(scripts / "emojicam.exe"), "run"]


def test_windows_status_looks_in_the_startup_folder(tmp_path: Path, monkeypatch) -> None:
    """It looked for Linux's ~/.config/autostart entry, so it said "not enabled"
    beside the very shortcut that 'enable' told the user to make."""
    monkeypatch.delenv("APPDATA", raising=False)
    roaming = tmp_path / "AppData" / "Roaming"
    startup = roaming / "Microsoft" / "Windows" / "Start Menu" / "Programs" / "Startup"
    assert autostart.startup_folder(tmp_path) == startup
    assert str(startup) in autostart.status(home=tmp_path, system="Windows")
    assert "not enabled" in autostart.status(home=tmp_path, system="Windows")
    startup.mkdir(parents=True)
    (startup / "desktop.ini").write_text("")
    (startup / "emojicam.exe - Shortcut.lnk").write_bytes(b"L")
    assert autostart.status(home=tmp_path, system="Windows") == (
        f"enabled: {startup / 'emojicam.exe - Shortcut.lnk'}"
    )
    monkeypatch.setenv("APPDATA", str(tmp_path / "elsewhere"))
    assert autostart.startup_folder() == tmp_path / "elsewhere" / startup.relative_to(roaming)


def test_macos_launch_agent_escapes_its_arguments(tmp_path: Path) -> None:
    cmd = ["/Users/zoë/My Apps & Tools/<venv>/bin/emojicam", "run", "--config", "/Users/zoë/a'b\"c.yaml"]
    autostart.enable(home=tmp_path, system="Darwin", cmd=cmd)
    assert plistlib.loads(autostart.plist_path(tmp_path).read_bytes())["ProgramArguments"] == cmd


def _desktop_exec_argv(exec_value: str) -> list[str]:
    """An Exec= value read as the Desktop Entry spec says: the string escapes
    (``\\s \\n \\t \\r \\\\``, nothing else) first, then the quoting rules
    (inside double quotes a backslash escapes ``" ` $ \\``), then ``%%``."""
    unescaped, i = "", 0
    while i < len(exec_value):
        c = exec_value[i]
        if c == "\\":
            nxt = exec_value[i + 1]
            assert nxt in "sntr\\", f"invalid string escape \\{nxt} (GLib refuses the whole key)"
            unescaped += {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}[nxt]
            i += 2
        else:
            unescaped += c
            i += 1
    argv: list[str] = []
    word: str | None = None
    quoted, i = False, 0
    while i < len(unescaped):
        c = unescaped[i]
        if quoted:
            if c == "\\":
                assert unescaped[i + 1] in '"`$\\', f"invalid quoted escape in {unescaped!r}"
                word = (word or "") + unescaped[i + 1]
                i += 1
            elif c == '"':
                quoted = False
            else:
                word = (word or "") + c
        elif c == " ":
            if word is not None:
                argv.append(word)
            word = None
        elif c == '"':
            quoted, word = True, word or ""
        else:
            word = (word or "") + c
        i += 1
    assert not quoted
    if word is not None:
        argv.append(word)
    return [a.replace("%%", "%") for a in argv]


@pytest.mark.parametrize(
    "path", ["/home/józef/emoji cam/.venv/bin/emojicam", "/opt/$app/emojicam", "/opt/a\\b/emojicam",
             '/opt/a "b"/emojicam', "/opt/`x`/emo%cam"],
)
def test_the_desktop_exec_line_reads_back_as_the_command_per_the_spec(path: str) -> None:
    """``$`` was written ``\\$`` and ``"`` ``\\"``: string escapes the spec does not
    have, so GLib refused the Exec key and the entry never started; a backslash
    came back halved."""
    cmd = [path, "run", "--config", "/home/józef/my $ettings.yaml"]
    entry = configparser.ConfigParser(interpolation=None)
    entry.read_string(autostart.desktop_entry(cmd))
    assert _desktop_exec_argv(entry["Desktop Entry"]["Exec"]) == cmd


def test_systemd_takes_the_executable_path_literally() -> None:
    """systemd expands ``$$`` in arguments, not in the executable's path: a
    venv under a folder with ``$`` made a unit whose program does not exist."""
    unit = autostart.systemd_unit(["/opt/$app/emojicam", "run", "--config", "/a/$b.yaml"])
    assert 'ExecStart="/opt/$app/emojicam" run --config "/a/$$b.yaml"' in unit


def test_systemd_refuses_an_executable_path_it_cannot_run(tmp_path: Path) -> None:
    """systemd rejects an executable path with a quote or backslash ("Executable
    name contains special characters"): enabling 'worked' but nothing started."""
    runner = Runner()
    with pytest.raises(EmojiCamError, match="xdg|default method"):
        autostart.enable("systemd", home=tmp_path, system="Linux", runner=runner,
                         cmd=['/opt/it\'s "mine"/emojicam', "run"])
    assert not autostart.unit_path(tmp_path).exists() and runner.calls == []


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_analyze_accepts_the_unit_for_odd_paths(tmp_path: Path) -> None:
    exe = tmp_path / "we$ird é 100%" / "emojicam"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    unit = tmp_path / "emojicam-test.service"
    unit.write_text(autostart.systemd_unit([str(exe), "run", "--config", str(tmp_path / "a $b.yaml")]))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(("method", "system"), [("xdg", "Linux"), ("systemd", "Linux"), ("xdg", "Darwin")])
def test_status_says_when_the_program_the_entry_starts_is_gone(tmp_path: Path, method: str, system: str,
                                                              capsys) -> None:
    """The venv autostart was enabled from was deleted: status still said
    "enabled", and nothing started at login."""
    import platform

    cmd = make_program(tmp_path)
    autostart.enable(method, home=tmp_path, system=system, runner=Runner(), cmd=cmd)
    assert autostart.status(home=tmp_path, system=system).startswith("enabled: ")
    Path(cmd[0]).unlink()  # the venv is gone
    with pytest.raises(EmojiCamError) as err:
        autostart.status(home=tmp_path, system=system)
    again = "emojicam autostart enable" + (" --method systemd" if method == "systemd" else "")
    assert f"starts {cmd[0]}, which no longer exists" in str(err.value)
    assert f"run '{again}' again from the environment you use now" in str(err.value)
    if platform.system() == system:  # the command: the same words on stderr, and exit code 1
        args = argparse.Namespace(action="status", method=method)
        assert commands_daemon.cmd_autostart(args, home=tmp_path) == commands_daemon.EXIT_FAIL
        assert "no longer exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    "path", ["/home/józef/emoji cam/.venv/bin/emojicam", "/opt/$app/emojicam", "/opt/a\\b/emojicam",
             '/opt/a "b"/emojicam', "/opt/`x`/emo%cam", "/opt/a\\sb/emojicam",
             # left unquoted (not ASCII spaces), and read back whole
             "/home/山田\u3000太郎/venv/bin/emojicam", "/opt/no\u00a0break/emojicam"],
)
@pytest.mark.parametrize("write", [autostart.desktop_entry, autostart.systemd_unit, autostart.launch_agent])
def test_entry_program_reads_back_the_program_each_entry_was_written_with(tmp_path: Path, write,
                                                                         path: str) -> None:
    suffix = {autostart.desktop_entry: ".desktop", autostart.systemd_unit: ".service"}.get(write, ".plist")
    entry = tmp_path / f"emojicam{suffix}"
    entry.write_text(write([path, "run", "--config", "/a/$b c.yaml"]), encoding="utf-8")
    assert autostart.entry_program(entry) == path


@pytest.mark.parametrize(
    ("name", "text"),
    [("emojicam.desktop", "[Desktop Entry]\nName=EmojiCam\n"), ("emojicam.desktop", 'Exec="unclosed\n'),
     ("emojicam.service", "ExecStart=\n"), ("emojicam.plist", "<plist><dict>"), ("emojicam.lnk", "L")],
)
def test_an_entry_that_cannot_be_read_is_not_called_broken(tmp_path: Path, name: str, text: str) -> None:
    entry = tmp_path / name
    entry.write_text(text)
    assert autostart.entry_program(entry) is None
