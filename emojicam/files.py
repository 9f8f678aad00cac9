"""File-to-file processing: ``emojicam process`` on a video or an image."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from emojicam.errors import InputError
from emojicam.pipeline import Pipeline
from emojicam.sources import plausible_fps
from emojicam.types import FaceResult, Frame

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".webp", ".tif", ".tiff",
                  ".pbm", ".pgm", ".ppm", ".pnm"}
#: Frame rate taken for a video whose header gives none (or an implausible one).
DEFAULT_FPS = 30.0
_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _decode_file(path: Path, flags: int) -> np.ndarray | None:
    """``cv2.imread``, for any path: on Windows OpenCV opens files by their
    ANSI name and cannot read one whose path has other characters (a user
    folder such as ``C:\\Users\\José``); Python reads the bytes instead.
    None when the bytes are not an image OpenCV decodes."""
    data = np.fromfile(path, np.uint8)
    if data.size == 0:
        return None  # imdecode asserts on an empty buffer
    image: np.ndarray | None = cv2.imdecode(data, flags)
    return image


def read_image(path: Path) -> np.ndarray:
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an image")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        image = _decode_file(path, cv2.IMREAD_COLOR)
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    transparent = _pillow_check(path)  # first: imdecode gives up on a cut JPEG (imread filled it in grey)
    if image is None:
        raise InputError(f"{path}: not a readable image (PNG, JPEG, BMP, WebP or TIFF)")
    return _onto_white(path, image) if transparent else image


def _pillow_check(path: Path) -> bool:
    """Refuse a cut file: OpenCV decodes a cut JPEG as far as it goes and fills
    the rest with grey (a 'processed' photo that is mostly grey); Pillow says
    the file is cut. Returns whether Pillow says the image may have
    transparency (an alpha channel or a transparent palette colour)."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                return im.has_transparency_data
    except (UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return False  # a format Pillow does not read, or a photo over its size guard; OpenCV's reading stands
    except OSError as exc:
        if "truncated" in str(exc):
            raise InputError(f"{path}: the image is cut short or damaged ({exc})") from exc
        return False


def _onto_white(path: Path, image_bgr: np.ndarray) -> np.ndarray:
    """An image with transparent parts, composited onto white. OpenCV's colour
    reading (``image_bgr``: EXIF rotation applied, 16-bit scaled) drops the
    alpha channel and shows whatever colour the transparent pixels hold (often
    black); the output keeps no transparency (the emoji art is drawn onto
    opaque pixels), so the user is told. The alpha comes from Pillow, turned by
    the same EXIF orientation."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            alpha = np.asarray(ImageOps.exif_transpose(im).convert("RGBA").getchannel("A"))
    except (OSError, ValueError):
        return image_bgr
    if alpha.shape != image_bgr.shape[:2] or alpha.min() == 255:
        return image_bgr  # nothing transparent (or a shape OpenCV and Pillow disagree on)
    log.warning("%s: has transparent parts; EmojiCam keeps no transparency, so they are made white",
                path)
    a = alpha[..., None].astype(np.float32) / 255.0
    return np.rint(image_bgr.astype(np.float32) * a + 255.0 * (1.0 - a)).astype(np.uint8)


@dataclass(frozen=True)
class VideoInfo:
    frame_count: int
    fps: float
    size_wh: tuple[int, int]


def open_video(path: Path) -> tuple[cv2.VideoCapture, VideoInfo]:
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    cap = cv2.VideoCapture(str(path))
    ok, first = cap.read() if cap.isOpened() else (False, None)
    if not ok or first is None:
        cap.release()
        raise InputError(f"{path}: not a readable video (OpenCV could not decode a frame)")
    cap.release()  # opened again rather than rewound: an image source cannot seek
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    # Frame times (smoothing, how long a lost face is held) and the output's rate come
    # from it: a claimed 1000 fps would freeze both and play the output 33 times too fast.
    info = VideoInfo(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), plausible_fps(fps, DEFAULT_FPS),
                     (first.shape[1], first.shape[0]))
    if info.fps != fps:
        log.warning("%s: its frame rate (%s fps) is missing or implausible; taking %g fps", path,
                    f"{fps:g}", DEFAULT_FPS)
    return cap, info


def video_frames(cap: cv2.VideoCapture, fps: float) -> Iterator[Frame]:
    index = 0
    while True:
        ok, image = cap.read()
        if not ok:
            return
        yield Frame(image, index, index / fps)
        index += 1


def check_output(src: Path, dst: Path) -> None:
    """Refuse an output that would lose something: the input itself under any
    name (a hard link, another letter case on a case-insensitive disk) or a folder."""
    if dst.is_dir():
        raise InputError(f"{dst}: is a folder; give a file name for the output")
    if dst.exists() and src.exists() and os.path.samefile(src, dst):
        raise InputError(f"{dst}: this is the input; write the output to another file")


def _part_file(dst: Path) -> Path:
    """Where ``dst`` is written before it is moved onto ``dst`` (same extension:
    same format)."""
    return dst.with_name(f".{dst.stem}.emojicam-part{dst.suffix}")


def _move_into_place(part: Path, dst: Path) -> None:
    try:
        os.replace(part, dst)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise InputError(f"{dst}: cannot write it ({exc.strerror}); nothing was changed") from exc


def process_image(pipeline: Pipeline, src: Path, dst: Path) -> list[FaceResult]:
    """Process one image. Written beside ``dst`` first and moved onto it when
    complete, so a failed run leaves ``dst`` as it was."""
    check_output(src, dst)
    image, results = pipeline.process(Frame(read_image(src)))
    part = _part_file(dst)
    # encoded here and written by Python, not cv2.imwrite: see _decode_file
    try:
        ok, data = cv2.imencode(dst.suffix, image)
    except cv2.error:  # an extension OpenCV has no writer for
        ok = False
    if ok:
        try:
            data.tofile(part)
        except OSError:
            ok = False
    if not ok or _decode_file(part, cv2.IMREAD_UNCHANGED) is None:  # e.g. the disk is full
        part.unlink(missing_ok=True)
        raise InputError(f"{dst}: cannot write an image here (check the folder, the extension and "
                         "free space)")
    _move_into_place(part, dst)
    return results


def _is_complete_video(path: Path, frames: int) -> bool:
    """Whether ``path`` opens as a video whose last frame (``frames - 1``)
    decodes (``VideoWriter`` does not report failed writes, e.g. a full disk)."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return False
        cap.set(cv2.CAP_PROP_POS_FRAMES, max(0, frames - 1))
        ok, _ = cap.read()
        return bool(ok)
    finally:
        cap.release()


def process_video(pipeline: Pipeline, src: Path, dst: Path, progress: bool = True) -> int:
    """Process every frame; returns the number of frames written. Raises
    ``InputError`` when ``dst`` is ``src`` under any name (a hard link, another
    letter case on a case-insensitive disk) or when no frame could be read.

    The video is written to a temporary file beside ``dst`` and moved onto it
    only when complete: an interrupted or failed run leaves ``dst`` as it was."""
    check_output(src, dst)
    cap, info = open_video(src)
    fourcc = _FOURCC.get(dst.suffix.lower())
    if fourcc is None:
        cap.release()
        raise InputError(f"{dst}: unsupported video extension; use one of {', '.join(sorted(_FOURCC))}")
    part = _part_file(dst)
    writer = cv2.VideoWriter(str(part), cv2.VideoWriter.fourcc(*fourcc), info.fps, info.size_wh)
    if not writer.isOpened():
        cap.release()
        raise InputError(f"{dst}: cannot write a video here (check the folder exists and is writable)")
    written = 0
    done = False
    try:
        from tqdm import tqdm

        bar = tqdm(total=info.frame_count or None, unit="frame", disable=not progress,
                   desc=src.name, leave=False)
        for frame in video_frames(cap, info.fps):
            image, _ = pipeline.process(frame)
            writer.write(image)
            written += 1
            bar.update(1)
        bar.close()
        done = written > 0
    finally:
        cap.release()
        writer.release()
        if not done:
            part.unlink(missing_ok=True)
    if written == 0:
        raise InputError(f"{src}: no frame could be read, so nothing was written (is the file complete?)")
    if not _is_complete_video(part, written):
        part.unlink(missing_ok=True)
        raise InputError(f"{dst}: the video could not be written whole (is the disk full?); "
                         "nothing was changed")
    _move_into_place(part, dst)
    if written < info.frame_count - max(2, info.frame_count // 50):  # (some containers estimate the count)
        log.warning("%s: only %d of its %d frames could be decoded (is the file complete?); "
                    "%s holds those %d", src, written, info.frame_count, dst, written)
    return written


def no_sound_note(src: Path, dst: Path) -> str:
    """What to tell the user after a video run: ``VideoWriter`` writes the
    picture only. Worded to be true whether ``src`` has sound or not (OpenCV's
    FFmpeg backend reads no audio, so it is not known here), with the ffmpeg
    command that copies any sound in ``src`` into a copy of ``dst`` (the
    picture copied as it is; the sound converted to what the container takes)."""
    with_sound = dst.with_name(f"{dst.stem}-with-sound{dst.suffix}")
    cmd = ["ffmpeg", "-i", str(dst), "-i", str(src), "-map", "0:v", "-map", "1:a?", "-c:v", "copy",
           str(with_sound)]
    line = subprocess.list2cmdline(cmd) if os.name == "nt" else shlex.join(cmd)
    return (f"{dst} has no sound: EmojiCam writes the picture only, and any sound in {src} is not "
            f"copied. To add it from {src} (into {with_sound.name}), run: {line}")
