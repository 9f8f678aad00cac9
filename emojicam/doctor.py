"""``emojicam doctor``: check the setup, and for each problem print the exact fix.

Every fact about the system comes from a ``SystemProbe`` (sysfs and /dev
roots, the text of /proc/modules, the v4l2loopback parameters folder, the
user's groups, Secure Boot, and callables for the camera, tray and assets),
so tests run the real checks against fake system states.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from emojicam import v4l2

log = logging.getLogger(__name__)

Status = Literal["ok", "warn", "fail", "skip"]
SECURE_BOOT_VAR = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
INSTALL_MODULE = (
    "sudo apt install v4l2loopback-dkms (Fedora: sudo dnf install v4l2loopback; "
    "Arch: sudo pacman -S v4l2loopback-dkms)"
)


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclass
class SystemProbe:
    """What the checks look at. ``from_system()`` fills it from this machine."""

    system: str = "Linux"
    label: str = "EmojiCam"
    sysfs_root: Path = v4l2.SYSFS_ROOT
    dev_root: Path = v4l2.DEV_ROOT
    proc_modules: str | None = ""  # text of /proc/modules; None: unreadable
    module_params_dir: Path = Path("/sys/module/v4l2loopback/parameters")
    module_installed: bool | None = None  # modinfo finds it; None: unknown
    secure_boot: bool | None = None  # None: unknown / not EFI
    groups: frozenset[str] = frozenset()
    access: Callable[[Path], bool] = field(default=lambda p: os.access(p, os.R_OK | os.W_OK))
    node_problem: Callable[[Path, str], tuple[str, str] | None] = field(default=v4l2.node_problem)
    camera_source: int | str = 0
    camera_probe: Callable[[int | str], str | None] = field(default=lambda src: None)  # None: works
    daemon_status: dict[str, Any] | None = None  # from a running daemon, if any
    tray_probe: Callable[[], Check] = field(default=lambda: Check("tray", "skip", "not checked"))
    assets_probe: Callable[[], list[Check]] = field(default=lambda: [])
    explicit_device: str | None = None  # sink.device from the config
    config_error: str | None = None  # why the config files do not load (the checks then use the defaults)

    @classmethod
    def from_system(cls, config_path: str | Path | None = None) -> SystemProbe:
        from emojicam.config import ConfigError, load_config

        config_error = None
        try:
            config = load_config(config_path)
        except ConfigError as exc:
            config_error = str(exc)
            config = load_config(None, use_user_file=False)
        return cls(
            system=platform.system(),
            label=config.sink.name,
            proc_modules=_read_text(Path("/proc/modules")),
            module_installed=_module_installed(),
            secure_boot=read_secure_boot(Path("/sys/firmware/efi/efivars")),
            groups=_user_groups(),
            camera_source=config.camera.source,
            camera_probe=probe_camera,
            daemon_status=_daemon_status(),
            tray_probe=probe_tray,
            assets_probe=lambda: check_assets(config),
            explicit_device=config.sink.device,
            config_error=config_error,
        )


# ---------------------------------------------------------------- system readers


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def read_secure_boot(efivars: Path) -> bool | None:
    """True/False from the SecureBoot EFI variable (4 attribute bytes, then
    the value); None when not booted with EFI or unreadable."""
    try:
        data = (efivars / SECURE_BOOT_VAR).read_bytes()
    except OSError:
        return None
    return bool(data[-1]) if len(data) >= 5 else None


def _module_installed() -> bool | None:
    modinfo = shutil.which("modinfo") or ("/sbin/modinfo" if Path("/sbin/modinfo").exists() else None)
    if modinfo is None:
        return None
    try:
        done = subprocess.run([modinfo, "v4l2loopback"], capture_output=True, timeout=5, check=False)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.returncode == 0


def _user_groups() -> frozenset[str]:
    try:
        import grp

        gids = os.getgroups()
    except (ImportError, OSError):
        return frozenset()
    names = set()
    for gid in gids:
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:  # a gid with no name (containers, LDAP): skip that one only
            continue
    return frozenset(names)


def _daemon_status() -> dict[str, Any] | None:
    from emojicam import control

    try:
        reply = control.send_request({"cmd": "status"}, timeout_s=1.0)
    except Exception:  # noqa: BLE001 - not running, or no control channel here
        return None
    status = reply.get("status")
    return status if isinstance(status, dict) else None


def probe_camera(source: int | str) -> str | None:
    """None if the camera opens and gives a frame, else why not."""
    from emojicam.sources import OpenCVSource

    src = OpenCVSource(source)
    try:
        src.open()
        if src.read() is None:
            return f"{src.description} opened but gave no frame"
        return None
    except Exception as exc:  # noqa: BLE001
        return str(exc)
    finally:
        src.close()


@dataclass(frozen=True)
class TrayFacts:
    """What the tray check looks at; ``tray_facts()`` reads them from this machine."""

    backend: str | None  # pystray's backend ("appindicator", "gtk", "xorg", ...); None: no backend
    error: str = ""  # why pystray found no backend
    system_tray: bool = True  # an XEmbed system tray (_NET_SYSTEM_TRAY_S0) is running
    session_bus: bool = True  # a D-Bus session bus can be reached (pystray's GTK backends need one)
    isolated_venv: bool = False  # a venv that cannot see the system's Python packages (PyGObject)
    desktop: str = ""  # XDG_CURRENT_DESKTOP


def tray_facts() -> TrayFacts:
    from emojicam.tray import isolated_venv

    desktop = os.environ.get("XDG_CURRENT_DESKTOP", "")
    try:
        import pystray
    except Exception as exc:  # noqa: BLE001 - Xlib raises DisplayNameError, gi raises ValueError...
        return TrayFacts(None, f"{type(exc).__name__}: {exc}", isolated_venv=isolated_venv(), desktop=desktop)
    from emojicam.tray import backend_name, xembed_tray_runs

    backend = backend_name(pystray)
    runtime_bus = Path(os.environ.get("XDG_RUNTIME_DIR") or "/nonexistent") / "bus"
    return TrayFacts(
        backend,
        system_tray=xembed_tray_runs() is True if backend in ("xorg", "gtk") else True,
        session_bus=bool(os.environ.get("DBUS_SESSION_BUS_ADDRESS"))
        or runtime_bus.exists()
        or bool(os.environ.get("DISPLAY") and shutil.which("dbus-launch")),
        isolated_venv=isolated_venv(),
        desktop=desktop,
    )


def check_tray(facts: TrayFacts) -> Check:
    """Whether the tray can show EmojiCam's icon, and its menu, and if not, how to fix it."""
    from emojicam.tray import GNOME_TRAY_ADVICE, explain_failure, menu_howto

    if facts.backend is None:
        return Check("tray", "fail", f"no tray backend ({facts.error})", explain_failure())
    no_tray_fix = (
        GNOME_TRAY_ADVICE
        if "GNOME" in facts.desktop.upper()
        else "Use a desktop or panel with a system tray (notification area)."
    )
    if facts.backend == "xorg":
        if not facts.system_tray:
            return Check(
                "tray",
                "fail",
                "Xorg backend (icon only, no menu), and no system tray is running",
                f"{no_tray_fix} {menu_howto(facts.isolated_venv)}",
            )
        return Check("tray", "warn", "Xorg backend: icon only, no menu", menu_howto(facts.isolated_venv))
    if facts.backend in ("appindicator", "gtk"):
        if not facts.session_bus:
            return Check(
                "tray",
                "fail",
                f"{facts.backend} backend, but no D-Bus session bus (DBUS_SESSION_BUS_ADDRESS is not set)",
                "Start EmojiCam from your desktop session, or under dbus-run-session.",
            )
        if not facts.system_tray:
            return Check(
                "tray", "fail", f"{facts.backend} backend, but no system tray is running", no_tray_fix
            )
        return Check("tray", "ok", f"{facts.backend} backend: icon and menu")
    return Check("tray", "ok", f"{facts.backend} backend")


def probe_tray() -> Check:
    """Whether pystray finds a backend, and whether it can show a menu."""
    return check_tray(tray_facts())


def check_assets(config: Any) -> list[Check]:
    """The classifier model (and labels) load; each emoji PNG is a readable RGBA image."""
    from emojicam.errors import SetupError

    checks = []
    try:
        from emojicam.classify import TFLiteClassifier

        TFLiteClassifier.create(config.classifier)
        checks.append(Check("model", "ok", "emotion model and labels load"))
    except (SetupError, FileNotFoundError, ImportError, ValueError) as exc:
        checks.append(
            Check(
                "model",
                "fail",
                str(exc),
                "reinstall EmojiCam from a complete checkout ('pip install .'), or set "
                "classifier.model to a valid .tflite with its .labels.txt beside it",
            )
        )
    checks.append(check_emoji_folder(Path(config.emoji.folder).expanduser() if config.emoji.folder else None))
    checks.append(check_face_detector(config.detector.backend, full_range=config.detector.full_range))
    return checks


def check_face_detector(backend: str, model_path: Path | None = None, *, full_range: bool = True,
                        full_range_path: Path | None = None) -> Check:
    """The BlazeFace models are installed (without the short-range one replace
    mode relies on the Haar detector, which misses turned faces; without the
    full-range one it misses small faces: either way the mask would slip)."""
    if backend == "haar":
        return Check("face detector", "warn", "detector.backend is haar: slower, and it misses turned faces "
                     "(in replace mode those faces show)", "set detector.backend: auto, then run "
                     "'emojicam models install'")
    from emojicam.blazeface import find_blazeface_model
    from emojicam.errors import SetupError

    path = model_path or find_blazeface_model()
    if path is None or not Path(path).is_file():
        return Check("face detector", "fail",
                     "the BlazeFace model is not installed, so EmojiCam falls back to the Haar "
                     "detector, which misses turned faces (in replace mode those faces show)",
                     "emojicam models install")
    from emojicam.blazeface import find_full_range_model

    full_path = (full_range_path or find_full_range_model()) if full_range else None
    have_full = full_path is not None and Path(full_path).is_file()
    try:
        from emojicam.blazeface import BlazeFaceDetector
        from emojicam.config import DetectorConfig

        BlazeFaceDetector.create(DetectorConfig(), model_path=Path(path), full_range_path=full_path,
                                 use_full_range=have_full)
    except (SetupError, ValueError) as exc:
        return Check("face detector", "fail", str(exc), "emojicam models install --force")
    if full_range and not have_full:
        return Check("face detector", "warn",
                     "the full-range BlazeFace model is missing or damaged, so faces narrower than about "
                     "an eighth of the frame are missed (in replace mode those faces show)",
                     "emojicam models install --force")
    if full_path is None:
        return Check("face detector", "ok", f"BlazeFace model loads ({path}); detector.full_range is off")
    return Check("face detector", "ok", f"BlazeFace models load ({path}, {full_path})")


def check_emoji_folder(folder: Path | None) -> Check:
    from emojicam.emoji import BadArt, check_folder, emoji_file_name, read_art
    from emojicam.errors import SetupError
    from emojicam.types import Emotion

    if folder is None:
        from emojicam import assets

        try:
            folder = assets.emoji_dir()
        except FileNotFoundError as exc:
            return Check("emoji", "fail", str(exc), "reinstall EmojiCam with 'pip install .'")
    try:
        folder = check_folder(folder)  # the daemon's own checks, here and for each file
    except SetupError as exc:
        return Check("emoji", "fail", str(exc), "set emoji.folder: null to use the bundled emoji")
    unusable, notes, filled = [], [], []
    for emotion in Emotion:
        path = folder / emoji_file_name(emotion)
        try:
            art, note = read_art(path)
        except BadArt as exc:
            unusable.append(f"{path.name} {exc}")
        else:
            if note:
                notes.append(f"{path.name} {note}")
            if art.mask_bgra is not None:
                filled.append(path.name)
    names = ", ".join(emoji_file_name(e) for e in Emotion)
    if unusable:
        return Check(
            "emoji",
            "fail",
            f"{folder}: " + "; ".join(unusable + notes) + " (EmojiCam shows the bundled emoji for "
            "the unusable ones)",
            f"put RGBA PNGs named {names} in {folder}, or set emoji.folder: null for the bundled set",
        )
    if notes:
        return Check("emoji", "warn", f"{folder}: " + "; ".join(notes),
                     "save the emoji with a transparent background (RGBA PNG)")
    if filled:
        return Check("emoji", "ok", f"7 emoji PNGs in {folder} ({', '.join(filled)}: transparent near "
                     "the centre, drawn over their own colour there in replace mode)")
    return Check("emoji", "ok", f"7 emoji PNGs in {folder}")


# ---------------------------------------------------------------- checks


def _loaded(modules_text: str | None) -> bool | None:
    if modules_text is None:
        return None
    return any(line.split(" ", 1)[0] == "v4l2loopback" for line in modules_text.splitlines())


def check_module(p: SystemProbe) -> list[Check]:
    loaded = _loaded(p.proc_modules)
    if loaded:
        return [Check("v4l2loopback", "ok", "kernel module loaded")]
    if loaded is None:
        return [
            Check(
                "v4l2loopback",
                "warn",
                "cannot read /proc/modules",
                "check by hand: lsmod | grep v4l2loopback",
            )
        ]
    checks = []
    if p.module_installed is False:
        checks.append(
            Check(
                "v4l2loopback",
                "fail",
                "kernel module not installed",
                f"{INSTALL_MODULE}, then: {v4l2.modprobe_line(p.label)}\n"
                f"    {v4l2.persistent_setup(p.label)}",
            )
        )
    else:
        checks.append(
            Check(
                "v4l2loopback",
                "fail",
                "kernel module not loaded",
                f"{v4l2.modprobe_line(p.label)}\n    {v4l2.persistent_setup(p.label)}",
            )
        )
    if p.secure_boot:
        checks.append(
            Check(
                "secure boot",
                "fail",
                "Secure Boot is on: the kernel refuses unsigned modules "
                "(modprobe says 'Key was rejected by service')",
                "enroll the DKMS signing key: sudo mokutil --import /var/lib/dkms/mok.pub (Ubuntu: "
                "/var/lib/shim-signed/mok/MOK.der), reboot, choose 'Enroll MOK' and enter the password; "
                "then load the module again",
            )
        )
    return checks


def check_device(p: SystemProbe) -> tuple[list[Check], v4l2.VideoDevice | None]:
    if p.explicit_device:
        problem = v4l2.not_a_device_path(p.explicit_device, p.label)
        if problem:
            return [Check("device", "fail", *problem)], None
        found = v4l2.find_device_by_path(p.explicit_device, p.sysfs_root, p.dev_root)
        if found is None:
            load = v4l2.load_line(p.label, _loaded(p.proc_modules))  # a second modprobe does nothing
            return [
                Check(
                    "device",
                    "fail",
                    f"sink.device {p.explicit_device} does not exist",
                    f"set sink.device: null to find the device labelled {p.label!r}, or {load}",
                )
            ], None
    else:
        found = v4l2.find_device_by_label(p.label, p.sysfs_root, p.dev_root)
    if found is None:
        others = [d for d in v4l2.list_devices(p.sysfs_root, p.dev_root) if d.is_loopback]
        fix = v4l2.modprobe_line(p.label)
        if others or _loaded(p.proc_modules):  # loading a loaded module again does nothing
            fix = f"reload the module with the label: {v4l2.load_line(p.label, loaded=True)}"
        listed = v4l2.describe_devices(p.sysfs_root, p.dev_root)
        return [
            Check("device", "fail", f"no video device labelled {p.label!r} (devices: {listed})", fix)
        ], None
    if not found.is_loopback:
        if p.explicit_device:
            problem = v4l2.not_loopback_problem(p.explicit_device, found, p.label)
            return [Check("device", "fail", *problem)], found
        return [
            Check(
                "device",
                "fail",
                f"{found.path} is labelled {p.label!r} but is a real camera",
                "set sink.name to the loopback device's label, or sink.device to its path",
            )
        ], found
    problem = p.node_problem(found.path, p.label)
    if problem:
        return [Check("device", "fail", *problem)], found
    return [Check("device", "ok", f"{found.path} labelled {found.label!r}")], found


def check_exclusive_caps(p: SystemProbe, device: v4l2.VideoDevice) -> Check:
    # The running daemon holds the device open: 'modprobe -r' then fails ("in use").
    reload = v4l2.reload_line(p.label)
    if p.daemon_status is not None:
        reload = f"stop EmojiCam first (emojicam ctl quit), then: {reload}"
    text = _read_text(p.module_params_dir / "exclusive_caps")
    if text is None:
        return Check(
            "exclusive_caps",
            "warn",
            "cannot read the module's exclusive_caps parameter",
            f"if Chrome or Meet do not list {p.label}, reload the module: {reload}",
        )
    values = [v.strip().upper() for v in text.strip().split(",") if v.strip()]
    # The parameter lists one value per device in the order they were created, which is the
    # order of video_nr (video_nr=10,2 makes video10 first); without it, by device number.
    numbers = [v.strip() for v in (_read_text(p.module_params_dir / "video_nr") or "").split(",")]
    if str(device.number) in numbers:
        index = numbers.index(str(device.number))
    else:
        loopbacks = [d for d in v4l2.list_devices(p.sysfs_root, p.dev_root) if d.is_loopback]
        index = next((i for i, d in enumerate(loopbacks) if d.node == device.node), 0)
    value = values[index] if index < len(values) else (values[0] if values else "")
    if value in ("Y", "1"):
        return Check("exclusive_caps", "ok", "exclusive_caps=1 (Chrome and Meet see the camera)")
    return Check(
        "exclusive_caps",
        "fail",
        f"{device.path} has exclusive_caps off: Chrome, Meet and other WebRTC apps will not list it",
        reload,
    )


def check_permissions(p: SystemProbe, device: v4l2.VideoDevice) -> Check:
    if p.access(device.path):
        return Check("permissions", "ok", f"you can read and write {device.path}")
    if "video" not in p.groups:
        return Check(
            "permissions",
            "fail",
            f"no access to {device.path}: you are not in the 'video' group",
            'sudo usermod -aG video "$USER", then log out and back in',
        )
    return Check(
        "permissions",
        "fail",
        f"no access to {device.path} although you are in 'video'",
        f"check its owner and mode: ls -l {device.path} (expected crw-rw---- root video)",
    )


def check_camera(p: SystemProbe, emojicam_device: v4l2.VideoDevice | None) -> Check:
    src = p.camera_source
    if emojicam_device is not None and (
        src == emojicam_device.number
        # a /dev/v4l/by-id/... or udev link names the same device
        or (isinstance(src, str) and os.path.realpath(src) == os.path.realpath(emojicam_device.path))
    ):
        return Check(
            "camera",
            "fail",
            f"camera.source {src!r} is the EmojiCam device itself",
            "set camera.source to your webcam (e.g. 0 or /dev/video0) in your config",
        )
    if p.daemon_status is not None:
        state = p.daemon_status.get("camera")
        detail = p.daemon_status.get("camera_detail") or ""
        if state == "unavailable":
            return Check(
                "camera",
                "fail",
                f"the running daemon cannot use the camera: {detail}",
                "close other apps using the webcam, check it is plugged in, or set camera.source",
            )
        return Check("camera", "ok", f"in use by the running daemon ({state})")
    problem = p.camera_probe(src)
    if problem is None:
        return Check("camera", "ok", f"camera {src!r} gives frames")
    return Check("camera", "fail", problem, _CAMERA_FIX.get(p.system, _CAMERA_FIX["Linux"]))


# Off Linux there is no /dev/videoN, and the OS may simply refuse the camera: OpenCV
# then fails to open it like a missing one, and only the privacy setting fixes that.
_CAMERA_FIX = {
    "Linux": "plug the webcam in, close apps using it, or set camera.source (index or /dev/videoN)",
    "Darwin": "allow the camera for the app EmojiCam runs from (System Settings > Privacy & Security > "
    "Camera: your terminal, or Python), plug the webcam in, close apps using it, or set "
    "camera.source (0, 1, ...)",
    "Windows": "check Settings > Privacy & security > Camera (camera access, and 'Let desktop apps "
    "access your camera', must be on), plug the webcam in, close apps using it, or set "
    "camera.source (0, 1, ...)",
}


def run_checks(p: SystemProbe) -> list[Check]:
    checks: list[Check] = []
    if p.config_error is not None:
        checks.append(Check("config", "fail", p.config_error,
                            "correct that setting: 'emojicam run' refuses to start until then "
                            "(the checks below used the default settings)"))
    if p.system == "Linux":
        checks += check_module(p)
        device_checks, device = check_device(p)
        checks += device_checks
        if device is not None and device.is_loopback:
            checks.append(check_exclusive_caps(p, device))
            if device_checks[-1].status == "ok":  # a real node (not a plain file, not missing)
                checks.append(check_permissions(p, device))
        checks.append(check_camera(p, device))
    else:
        name = (
            "Unity Capture or the OBS virtual camera" if p.system == "Windows" else "the OBS virtual camera"
        )
        checks.append(Check("virtual camera", "skip", f"{p.system}: EmojiCam uses {name}; not checked here"))
        checks.append(check_camera(p, None))
    checks.append(p.tray_probe())
    checks += p.assets_probe()
    return checks


def all_ok(checks: list[Check]) -> bool:
    return all(c.status in ("ok", "skip") for c in checks)


_MARK = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


def format_report(checks: list[Check]) -> str:
    lines = []
    for c in checks:
        lines.append(f"[{_MARK[c.status]}] {c.name}: {c.detail}")
        if c.fix and c.status in ("warn", "fail"):
            lines.append(f"    fix: {c.fix}")
    bad = sum(c.status in ("warn", "fail") for c in checks)
    lines.append("all good" if bad == 0 else f"{bad} problem(s) found")
    return "\n".join(lines)
