"""Frame sinks: the virtual camera (pyvirtualcam), a preview window, null.

Every sink has the same small surface: ``open()``, ``send(image_bgr)``,
``pace()`` (wait until the next frame is due) and ``close()``. Nothing is
opened in a constructor.

The virtual camera is opened once and kept open for the daemon's whole life:
v4l2loopback with ``exclusive_caps=1`` only advertises a capture device while
a writer holds it, so closing it makes EmojiCam vanish from running apps.
Its size is fixed at open; frames of any other size are letterboxed to it.

Platforms (``sink.backend`` in the config):
- Linux: ``v4l2loopback``; the device is the one whose card label is
  ``sink.name`` (``/sys/class/video4linux/*/name``), or ``sink.device``.
- Windows: ``unitycapture`` (a Unity Capture device registered under
  ``sink.name``) or ``obs`` (the OBS Virtual Camera); ``auto`` tries both.
- macOS: ``obs`` (the OBS Virtual Camera, installed with OBS 30+).
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from emojicam import v4l2
from emojicam.config import SinkConfig
from emojicam.errors import EmojiCamError
from emojicam.sources import Clock, Pacer

log = logging.getLogger(__name__)

PREVIEW_TITLE = "EmojiCam preview"
MAX_WINDOW_WH = (960, 540)  # larger frames are shown scaled down


class SinkError(EmojiCamError):
    """The output cannot be opened or written; the message says how to fix it."""


class Sink(Protocol):
    kind: str
    device: str | None  # the device node or camera name in use, when there is one

    def open(self) -> None: ...

    def send(self, image_bgr: np.ndarray) -> None: ...

    def pace(self) -> None:
        """Sleep until the next frame is due."""
        ...

    def close(self) -> None: ...


def fit_to(image_bgr: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Scale to fit inside ``size_wh`` keeping the aspect ratio; pad with black."""
    w, h = size_wh
    ih, iw = image_bgr.shape[:2]
    if (iw, ih) == (w, h):
        return image_bgr
    scale = min(w / iw, h / ih)
    nw, nh = max(1, round(iw * scale)), max(1, round(ih * scale))
    resized = cv2.resize(image_bgr, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    out = np.zeros((h, w, 3), np.uint8)
    x0, y0 = (w - nw) // 2, (h - nh) // 2
    out[y0 : y0 + nh, x0 : x0 + nw] = resized
    return out


class NullSink:
    """Discards frames (paced like a camera); for headless runs and tests."""

    kind = "null"
    device: str | None = None

    def __init__(
        self,
        fps: float = 30.0,
        *,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self._pacer = Pacer(fps, clock, sleep)
        self.frames_sent = 0
        self.last_size_wh: tuple[int, int] | None = None

    def open(self) -> None:
        pass

    def send(self, image_bgr: np.ndarray) -> None:
        self.frames_sent += 1
        self.last_size_wh = (int(image_bgr.shape[1]), int(image_bgr.shape[0]))

    def pace(self) -> None:
        self._pacer.wait()

    def close(self) -> None:
        pass


class PreviewSink:
    """An OpenCV window. All calls must come from one thread (the sender's)."""

    kind = "preview"
    device: str | None = None

    def __init__(
        self,
        fps: float = 30.0,
        title: str = PREVIEW_TITLE,
        *,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.title = title
        self._pacer = Pacer(fps, clock, sleep)
        self._shown = False
        self._canvas_wh: tuple[int, int] | None = None
        self.closed_by_user = False

    def open(self) -> None:
        if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
            # OpenCV's Qt build (the opencv-python wheel, X11 only) aborts the whole
            # process when it cannot reach a display, before cv2.error could be raised:
            # 'ctl preview on' over SSH once killed the daemon.
            raise SinkError(
                "cannot open a preview window: no X display (DISPLAY is not set); start EmojiCam "
                "from your desktop session, or use --sink null / --sink virtual"
            )
        # AUTOSIZE, not NORMAL: with Qt a resizable window sometimes stays
        # black (seen 1 in 8 under Xvfb); frames are fitted into a fixed
        # canvas of at most MAX_WINDOW_WH instead.
        try:
            cv2.namedWindow(self.title, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
        except cv2.error as exc:
            raise SinkError(
                f"cannot open a preview window ({exc.err or exc}); a display is needed "
                "(set DISPLAY, or use --sink null / --sink virtual)"
            ) from exc

    def send(self, image_bgr: np.ndarray) -> None:
        if self.closed_by_user:
            return
        if self._canvas_wh is None:  # fixed at the first frame: a window that changes size may stay black
            h, w = image_bgr.shape[:2]
            scale = min(1.0, MAX_WINDOW_WH[0] / w, MAX_WINDOW_WH[1] / h)
            self._canvas_wh = (round(w * scale), round(h * scale))
        cv2.imshow(self.title, fit_to(image_bgr, self._canvas_wh))
        cv2.waitKey(1)
        if self._shown and cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
            log.info("preview window closed")
            self.closed_by_user = True
        self._shown = True

    def pace(self) -> None:
        self._pacer.wait()

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
        except cv2.error:
            pass  # already gone


#: The pyvirtualcam backends each system has (pyvirtualcam registers no others there).
_SYSTEM_BACKENDS = {"Linux": ("v4l2loopback",), "Windows": ("unitycapture", "obs"), "Darwin": ("obs",)}


def _candidates(
    cfg: SinkConfig, system: str, sysfs_root: Path, dev_root: Path
) -> list[tuple[str, str | None]]:
    """(pyvirtualcam backend, device) pairs to try, in order."""
    backend: str = cfg.backend
    if backend == "auto":
        backend = {"Linux": "v4l2loopback", "Darwin": "obs"}.get(system, "auto")
    available = _SYSTEM_BACKENDS.get(system)
    if backend != "auto" and available is not None and backend not in available:
        # pyvirtualcam would only say "'obs'" (a KeyError), and the hint would blame the device
        raise SinkError(
            f"sink.backend: {backend!r} is not available on {'macOS' if system == 'Darwin' else system} "
            f"(only {', '.join(available)}); set sink.backend: auto"
        )
    if backend == "v4l2loopback":
        if cfg.device:
            problem = v4l2.not_a_device_path(cfg.device, cfg.name)
            if problem:
                raise SinkError("; ".join(problem))
            return [("v4l2loopback", cfg.device)]
        found = v4l2.find_device_by_label(cfg.name, sysfs_root, dev_root)
        if found is None:
            raise SinkError(v4l2.describe_missing(cfg.name, sysfs_root, dev_root))
        if not found.is_loopback:
            raise SinkError(
                f"{found.path} is labelled {cfg.name!r} but is not a v4l2loopback device; "
                "give the loopback device another card_label or set sink.device"
            )
        return [("v4l2loopback", str(found.path))]
    if backend == "unitycapture":
        return [("unitycapture", cfg.device or cfg.name)]
    if backend == "obs":
        return [("obs", None)]
    return [("unitycapture", cfg.device or cfg.name), ("obs", None)]  # Windows auto


class VirtualCameraSink:
    """The EmojiCam virtual camera through pyvirtualcam.

    ``pyvirtualcam_backend`` replaces the backend name given to pyvirtualcam
    (tests register a recording backend); the device lookup still follows
    ``cfg.backend``.
    """

    kind = "virtual"

    def __init__(
        self,
        cfg: SinkConfig,
        size_wh: tuple[int, int],
        *,
        system: str | None = None,
        sysfs_root: Path = v4l2.SYSFS_ROOT,
        dev_root: Path = v4l2.DEV_ROOT,
        pyvirtualcam_backend: str | None = None,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.cfg = cfg
        self.size_wh = size_wh
        # Our own pacer, not pyvirtualcam's sleep_until_next_frame: that one adapts to
        # the recent average rate, so after the 2 fps of a pause it stopped sleeping
        # until the average caught up (75 frames in the first second of a resume).
        self._pacer = Pacer(cfg.fps, clock, sleep)
        self.system = system or platform.system()
        self._sysfs_root = sysfs_root
        self._dev_root = dev_root
        self._override = pyvirtualcam_backend
        self._camera: Any = None  # pyvirtualcam.Camera once open
        self.device: str | None = None

    def open(self) -> None:
        import pyvirtualcam

        w, h = self.size_wh
        errors = []
        tried: str | None = None
        for backend, device in _candidates(self.cfg, self.system, self._sysfs_root, self._dev_root):
            name = self._override or backend
            tried = device
            try:
                self._camera = pyvirtualcam.Camera(
                    w, h, self.cfg.fps, fmt=pyvirtualcam.PixelFormat.BGR, device=device, backend=name
                )
            except Exception as exc:  # noqa: BLE001 - pyvirtualcam raises RuntimeError/KeyError/...
                # pyvirtualcam's message already names the backend
                errors.append(f"{exc} (device: {device or 'default'})")
                continue
            self.device = str(self._camera.device)
            log.info("virtual camera open: %s via %s, %dx%d at %g fps", self.device, name, w, h, self.cfg.fps)
            return
        hint = _fix_hint(self.system)
        if self.system == "Linux" and tried:
            problem = _device_problem(tried, self.cfg, self._sysfs_root, self._dev_root)
            if problem:  # not a permissions matter: say what is wrong with the device
                hint = "; ".join(problem)
        raise SinkError("cannot open the virtual camera: " + "; ".join(errors) + ". " + hint)

    def send(self, image_bgr: np.ndarray) -> None:
        if self._camera is None:
            raise SinkError("virtual camera is not open")
        self._camera.send(fit_to(image_bgr, self.size_wh))

    def pace(self) -> None:
        if self._camera is not None:
            self._pacer.wait()

    def close(self) -> None:
        if self._camera is not None:
            self._camera.close()
            self._camera = None
            log.info("virtual camera closed: %s", self.device)


def _device_problem(device: str, cfg: SinkConfig, sysfs_root: Path, dev_root: Path) -> tuple[str, str] | None:
    """(what is wrong, what to do) with a v4l2 ``device`` that would not open, or None.
    A device found by its label is a loopback device the kernel lists; ``sink.device``
    may name one that is not there, or a webcam."""
    node = v4l2.node_problem(device, cfg.name)
    if not cfg.device:
        return node
    listed = v4l2.find_device_by_path(device, sysfs_root, dev_root)
    if listed is not None and not listed.is_loopback:
        return v4l2.not_loopback_problem(device, listed, cfg.name)
    if listed is not None or node is None:  # (a node /sys does not list: /sys hidden, as in containers)
        return node
    found = v4l2.find_device_by_label(cfg.name, sysfs_root, dev_root)
    if found is not None and found.is_loopback:
        fix = f"set sink.device: null to use {found.path} (labelled {cfg.name!r})"
    else:
        load = v4l2.load_line(cfg.name, v4l2.module_loaded(sysfs_root))
        fix = f"set sink.device: null to use the device labelled {cfg.name!r}, made with: {load}"
    what = "is not a video device the kernel lists" if os.path.lexists(device) else "does not exist"
    return f"sink.device {device} {what}", fix


def _fix_hint(system: str) -> str:
    if system == "Linux":
        # The device was found (a missing one fails earlier, with the modprobe
        # line), so loading the module is not the fix here.
        return ("Check that your user may write to the device (usually: be in the 'video' group) "
                "and that no other program is sending to it; run 'emojicam doctor' for details")
    if system == "Windows":
        return (
            "Install Unity Capture and register a device named EmojiCam, or install OBS Studio and "
            "start its virtual camera once"
        )
    return "Install OBS Studio (30 or newer) and start its virtual camera once"


def create_sink(cfg: SinkConfig, size_wh: tuple[int, int], **kw: object) -> Sink:
    """The sink for ``cfg.kind``; unopened."""
    if cfg.kind == "null":
        return NullSink(cfg.fps)
    if cfg.kind == "preview":
        return PreviewSink(cfg.fps)
    return VirtualCameraSink(cfg, size_wh, **kw)  # type: ignore[arg-type]
