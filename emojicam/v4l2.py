"""Linux video4linux helpers: find the loopback device by its card label, and
watch it for readers (on-demand mode).

Everything reads from injectable roots (``sysfs_root``, ``dev_root``,
``proc_root``) so tests run against a fake tree; nothing here needs the
v4l2loopback kernel module.

Reader counting: inotify reports every ``open``/``close`` of the device node.
Our own writer opens the node before the watch starts, so from then on
``opens - closes`` is the number of readers. Events can be lost on queue
overflow, and an app may already hold the device open when the daemon starts,
so the count is (re)synchronised from ``/proc/*/fd`` at start and after an
overflow. No library watches a character device for openers, hence this
module; inotify itself comes from ``inotify_simple``.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SYSFS_ROOT = Path("/sys")
DEV_ROOT = Path("/dev")
PROC_ROOT = Path("/proc")



def module_options(label: str) -> str:
    """The v4l2loopback options EmojiCam needs: one device named ``label``
    (``sink.name``), at /dev/video10, announcing capture only (Chrome lists a
    loopback device only with ``exclusive_caps=1``)."""
    return f'devices=1 video_nr=10 card_label="{label}" exclusive_caps=1'


def modprobe_line(label: str) -> str:
    """The command that loads the module for ``label`` now."""
    return f"sudo modprobe v4l2loopback {module_options(label)}"


def reload_line(label: str) -> str:
    """The command that reloads the module for ``label``: a second ``modprobe`` of a
    loaded module does nothing, so it is unloaded first."""
    return f"sudo modprobe -r v4l2loopback && {modprobe_line(label)}"


def load_line(label: str, loaded: bool | None) -> str:
    """``modprobe_line``, or ``reload_line`` when the module is ``loaded``."""
    return reload_line(label) if loaded else modprobe_line(label)


def module_loaded(sysfs_root: Path = SYSFS_ROOT) -> bool:
    """Whether v4l2loopback is in the kernel (``/sys/module/v4l2loopback`` exists)."""
    return (Path(sysfs_root) / "module" / "v4l2loopback").is_dir()


def persistent_setup(label: str) -> str:
    """The commands that load the module for ``label`` at every boot."""
    return (
        "To load it at every boot:\n"
        f"      echo 'options v4l2loopback {module_options(label)}'"
        " | sudo tee /etc/modprobe.d/emojicam.conf\n"
        "      echo v4l2loopback | sudo tee /etc/modules-load.d/emojicam.conf"
    )


@dataclass(frozen=True)
class VideoDevice:
    """One entry of ``/sys/class/video4linux``."""

    node: str  # e.g. "video10"
    label: str  # the card label (``name`` file)
    path: Path  # the device node, e.g. /dev/video10
    is_loopback: bool  # a virtual (v4l2loopback) device

    @property
    def number(self) -> int:
        digits = "".join(ch for ch in self.node if ch.isdigit())
        return int(digits) if digits else -1


def list_devices(sysfs_root: Path = SYSFS_ROOT, dev_root: Path = DEV_ROOT) -> list[VideoDevice]:
    """All video4linux devices, sorted by number. Missing tree: empty list."""
    base = Path(sysfs_root) / "class" / "video4linux"
    try:
        entries = list(base.iterdir())
    except OSError:
        return []
    devices = []
    for entry in entries:
        try:
            label = (entry / "name").read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            continue
        # A real camera links to its bus device (usb, pci) through ``device``;
        # v4l2loopback devices are virtual and have no such link.
        is_loopback = not (entry / "device").exists()
        devices.append(VideoDevice(entry.name, label, Path(dev_root) / entry.name, is_loopback))
    return sorted(devices, key=lambda d: d.number)


def find_device_by_label(
    label: str, sysfs_root: Path = SYSFS_ROOT, dev_root: Path = DEV_ROOT
) -> VideoDevice | None:
    """The device whose card label is ``label`` (exact, then case-insensitive).
    Loopback devices win over real cameras with the same label."""
    devices = list_devices(sysfs_root, dev_root)
    for exact in (True, False):
        matches = [d for d in devices if (d.label == label if exact else d.label.lower() == label.lower())]
        if matches:
            matches.sort(key=lambda d: (not d.is_loopback, d.number))
            return matches[0]
    return None


def find_device_by_path(
    path: Path | str, sysfs_root: Path = SYSFS_ROOT, dev_root: Path = DEV_ROOT
) -> VideoDevice | None:
    """The listed device ``path`` names (a udev or /dev/v4l/by-id link names it too)."""
    wanted = os.path.realpath(path)
    return next((d for d in list_devices(sysfs_root, dev_root) if os.path.realpath(d.path) == wanted), None)


def not_loopback_problem(explicit: str, device: VideoDevice, label: str) -> tuple[str, str]:
    """(what is wrong, what to do) when ``sink.device`` (``explicit``) names a real camera."""
    return (f"sink.device {explicit} is {device.label!r}, a real camera, not a v4l2loopback device",
            f"set sink.device to the loopback device's path, or to null to use the device labelled {label!r}")


def describe_devices(sysfs_root: Path = SYSFS_ROOT, dev_root: Path = DEV_ROOT) -> str:
    """e.g. "/dev/video0 ('Integrated Camera'), /dev/video10 ('OBS Cam')", or "none"."""
    return ", ".join(f"{d.path} ({d.label!r})" for d in list_devices(sysfs_root, dev_root)) or "none"


def not_a_device_path(device: str, label: str) -> tuple[str, str] | None:
    """(what is wrong, what to do) when ``sink.device`` is no path (Linux),
    else None. pyvirtualcam would only say that ``video10`` does not exist."""
    if device.startswith("/"):
        return None
    example = f"/dev/{device}" if device.startswith("video") else "/dev/video10"
    return (
        f"sink.device: {device!r} is not a device path",
        f"on Linux give one such as {example}, or remove the setting to use the device labelled {label!r}",
    )


def node_problem(path: Path | str, label: str = "EmojiCam") -> tuple[str, str] | None:
    """(what is wrong, what to do) when ``path`` is not a character device
    (the kernel lists the device, but its node is missing or a plain file),
    else None. A plain file is what a program writing to /dev/videoN leaves
    when the module was not loaded yet; the kernel then cannot create the node."""
    reload = reload_line(label)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return (f"{path} does not exist although the kernel lists the device",
                f"reload the module: {reload} (in a container, pass the device in: --device {path})")
    except OSError as exc:
        return f"cannot inspect {path} ({exc})", f"check it with: ls -l {path}"
    if stat.S_ISCHR(mode):
        return None
    kind = "a regular file" if stat.S_ISREG(mode) else "not a device"
    return (f"{path} is {kind}, not the loopback device (something wrote to it before the module "
            "was loaded)", f"sudo rm {path}, then reload the module: {reload}")


def describe_missing(label: str, sysfs_root: Path = SYSFS_ROOT, dev_root: Path = DEV_ROOT) -> str:
    """A message for 'no device with this label', listing what exists and the fix."""
    loaded = module_loaded(sysfs_root)  # loading it again would do nothing
    fix = f"{'Reload' if loaded else 'Load'} the loopback module with that label: {load_line(label, loaded)}"
    return (
        f"no video device with the label {label!r} (devices: {describe_devices(sysfs_root, dev_root)}). "
        f"{fix} (run 'emojicam doctor' for details)"
    )


def count_openers(device: Path, proc_root: Path = PROC_ROOT, exclude_pid: int | None = None) -> int:
    """How many open file descriptors of other processes point at ``device``.
    Processes we may not inspect are skipped (they belong to other users)."""
    exclude = os.getpid() if exclude_pid is None else exclude_pid
    try:
        target = os.path.realpath(device)
    except OSError:
        return 0
    count = 0
    try:
        pids = [p for p in os.listdir(proc_root) if p.isdigit() and int(p) != exclude]
    except OSError:
        return 0
    for pid in pids:
        fd_dir = Path(proc_root) / pid / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(fd_dir / fd)
            except OSError:
                continue
            if link == target or os.path.realpath(link) == target:
                count += 1
    return count


class ReaderWatcher:
    """Counts the readers of a device node from inotify open/close events.

    ``on_change(readers)`` is called from the watcher thread whenever the
    count changes. Start it *after* opening the device as a writer.
    """

    def __init__(
        self,
        device: Path,
        on_change: Callable[[int], None],
        *,
        proc_root: Path = PROC_ROOT,
        poll_ms: int = 100,
    ) -> None:
        self.device = Path(device)
        self._on_change = on_change
        self._proc_root = proc_root
        self._poll_ms = poll_ms
        self._readers = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._inotify = None

    @property
    def readers(self) -> int:
        return self._readers

    @property
    def running(self) -> bool:
        """False once the watcher thread has ended (stopped, or the node was deleted)."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Begin watching; raises OSError when inotify or the node is unavailable."""
        from inotify_simple import INotify, flags

        inotify = INotify()
        try:
            inotify.add_watch(self.device, flags.OPEN | flags.CLOSE_WRITE | flags.CLOSE_NOWRITE)
        except OSError:
            inotify.close()
            raise
        self._inotify = inotify
        self._readers = count_openers(self.device, self._proc_root)
        self._thread = threading.Thread(target=self._run, name="emojicam-readers", daemon=True)
        self._thread.start()
        self._on_change(self._readers)

    def stop(self, timeout_s: float = 1.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None

    def _run(self) -> None:
        from inotify_simple import flags

        assert self._inotify is not None
        while not self._stop.is_set():
            try:
                events = self._inotify.read(timeout=self._poll_ms)
            except (OSError, ValueError):  # closed under us during stop
                return
            if not events:
                continue
            readers = self._readers
            for event in events:
                if event.mask & flags.Q_OVERFLOW:
                    readers = count_openers(self.device, self._proc_root)
                    break
                if event.mask & flags.OPEN:
                    readers += 1
                elif event.mask & (flags.CLOSE_WRITE | flags.CLOSE_NOWRITE):
                    readers = max(0, readers - 1)
                if event.mask & flags.IGNORED:  # node deleted (module unloaded)
                    log.warning("%s disappeared; on-demand watching stopped", self.device)
                    self._set(0)
                    return
            self._set(readers)

    def _set(self, readers: int) -> None:
        if readers != self._readers:
            self._readers = readers
            log.debug("%s: %d reader(s)", self.device, readers)
            self._on_change(readers)
