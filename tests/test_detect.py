from __future__ import annotations

import cv2
import numpy as np
import pytest

from emojicam.config import DetectorConfig
from emojicam.detect import HaarDetector, create_detector, downscale_for_detection
from tests.factories import make_image


def test_downscale_factor_maps_back():
    small, factor = downscale_for_detection(make_image((1280, 720)), 480)
    assert small.shape[:2] == (270, 480)
    assert factor == pytest.approx(1280 / 480)
    same, one = downscale_for_detection(make_image((320, 240)), 480)
    assert one == 1.0 and same.shape == (240, 320, 3)


def test_haar_finds_nothing_in_noise_and_handles_empty():
    det = HaarDetector.create(DetectorConfig())
    assert det.detect(make_image((640, 480))) == []
    assert det.detect(np.zeros((0, 0, 3), np.uint8)) == []


class FakeCascade:
    """Stands in for ``cv2.CascadeClassifier``: finds ``found`` (x, y, w, h in
    the downscaled image) whatever the image."""

    def __init__(self, found: list[tuple[int, int, int, int]]) -> None:
        self.found = found

    def detectMultiScale(self, image, **kwargs):  # noqa: N802 (OpenCV's name)
        return np.array(self.found, np.int32).reshape(-1, 4)


def test_haar_boxes_are_clipped_to_the_frame_and_largest_first_like_blazeface():
    """As ``BlazeFaceDetector`` gives them: a box rounded up past the frame's
    edge by the scale back from the downscaled copy is clipped (keeping the
    detector's box in ``detected_xywh`` for the classifier's framing), and the
    largest face comes first."""
    # 1000x549 is downscaled to 480x264 (x 2.0833): a box reaching the bottom of
    # the copy scales back to one ending at row 550 of a frame 549 rows high.
    det = HaarDetector(FakeCascade([(10, 10, 40, 40), (100, 200, 64, 64)]))  # type: ignore[arg-type]
    large, small = det.detect(make_image((1000, 549)))
    assert large.xywh == (208, 417, 133, 132) and large.detected_xywh == (208, 417, 133, 133)
    assert large.classifier_xywh == (208, 417, 133, 133)
    assert small.xywh == (21, 21, 83, 83) and small.detected_xywh is None


def test_haar_missing_cascade_is_setup_error(tmp_path):
    from emojicam.errors import SetupError

    with pytest.raises(SetupError, match="Haar cascade could not be loaded"):
        HaarDetector.create(DetectorConfig(), cascade_path=tmp_path / "none.xml")


@pytest.mark.shared_data
def test_haar_finds_face_in_selfie_clip_at_full_resolution(selfie_mp4):
    cap = cv2.VideoCapture(str(selfie_mp4))
    det = create_detector(DetectorConfig(backend="haar"))
    hits, frames = 0, 0
    boxes_seen = []
    for i in range(0, 120):
        ok, frame = cap.read()
        if not ok:
            break
        if i % 6:
            continue
        frames += 1
        boxes = det.detect(frame)
        hits += bool(boxes)
        boxes_seen += boxes
    cap.release()
    assert frames == 20 and hits >= 3
    h, w = frame.shape[:2]
    for b in boxes_seen:  # boxes are in full-resolution coordinates, inside the frame
        assert b.x >= 0 and b.x + b.w <= w and b.y >= 0 and b.y + b.h <= h
        assert b.w >= 32
