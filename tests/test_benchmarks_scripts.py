"""The measuring scripts in ``benchmarks/``: what they count. Timings are
never asserted; the bookkeeping is."""

from __future__ import annotations

import numpy as np

from benchmarks.face_leak import measure as leak_measure
from tests.factories import FakeDetector, make_box, make_fake_pipeline


class Broken(FakeDetector):
    def detect(self, image_bgr):
        raise RuntimeError("boom")


def _frames(n: int = 3):
    face = make_box(100, 60, 80, 80)
    return [(np.full((240, 320, 3), 90, np.uint8), [face]) for _ in range(n)]


def test_a_failed_frame_shown_as_it_was_is_a_leak_not_covered() -> None:
    """With privacy off a frame the pipeline gave up on passes through as the
    camera saw it (``unvouched_frame``): the face shows. face_leak counted
    every failed frame as covered by a privacy blur, so a privacy-off run
    whose detector failed reported no leaks at all."""
    pipeline = make_fake_pipeline()
    pipeline.detector = Broken()
    pipeline.privacy_action = None  # privacy.enabled: false
    report = leak_measure("privacy_off", pipeline, _frames())
    assert report.privacy_covered_frames == 0
    assert report.leak_frames == [0, 1, 2]
    assert report.by_reason() == {"missed": 3}


def test_a_failed_frame_blurred_by_privacy_counts_as_covered() -> None:
    pipeline = make_fake_pipeline()
    pipeline.detector = Broken()
    assert pipeline.strict_privacy  # replace mode, privacy on: the frame is blurred
    report = leak_measure("privacy_on", pipeline, _frames())
    assert report.privacy_covered_frames == 3
    assert report.leak_frames == []


def test_face_recall_can_run_the_stages_as_replace_mode_with_privacy_does(tmp_path, monkeypatch) -> None:
    """The published recall ran the detector and tracker as decorate mode does;
    ``--privacy`` sets them up as the default mode (replace, privacy on) does."""
    from benchmarks import face_recall
    from emojicam.config import PrivacyConfig
    from tests.factories import write_test_video

    class Aware(FakeDetector):
        privacy: tuple[bool, float] | None = None

        def set_privacy(self, strict: bool, min_score: float) -> None:
            self.privacy = (strict, min_score)

    made: list[Aware] = []
    monkeypatch.setattr(face_recall, "CLIP", write_test_video(tmp_path / "clip.avi", n_frames=6))
    monkeypatch.setattr(face_recall, "create_detector", lambda cfg: made.append(Aware()) or made[-1])
    shown, detected = face_recall.run("blazeface", None, privacy=True)
    assert made[-1].privacy == (True, PrivacyConfig().min_score)
    assert len(shown) == len(detected) == 6
    face_recall.run("blazeface", None)
    assert made[-1].privacy is None
