"""Reliability, item 5: face leaks in replace mode (short CI version of
``benchmarks/face_leak.py``; its docstring defines "face region" and "leak").

A leak is a frame in which a pixel of a face region (the ellipse inside a
face's box) is not covered by an emoji in the output, measured by composing
the frame's results over black and over white. Face regions come from the
truth (a real face pasted where we know it is) or from an independent
reference (BlazeFace at a looser threshold on every frame, plus Haar at full
resolution) with the reference's false alarms reviewed by hand in
``benchmarks/face_leak_review.csv``.

The leaks this suite first found (a face that only BlazeFace's idle model
sees, and faces the detector is unsure of) are fixed by the privacy-first
detection of replace mode (``privacy.enabled``, ``privacy.min_score``); their
tests now guard the fix.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from benchmarks.face_leak import (
    ReferenceDetector,
    crowd_frame,
    measure,
    read_review,
    synthetic_background,
    synthetic_scenarios,
)
from emojicam.config import load_config
from emojicam.pipeline import Pipeline, build_pipeline
from tests.factories import (
    blazeface_installed,
    paste_face,
    read_video_frames,
    selfie_face_patch,
    share_in_view,
)

pytestmark = pytest.mark.shared_data


def make_pipeline(backend: str, **detector: object) -> Pipeline:
    """The shipped replace-mode pipeline with ``backend``. Skips only when that
    backend is BlazeFace and its models are not installed (``emojicam models
    install``); Haar ships with OpenCV, and any other setup error (the emotion
    model, the emoji, the config) fails the test."""
    cfg = load_config(use_user_file=False).with_mode("replace")
    cfg = dataclasses.replace(cfg, detector=dataclasses.replace(cfg.detector, backend=backend, **detector))
    if backend == "blazeface" and not blazeface_installed(cfg.detector.full_range):
        pytest.skip("BlazeFace models not installed (run 'emojicam models install')")
    return build_pipeline(cfg)


@pytest.fixture(scope="module")
def face(selfie_mp4):
    return selfie_face_patch(selfie_mp4)


@pytest.fixture(scope="module")
def scenarios(face):
    return synthetic_scenarios(*face)


@pytest.mark.parametrize("backend", ["haar", "blazeface"])
def test_fast_motion_with_blur_never_leaks(scenarios, backend):
    # 150 px face crossing a 640 px frame in a second (about 15 px per frame), motion-blurred
    report = measure("fast_sweep", make_pipeline(backend), scenarios["fast_sweep"][:30])
    assert report.frames == 30 and report.frames_with_face == 30
    assert report.leak_frames == [], report.summary()


def test_face_cut_in_at_new_places_never_leaks(scenarios):
    report = measure("cuts_and_gaps", make_pipeline("blazeface"), scenarios["cuts_and_gaps"][:36])
    assert report.leak_frames == [], report.summary()


@pytest.mark.parametrize("min_score", [0.5, 0.8])
def test_a_face_half_behind_another_never_leaks(scenarios, min_score: float):
    # Both models see the second face when it is half hidden; the model whose
    # framing is in use also merges part of it into the front face's box. It
    # leaked in 5 frames (7% of the face in one) while its own box was dropped
    # as the same face. Again so with detector.min_score 0.8 (the hidden face's
    # box, at 0.58, then counted as doubtful), until privacy-first detection
    # held the confident score at 0.5.
    pipeline = make_pipeline("blazeface", min_score=min_score)
    report = measure("behind_another", pipeline, scenarios["behind_another"])
    assert report.frames_with_face == 60
    assert report.leak_frames == [], report.summary()


def test_a_face_cut_by_the_frame_edge_shows_only_before_it_is_found(scenarios):
    # A face under about 45% in view is found by no model (finding 8: frames 1-5
    # of the clip). Once found, its emoji also covers what the detector's short
    # box leaves above and below it (finding 13): no more than 5% of it shows.
    # So more than 5% of it shows only while it is missed and under 45% in view
    # (a detector that found nothing once passed the reason check alone).
    frames = scenarios["over_the_edges"]
    report = measure("over_the_edges", make_pipeline("blazeface"), frames)
    visible = [lk for lk in report.leaks if lk.uncovered_frac > 0.05]
    assert visible and all(lk.reason == "missed" for lk in visible), report.summary()
    in_view = {lk.frame: share_in_view(frames[lk.frame][1][0], (640, 480)) for lk in visible}
    assert max(in_view.values()) < 0.45, (in_view, report.summary())


def test_selfie_clip_start_has_no_face_leak(selfie_mp4):
    # Frames 0-44: one or two people, backlit, moving. Every uncovered
    # reference box there was reviewed by hand as not a face (jacket, sky).
    frames = [(image, []) for image in read_video_frames(selfie_mp4, limit=45)]
    report = measure("selfie_clip", make_pipeline("blazeface"), frames, ReferenceDetector.create(),
                     review=read_review())
    assert report.frames_with_face >= 42
    assert report.leak_frames == [], [lk for lk in report.leaks if lk.counts]


def _appearing(face, empty_frames: int) -> list[tuple[np.ndarray, list]]:
    """``empty_frames`` frames of background, then a 60 px face (small: only
    BlazeFace's full-range model sees it) for 4 frames."""
    bg = synthetic_background((640, 480))
    image, box = paste_face(bg, face[0], face[1], (320, 240), 60)
    return [(bg, [])] * empty_frames + [(image, [box])] * 4


def test_small_face_is_found_by_the_detector_within_two_frames(face):
    # Guards the measurement below: the face is findable at all.
    for empty in (5, 6):
        report = measure("appear", make_pipeline("blazeface"), _appearing(face, empty))
        assert all(f == empty for f in report.leak_frames), report.summary()


def test_small_face_is_covered_from_the_frame_it_appears(face):
    for empty in (5, 6):
        report = measure("appear", make_pipeline("blazeface"), _appearing(face, empty))
        assert report.leak_frames == [], f"after {empty} empty frames: {report.summary()}"


def test_a_small_face_the_detector_finds_is_covered_whatever_min_face_px_says(face):
    """A 30 px face in a 640x480 frame, found at score 0.9: detector.min_face_px (32)
    dropped it even in replace mode, and it showed whole."""
    image, box = paste_face(synthetic_background((640, 480)), face[0], face[1], (384, 288), 30)
    pipeline = make_pipeline("blazeface")
    assert pipeline.detector.min_face_px > 30  # the default would drop it
    report = measure("small", pipeline, [(image, [box])] * 2)
    assert report.leak_frames == [], report.summary()


def test_a_face_framed_around_a_confident_fragment_is_covered(selfie_mp4):
    """Selfie frame 71 cut to a 360x480 portrait, the face 77% in view at its edge: the
    confident box of a cheek and the doubtful box of the face were one face, the cheek's
    kept, and 49% of the face showed (fresh pipeline, no held box to hide it)."""
    from emojicam.types import FaceBox

    (image,) = read_video_frames(selfie_mp4, [71])
    face = FaceBox(277, 212, 83, 109)  # the short-range model's box of the face, clipped
    report = measure("portrait", make_pipeline("blazeface"), [(image[:, 140:500].copy(), [face])])
    assert report.leak_frames == [], report.summary()


def test_every_face_of_a_crowd_is_covered(face):
    # 20 faces of 105 px: the full-range model finds 11 of them in the whole
    # frame, all 20 in its tiles (RELIABILITY finding 5)
    report = measure("crowd", make_pipeline("blazeface"), [crowd_frame(*face, 105)] * 3)
    assert report.frames_with_face == 3
    assert report.leak_frames == [], report.summary()


def test_every_face_of_a_crowd_of_small_faces_gets_an_emoji(face):
    # 20 faces of 60 px: 2 found in the whole frame, all 20 in tiles. Two of the
    # emoji sit on boxes smaller than the face and leave its rim showing (0.7% and
    # 5.7% of the face's pixels): what is asserted is that no face is missed.
    report = measure("crowd", make_pipeline("blazeface"), [crowd_frame(*face, 60)] * 3)
    assert report.frames_with_face == 3
    assert [lk for lk in report.leaks if lk.counts and lk.reason != "partial"] == []
    assert max((lk.uncovered_frac for lk in report.leaks), default=0.0) < 0.1, report.summary()


def test_face_the_detector_is_unsure_of_is_covered(selfie_mp4):
    frames = [(image, []) for image in read_video_frames(selfie_mp4, list(range(440, 448)))]
    report = measure(
        "selfie_clip", make_pipeline("blazeface"), frames, ReferenceDetector.create(use_haar=False)
    )
    assert report.leak_frames == [], [lk for lk in report.leaks if lk.counts]


def test_reference_finds_the_face_regions_it_is_meant_to(face):
    # The measurement itself: the reference must see a plain face, and a
    # pipeline that draws nothing must count every face frame as a leak.
    image, box = paste_face(synthetic_background((640, 480)), face[0], face[1], (300, 240), 160)
    found = ReferenceDetector.create().detect(image)
    assert any(b.iou(box) > 0.4 for _, b in found), found
    pipeline = make_pipeline("haar")
    pipeline.detector = type("Blind", (), {"detect": lambda self, image_bgr: []})()
    report = measure("blind", pipeline, [(image, [box])] * 3)
    assert report.leak_frames == [0, 1, 2] and report.visible_leak_frames == [0, 1, 2]


class _MissesFrom:
    """The real detector, but blind from its ``n``-th call on (a face missed)."""

    def __init__(self, detector, n: int) -> None:
        self.detector, self.n, self.calls = detector, n, 0

    def detect(self, image_bgr):
        self.calls += 1
        found = self.detector.detect(image_bgr)
        return [] if self.calls > self.n else found

    def set_privacy(self, strict: bool, min_score: float) -> None:
        self.detector.set_privacy(strict, min_score)


@pytest.mark.parametrize(("sensor_wh", "centre_xy"), [((1280, 720), (300, 360)), ((1280, 720), (980, 360)),
                                                     ((1280, 960), (400, 330))])
def test_a_held_face_stays_covered_when_the_camera_changes_aspect_ratio(face, sensor_wh, centre_xy):
    """``camera.width``/``height`` edited from 640x480 to 1280x720, and the
    detector misses the face on the first 1280x720 frame: its held box must
    cover it. The tracker stretched the box (x2 across, x1.5 down), but
    cameras crop instead: a 16:9 sensor's 640x480 is the middle 960x720 of
    it, so the face was 110 px off its box and 19% (at x 300) and 12% (at x
    980) of it showed. A 4:3 sensor crops the top and bottom for 16:9."""
    import cv2

    w, h = sensor_wh
    scene, box = paste_face(synthetic_background(sensor_wh), face[0], face[1], centre_xy, 150)
    # The 640x480 mode: the middle 4:3 of the sensor, scaled down
    crop_w = min(w, h * 4 // 3)
    x0 = (w - crop_w) // 2
    f = 640 / crop_w
    old = cv2.resize(scene[:, x0 : x0 + crop_w], (640, 480), interpolation=cv2.INTER_AREA)
    old_box = dataclasses.replace(box, x=round((box.x - x0) * f), y=round(box.y * f),
                                  w=round(box.w * f), h=round(box.h * f))
    # The 1280x720 mode: the middle 16:9 of the sensor
    y0 = (h - 720) // 2
    new = scene[y0 : y0 + 720]
    new_box = dataclasses.replace(box, y=box.y - y0)
    pipeline = make_pipeline("blazeface")
    pipeline.detector = _MissesFrom(pipeline.detector, 3)
    report = measure("resolution_change", pipeline, [(old, [old_box])] * 3 + [(new, [new_box])])
    assert report.frames_with_face == 4
    assert report.leak_frames == [], report.summary()
