from __future__ import annotations

import dataclasses
import types
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from emojicam.config import ClassifierConfig, Config, SmoothingConfig, TrackerConfig
from emojicam.pipeline import Pipeline, reconfigure
from emojicam.smooth import HysteresisSmoother
from emojicam.track import IoUTracker
from emojicam.types import Emotion, EmotionScores, FaceBox, FaceResult, Frame
from tests.factories import FakeClock, make_box, make_frame, make_scores


@dataclasses.dataclass
class FakeDetector:
    boxes: list[FaceBox]
    calls: int = 0

    def detect(self, image_bgr: np.ndarray) -> list[FaceBox]:
        self.calls += 1
        return list(self.boxes)


@dataclasses.dataclass
class FakeClassifier:
    emotion: Emotion = Emotion.HAPPY
    batches: list[int] = dataclasses.field(default_factory=list)

    def classify(self, image_bgr: np.ndarray, boxes: Sequence[FaceBox]) -> list[EmotionScores]:
        self.batches.append(len(boxes))
        return [make_scores(self.emotion, 0.9) for _ in boxes]


class RecordingCompositor:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def compose(self, image_bgr: np.ndarray, results: Sequence[FaceResult], mode: str) -> np.ndarray:
        self.calls.append((mode, len(results)))
        out = image_bgr.copy()
        for r in results:
            out[r.box.y : r.box.y + r.box.h, r.box.x : r.box.x + r.box.w] = 255
        return out


def make_pipeline(boxes=None, detect_every_n=1, classify_every_n=1, mode="replace"):
    return Pipeline(
        FakeDetector(boxes if boxes is not None else [make_box()]),
        IoUTracker(TrackerConfig()),
        FakeClassifier(),
        HysteresisSmoother(SmoothingConfig()),
        RecordingCompositor(),
        mode=mode,
        detect_every_n=detect_every_n,
        classify_every_n=classify_every_n,
    )


class Slowed:
    """``stage`` whose ``method`` takes ``seconds`` on ``clock`` at each call;
    everything else passes through (protocol checks included)."""

    def __init__(self, stage: Any, method: str, clock: FakeClock, seconds: float) -> None:
        self._stage, self._method, self._clock, self._seconds = stage, method, clock, seconds

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._stage, name)
        if name != self._method:
            return attr

        def timed(*args: Any, **kwargs: Any) -> Any:
            self._clock.advance(self._seconds)
            return attr(*args, **kwargs)

        return timed


def test_process_runs_every_stage_and_leaves_input_untouched(monkeypatch):
    from emojicam import pipeline as pipeline_module

    clock = FakeClock()
    monkeypatch.setattr(pipeline_module, "time", types.SimpleNamespace(perf_counter=clock))
    plain = make_pipeline([make_box(10, 10, 50, 50), make_box(200, 100, 80, 80)])
    p = dataclasses.replace(
        plain,
        detector=Slowed(plain.detector, "detect", clock, 0.001),
        tracker=Slowed(plain.tracker, "update", clock, 0.002),
        classifier=Slowed(plain.classifier, "classify", clock, 0.004),
        smoother=Slowed(plain.smoother, "update", clock, 0.008),  # once per face
        compositor=Slowed(plain.compositor, "compose", clock, 0.032),
    )
    frame = make_frame()
    before = frame.image_bgr.copy()
    image, results = p.process(frame)
    np.testing.assert_array_equal(frame.image_bgr, before)
    assert len(results) == 2 and {r.emotion for r in results} == {Emotion.HAPPY}
    assert plain.detector.calls == 1
    assert plain.classifier.batches == [2]  # all faces in one batch
    assert plain.compositor.calls == [("replace", 2)]
    assert (image[10:60, 10:60] == 255).all()
    # Each stage's time is its own, so each stage ran, and ran once (smoothing once a face).
    assert dataclasses.astuple(p.times) == pytest.approx((0.001, 0.002, 0.004, 0.016, 0.032))


def test_track_ids_stable_across_frames():
    p = make_pipeline()
    ids = {p.process(make_frame(index=i))[1][0].track_id for i in range(5)}
    assert ids == {1}


def test_detect_and_classify_every_n():
    p = make_pipeline(detect_every_n=3, classify_every_n=3, mode="decorate")
    for i in range(9):
        _, results = p.process(make_frame(index=i))
        assert len(results) == 1
    assert p.detector.calls == 3
    # frames 0, 3, 6: first sight, then every 3rd, on frames with fresh boxes only (the
    # frames due, 2, 5 and 8, once classified boxes two frames old)
    assert p.classifier.batches == [1, 1, 1]


def test_the_privacy_mask_detects_on_every_frame_whatever_every_n_says():
    """Between detections the boxes stand still: a face moving 40 px a frame
    would slide out from under its emoji, and a newcomer would show."""
    p = make_pipeline([make_box(0, 100, 80, 80)], detect_every_n=3)
    for i in range(6):
        p.detector.boxes = [make_box(40 * i, 100, 80, 80)]
        image, results = p.process(make_frame(index=i))
        assert [r.box.x for r in results] == [40 * i]
        assert (image[100:180, 40 * i : 40 * i + 80] == 255).all()  # covered where it is now
    assert p.detector.calls == 6
    p = dataclasses.replace(make_pipeline(detect_every_n=3), privacy_action=None)  # privacy off
    for i in range(6):
        p.process(make_frame(index=i))
    assert p.detector.calls == 2


def test_the_privacy_mask_keeps_a_missed_face_covered_when_a_newcomer_appears_beside_it():
    # The tracker's second pass would hand face A's box to the newcomer B (1.2 face
    # sizes away) on the frame the detector misses A: A would show.
    a, b = make_box(100, 100, 100, 100), make_box(220, 100, 100, 100)
    p = make_pipeline([a])
    for i in range(3):
        p.process(make_frame(index=i))
    p.detector.boxes = [b]  # A missed on the frame B first shows
    image, results = p.process(make_frame(index=3))
    assert sorted(r.box.x for r in results) == [100, 220]
    assert (image[100:200, 100:200] == 255).all()  # A still under its emoji
    p = make_pipeline([a], mode="decorate")  # not a mask: the second pass follows the jump
    for i in range(3):
        p.process(make_frame(index=i))
    p.detector.boxes = [b]
    _, results = p.process(make_frame(index=3))
    assert [r.box.x for r in results] == [220]


def test_classification_is_per_face_and_spread_over_frames():
    p = make_pipeline([make_box(10, 10, 50, 50), make_box(200, 100, 80, 80)], classify_every_n=2)
    p.process(make_frame(index=0))
    assert p.classifier.batches == [2]  # both new faces are classified on their first frame
    for i in range(1, 7):
        p.process(make_frame(index=i))
    assert p.classifier.batches == [2] + [1] * 6  # then one face per frame, each every 2nd frame
    p.detector.boxes = p.detector.boxes + [make_box(400, 200, 60, 60)]
    p.process(make_frame(index=7))
    assert p.classifier.batches[-1] == 2  # a newcomer does not wait for its turn


def fail_first_classification(p) -> list[int]:
    """Make ``p``'s classifier raise on its first call; returns the faces per call."""
    real = p.classifier.classify
    calls: list[int] = []

    def flaky(image, boxes):
        calls.append(len(boxes))
        if len(calls) == 1:
            raise RuntimeError("injected")
        return real(image, boxes)

    p.classifier.classify = flaky
    return calls


def test_face_whose_classification_failed_is_tried_again_next_frame():
    p = make_pipeline(classify_every_n=3)
    calls = fail_first_classification(p)
    p.process(make_frame(index=0))  # fails: the frame is covered, nothing is recorded
    _, results = p.process(make_frame(index=1))
    assert calls == [1, 1] and results[0].raw is not None


def test_a_face_whose_first_classification_failed_shows_its_emotion_once_classified():
    """The classifier fails on a newcomer's first frame and the detector (so
    the classifier) skips the next: the face then shows no made-up emotion
    that sticks. Before, the smoother took "no scores" as its first reading,
    showed the uniform distribution's argmax (angry) and held it for
    ``min_hold_s`` after the face was read as happy."""
    p = make_pipeline(detect_every_n=2, mode="decorate")
    fail_first_classification(p)
    p.process(make_frame(index=0))  # fails: the track exists, its scores do not
    _, (unread,) = p.process(make_frame(index=1))  # no detection: not classified
    assert unread.raw is None and unread.emotion is Emotion.NEUTRAL
    for i in range(2, 6):
        _, (result,) = p.process(make_frame(index=i))
        assert result.emotion is Emotion.HAPPY, i


def test_face_not_seen_on_this_frame_is_not_classified():
    p = make_pipeline(classify_every_n=1)
    p.process(make_frame(index=0))
    p.detector.boxes = []
    p.process(make_frame(index=1))  # held by the tracker, but the crop would be stale
    assert p.classifier.batches == [1]


def test_off_mode_skips_analysis():
    p = make_pipeline(mode="off")
    image, results = p.process(make_frame())
    assert results == [] and p.detector.calls == 0
    assert p.compositor.calls == [("off", 0)]


def test_missed_face_is_still_reported_with_last_box():
    p = make_pipeline()
    p.process(make_frame(index=0))
    p.detector.boxes = []
    _, results = p.process(make_frame(index=1))
    assert len(results) == 1 and results[0].missed_frames == 1 and results[0].raw is None


def test_reconfigure_mode_only_keeps_stages():
    p = make_pipeline()
    old = Config()
    same = reconfigure(p, old, old.with_mode("label"))
    assert same is p and p.mode == "label"


def test_reconfigure_other_setting_rebuilds(monkeypatch):
    import emojicam.pipeline as pl

    built = []
    fresh = make_pipeline()
    monkeypatch.setattr(pl, "build_pipeline", lambda cfg: built.append(cfg) or fresh)
    new = dataclasses.replace(Config(), classifier=ClassifierConfig(threads=2))
    assert reconfigure(make_pipeline(), Config(), new) is fresh and built == [new]


def test_a_rebuilt_pipeline_keeps_following_the_faces(monkeypatch):
    """A config edit that rebuilds the stages must not drop the held boxes: a face
    the detector misses on the frame after the reload stays covered, with the
    same track id and emoji."""
    import emojicam.pipeline as pl

    old = make_pipeline()
    old.classifier = FakeClassifier(Emotion.SAD)
    _, before = old.process(make_frame(index=0, timestamp_s=0.0))
    monkeypatch.setattr(pl, "build_pipeline", lambda cfg: make_pipeline(boxes=[]))  # misses the face
    edit = dataclasses.replace(Config(), smoothing=SmoothingConfig(min_hold_s=0.3))
    fresh = reconfigure(old, Config(), edit)
    assert fresh is not old
    out, after = fresh.process(make_frame(index=1, timestamp_s=1 / 30))
    assert [(r.track_id, r.box, r.missed_frames) for r in after] == [(before[0].track_id, before[0].box, 1)]
    assert after[0].emotion == Emotion.SAD  # the smoothed state came along too
    fresh.detector.boxes = [make_box(x=400)]  # a newcomer gets a new id, not a reused one
    _, later = fresh.process(make_frame(index=2, timestamp_s=2 / 30))
    assert len({r.track_id for r in later}) == 2


def test_held_boxes_follow_a_change_of_frame_size():
    """The camera reopened at twice the resolution and the detector misses the face
    on the first new frame: its held box must be where the face now is, not at the
    old coordinates."""
    p = make_pipeline([make_box(200, 120, 160, 160)])
    p.process(make_frame((640, 480), index=0))
    p.detector.boxes = []
    image, results = p.process(make_frame((1280, 960), index=1))
    assert [r.box.xywh for r in results] == [(400, 240, 320, 320)]
    assert (image[240:560, 400:720] == 255).all()  # covered where the face now is


class ExplodingClassifier:
    def classify(self, image_bgr, boxes):
        raise RuntimeError("model failure")


def test_stage_failure_covers_frame_in_replace_mode_and_warns_once(caplog):
    p = make_pipeline()
    p.classifier = ExplodingClassifier()
    frame = make_frame(image_bgr=np.tile(np.arange(640, dtype=np.uint8)[None, :, None], (480, 1, 3)))
    with caplog.at_level("WARNING"):
        for i in range(5):
            image, results = p.process(Frame(frame.image_bgr, i, i / 30))
    assert results == [] and p.failed_frames == 5
    # blurred: the sharp gradient detail is gone, not passed through
    assert not np.array_equal(image, frame.image_bgr)
    assert np.abs(np.diff(image.astype(int), axis=1)).max() <= 3
    assert sum("model failure" in r.message for r in caplog.records) == 1


@pytest.mark.parametrize("mode", ["decorate", "label"])
def test_stage_failure_passes_frame_through_in_other_modes(mode):
    p = make_pipeline(mode=mode)
    p.classifier = ExplodingClassifier()
    frame = make_frame()
    image, _ = p.process(frame)
    np.testing.assert_array_equal(image, frame.image_bgr)


def test_privacy_off_passes_through_even_in_replace():
    p = make_pipeline()
    p.privacy_action = None
    p.classifier = ExplodingClassifier()
    frame = make_frame()
    np.testing.assert_array_equal(p.process(frame)[0], frame.image_bgr)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((0, 0, 3), np.uint8),
        np.zeros((480, 640), np.uint8),
        np.zeros((480, 640, 4), np.uint8),
        np.zeros((480, 640, 1), np.uint8),
        np.zeros((48, 64, 3), np.float32),
        np.zeros((480, 640, 3), np.uint16),
        np.zeros((4, 4, 7), np.uint8),
    ],
    ids=["empty", "gray", "bgra", "gray1", "float", "uint16", "7-channel"],
)
def test_odd_frames_never_raise(image):
    """Converted and processed, or (empty, 7 channels) skipped; never a stage error
    (which process() would also turn into a frame of the right shape)."""
    p = make_pipeline()
    out, results = p.process(Frame(image, 0, 0.0))
    assert isinstance(out, np.ndarray) and p.failed_frames == 0
    if image.size and image.ndim in (2, 3) and (image.ndim == 2 or image.shape[2] in (1, 3, 4)):
        assert out.shape == image.shape[:2] + (3,) and out.dtype == np.uint8
        assert len(results) == 1 and p.compositor.calls == [("replace", 1)]
    else:
        assert results == [] and p.compositor.calls == []


@pytest.mark.parametrize("dtype", [np.int16, np.int32, bool])
@pytest.mark.parametrize("channels", [2, 3])
def test_a_frame_the_pipeline_cannot_read_is_never_shown_behind_the_mask(dtype, channels):
    image = np.full((48, 64, channels), 200).astype(dtype)
    out, results = make_pipeline().process(Frame(image, 0, 0.0))  # replace mode, privacy on
    assert results == [] and out.shape == (48, 64, 3) and out.dtype == np.uint8 and not out.any()
    out, _ = make_pipeline(mode="decorate").process(Frame(image, 0, 0.0))
    assert np.array_equal(out, image)  # other modes pass it on as it came


def test_reconfigure_camera_or_sink_change_keeps_stages():
    from emojicam.config import CameraConfig, SinkConfig

    p = make_pipeline()
    new = dataclasses.replace(Config(), camera=CameraConfig(mirror=True), sink=SinkConfig(fps=15))
    assert reconfigure(p, Config(), new.with_mode("decorate")) is p and p.mode == "decorate"


def test_held_boxes_cover_every_way_a_camera_may_change_aspect_ratio():
    """640x480 -> 1280x720: stretched, the middle cropped (4:3 sensor) or more
    shown at the sides (16:9 sensor); the held box covers the face in all three."""
    from emojicam.track import resized_box

    box = make_box(40, 100, 120, 150)
    moved = resized_box(box, (640, 480), (1280, 720))
    stretched = box.scaled(2.0, 1.5)  # x 80..320, y 150..375
    cropped = make_box(80, 80, 240, 300)  # x2, 120 rows off the top
    widened = make_box(220, 150, 180, 225)  # x1.5, 160 columns more on the left
    for face in (stretched, cropped, widened):
        assert moved.clipped((1280, 720)) is not None
        assert moved.x <= face.x and moved.y <= face.y
        assert moved.x + moved.w >= face.x + face.w and moved.y + moved.h >= face.y + face.h
    assert resized_box(box, (640, 480), (1280, 960)) == box.scaled(2.0, 2.0)  # same aspect: scaled
