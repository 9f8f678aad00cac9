"""Face crop -> model input. Shared by the runtime and by ``train/``.

The classifier was trained on FER-2013: 48x48 grayscale faces, cropped
tightly from the brow to the chin. The runtime must feed it images made the
same way, so this module is the one place that defines that transformation.
``train/`` imports it; it never imports anything from ``train/``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: Side of the square grayscale image the model takes.
MODEL_INPUT_SIDE = 48
#: ``fer_crop`` gives no crop for a framed box more than this many times the
#: image's longer side: the image would fill under a third (16 px) of the
#: model's input, the rest repeated edge pixels. Without the limit a bogus box
#: of 20,000 px was padded to its full size (1.2 GB) only to be shrunk to 48x48.
MAX_CROP_TO_IMAGE_SIDE = 3

def high_bytes(image: np.ndarray) -> np.ndarray:
    """A 16-bit image as 8 bits: each value's high byte (65535 to 255). Shifted
    straight into a uint8 array: five times faster than ``(x >> 8).astype``,
    which makes a 16-bit copy first (a 1080p frame: 1.7 against 9 ms)."""
    return np.right_shift(image, 8, out=np.empty(image.shape, np.uint8), casting="unsafe")


@dataclass(frozen=True)
class CropMargins:
    """Fractions of a detector box's width/height added on each side to get
    the FER-2013 framing (negative values shrink the box)."""

    left: float = 0.0
    top: float = 0.0
    right: float = 0.0
    bottom: float = 0.0


# Each detector frames a face its own way, and the classifier only works well
# on crops framed like FER-2013's. We measured each detector once on 600 FER-2013
# PublicTest faces (upscaled 4x into a replicated-border canvas) and took the
# median box relative to the FER crop (tests/test_preprocess.py re-checks the
# framing on 120 of them, within 0.05):
#   Haar frontal cascade: x 0.016, y 0.010, side 0.974 (465 faces found)
#     -> the box is the FER crop.
#   BlazeFace short range: x 0.073, y 0.135, side 0.865 (574 faces found)
#     -> grow by 0.084 of the side on the left, 0.156 on top, 0 below; the right
#        measured 0.072, and gets the left's 0.084 to keep the crop symmetric
#        about the face (the classifier averages the crop with its mirror image).
HAAR_CROP_MARGINS = CropMargins()
BLAZEFACE_CROP_MARGINS = CropMargins(left=0.084, top=0.156, right=0.084, bottom=0.0)


def to_gray(image: np.ndarray) -> np.ndarray:
    """Return a 2-D uint8 grayscale image from gray, BGR or BGRA input."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    raise ValueError(f"expected a gray, BGR or BGRA image, got shape {image.shape}")


def crop_box_xywh(
    box_xywh: tuple[int, int, int, int],
    image_size_wh: tuple[int, int],
    margins: CropMargins = HAAR_CROP_MARGINS,
) -> tuple[int, int, int, int]:
    """Expand a detector box to the FER-2013 framing, clipped to the image."""
    x0, y0, x1, y1 = _fer_corners(box_xywh, margins)
    img_w, img_h = image_size_wh
    x0, y0 = max(0, x0), max(0, y0)
    x1, y1 = min(img_w, x1), min(img_h, y1)
    return x0, y0, max(0, x1 - x0), max(0, y1 - y0)


def _fer_corners(box_xywh: tuple[int, int, int, int], margins: CropMargins) -> tuple[int, int, int, int]:
    x, y, w, h = box_xywh
    return (int(round(x - margins.left * w)), int(round(y - margins.top * h)),
            int(round(x + w + margins.right * w)), int(round(y + h + margins.bottom * h)))


def fer_crop(
    image: np.ndarray,
    box_xywh: tuple[int, int, int, int],
    margins: CropMargins = HAAR_CROP_MARGINS,
) -> np.ndarray | None:
    """The FER-2013-framed crop of a detector box; None when none of it is
    in the image, or when the box is far larger than the image
    (``MAX_CROP_TO_IMAGE_SIDE``).

    A face cut by the frame's edge (a forehead above the top of a close
    webcam shot) keeps its framing: the missing part is filled by repeating
    the edge row or column, where clipping would stretch the face when it is
    resized to 48x48. Measured by ``benchmarks/edge_crops.py`` (BlazeFace, the
    shipped model, the first 2,400 FER-2013 PublicTest faces in two runs of 800
    and 1,600), stretched against framed: the face's top cut by 10%, 68.2% and
    68.1%; by 20%, 64.3% and 67.9%; by 30%, 55.4% and 60.7%; its left side by
    20%, 65.5% and 66.4%; its bottom by 15%, 63.1% both; uncut 68.6%.

    The classifier passes the detector's whole box (``FaceBox.classifier_xywh``),
    not the box clipped to the frame, which squeezed the face again. Measured
    the same way in session 15 (runs of 800 and 1,600 faces; whole box against
    clipped box, both framed): top cut by 10%, 68.2% and 68.2% against 68.6%
    and 67.9%; by 20%, 68.1% and 67.6% against 69.1% and 68.4%; by 30%, 63.7%
    and 63.0% against 62.1% and 61.2%; left side by 20%, 68.3% and 68.2%
    against 68.2% and 68.3%; bottom by 15%, 66.2% and 63.6% against 65.9% and
    63.0%. In all, about 28 more right answers among 11,128 cut faces, most
    where the cut is deepest; the 20% top cut lost in both runs.
    """
    img_h, img_w = image.shape[:2]
    x0, y0, x1, y1 = _fer_corners(box_xywh, margins)
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(img_w, x1), min(img_h, y1)
    if cx1 <= cx0 or cy1 <= cy0 or max(x1 - x0, y1 - y0) > MAX_CROP_TO_IMAGE_SIDE * max(img_w, img_h):
        return None
    crop = image[cy0:cy1, cx0:cx1]
    pads = (cy0 - y0, y1 - cy1, cx0 - x0, x1 - cx1)  # top, bottom, left, right
    if any(pads):
        crop = cv2.copyMakeBorder(crop, *pads, cv2.BORDER_REPLICATE)
    return crop


def face_to_model_input(face: np.ndarray) -> np.ndarray:
    """Grayscale + resize one face crop to a (48, 48) uint8 array.

    Values stay in 0..255: scaling to the network's range happens inside the
    model, so the training data (already 48x48 uint8) and runtime crops meet
    here unchanged. A 16-bit crop is first scaled to 8 bits as the pipeline
    scales 16-bit frames (``pipeline.as_bgr``: the high byte).
    """
    if face.dtype == np.uint16:
        face = high_bytes(face)
    gray = to_gray(face)
    if gray.size == 0:
        raise ValueError("empty face crop")
    if gray.shape != (MODEL_INPUT_SIDE, MODEL_INPUT_SIDE):
        interpolation = (
            cv2.INTER_AREA
            if min(gray.shape) >= MODEL_INPUT_SIDE
            else cv2.INTER_LINEAR
        )
        gray = cv2.resize(
            gray, (MODEL_INPUT_SIDE, MODEL_INPUT_SIDE), interpolation=interpolation
        )
    return np.ascontiguousarray(gray, dtype=np.uint8)


def batch_to_model_input(faces: list[np.ndarray]) -> np.ndarray:
    """Stack face crops into the (N, 48, 48, 1) float32 batch the model takes."""
    if not faces:
        return np.zeros((0, MODEL_INPUT_SIDE, MODEL_INPUT_SIDE, 1), np.float32)
    arr = np.stack([face_to_model_input(f) for f in faces]).astype(np.float32)
    return arr[..., None]
