"""The crop that turns a detector box into a FER-2013-framed model input.

The margins in emojicam/preprocess.py were measured by running each detector
on FER-2013 faces; these tests re-measure them so a detector change that
breaks the framing (and so the classifier's accuracy) is caught.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from emojicam.config import DetectorConfig
from emojicam.detect import HaarDetector, crop_margins_for
from emojicam.preprocess import (
    HAAR_CROP_MARGINS,
    CropMargins,
    batch_to_model_input,
    crop_box_xywh,
    face_to_model_input,
    fer_crop,
)
from tests.factories import make_image

UPSCALE, PAD = 4, 96


def test_crop_is_clipped_to_image_and_margins_apply():
    assert crop_box_xywh((10, 10, 100, 100), (640, 480)) == (10, 10, 100, 100)
    assert crop_box_xywh((10, 10, 100, 100), (640, 480), CropMargins(0.1, 0.2, 0.1, 0.0)) == (0, 0, 120, 110)
    assert crop_box_xywh((600, 450, 100, 100), (640, 480)) == (600, 450, 40, 30)


MARGINS = CropMargins(0.1, 0.2, 0.1, 0.0)


def test_a_face_cut_by_the_frame_edge_keeps_its_framing():
    """Cut by an edge, the crop keeps the FER framing (edge rows or columns
    repeated) instead of being stretched to 48x48 later."""
    image = make_image((640, 480))
    box = (200, 150, 100, 100)
    whole = fer_crop(image, box, MARGINS)
    assert whole is not None and whole.shape == (120, 120, 3)
    assert np.array_equal(whole, image[130:250, 190:310])
    cut = 150  # the frame starts at row 150: the forehead margin and nothing else out of view
    top_cut = fer_crop(image[cut:], (200, 0, 100, 100), MARGINS)
    assert top_cut is not None and top_cut.shape == whole.shape
    assert np.array_equal(top_cut[20:], whole[20:])
    assert (top_cut[:20] == top_cut[20]).all()  # the first row in view, repeated
    left_cut = fer_crop(image[:, 250:], (-50, 150, 100, 100), MARGINS)
    assert left_cut is not None and left_cut.shape == whole.shape
    assert np.array_equal(left_cut[:, 60:], whole[:, 60:])
    assert (left_cut[:, :60] == left_cut[:, 60:61]).all()


def test_a_box_out_of_the_image_has_no_crop():
    image = make_image((64, 48))
    assert fer_crop(image, (100, 10, 20, 20), MARGINS) is None
    assert fer_crop(image, (10, -40, 20, 20), MARGINS) is None


def test_a_box_far_larger_than_the_image_has_no_crop_instead_of_a_huge_one():
    """A bogus box many times the frame was padded to its full size (a box of
    20,000 px: a 1.2 GB crop) only to be shrunk to 48x48. A face much closer
    than the frame's size keeps its framed crop."""
    image = make_image((64, 48))
    close = fer_crop(image, (-32, -40, 128, 128))  # twice the image's longer side
    assert close is not None and close.shape == (128, 128, 3)
    assert np.array_equal(close[40:88, 32:96], image)
    assert fer_crop(image, (-2000, -2000, 4064, 4048)) is None


@pytest.mark.parametrize("shape", [(48, 48), (200, 160, 3), (30, 30, 4), (10, 12, 1)])
def test_face_to_model_input_any_layout(shape):
    out = face_to_model_input(np.full(shape, 77, np.uint8))
    assert out.shape == (48, 48) and out.dtype == np.uint8 and (out == 77).all()


def test_a_16_bit_face_is_scaled_to_8_bits_as_the_pipeline_scales_frames():
    """Cast to uint8, 16-bit pixels kept their low byte only (0x8000, mid-grey,
    became black); a direct caller's 16-bit crop meets the model as the same
    crop of a 16-bit frame does after the pipeline's conversion (``as_bgr``)."""
    from emojicam.pipeline import as_bgr

    assert (face_to_model_input(np.full((60, 60), 0x8000, np.uint16)) == 128).all()
    face = np.random.default_rng(0).integers(0, 65536, (60, 70, 3)).astype(np.uint16)
    via_pipeline = as_bgr(face)
    assert via_pipeline is not None
    assert np.array_equal(face_to_model_input(face), face_to_model_input(via_pipeline))


def test_batch_shape_and_empty():
    assert batch_to_model_input([]).shape == (0, 48, 48, 1)
    batch = batch_to_model_input([make_image((60, 60)), make_image((90, 70))])
    assert batch.shape == (2, 48, 48, 1) and batch.dtype == np.float32


def measure_framing(detector, faces: np.ndarray) -> np.ndarray:
    """Median (x, y, side) of the detector box relative to the FER crop."""
    rel = []
    side = 48 * UPSCALE
    for face in faces:
        big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
        canvas = cv2.copyMakeBorder(big, PAD, PAD, PAD, PAD, cv2.BORDER_REPLICATE)
        boxes = detector.detect(cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR))
        if len(boxes) == 1:
            b = boxes[0]
            rel.append(((b.x - PAD) / side, (b.y - PAD) / side, b.w / side))
    assert len(rel) >= len(faces) // 2
    return np.median(np.array(rel), axis=0)


def expected_framing(m: CropMargins) -> np.ndarray:
    side = 1.0 / (1.0 + m.left + m.right)  # box side relative to the FER crop
    return np.array([m.left * side, m.top * side, side])


@pytest.mark.shared_data
def test_haar_margins_match_fer_framing(fer_npz):
    with np.load(fer_npz) as d:
        faces = d["images"][(d["usage"] == 1) & (d["pixels_exact"] == 1)][:120]
    det = HaarDetector.create(DetectorConfig(max_side_px=2000, min_face_px=20))
    assert crop_margins_for(det) == HAAR_CROP_MARGINS
    np.testing.assert_allclose(measure_framing(det, faces), expected_framing(HAAR_CROP_MARGINS), atol=0.05)


@pytest.mark.shared_data
def test_blazeface_margins_match_fer_framing(fer_npz):
    from emojicam.blazeface import BlazeFaceDetector, find_blazeface_model

    if find_blazeface_model() is None:
        pytest.skip("BlazeFace model not installed (run 'emojicam models install')")
    with np.load(fer_npz) as d:
        faces = d["images"][(d["usage"] == 1) & (d["pixels_exact"] == 1)][:120]
    det = BlazeFaceDetector.create(DetectorConfig(min_face_px=10))
    margins = crop_margins_for(det)
    assert margins != HAAR_CROP_MARGINS
    np.testing.assert_allclose(measure_framing(det, faces), expected_framing(margins), atol=0.05)


def test_high_bytes_is_each_16_bit_values_high_byte_for_any_layout() -> None:
    from emojicam.preprocess import high_bytes

    values = np.arange(65536, dtype=np.uint16)
    np.testing.assert_array_equal(high_bytes(values), (values >> 8).astype(np.uint8))
    frame = values[: 64 * 48 * 3].reshape(64, 48, 3)[::2, ::-1]  # a strided, reversed view
    out = high_bytes(frame)
    assert out.dtype == np.uint8 and out.shape == frame.shape
    np.testing.assert_array_equal(out, frame // 256)
