"""Face detectors and the factory that picks one from the config.

``HaarDetector`` uses OpenCV's bundled frontal-face cascade. It needs no
model download, so it is always available, but it is slow and misses turned
faces; ``emojicam.blazeface`` is the preferred backend when its model is
installed (``emojicam models install``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np

from emojicam.config import DetectorConfig
from emojicam.errors import SetupError
from emojicam.pipeline import Detector
from emojicam.preprocess import HAAR_CROP_MARGINS, CropMargins, to_gray
from emojicam.types import FaceBox, boxes_in_frame

log = logging.getLogger(__name__)


def downscale_for_detection(image: np.ndarray, max_side_px: int) -> tuple[np.ndarray, float]:
    """Return a copy no larger than ``max_side_px`` per side and the factor
    that maps its coordinates back to the original (``full = small * factor``)."""
    h, w = image.shape[:2]
    scale = min(1.0, max_side_px / max(h, w))
    if scale >= 1.0:
        return image, 1.0
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA)
    return small, w / small.shape[1]


@dataclass
class HaarDetector:
    """OpenCV Haar cascade on a downscaled grayscale copy."""

    fer_crop_margins: ClassVar[CropMargins] = HAAR_CROP_MARGINS
    #: Shown by the tray and ``ctl status`` while this detector runs.
    privacy_warning: ClassVar[str] = (
        "Haar face detector: turned faces may show (see 'emojicam doctor')"
    )

    cascade: cv2.CascadeClassifier
    max_side_px: int = 480
    min_face_px: int = 32

    @classmethod
    def create(cls, cfg: DetectorConfig, cascade_path: Path | None = None) -> HaarDetector:
        cascades = Path(cv2.data.haarcascades)  # type: ignore[attr-defined]
        path = cascade_path or cascades / "haarcascade_frontalface_default.xml"
        cascade = cv2.CascadeClassifier(str(path))
        if cascade.empty():
            raise SetupError(
                f"{path}: OpenCV's Haar cascade could not be loaded; reinstall "
                "'opencv-python<5' (5.x wheels ship no cascades)"
            )
        return cls(cascade, cfg.max_side_px, cfg.min_face_px)

    def detect(self, image_bgr: np.ndarray) -> list[FaceBox]:
        if image_bgr.size == 0:
            return []
        small, factor = downscale_for_detection(to_gray(image_bgr), self.max_side_px)
        small = cv2.equalizeHist(small)
        min_px = max(12, int(self.min_face_px / factor))
        found = self.cascade.detectMultiScale(
            small, scaleFactor=1.1, minNeighbors=5, minSize=(min_px, min_px)
        )
        boxes = [
            FaceBox(int(round(x * factor)), int(round(y * factor)),
                    int(round(w * factor)), int(round(h * factor)), 1.0)
            for (x, y, w, h) in (found if len(found) else [])
        ]
        # Scaled back and rounded, a box at the copy's edge can end a pixel past the frame's.
        return boxes_in_frame(boxes, (image_bgr.shape[1], image_bgr.shape[0]))


def crop_margins_for(detector: object) -> CropMargins:
    """How to turn this detector's boxes into FER-2013-framed crops."""
    margins = getattr(detector, "fer_crop_margins", HAAR_CROP_MARGINS)
    return margins if isinstance(margins, CropMargins) else HAAR_CROP_MARGINS


def privacy_warning(detector: object) -> str | None:
    """What the user must know about this detector's misses, or None."""
    warning = getattr(detector, "privacy_warning", None)
    return warning if isinstance(warning, str) else None


def create_detector(cfg: DetectorConfig) -> Detector:
    """The configured detector. ``auto`` prefers BlazeFace and falls back to
    Haar with one warning when its model is not installed."""
    if cfg.backend in ("auto", "blazeface"):
        try:
            from emojicam.blazeface import BlazeFaceDetector

            return BlazeFaceDetector.create(cfg, use_full_range=cfg.full_range, threads=cfg.threads)
        except (ImportError, SetupError) as exc:
            if cfg.backend == "blazeface":
                raise SetupError(str(exc)) from exc
            log.warning("%s; using the slower Haar detector instead", exc)
    return HaarDetector.create(cfg)
