"""``emojicam doctor`` against fake system states: the real checks, fake
/sys, /proc/modules text, module parameters, groups, Secure Boot, camera."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emojicam import commands_daemon, doctor
from tests.factories import make_rgba_art, make_sysfs_tree, write_png

MODULES_LINE = (
    "v4l2loopback 49152 0 - Live 0x0000000000000000\nvideodev 282624 2 v4l2loopback,uvcvideo, Live 0x0\n"
)


def healthy(tmp_path: Path, **changes) -> doctor.SystemProbe:
    sysfs = make_sysfs_tree(tmp_path / "sys", [(0, "Integrated Camera", False), (10, "EmojiCam", True)])
    params = tmp_path / "params"
    params.mkdir(exist_ok=True)
    (params / "exclusive_caps").write_text("Y,N,N,N,N,N,N,N\n")
    probe = doctor.SystemProbe(
        system="Linux",
        sysfs_root=sysfs,
        dev_root=Path("/dev"),
        proc_modules=MODULES_LINE,
        module_params_dir=params,
        module_installed=True,
        secure_boot=False,
        groups=frozenset({"video", "me"}),
        access=lambda p: True,
        node_problem=lambda path, label: None,  # /dev/video10 taken to be the device node
        camera_source=0,
        camera_probe=lambda src: None,
        tray_probe=lambda: doctor.Check("tray", "ok", "appindicator backend"),
        assets_probe=lambda: [doctor.Check("model", "ok", "loads")],
    )
    for key, value in changes.items():
        setattr(probe, key, value)
    return probe


def by_name(checks: list[doctor.Check]) -> dict[str, doctor.Check]:
    return {c.name: c for c in checks}


def test_all_well(tmp_path: Path) -> None:
    checks = doctor.run_checks(healthy(tmp_path))
    assert doctor.all_ok(checks), doctor.format_report(checks)
    assert [c.name for c in checks] == [
        "v4l2loopback",
        "device",
        "exclusive_caps",
        "permissions",
        "camera",
        "tray",
        "model",
    ]
    assert doctor.format_report(checks).endswith("all good")


def test_module_not_loaded_gives_modprobe_and_persistent_setup(tmp_path: Path) -> None:
    checks = doctor.run_checks(
        healthy(
            tmp_path,
            proc_modules="uvcvideo 1 0 - Live 0x0\n",
            sysfs_root=make_sysfs_tree(tmp_path / "s2", [(0, "Integrated", False)]),
        )
    )
    c = by_name(checks)
    assert c["v4l2loopback"].status == "fail"
    fix = c["v4l2loopback"].fix
    assert 'sudo modprobe v4l2loopback devices=1 video_nr=10 card_label="EmojiCam" exclusive_caps=1' in fix
    assert "/etc/modprobe.d/emojicam.conf" in fix and "/etc/modules-load.d/emojicam.conf" in fix
    assert c["device"].status == "fail" and "Integrated" in c["device"].detail
    assert "secure boot" not in c
    assert not doctor.all_ok(checks)


def test_a_custom_sink_name_is_in_every_command_doctor_gives(tmp_path: Path) -> None:
    """The boot-time options once kept card_label="EmojiCam" after a modprobe
    line with the user's sink.name: after a reboot the daemon found no device."""
    for installed in (True, False):
        probe = healthy(tmp_path, proc_modules="", module_installed=installed, label="MyCam")
        fix = by_name(doctor.run_checks(probe))["v4l2loopback"].fix
        assert 'sudo modprobe v4l2loopback devices=1 video_nr=10 card_label="MyCam" exclusive_caps=1' in fix
        assert ("echo 'options v4l2loopback devices=1 video_nr=10 card_label=\"MyCam\" exclusive_caps=1' "
                "| sudo tee /etc/modprobe.d/emojicam.conf") in fix
        assert "EmojiCam" not in fix.replace("/emojicam.conf", "")


def test_module_not_installed(tmp_path: Path) -> None:
    c = by_name(doctor.run_checks(healthy(tmp_path, proc_modules="", module_installed=False)))
    assert "not installed" in c["v4l2loopback"].detail and "v4l2loopback-dkms" in c["v4l2loopback"].fix


def test_secure_boot_refusing_the_module(tmp_path: Path) -> None:
    c = by_name(doctor.run_checks(healthy(tmp_path, proc_modules="", secure_boot=True)))
    assert c["secure boot"].status == "fail" and "mokutil --import" in c["secure boot"].fix


def test_secure_boot_efivar_parsing(tmp_path: Path) -> None:
    assert doctor.read_secure_boot(tmp_path) is None
    (tmp_path / doctor.SECURE_BOOT_VAR).write_bytes(b"\x06\x00\x00\x00\x01")
    assert doctor.read_secure_boot(tmp_path) is True
    (tmp_path / doctor.SECURE_BOOT_VAR).write_bytes(b"\x06\x00\x00\x00\x00")
    assert doctor.read_secure_boot(tmp_path) is False


def test_unreadable_proc_modules_is_a_warning(tmp_path: Path) -> None:
    c = by_name(doctor.run_checks(healthy(tmp_path, proc_modules=None)))
    assert c["v4l2loopback"].status == "warn"


def test_loaded_with_another_label(tmp_path: Path) -> None:
    sysfs = make_sysfs_tree(
        tmp_path / "s3", [(0, "Integrated", False), (10, "Dummy video device (0x0000)", True)]
    )
    c = by_name(doctor.run_checks(healthy(tmp_path, sysfs_root=sysfs)))
    assert c["device"].status == "fail"
    assert c["device"].fix.startswith("reload the module with the label: sudo modprobe -r v4l2loopback && ")
    assert "exclusive_caps" not in c


def test_exclusive_caps_off_for_our_device(tmp_path: Path) -> None:
    sysfs = make_sysfs_tree(
        tmp_path / "s4", [(0, "Integrated", False), (9, "OBS", True), (10, "EmojiCam", True)]
    )
    probe = healthy(tmp_path, sysfs_root=sysfs)
    (probe.module_params_dir / "exclusive_caps").write_text("Y,N,N,N,N,N,N,N\n")  # 2nd loopback is ours
    c = by_name(doctor.run_checks(probe))
    assert c["exclusive_caps"].status == "fail" and "Chrome" in c["exclusive_caps"].detail
    assert "exclusive_caps=1" in c["exclusive_caps"].fix
    (probe.module_params_dir / "exclusive_caps").write_text("N,Y\n")
    assert by_name(doctor.run_checks(probe))["exclusive_caps"].status == "ok"


def test_exclusive_caps_follows_the_order_of_video_nr(tmp_path: Path) -> None:
    """video_nr=10,9 creates video10 first: its exclusive_caps value is the first."""
    sysfs = make_sysfs_tree(tmp_path / "s5", [(9, "OBS", True), (10, "EmojiCam", True)])
    probe = healthy(tmp_path, sysfs_root=sysfs)
    (probe.module_params_dir / "video_nr").write_text("10,9,-1,-1\n")
    (probe.module_params_dir / "exclusive_caps").write_text("Y,N\n")
    assert by_name(doctor.run_checks(probe))["exclusive_caps"].status == "ok"
    (probe.module_params_dir / "exclusive_caps").write_text("N,Y\n")
    assert by_name(doctor.run_checks(probe))["exclusive_caps"].status == "fail"


def test_a_device_node_that_is_a_plain_file_or_missing_is_named(tmp_path: Path) -> None:
    """A program writing to /dev/video10 before the module was loaded leaves a plain
    file there; doctor once said "all good" (and blamed the video group when it was missing)."""
    from emojicam import v4l2

    dev = tmp_path / "dev"
    dev.mkdir()
    probe = healthy(tmp_path, dev_root=dev, node_problem=v4l2.node_problem, groups=frozenset({"me"}))
    (dev / "video10").write_bytes(b"\0" * 4096)
    c = by_name(doctor.run_checks(probe))
    assert c["device"].status == "fail" and "is a regular file" in c["device"].detail
    assert f"sudo rm {dev / 'video10'}" in c["device"].fix and "permissions" not in c
    (dev / "video10").unlink()
    c = by_name(doctor.run_checks(probe))
    assert c["device"].status == "fail" and "does not exist although the kernel lists" in c["device"].detail
    assert "permissions" not in c  # not the video group's fault


def test_an_explicit_device_given_as_a_symlink_is_found(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "video10").touch()
    (dev / "emojicam").symlink_to(dev / "video10")  # a udev SYMLINK+= rule
    probe = healthy(tmp_path, dev_root=dev, explicit_device=str(dev / "emojicam"))
    assert by_name(doctor.run_checks(probe))["device"].status == "ok"


def test_exclusive_caps_unreadable_is_a_warning(tmp_path: Path) -> None:
    c = by_name(doctor.run_checks(healthy(tmp_path, module_params_dir=tmp_path / "none")))
    assert c["exclusive_caps"].status == "warn"


def test_permissions_and_video_group(tmp_path: Path) -> None:
    c = by_name(doctor.run_checks(healthy(tmp_path, access=lambda p: False, groups=frozenset({"me"}))))
    assert c["permissions"].status == "fail" and 'usermod -aG video "$USER"' in c["permissions"].fix
    c = by_name(doctor.run_checks(healthy(tmp_path, access=lambda p: False)))
    assert "ls -l /dev/video10" in c["permissions"].fix


def test_camera_missing_busy_or_pointing_at_emojicam(tmp_path: Path) -> None:
    c = by_name(doctor.run_checks(healthy(tmp_path, camera_probe=lambda s: "camera 0 is missing or busy")))
    assert c["camera"].status == "fail" and "missing or busy" in c["camera"].detail
    c = by_name(doctor.run_checks(healthy(tmp_path, camera_source="/dev/video10")))
    assert c["camera"].status == "fail" and "EmojiCam device itself" in c["camera"].detail
    c = by_name(doctor.run_checks(healthy(tmp_path, camera_source=10)))
    assert c["camera"].status == "fail"


def test_running_daemon_reports_the_camera(tmp_path: Path) -> None:
    def never(_src):
        raise AssertionError("must not open a camera the daemon holds")

    c = by_name(doctor.run_checks(healthy(tmp_path, camera_probe=never, daemon_status={"camera": "ok"})))
    assert c["camera"].status == "ok"
    c = by_name(
        doctor.run_checks(
            healthy(
                tmp_path, camera_probe=never, daemon_status={"camera": "unavailable", "camera_detail": "busy"}
            )
        )
    )
    assert c["camera"].status == "fail" and "busy" in c["camera"].detail


def test_explicit_device(tmp_path: Path) -> None:
    c = by_name(doctor.run_checks(healthy(tmp_path, explicit_device="/dev/video10")))
    assert c["device"].status == "ok"
    c = by_name(doctor.run_checks(healthy(tmp_path, explicit_device="/dev/video55")))
    assert c["device"].status == "fail" and "does not exist" in c["device"].detail
    assert "modprobe -r v4l2loopback &&" in c["device"].fix  # loaded: a second modprobe does nothing
    c = by_name(doctor.run_checks(healthy(tmp_path, explicit_device="/dev/video55", proc_modules="")))
    assert "modprobe -r" not in c["device"].fix and "sudo modprobe v4l2loopback" in c["device"].fix
    c = by_name(doctor.run_checks(healthy(tmp_path, explicit_device="video10")))
    assert c["device"].status == "fail" and "'video10' is not a device path" in c["device"].detail
    assert "such as /dev/video10" in c["device"].fix


def test_other_platforms_skip_linux_checks(tmp_path: Path) -> None:
    checks = doctor.run_checks(healthy(tmp_path, system="Windows"))
    assert checks[0].status == "skip" and "Unity Capture" in checks[0].detail
    assert doctor.all_ok(checks)


@pytest.mark.parametrize(("system", "setting"), [("Windows", "Let desktop apps access your camera"),
                                               ("Darwin", "Privacy & Security > Camera")])
def test_camera_advice_off_linux_fits_that_os(tmp_path: Path, system: str, setting: str) -> None:
    """Windows and macOS users were told to use /dev/videoN, and never that the
    OS's camera privacy switch (the usual cause there) refuses the camera."""
    checks = doctor.run_checks(healthy(tmp_path, system=system,
                                       camera_probe=lambda s: "cannot open camera 0"))
    camera = by_name(checks)["camera"]
    assert camera.status == "fail" and setting in camera.fix and "camera.source" in camera.fix
    report = doctor.format_report(checks)
    for linux_only in ("/dev/video", "modprobe", "v4l2loopback", "'video' group", "sudo"):
        assert linux_only not in report


def test_emoji_folder_check(tmp_path: Path) -> None:
    from emojicam.types import Emotion

    for e in Emotion:
        write_png(tmp_path / f"{e.value}.png", make_rgba_art(16))
    assert doctor.check_emoji_folder(tmp_path).status == "ok"
    write_png(tmp_path / "fear.png", make_rgba_art(16)[:, :, :3])  # no alpha: used as an opaque square
    check = doctor.check_emoji_folder(tmp_path)
    assert check.status == "warn" and "fear.png has no alpha channel" in check.detail
    (tmp_path / "sad.png").write_bytes(b"garbage")
    (tmp_path / "angry.png").unlink()
    check = doctor.check_emoji_folder(tmp_path)
    assert check.status == "fail"
    assert "angry.png is missing" in check.detail and "sad.png cannot be decoded" in check.detail
    assert "fear.png has no alpha channel" in check.detail


def test_doctor_and_the_emoji_loader_agree_on_what_is_usable(tmp_path: Path, caplog) -> None:
    """Doctor once failed an opaque PNG the daemon uses, and passed a fully
    transparent one and one over the size limit, which the daemon replaces."""
    from emojicam.emoji import MAX_FILE_SIDE_PX, EmojiSet
    from emojicam.types import Emotion

    for e in Emotion:
        write_png(tmp_path / f"{e.value}.png", make_rgba_art(16))
    write_png(tmp_path / "happy.png", np.zeros((16, 16, 4), np.uint8))  # nothing drawn
    Image.new("RGBA", (MAX_FILE_SIDE_PX + 1, 8)).save(tmp_path / "sad.png")
    check = doctor.check_emoji_folder(tmp_path)
    assert check.status == "fail"
    assert "happy.png is fully transparent" in check.detail and "sad.png is 4097x8 pixels" in check.detail
    with caplog.at_level("WARNING", logger="emojicam.emoji"):
        EmojiSet.load(tmp_path)
    (warning,) = [r.message for r in caplog.records]
    assert "happy.png is fully transparent" in warning and "sad.png is 4097x8 pixels" in warning


def test_emoji_art_with_a_see_through_centre_is_fine_and_a_missing_folder_is_not(tmp_path: Path) -> None:
    """Ring art is drawn over its own colour in replace mode: doctor once told the
    user to fix it. A folder that does not exist stops the daemon: doctor once
    said the bundled emoji would be shown instead."""
    from emojicam.types import Emotion

    for e in Emotion:
        write_png(tmp_path / f"{e.value}.png", make_rgba_art(64, radius_frac=0.48, hole_frac=0.40))
    check = doctor.check_emoji_folder(tmp_path)
    assert check.status == "ok" and "drawn over their own colour" in check.detail
    missing = doctor.check_emoji_folder(tmp_path / "nope")
    assert missing.status == "fail" and "does not exist" in missing.detail


def test_emoji_folder_under_home_is_expanded(tmp_path: Path, monkeypatch) -> None:
    import dataclasses

    from emojicam.config import Config, EmojiConfig
    from emojicam.types import Emotion

    for e in Emotion:
        write_png(tmp_path / "emo" / f"{e.value}.png", make_rgba_art(16))
    monkeypatch.setenv("HOME", str(tmp_path))
    config = dataclasses.replace(Config(), emoji=EmojiConfig(folder="~/emo"))
    (emoji,) = [c for c in doctor.check_assets(config) if c.name == "emoji"]
    assert emoji.status == "ok", emoji.detail


def test_a_config_that_does_not_load_fails_the_doctor(tmp_path: Path) -> None:
    bad = tmp_path / "config.yaml"
    bad.write_text("smoothing:\n  min_hold_s: soon\n")
    probe = doctor.SystemProbe.from_system(bad)
    assert probe.config_error is not None and "min_hold_s" in probe.config_error
    checks = by_name(doctor.run_checks(healthy(tmp_path, config_error=probe.config_error)))
    assert checks["config"].status == "fail" and "min_hold_s" in checks["config"].detail
    assert "refuses to start" in checks["config"].fix
    assert not doctor.all_ok(list(checks.values()))
    assert "config" not in by_name(doctor.run_checks(healthy(tmp_path)))


@pytest.mark.parametrize(
    ("changes", "failing"),
    [
        ({"tray_probe": lambda: doctor.Check("tray", "warn", "Xorg backend", "install ...")}, ["tray"]),
        ({"tray_probe": lambda: doctor.Check("tray", "fail", "no tray backend", "install ...")}, ["tray"]),
        ({"assets_probe": lambda: [doctor.Check("model", "fail", "not a valid TFLite model", "reinstall")]},
         ["model"]),
        ({"assets_probe": lambda: [doctor.Check("model", "ok", "loads"),
                                   doctor.Check("emoji", "warn", "sad.png is empty", "redraw it")]},
         ["emoji"]),
    ],
    ids=["tray-warn", "tray-fail", "model-fail", "emoji-warn"],
)
def test_tray_and_asset_failures_fail_the_run(
    tmp_path: Path, capsys, changes: dict, failing: list[str]
) -> None:
    probe = healthy(tmp_path, **changes)
    checks = doctor.run_checks(probe)
    assert [c.name for c in checks if c.status not in ("ok", "skip")] == failing  # and nothing else
    assert not doctor.all_ok(checks)
    assert commands_daemon.cmd_doctor(argparse.Namespace(json=False, config=None), probe=probe) == 1
    assert "1 problem(s) found" in capsys.readouterr().out


def test_cmd_doctor_exit_codes_and_json(tmp_path: Path, capsys) -> None:
    args = argparse.Namespace(json=True, config=None)
    assert commands_daemon.cmd_doctor(args, probe=healthy(tmp_path)) == 0
    data = json.loads(capsys.readouterr().out)
    assert {d["status"] for d in data} == {"ok"}
    args.json = False
    assert (
        commands_daemon.cmd_doctor(args, probe=healthy(tmp_path, access=lambda p: False, groups=frozenset()))
        == 1
    )
    out = capsys.readouterr().out
    assert "[FAIL] permissions" in out and "fix: sudo usermod" in out and "1 problem(s) found" in out


def test_the_real_tray_probe_runs_without_raising_here() -> None:
    """A smoke test on this box's real pystray: what it finds depends on the box
    (the next test pins what it finds)."""
    check = doctor.probe_tray()
    assert check.name == "tray" and check.status in ("ok", "warn", "fail") and check.detail
    assert check.status == "ok" or check.fix


#: What the tray probe reads from the environment.
TRAY_ENVIRONMENT = (
    "DISPLAY", "WAYLAND_DISPLAY", "XDG_CURRENT_DESKTOP", "DBUS_SESSION_BUS_ADDRESS", "PYSTRAY_BACKEND"
)


def _fake_pystray(backend: str) -> types.ModuleType:
    """A stand-in for pystray having picked ``backend`` at import."""
    module = types.ModuleType("pystray")
    module.Icon = type("Icon", (), {"__module__": f"pystray._{backend}"})
    return module


@pytest.mark.parametrize(
    ("backend", "env", "xembed_tray", "expected"),
    [
        ("xorg", {"DISPLAY": ":5"}, True,
         doctor.Check("tray", "warn", "Xorg backend: icon only, no menu", "MENU_HOWTO")),
        ("xorg", {"DISPLAY": ":5", "XDG_CURRENT_DESKTOP": "ubuntu:GNOME"}, False,
         doctor.Check("tray", "fail", "Xorg backend (icon only, no menu), and no system tray is running",
                      "GNOME_TRAY_ADVICE MENU_HOWTO")),
        ("appindicator", {}, None,
         doctor.Check("tray", "fail", "appindicator backend, but no D-Bus session bus "
                      "(DBUS_SESSION_BUS_ADDRESS is not set)",
                      "Start EmojiCam from your desktop session, or under dbus-run-session.")),
        ("appindicator", {"DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/1000/bus"}, None,
         doctor.Check("tray", "ok", "appindicator backend: icon and menu")),
        ("gtk", {"DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/1000/bus"}, False,
         doctor.Check("tray", "fail", "gtk backend, but no system tray is running",
                      "Use a desktop or panel with a system tray (notification area).")),
        ("darwin", {}, None, doctor.Check("tray", "ok", "darwin backend")),
    ],
    ids=["xorg", "xorg-no-tray-gnome", "appindicator-no-bus", "appindicator", "gtk-no-tray", "darwin"],
)
def test_the_tray_probe_reads_what_this_machine_has(
    tmp_path: Path, monkeypatch, backend: str, env: dict, xembed_tray: bool | None, expected: doctor.Check
) -> None:
    """``probe_tray`` with the machine pinned: pystray's backend, the
    environment, an XEmbed tray, the venv; the exact check comes out."""
    from emojicam import tray

    for name in TRAY_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # no bus socket in it
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setitem(sys.modules, "pystray", _fake_pystray(backend))
    monkeypatch.setattr(tray, "xembed_tray_runs", lambda display=None: xembed_tray)
    monkeypatch.setattr(tray, "isolated_venv", lambda: False)
    fix = expected.fix.replace("GNOME_TRAY_ADVICE", tray.GNOME_TRAY_ADVICE).replace(
        "MENU_HOWTO", tray.menu_howto(False))
    assert doctor.probe_tray() == dataclasses.replace(expected, fix=fix)


def test_the_tray_probe_without_pystray_says_why(tmp_path: Path, monkeypatch) -> None:
    for name in TRAY_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setitem(sys.modules, "pystray", None)  # importing it raises ImportError
    with pytest.raises(ImportError) as failure:
        import pystray  # noqa: F401
    check = doctor.probe_tray()
    assert (check.name, check.status) == ("tray", "fail")
    assert check.detail == f"no tray backend ({failure.typename}: {failure.value})"
    assert check.fix.startswith("There is no graphical session (DISPLAY is not set)")


def test_the_bundled_model_and_emoji_pass_and_a_broken_model_fails(tmp_path: Path) -> None:
    import dataclasses

    from emojicam.config import ClassifierConfig, Config

    checks = by_name(doctor.check_assets(Config()))
    assert (checks["model"].status, checks["emoji"].status) == ("ok", "ok"), checks
    broken = tmp_path / "emotion.tflite"
    broken.write_bytes(b"not a model")
    (tmp_path / "emotion.labels.txt").write_text("angry\ndisgust\nfear\nhappy\nsad\nsurprise\nneutral\n")
    config = dataclasses.replace(Config(), classifier=ClassifierConfig(model=str(broken)))
    model = by_name(doctor.check_assets(config))["model"]
    assert model.status == "fail" and str(broken) in model.detail and "classifier.model" in model.fix


def test_face_detector_check_states(tmp_path):
    from emojicam.doctor import check_face_detector

    missing = check_face_detector("auto", model_path=tmp_path / "none.tflite")
    assert missing.status == "fail" and missing.fix == "emojicam models install"
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a model")
    bad = check_face_detector("auto", model_path=broken)
    assert bad.status == "fail" and "--force" in bad.fix
    haar = check_face_detector("haar")
    assert haar.status == "warn" and "misses turned faces" in haar.detail


def test_face_detector_check_wants_the_full_range_model_too(tmp_path):
    from emojicam.blazeface import find_blazeface_model, find_full_range_model
    from emojicam.doctor import check_face_detector

    short, full = find_blazeface_model(), find_full_range_model()
    if short is None or full is None:
        pytest.skip("BlazeFace models not installed (run 'emojicam models install')")
    assert check_face_detector("auto", short, full_range_path=full).status == "ok"
    no_full = check_face_detector("auto", short, full_range_path=tmp_path / "none.tflite")
    assert no_full.status == "warn" and "narrower" in no_full.detail and "install" in no_full.fix
    off = check_face_detector("auto", short, full_range=False, full_range_path=tmp_path / "none.tflite")
    assert off.status == "ok" and "full_range is off" in off.detail


def test_tray_xorg_says_how_to_get_the_menu() -> None:
    """Pystray's Xorg fallback (a plain venv: no PyGObject) has no menu; the
    check names the packages, and in an isolated venv how to let it see them."""
    check = doctor.check_tray(doctor.TrayFacts("xorg", isolated_venv=True))
    assert check.status == "warn" and "no menu" in check.detail
    assert "sudo apt install python3-gi gir1.2-gtk-3.0 gir1.2-ayatanaappindicator3-0.1" in check.fix
    assert "python3 -m venv --system-site-packages" in check.fix and "pip install PyGObject" in check.fix
    assert "restart EmojiCam" in check.fix

    system_python = doctor.check_tray(doctor.TrayFacts("xorg", isolated_venv=False))
    assert "gir1.2-gtk-3.0" in system_python.fix and "--system-site-packages" not in system_python.fix

    no_tray = doctor.check_tray(doctor.TrayFacts("xorg", system_tray=False, desktop="ubuntu:GNOME"))
    assert no_tray.status == "fail" and "no system tray is running" in no_tray.detail
    assert "gnome-shell-extension-appindicator" in no_tray.fix and "gir1.2-gtk-3.0" in no_tray.fix


@pytest.mark.parametrize(
    ("facts", "status", "in_text"),
    [
        (doctor.TrayFacts("gtk"), "ok", "icon and menu"),
        (doctor.TrayFacts("appindicator"), "ok", "icon and menu"),
        (doctor.TrayFacts("gtk", session_bus=False), "fail", "dbus-run-session"),
        (doctor.TrayFacts("appindicator", session_bus=False), "fail", "D-Bus session bus"),
        (doctor.TrayFacts("gtk", system_tray=False), "fail", "system tray"),
        (doctor.TrayFacts(None, "ImportError: this platform is not supported"), "fail", "not supported"),
        (doctor.TrayFacts("darwin"), "ok", "darwin backend"),
    ],
)
def test_tray_check_states(facts: doctor.TrayFacts, status: str, in_text: str) -> None:
    check = doctor.check_tray(facts)
    assert check.status == status and in_text in check.detail + " " + check.fix


def test_a_group_without_a_name_does_not_hide_the_video_group(monkeypatch) -> None:
    """One supplementary gid with no /etc/group entry (containers, LDAP) emptied the
    whole set, and doctor then told a 'video' member to join 'video'."""
    import grp
    from types import SimpleNamespace

    names = {44: "video", 1000: "me"}

    def getgrgid(gid: int):
        if gid not in names:
            raise KeyError(f"getgrgid(): gid not found: {gid}")
        return SimpleNamespace(gr_name=names[gid])

    monkeypatch.setattr(doctor.os, "getgroups", lambda: [1000, 123456, 44])
    monkeypatch.setattr(grp, "getgrgid", getgrgid)
    assert doctor._user_groups() == frozenset({"video", "me"})


def test_an_explicit_device_that_is_a_real_camera_is_not_said_to_carry_the_label(tmp_path: Path) -> None:
    """sink.device: /dev/video0 (the webcam) was reported as "labelled 'EmojiCam'"."""
    c = by_name(doctor.run_checks(healthy(tmp_path, explicit_device="/dev/video0")))
    assert c["device"].status == "fail"
    assert "'Integrated Camera'" in c["device"].detail and "labelled 'EmojiCam'" not in c["device"].detail
    assert "sink.device" in c["device"].fix


def test_a_loaded_module_without_our_device_is_reloaded_not_loaded_again(tmp_path: Path) -> None:
    """The module is loaded (devices=0, or every device removed): 'sudo modprobe
    v4l2loopback ...' would do nothing."""
    sysfs = make_sysfs_tree(tmp_path / "s6", [(0, "Integrated", False)])
    c = by_name(doctor.run_checks(healthy(tmp_path, sysfs_root=sysfs)))  # /proc/modules lists it
    assert c["v4l2loopback"].status == "ok" and c["device"].status == "fail"
    assert c["device"].fix.startswith("reload the module with the label: sudo modprobe -r v4l2loopback && ")


def test_reloading_the_module_says_to_stop_the_running_daemon_first(tmp_path: Path) -> None:
    """The daemon holds the device open for its whole life, so 'modprobe -r' fails with
    'Module v4l2loopback is in use' while it runs."""
    probe = healthy(tmp_path, daemon_status={"camera": "ok"})
    (probe.module_params_dir / "exclusive_caps").write_text("N\n")
    fix = by_name(doctor.run_checks(probe))["exclusive_caps"].fix
    assert fix.startswith("stop EmojiCam first (emojicam ctl quit), then: sudo modprobe -r v4l2loopback && ")
    probe.daemon_status = None
    assert by_name(doctor.run_checks(probe))["exclusive_caps"].fix.startswith("sudo modprobe -r v4l2loopback")


def test_a_camera_source_linking_to_the_emojicam_device_is_caught(tmp_path: Path) -> None:
    """A /dev/v4l/by-id/... (or udev) link to the loopback device is the EmojiCam
    device too: the daemon would read its own output."""
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "video10").touch()
    (dev / "by-id-emojicam").symlink_to(dev / "video10")
    probe = healthy(tmp_path, dev_root=dev, camera_source=str(dev / "by-id-emojicam"))
    c = by_name(doctor.run_checks(probe))["camera"]
    assert c.status == "fail" and "EmojiCam device itself" in c.detail
