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
