"""Small typed data objects every pipeline stage speaks.

Coordinates are full-resolution pixels of the frame they came from; boxes are
``(x, y, w, h)`` with ``x, y`` the top-left corner. Images are BGR uint8
(OpenCV order) unless a name says otherwise.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


class Emotion(enum.Enum):
    """FER-2013 classes. The order is the model's output order; the labels
    file beside the model is checked against it at load."""

    ANGRY = "angry"
    DISGUST = "disgust"
    FEAR = "fear"
    HAPPY = "happy"
    SAD = "sad"
    SURPRISE = "surprise"
    NEUTRAL = "neutral"

    @classmethod
    def ordered(cls) -> tuple[Emotion, ...]:
        return tuple(cls)

    @property
    def index(self) -> int:
        return list(Emotion).index(self)


NUM_EMOTIONS = len(Emotion)


@dataclass(frozen=True)
class Frame:
    """One camera or video frame."""

    image_bgr: np.ndarray
    index: int = 0
    timestamp_s: float = 0.0

    @property
    def size_wh(self) -> tuple[int, int]:
        return int(self.image_bgr.shape[1]), int(self.image_bgr.shape[0])


@dataclass(frozen=True)
class FaceBox:
    """A detected face. ``left_eye_xy``/``right_eye_xy`` are the subject's
    eyes (left eye on the image's right) when the detector provides them.
    ``detected_xywh``: the detector's box before ``clipped`` cut it to the
    frame (None when not cut), so that the classifier can frame a face the
    frame's edge cuts as FER-2013 frames faces (``classifier_xywh``)."""

    x: int
    y: int
    w: int
    h: int
    score: float = 1.0
    left_eye_xy: tuple[float, float] | None = None
    right_eye_xy: tuple[float, float] | None = None
    detected_xywh: tuple[int, int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.w < 0 or self.h < 0:
            raise ValueError(f"FaceBox width and height must be >= 0, got {self.w}x{self.h}")

    @property
    def xywh(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.w, self.h

    @property
    def classifier_xywh(self) -> tuple[int, int, int, int]:
        """The box to frame the classifier's crop around: the whole face as
        detected, also where the frame cuts it (a clipped box, squeezed into
        48x48, would stretch the face)."""
        return self.detected_xywh or self.xywh

    @property
    def center_xy(self) -> tuple[float, float]:
        return self.x + self.w / 2.0, self.y + self.h / 2.0

    @property
    def area(self) -> int:
        return self.w * self.h

    @property
    def roll_deg(self) -> float:
        """Head roll from the eye line, 0 when eyes are unknown. Positive
        means the face is rotated clockwise in the image."""
        if self.left_eye_xy is None or self.right_eye_xy is None:
            return 0.0
        (rx, ry), (lx, ly) = self.right_eye_xy, self.left_eye_xy
        return math.degrees(math.atan2(ly - ry, lx - rx))

    def iou(self, other: FaceBox) -> float:
        x0, y0 = max(self.x, other.x), max(self.y, other.y)
        x1 = min(self.x + self.w, other.x + other.w)
        y1 = min(self.y + self.h, other.y + other.h)
        inter = max(0, x1 - x0) * max(0, y1 - y0)
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def scaled(self, sx: float, sy: float) -> FaceBox:
        """This box in an image scaled by (sx, sy), rounded outwards."""
        x0, y0 = math.floor(self.x * sx), math.floor(self.y * sy)
        x1, y1 = math.ceil((self.x + self.w) * sx), math.ceil((self.y + self.h) * sy)

        def eye(xy: tuple[float, float] | None) -> tuple[float, float] | None:
            return None if xy is None else (xy[0] * sx, xy[1] * sy)

        return FaceBox(x0, y0, x1 - x0, y1 - y0, self.score, eye(self.left_eye_xy), eye(self.right_eye_xy))

    def mirrored(self, width: int) -> FaceBox:
        """This box in the image flipped left to right (``width`` px wide). The
        eye labels swap, as a detector would label the flipped picture (the
        "left" eye on the image's right), so a rolled emoji tilts the other way."""

        def eye(xy: tuple[float, float] | None) -> tuple[float, float] | None:
            return None if xy is None else (width - xy[0], xy[1])

        return FaceBox(width - self.x - self.w, self.y, self.w, self.h, self.score,
                       eye(self.right_eye_xy), eye(self.left_eye_xy))

    def clipped(self, size_wh: tuple[int, int]) -> FaceBox | None:
        """This box clipped to an image, or None if nothing is left."""
        w_img, h_img = size_wh
        x0, y0 = max(0, self.x), max(0, self.y)
        x1, y1 = min(w_img, self.x + self.w), min(h_img, self.y + self.h)
        if x1 <= x0 or y1 <= y0:
            return None
        if (x0, y0, x1 - x0, y1 - y0) == self.xywh:
            return self
        return FaceBox(x0, y0, x1 - x0, y1 - y0, self.score, self.left_eye_xy, self.right_eye_xy,
                       self.classifier_xywh)


def boxes_in_frame(boxes: Iterable[FaceBox], size_wh: tuple[int, int]) -> list[FaceBox]:
    """Boxes as every detector returns them: clipped to the frame by
    ``FaceBox.clipped`` (which keeps the detector's box for the classifier),
    none wholly outside it, the largest first."""
    clipped = (box.clipped(size_wh) for box in boxes)
    return sorted((box for box in clipped if box is not None), key=lambda box: -box.area)


@dataclass(frozen=True)
class EmotionScores:
    """A probability for each ``Emotion``, in enum order."""

    probs: np.ndarray

    def __post_init__(self) -> None:
        probs = np.asarray(self.probs, dtype=np.float32).reshape(-1)
        if probs.shape != (NUM_EMOTIONS,):
            raise ValueError(f"EmotionScores needs {NUM_EMOTIONS} values, got {probs.shape}")
        if not np.all(np.isfinite(probs)) or np.any(probs < 0):
            raise ValueError(f"EmotionScores must be finite and >= 0, got {probs}")
        object.__setattr__(self, "probs", probs)

    @classmethod
    def uniform(cls) -> EmotionScores:
        return cls(np.full(NUM_EMOTIONS, 1.0 / NUM_EMOTIONS, np.float32))

    @property
    def top(self) -> Emotion:
        return list(Emotion)[int(np.argmax(self.probs))]

    @property
    def confidence(self) -> float:
        return float(np.max(self.probs))

    def __getitem__(self, emotion: Emotion) -> float:
        return float(self.probs[emotion.index])

    def as_dict(self) -> dict[str, float]:
        return {e.value: round(float(p), 4) for e, p in zip(Emotion, self.probs, strict=False)}


@dataclass(frozen=True)
class FaceResult:
    """Everything the pipeline knows about one face in one frame.

    ``box`` is where the face is (or, when ``missed_frames > 0``, where it was
    last seen); ``emotion`` is the smoothed emotion
    the compositor shows; ``raw`` the classifier's output for this frame (None
    when the face was not classified this frame).
    """

    track_id: int
    box: FaceBox
    emotion: Emotion
    smoothed: EmotionScores
    raw: EmotionScores | None = None
    missed_frames: int = 0
