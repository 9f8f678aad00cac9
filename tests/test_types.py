from __future__ import annotations

import numpy as np
import pytest

from emojicam.types import Emotion, EmotionScores, FaceBox
from tests.factories import make_box, make_scores


def test_emotion_order_is_fer2013_order():
    assert [e.value for e in Emotion] == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert Emotion.NEUTRAL.index == 6


@pytest.mark.parametrize(
    ("probs", "error"),
    [(np.ones(6), "needs 7 values"), ([np.nan] * 7, "finite"), ([-0.1] + [0.2] * 6, ">= 0")],
)
def test_scores_are_checked_on_construction(probs, error):
    with pytest.raises(ValueError, match=error):
        EmotionScores(np.asarray(probs))


def test_scores_top_confidence_and_dict():
    s = make_scores(Emotion.SURPRISE, 0.7)
    assert s.top is Emotion.SURPRISE
    assert s.confidence == pytest.approx(0.7)
    assert s[Emotion.SURPRISE] == pytest.approx(0.7)
    assert list(s.as_dict()) == [e.value for e in Emotion]


def test_box_iou_and_clip():
    a = FaceBox(0, 0, 10, 10)
    assert a.iou(a) == 1.0
    assert a.iou(FaceBox(5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert a.iou(FaceBox(20, 20, 5, 5)) == 0.0
    clipped = FaceBox(-5, -5, 10, 10).clipped((100, 100))
    assert clipped is not None and clipped.xywh == (0, 0, 5, 5)
    assert clipped.classifier_xywh == (-5, -5, 10, 10)  # the classifier frames the whole face
    assert clipped.clipped((4, 4)).classifier_xywh == (-5, -5, 10, 10)  # clipped again: still the detector's
    assert FaceBox(1, 1, 5, 5).clipped((100, 100)).classifier_xywh == (1, 1, 5, 5)  # not cut
    assert FaceBox(200, 0, 10, 10).clipped((100, 100)) is None
    with pytest.raises(ValueError):
        FaceBox(0, 0, -1, 5)


def test_roll_from_eyes():
    assert make_box().roll_deg == 0.0
    level = make_box(eyes=True)
    assert level.roll_deg == pytest.approx(0.0)
    tilted = FaceBox(0, 0, 100, 100, left_eye_xy=(70, 50), right_eye_xy=(30, 30))
    assert tilted.roll_deg == pytest.approx(np.degrees(np.arctan2(20, 40)))


def test_a_mirrored_box_keeps_its_size_and_its_eyes_follow_the_flip() -> None:
    box = FaceBox(20, 30, 100, 80, 0.9, left_eye_xy=(90.0, 60.0), right_eye_xy=(50.0, 70.0))
    flipped = box.mirrored(320)
    assert flipped.xywh == (200, 30, 100, 80) and flipped.score == 0.9
    # Labels follow the image, as a detector gives them on the flipped picture (the
    # "left" eye on the image's right): the eye flipped to the right is now "left".
    assert flipped.left_eye_xy == (270.0, 70.0) and flipped.right_eye_xy == (230.0, 60.0)
    assert flipped.mirrored(320) == box
