"""Frame sources: a webcam (index or device path) or a looping video file,
read by a capture thread that keeps only the newest frame.

A camera that is missing, busy or unplugged never stops the daemon: the
capture thread reports ``CameraState.UNAVAILABLE`` with the reason, retries
with a doubling backoff and resumes by itself. The engine shows
``placeholder_image`` meanwhile, so a video call never freezes on the last
face it saw.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import cv2
import numpy as np

from emojicam.config import CameraConfig
from emojicam.errors import EmojiCamError
from emojicam.pipeline import as_bgr
from emojicam.types import Frame

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Frame rates a video file's header may plausibly claim. Outside it (0, NaN,
#: or the 1000 fps OpenCV reports for a variable-rate WebM from a browser)
#: the rate is unknown, and a fallback is used.
PLAUSIBLE_FPS = (1.0, 240.0)


def plausible_fps(fps: float, fallback: float) -> float:
    """``fps`` when it lies in ``PLAUSIBLE_FPS``, else ``fallback``."""
    return fps if PLAUSIBLE_FPS[0] <= fps <= PLAUSIBLE_FPS[1] else fallback


Clock = Callable[[], float]


class SourceError(EmojiCamError):
    """The camera or video file cannot be opened."""


class Source(Protocol):
    description: str

    def open(self) -> None:
        """Open the device or file; raise ``SourceError`` saying why not."""
        ...

    def read(self) -> np.ndarray | None:
        """The next BGR image, or None when the source stopped delivering."""
        ...

    def close(self) -> None: ...


# ---------------------------------------------------------------- helpers


def parse_source(value: int | str) -> int | str:
    """``"0"`` -> 0 (a webcam index); anything else stays a path, with ``~``
    expanded (config.yaml does not expand it as a shell does)."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return os.path.expanduser(value) if isinstance(value, str) else value


def missing_file(spec: int | str) -> str | None:
    """What is wrong with a video-file ``spec`` that is not a file to read
    ("no such video file", or a folder), else None (also for a camera)."""
    if is_camera(spec) or Path(str(spec)).is_file():
        return None
    return "is a folder, not a video file" if Path(str(spec)).is_dir() else "no such video file"


def is_camera(spec: int | str) -> bool:
    if isinstance(spec, int):
        return True
    if spec.startswith("/dev/"):
        return True
    try:
        return stat.S_ISCHR(os.stat(spec).st_mode)
    except OSError:
        return False


def to_bgr(image: np.ndarray | None) -> np.ndarray | None:
    """Normalise what a capture returns to 3-channel uint8 BGR, exactly as the
    pipeline reads a frame (``pipeline.as_bgr``: gray and BGRA converted, a
    float frame taken as 0..1 or 0..255, a 16-bit one by its high byte); None
    if empty or not an image the pipeline can read."""
    return None if image is None else as_bgr(image)


class Pacer:
    """Waits until the next frame is due at ``fps``; never bursts to catch up
    (when late by more than a frame the schedule restarts from now)."""

    def __init__(
        self, fps: float, clock: Clock = time.monotonic, sleep: Callable[[float], object] = time.sleep
    ) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.period_s = 1.0 / fps
        self._clock = clock
        self._sleep = sleep
        self._next_s: float | None = None

    def wait(self) -> float:
        """Sleep until the next slot; return the seconds slept."""
        now = self._clock()
        if self._next_s is None or now - self._next_s > self.period_s:
            self._next_s = now + self.period_s
            return 0.0
        delay = self._next_s - now
        self._next_s += self.period_s
        if delay > 0:
            self._sleep(delay)
            return delay
        return 0.0


@lru_cache(maxsize=8)
def _font(size_px: int):  # noqa: ANN202 - PIL font type
    from PIL import ImageFont

    try:  # DejaVu has the em dash; Pillow's built-in font does not
        return ImageFont.truetype("DejaVuSans.ttf", size_px), True
    except OSError:
        return ImageFont.load_default(size=size_px), False


def placeholder_image(
    size_wh: tuple[int, int], lines: list[str] | str, background_bgr: tuple[int, int, int] = (48, 40, 40)
) -> np.ndarray:
    """A flat frame with centred text, e.g. "camera unavailable — retrying"."""
    from PIL import Image, ImageDraw

    w, h = size_wh
    texts = [lines] if isinstance(lines, str) else list(lines)
    font, has_dash = _font(max(10, min(w // 24, h // 12)))
    if not has_dash:
        texts = [t.replace("—", "-") for t in texts]
    image = Image.new("RGB", (w, h), background_bgr[::-1])
    draw = ImageDraw.Draw(image)
    boxes = [draw.textbbox((0, 0), t, font=font) for t in texts]
    line_h = max((b[3] - b[1] for b in boxes), default=0) * 1.5
    y = (h - line_h * len(texts)) / 2
    for text, box in zip(texts, boxes, strict=True):
        draw.text(((w - (box[2] - box[0])) / 2, y), text, font=font, fill=(235, 235, 235))
        y += line_h
    return np.ascontiguousarray(np.asarray(image)[:, :, ::-1])


@lru_cache(maxsize=32)
def cached_placeholder(size_wh: tuple[int, int], lines: tuple[str, ...]) -> np.ndarray:
    """``placeholder_image``, rendered once per size and text (read-only)."""
    image = placeholder_image(size_wh, [t for t in lines if t])
    image.flags.writeable = False
    return image


# ---------------------------------------------------------------- OpenCV source


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """OpenCV prints its own warnings for every failed open (each retry)."""
    logging_api = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging_api is None or log.isEnabledFor(logging.DEBUG):
        yield
        return
    old = logging_api.getLogLevel()
    logging_api.setLogLevel(logging_api.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging_api.setLogLevel(old)


class OpenCVSource:
    """A webcam by index or device path, or a video file played in a loop at
    its own frame rate. Construct, then ``open()``."""

    def __init__(
        self,
        spec: int | str,
        cfg: CameraConfig | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.spec = parse_source(spec)
        self.cfg = cfg or CameraConfig()
        self.is_file = not is_camera(self.spec)
        self.description = f"video file {self.spec}" if self.is_file else f"camera {self.spec}"
        self._clock = clock
        self._sleep = sleep
        self._cap: cv2.VideoCapture | None = None
        self._pacer: Pacer | None = None
        self._still_bgr: np.ndarray | None = None  # a photo as the source

    def open(self) -> None:
        problem = missing_file(self.spec)
        if problem:
            raise SourceError(f"{self.spec}: {problem}")
        with _quiet_opencv():  # a missing camera is expected here; we log our own message
            cap = cv2.VideoCapture(self.spec)
        if self.is_file and cap.isOpened():
            # Opening is not decoding: a file whose frames are damaged opens too.
            decodes, first = cap.read()
            if decodes and not cap.read()[0]:  # one frame: a photo, which FFmpeg cannot rewind
                self._still_bgr = to_bgr(first)
            cap.release()  # opened again rather than rewound: a photo cannot seek
            cap = cv2.VideoCapture(self.spec) if decodes else cap
        if not cap.isOpened():
            cap.release()
            what = "cannot be decoded" if self.is_file else "is missing or busy (another app may be using it)"
            raise SourceError(f"{self.description} {what}")
        if self.is_file:
            fps = plausible_fps(cap.get(cv2.CAP_PROP_FPS), self.cfg.fps)
            self._pacer = Pacer(fps, self._clock, self._sleep)
        else:
            if self.cfg.mjpg:  # before the size: many cameras need MJPG for 720p30
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*"MJPG"))
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.cfg.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.cfg.height)
            cap.set(cv2.CAP_PROP_FPS, self.cfg.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self._cap = cap
        log.info("opened %s", self.description)

    def read(self) -> np.ndarray | None:
        cap = self._cap
        if cap is None:
            return None
        if self._pacer is not None:
            self._pacer.wait()
        if self._still_bgr is not None:  # shown again, not decoded again
            return self._still_bgr.copy()
        ok, image = cap.read()
        if not ok and self.is_file:  # end of the file: loop
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = cap.read()
        return to_bgr(image) if ok else None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
            log.info("released %s", self.description)


# ---------------------------------------------------------------- latest-frame slot


class LatestSlot(Generic[T]):
    """A one-item mailbox: ``put`` replaces whatever is there (the oldest is
    dropped), readers wait for something newer than what they last saw."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._seq = 0
        self._item: T | None = None

    def put(self, item: T) -> int:
        with self._cond:
            self._seq += 1
            self._item = item
            self._cond.notify_all()
            return self._seq

    def latest(self) -> tuple[int, T | None]:
        with self._cond:
            return self._seq, self._item

    def wait_newer(self, after_seq: int, timeout_s: float) -> tuple[int, T] | None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._seq > after_seq and self._item is not None, timeout_s):
                return None
            assert self._item is not None
            return self._seq, self._item

    def clear(self) -> None:
        with self._cond:
            self._item = None


# ---------------------------------------------------------------- capture thread


class CameraState(enum.Enum):
    OPENING = "opening"
    OK = "ok"
    UNAVAILABLE = "unavailable"
    RELEASED = "released"


class CaptureThread:
    """Reads a source in its own thread into a ``LatestSlot``; reopens it with
    backoff when it fails. ``open_source`` builds a fresh, unopened source."""

    MAX_FAILED_READS = 5  # consecutive failed reads before the source counts as lost
    HEALTHY_FRAMES = 30  # frames in one go before a reopened camera counts as working again

    def __init__(
        self,
        open_source: Callable[[], Source],
        slot: LatestSlot[Frame],
        *,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 5.0,
        clock: Clock = time.monotonic,
        on_state: Callable[[CameraState, str], None] | None = None,
    ) -> None:
        self._open_source = open_source
        self._slot = slot
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = max(retry_max_s, retry_initial_s)
        self._clock = clock
        self._on_state = on_state
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._source: Source | None = None
        self.state = CameraState.RELEASED
        self.detail = ""
        self.frames_read = 0

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="emojicam-capture", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 1.5) -> bool:
        """Stop and release the source; False if the thread is stuck in a
        driver call (it is a daemon thread, process exit still frees it)."""
        self._stop.set()
        if self._thread is None:
            return True
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _set_state(self, state: CameraState, detail: str = "") -> None:
        if (state, detail) == (self.state, self.detail):
            return
        self.state, self.detail = state, detail
        level = logging.WARNING if state is CameraState.UNAVAILABLE else logging.INFO
        log.log(level, "camera %s%s", state.value, f": {detail}" if detail else "")
        if self._on_state is not None:
            self._on_state(state, detail)

    def _run(self) -> None:
        delay_s = self._retry_initial_s
        try:
            while not self._stop.is_set():
                if self.state is CameraState.RELEASED:
                    self._set_state(CameraState.OPENING)
                try:
                    source = self._open_source()  # building it too: a bad backend is "not now"
                    source.open()
                except Exception as exc:  # noqa: BLE001 - any driver error means "not now"
                    self._set_state(CameraState.UNAVAILABLE, str(exc) or type(exc).__name__)
                    log.debug("retrying the camera in %.1f s", delay_s)
                    self._stop.wait(delay_s)
                    delay_s = min(2 * delay_s, self._retry_max_s)
                    continue
                self._source = source
                try:
                    # Back to quick retries only after a real stretch of frames: a flaky camera
                    # that gives one frame per open is retried ever more slowly too.
                    got = self._pump(source)
                    if got >= self.HEALTHY_FRAMES:
                        delay_s = self._retry_initial_s
                finally:
                    self._source = None
                    try:
                        source.close()
                    except Exception as exc:  # noqa: BLE001 - releasing a pulled-out camera may raise
                        log.debug("closing %s failed: %s", source.description, exc)
                if not self._stop.is_set():
                    self._set_state(
                        CameraState.UNAVAILABLE,
                        f"{source.description} stopped delivering frames (unplugged?)" if got
                        # some drivers (Windows MSMF) open a camera that another app holds
                        else f"{source.description} opens but sends no picture (another app may be using it)",
                    )
                    log.debug("retrying the camera in %.1f s", delay_s)
                    self._stop.wait(delay_s)
                    delay_s = min(2 * delay_s, self._retry_max_s)
        finally:
            self._set_state(CameraState.RELEASED)

    def _pump(self, source: Source) -> int:
        """Read until the source fails or we are stopped; returns the frames it gave."""
        failed = 0
        got = 0
        while not self._stop.is_set():
            try:
                image = to_bgr(source.read())
            except Exception as exc:  # noqa: BLE001
                log.debug("read failed: %s", exc)
                image = None
            if image is None:
                failed += 1
                if failed >= self.MAX_FAILED_READS:
                    return got
                self._stop.wait(0.02)
                continue
            failed = 0
            if self._stop.is_set():  # stopped while the driver call blocked: hand nothing on
                break
            if not got:
                self._set_state(CameraState.OK)
            got += 1
            self._slot.put(Frame(image, self.frames_read, self._clock()))
            self.frames_read += 1
        return got
