"""Factories for test inputs. Shared by all test modules: add, do not rename."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np

from emojicam.types import Emotion, EmotionScores, FaceBox, FaceResult, Frame

SHARED = Path(__file__).resolve().parents[2] / "shared"
FER_NPZ = SHARED / "data" / "fer2013.npz"
SELFIE_MP4 = SHARED / "data" / "video" / "selfie_outdoor.mp4"


def make_image(size_wh: tuple[int, int] = (640, 480), value: int = 90, seed: int | None = 0) -> np.ndarray:
    """A BGR uint8 image: flat grey plus mild noise (deterministic)."""
    w, h = size_wh
    image = np.full((h, w, 3), value, np.uint8)
    if seed is not None:
        noise = np.random.default_rng(seed).integers(-10, 10, (h, w, 3))
        image = np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    return image


def make_frame(size_wh: tuple[int, int] = (640, 480), index: int = 0, timestamp_s: float | None = None,
               image_bgr: np.ndarray | None = None) -> Frame:
    image = make_image(size_wh) if image_bgr is None else image_bgr
    return Frame(image, index, index / 30.0 if timestamp_s is None else timestamp_s)


def make_box(x: int = 200, y: int = 120, w: int = 160, h: int = 160, score: float = 0.9,
             eyes: bool = False) -> FaceBox:
    if not eyes:
        return FaceBox(x, y, w, h, score)
    # subject's right eye on the image's left
    return FaceBox(x, y, w, h, score, left_eye_xy=(x + 0.7 * w, y + 0.4 * h),
                   right_eye_xy=(x + 0.3 * w, y + 0.4 * h))


def make_scores(top: Emotion = Emotion.HAPPY, confidence: float = 0.8) -> EmotionScores:
    rest = (1.0 - confidence) / (len(Emotion) - 1)
    return EmotionScores(np.array([confidence if e is top else rest for e in Emotion], np.float32))


def make_result(box: FaceBox | None = None, emotion: Emotion = Emotion.HAPPY, track_id: int = 1,
                confidence: float = 0.8, missed_frames: int = 0) -> FaceResult:
    scores = make_scores(emotion, confidence)
    return FaceResult(track_id, box or make_box(), emotion, scores, scores, missed_frames)


def fer_private_sample(n: int = 350, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random sample of FER-2013 PrivateTest (exact pixels only)."""
    with np.load(FER_NPZ) as d:
        mask = (d["usage"] == 2) & (d["pixels_exact"] == 1)
        images, labels = d["images"][mask], d["labels"][mask]
    pick = np.random.default_rng(seed).choice(len(images), n, replace=False)
    return images[pick], labels[pick]


# ---------------------------------------------------------------- emoji / compositing (compose owner)


def make_rolled_box(x: int = 200, y: int = 120, w: int = 160, h: int = 160, roll_deg: float = 20.0,
                    score: float = 0.9) -> FaceBox:
    """A box whose eyes give ``FaceBox.roll_deg == roll_deg`` (clockwise positive)."""
    import math

    cx, cy, half = x + w / 2.0, y + 0.4 * h, 0.2 * w
    dx, dy = half * math.cos(math.radians(roll_deg)), half * math.sin(math.radians(roll_deg))
    return FaceBox(x, y, w, h, score, left_eye_xy=(cx + dx, cy + dy), right_eye_xy=(cx - dx, cy - dy))


def make_scene(size_wh: tuple[int, int] = (320, 240), seed: int = 0) -> np.ndarray:
    """A deterministic textured BGR uint8 scene (gradients, disks, fine noise):
    detail everywhere, so any pixel a compositor touches or leaks shows."""
    import cv2

    w, h = size_wh
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    image = np.dstack([xx / max(w - 1, 1) * 200 + 30, yy / max(h - 1, 1) * 180 + 40,
                       (xx + yy) % 64 * 3]).astype(np.uint8)
    rng = np.random.default_rng(seed)
    for _ in range(6):
        centre = (int(rng.integers(0, max(w, 1))), int(rng.integers(0, max(h, 1))))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.circle(image, centre, int(rng.integers(5, max(6, min(w, h) // 4))), colour, -1, cv2.LINE_AA)
    noise = rng.integers(-12, 13, image.shape)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def make_rgba_art(side_px: int = 64, rgb: tuple[int, int, int] = (250, 60, 60), radius_frac: float = 0.45,
                  hole_frac: float = 0.0, hidden_rgb: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """Straight RGBA uint8 emoji art: an anti-aliased disk of ``rgb``; with
    ``hole_frac > 0`` a transparent hole of that radius in the middle.
    ``hidden_rgb`` is the colour stored under fully transparent pixels."""
    import cv2

    ss, shift = 4, 4  # 4x supersampling; centre given with 4 fractional bits
    alpha = np.zeros((side_px * ss, side_px * ss), np.uint8)
    c = round((side_px * ss - 1) / 2 * 16)
    cv2.circle(alpha, (c, c), round(radius_frac * side_px * ss * 16), 255, -1, cv2.LINE_8, shift)
    if hole_frac > 0:
        cv2.circle(alpha, (c, c), round(hole_frac * side_px * ss * 16), 0, -1, cv2.LINE_8, shift)
    alpha = cv2.resize(alpha, (side_px, side_px), interpolation=cv2.INTER_AREA)
    rgba = np.empty((side_px, side_px, 4), np.uint8)
    rgba[:, :, :3] = rgb
    rgba[alpha == 0, :3] = hidden_rgb
    rgba[:, :, 3] = alpha
    return rgba


def write_png(path: Path, image: np.ndarray, mode: str | None = None) -> Path:
    """Write an RGBA, RGB or grayscale uint8 array as a PNG with Pillow,
    converted to Pillow ``mode`` (e.g. "P", "LA") when given."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(image)
    (im.convert(mode) if mode else im).save(path)
    return path


# ---------------------------------------------------------------- daemon (engine, sinks, v4l2) factories


class FakeDetector:
    """Returns the same boxes for every image (optionally slowly)."""

    def __init__(self, boxes: list[FaceBox] | None = None, delay_s: float = 0.0) -> None:
        self.boxes = [make_box()] if boxes is None else boxes
        self.delay_s = delay_s
        self.calls = 0

    def detect(self, image_bgr: np.ndarray) -> list[FaceBox]:
        import time

        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        return list(self.boxes)


class FakeClassifier:
    """Returns fixed scores (``top`` at ``confidence``) for every box."""

    def __init__(self, top: Emotion = Emotion.HAPPY, confidence: float = 0.9) -> None:
        self.scores = make_scores(top, confidence)

    def classify(self, image_bgr: np.ndarray, boxes) -> list[EmotionScores]:
        return [self.scores for _ in boxes]


def make_fake_pipeline(boxes: list[FaceBox] | None = None, mode: str = "replace", delay_s: float = 0.0,
                       top: Emotion = Emotion.HAPPY):
    """A Pipeline with a fake detector and classifier and the real tracker,
    smoother and compositor (bundled emoji, or drawn placeholders)."""
    from emojicam.compose import EmojiCompositor
    from emojicam.config import EmojiConfig, PrivacyConfig, SmoothingConfig, TrackerConfig
    from emojicam.pipeline import Pipeline
    from emojicam.smooth import HysteresisSmoother
    from emojicam.track import IoUTracker

    return Pipeline(
        detector=FakeDetector(boxes, delay_s),
        tracker=IoUTracker(TrackerConfig()),
        classifier=FakeClassifier(top),
        smoother=HysteresisSmoother(SmoothingConfig()),
        compositor=EmojiCompositor.create(EmojiConfig(), PrivacyConfig()),
        mode=mode,
    )


def write_test_video(path: Path, n_frames: int = 60, size_wh: tuple[int, int] = (320, 240),
                     fps: float = 30.0, value: int = 90) -> Path:
    """A short MJPG .avi of flat grey frames with a frame counter bar at the
    bottom (so consecutive frames differ)."""
    import cv2

    w, h = size_wh
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {path}")
    for i in range(n_frames):
        image = np.full((h, w, 3), value, np.uint8)
        x = int((i % n_frames) / n_frames * (w - 8))
        image[h - 8:h, x:x + 8] = 255
        writer.write(image)
    writer.release()
    return path


def make_sysfs_tree(root: Path, devices: list[tuple[int, str, bool]]) -> Path:
    """A fake ``/sys`` with ``class/video4linux/videoN/name`` for each
    ``(number, card_label, is_loopback)``; real cameras get a ``device`` link
    target (a folder), as on a real system. Returns ``root``."""
    base = root / "class" / "video4linux"
    base.mkdir(parents=True, exist_ok=True)
    for number, label, is_loopback in devices:
        d = base / f"video{number}"
        d.mkdir(exist_ok=True)
        (d / "name").write_text(label + "\n")
        if not is_loopback:
            (d / "device").mkdir(exist_ok=True)
    return root


RECORDER_BACKEND = "emojicam-test-recorder"


class RecordingBackend:
    """A pyvirtualcam backend that records what is sent (register it with
    ``pyvirtualcam.register_backend``). Keeps the last ``keep`` frames."""

    instances: list[RecordingBackend] = []
    keep = 40
    fail_sends = False  # set True to make send() raise (a failing device)

    def __init__(self, *, width: int, height: int, fps: float, fourcc: int, device: str | None, **kw) -> None:
        import time

        self.width, self.height, self.fps, self.fourcc = width, height, fps, fourcc
        self._device = device or "/dev/video-test"
        self.frames: list[np.ndarray] = []
        self.times: list[float] = []
        self.count = 0
        self.closed = False
        self._clock = time.monotonic
        RecordingBackend.instances.append(self)

    def send(self, frame: np.ndarray) -> None:
        if RecordingBackend.fail_sends:
            raise OSError("device write failed (test)")
        self.count += 1
        self.times.append(self._clock())
        self.frames.append(frame.reshape(self.height, self.width, 3).copy())
        del self.frames[:-self.keep]

    def close(self) -> None:
        self.closed = True

    def device(self) -> str:
        return self._device

    def native_fourcc(self) -> int | None:
        return None


class FakeClock:
    """An injectable monotonic clock; ``sleep`` advances it instantly."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self.now_s = start_s
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now_s += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


def write_face_video(path: Path, n_frames: int = 90, size_wh: tuple[int, int] = (640, 480), fps: float = 30.0,
                     face_px: int = 220, rows: tuple[int, ...] = (32305, 32308, 32310)) -> Path:
    """A clip of real faces for live demos (needs FER-2013 beside the repo):
    FER-2013 PrivateTest ``rows`` (by default a happy, a surprised and a sad
    face that the Haar detector finds), upscaled to ``face_px``, drifting
    sideways over a soft gradient, one third of the clip each."""
    import cv2

    with np.load(FER_NPZ) as d:
        faces = [cv2.resize(d["images"][r], (face_px, face_px), interpolation=cv2.INTER_CUBIC) for r in rows]
    w, h = size_wh
    background = np.empty((h, w, 3), np.uint8)
    background[:] = np.linspace(120, 200, w, dtype=np.uint8)[None, :, None]
    background[:, :, 0] = np.linspace(170, 110, h, dtype=np.uint8)[:, None]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {path}")
    for i in range(n_frames):
        image = background.copy()
        face = faces[min(len(faces) - 1, i * len(faces) // n_frames)]
        x = int((w - face_px) / 2 + (w - face_px) / 4 * np.sin(2 * np.pi * i / n_frames))
        y = (h - face_px) // 2
        image[y:y + face_px, x:x + face_px] = face[:, :, None]
        writer.write(image)
    writer.release()
    return path


# ---------------------------------------------------------------- reliability (faults, face leaks, soak)

#: A frame of the selfie clip with one clear, frontal face, and that face's box:
#: hairline to chin, cheek to cheek, read off a 20 px grid drawn on the frame
#: (BlazeFace's box for it is (210, 116, 192, 192)).
SELFIE_FACE_FRAME = 100
SELFIE_FACE_XYWH = (220, 95, 170, 210)


def read_video_frames(path: Path, indices: list[int] | None = None,
                      limit: int | None = None) -> list[np.ndarray]:
    """Decoded BGR frames of a video: those at ``indices`` (in order), or the
    first ``limit`` (all when None)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    wanted = None if indices is None else set(indices)
    frames: dict[int, np.ndarray] = {}
    out: list[np.ndarray] = []
    i = 0
    try:
        while True:
            if limit is not None and len(out) >= limit:
                break
            if wanted is not None and (not wanted or i > max(wanted)):
                break
            ok, image = cap.read()
            if not ok:
                break
            if wanted is None:
                out.append(image)
            elif i in wanted:
                frames[i] = image
            i += 1
    finally:
        cap.release()
    return out if indices is None else [frames[j] for j in indices if j in frames]


def selfie_face_patch(path: Path = SELFIE_MP4, margin_frac: float = 0.45) -> tuple[np.ndarray, FaceBox]:
    """A head-and-shoulders patch around the selfie clip's clear face, and the
    face's box inside the patch (the face region to keep covered)."""
    (image,) = read_video_frames(path, [SELFIE_FACE_FRAME])
    x, y, w, h = SELFIE_FACE_XYWH
    mx, my = round(w * margin_frac), round(h * margin_frac)
    x0, y0 = max(0, x - mx), max(0, y - my)
    x1, y1 = min(image.shape[1], x + w + mx), min(image.shape[0], y + h + my)
    return image[y0:y1, x0:x1].copy(), FaceBox(x - x0, y - y0, w, h)


def paste_face(
    background: np.ndarray,
    patch: np.ndarray,
    face_in_patch: FaceBox,
    center_xy: tuple[float, float],
    face_side_px: float,
    motion_blur_px: int = 0,
) -> tuple[np.ndarray, FaceBox]:
    """Paste ``patch`` scaled so its face is ``face_side_px`` wide, with the
    face centred on ``center_xy`` (it may hang over any edge). With
    ``motion_blur_px`` the patch is smeared horizontally over that many
    pixels, as a camera does with a fast move. Returns the new image and the
    face's box in it (not clipped to the frame)."""
    import cv2

    image = background.copy()
    f = face_side_px / face_in_patch.w
    pw, ph = max(1, round(patch.shape[1] * f)), max(1, round(patch.shape[0] * f))
    scaled = cv2.resize(patch, (pw, ph), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    if motion_blur_px > 1:
        kernel = np.full((1, motion_blur_px), 1.0 / motion_blur_px, np.float32)
        scaled = cv2.filter2D(scaled, -1, kernel, borderType=cv2.BORDER_REPLICATE)
    fx, fy = face_in_patch.x * f, face_in_patch.y * f
    fw, fh = face_in_patch.w * f, face_in_patch.h * f
    x0, y0 = round(center_xy[0] - fw / 2 - fx), round(center_xy[1] - fh / 2 - fy)
    h_img, w_img = image.shape[:2]
    ix0, iy0, ix1, iy1 = max(0, x0), max(0, y0), min(w_img, x0 + pw), min(h_img, y0 + ph)
    if ix1 > ix0 and iy1 > iy0:
        image[iy0:iy1, ix0:ix1] = scaled[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]
    box = FaceBox(round(x0 + fx), round(y0 + fy), max(1, round(fw)), max(1, round(fh)))
    return image, box


def end_process(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """Stop a helper process (Xvfb, a tray host) for good: SIGTERM, then SIGKILL
    if it has not exited within ``timeout_s`` (a loaded machine can be slow to
    deliver the first, and a teardown that raises turns a passing test into an error)."""
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def open_fd_count() -> int:
    """File descriptors this process has open (Linux /proc; -1 elsewhere)."""
    import os

    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


def rss_bytes() -> int:
    """Resident memory of this process (Linux /proc; -1 elsewhere)."""
    import os

    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return -1


def share_in_view(box: FaceBox, size_wh: tuple[int, int]) -> float:
    """The share of ``box``'s area inside a frame of ``size_wh`` (0 when none)."""
    c = box.clipped(size_wh)
    return 0.0 if c is None else c.w * c.h / max(1, box.w * box.h)


def blazeface_installed(full_range: bool = True) -> bool:
    """Whether ``emojicam models install`` has put the BlazeFace models in place
    (verified files; the full-range one too unless ``full_range`` is False).
    Without them ``auto`` runs Haar, which promises less (RELIABILITY finding 6)."""
    from emojicam.blazeface import find_blazeface_model, find_full_range_model

    return find_blazeface_model() is not None and (not full_range or find_full_range_model() is not None)


# ---------------------------------------------------------------- models install / blazeface / bench


def make_fake_wheel(path: Path, members: dict[str, bytes]) -> Path:
    """A zip file (a wheel is one) holding ``members`` (name -> bytes)."""
    import zipfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def read_selfie_frames(indices: list[int]) -> dict[int, np.ndarray]:
    """The selfie clip's frames at ``indices`` (upright 640x480 BGR), read in one pass."""
    import cv2

    wanted, out = set(indices), {}
    cap = cv2.VideoCapture(str(SELFIE_MP4))
    index = 0
    while len(out) < len(wanted):
        ok, image = cap.read()
        if not ok:
            break
        if index in wanted:
            out[index] = image
        index += 1
    cap.release()
    return out


def network_sockets(pid: int | str = "self") -> list[str]:
    """This process's TCP/UDP sockets (v4 and v6), from /proc."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    found = []
    for table in ("tcp", "tcp6", "udp", "udp6", "raw", "raw6"):
        try:
            rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        found += [f"{table}:{row.split()[9]}" for row in rows if row.split()[9] in inodes]
    return found


def daemon_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Environment for a daemon subprocess whose folders all live in ``tmp_path``
    (runtime dir 0700, state, config) and that sees no display unless given one."""
    run = tmp_path / "run"
    run.mkdir(mode=0o700, exist_ok=True)
    env = dict(os.environ)
    env.update(
        XDG_RUNTIME_DIR=str(run),
        XDG_STATE_HOME=str(tmp_path / "state"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
    )
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    env.update(extra)
    return env


def wait_for(predicate, timeout_s: float = 4.0, poll_s: float = 0.02) -> float:
    """Seconds until ``predicate()`` held; fails the test on timeout."""
    import time

    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(poll_s)
    return time.monotonic() - t0
