"""The per-frame pipeline: detect -> track -> classify -> smooth -> compose.

``Pipeline.process(frame)`` is pure in the sense that matters for a daemon:
no I/O, no threads, no sleeps, no logging setup. It does hold state (face
tracks and their smoothed scores), which is why one ``Pipeline`` belongs to
exactly one processing loop.

Every stage is a small protocol, so tests (and future backends) can swap any
of them. ``build_pipeline(config)`` wires the real ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from emojicam.config import Config
from emojicam.preprocess import high_bytes
from emojicam.types import Emotion, EmotionScores, FaceBox, FaceResult, Frame

log = logging.getLogger(__name__)


def unvouched_frame(image_bgr: np.ndarray, mode: str, privacy_action: str | None) -> np.ndarray:
    """What to show for a frame the pipeline could not process: in replace
    mode with privacy on (``privacy_action`` set), the frame made
    unrecognisable; otherwise a copy of it."""
    if mode == "replace" and privacy_action is not None:
        from emojicam.compose import privacy_cover

        return privacy_cover(image_bgr, privacy_action)
    return image_bgr.copy()


def as_bgr(image: np.ndarray) -> np.ndarray | None:
    """The image as HxWx3 uint8 BGR (gray and BGRA converted), the same
    object when it already is; None when it is empty or not an image."""
    if not isinstance(image, np.ndarray) or image.size == 0:
        return None
    while image.ndim > 3 and image.shape[0] == 1:  # a batch of one
        image = image[0]
    if image.ndim not in (2, 3):
        return None
    if image.dtype != np.uint8:
        if image.dtype == np.uint16:
            image = high_bytes(image)
        elif np.issubdtype(image.dtype, np.floating):
            # 0..1 or 0..255, judged on the finite pixels (one NaN must not change the scale)
            top = float(np.max(image, where=np.isfinite(image), initial=0.0))
            scale = 255.0 if top <= 1.0 + 1e-3 else 1.0
            image = np.nan_to_num(image, nan=0.0, posinf=255.0 / scale, neginf=0.0)
            image = np.clip(image * scale, 0, 255).astype(np.uint8)
        else:
            return None
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.shape[2] == 3:
        return image
    return None


class Detector(Protocol):
    def detect(self, image_bgr: np.ndarray) -> list[FaceBox]:
        """Faces in a full-resolution BGR image, in its pixel coordinates."""
        ...


@dataclass(frozen=True)
class Track:
    track_id: int
    box: FaceBox
    missed_frames: int = 0  # frames since the detector last saw this face


@runtime_checkable
class PrivacyAwareDetector(Protocol):
    """Optional: a detector that can trade speed and false alarms for never
    missing a face (used in replace mode with privacy on)."""

    def set_privacy(self, strict: bool, min_score: float) -> None: ...


class Tracker(Protocol):
    def update(self, boxes: Sequence[FaceBox] | None, timestamp_s: float) -> list[Track]:
        """Match this frame's detections to tracks. ``boxes=None`` means the
        detector did not run this frame (tracks are carried forward)."""
        ...


@runtime_checkable
class PrivacyAwareTracker(Protocol):
    """Optional: a tracker that keeps a missed face's box where it was rather
    than guess where it went (used in replace mode with privacy on)."""

    def set_privacy(self, strict: bool) -> None: ...


@runtime_checkable
class ResizableTracker(Protocol):
    """Optional: a tracker that moves its boxes when the frame size changes."""

    def resize(self, old_wh: tuple[int, int], new_wh: tuple[int, int]) -> None: ...


@runtime_checkable
class MirrorableTracker(Protocol):
    """Optional: a tracker that flips its boxes when the picture is mirrored."""

    def mirror(self, width: int) -> None: ...


class Classifier(Protocol):
    def classify(self, image_bgr: np.ndarray, boxes: Sequence[FaceBox]) -> list[EmotionScores]:
        """One ``EmotionScores`` per box, in the same order."""
        ...


@runtime_checkable
class StatefulStage(Protocol):
    """Optional, for a tracker or smoother: take over the faces another one of
    its kind follows (``reconfigure`` rebuilds the stages)."""

    def adopt(self, other: object) -> None: ...


class Smoother(Protocol):
    def update(
        self, track_id: int, scores: EmotionScores | None, timestamp_s: float
    ) -> tuple[EmotionScores, Emotion]:
        """Fold this frame's scores (None: not classified) into the track's
        history; return the smoothed scores and the emotion to show."""
        ...

    def forget(self, keep_ids: set[int]) -> None:
        """Drop state for tracks not in ``keep_ids``."""
        ...


class Compositor(Protocol):
    def compose(self, image_bgr: np.ndarray, results: Sequence[FaceResult], mode: str) -> np.ndarray:
        """Return a new image with the results drawn for ``mode``; never
        modifies ``image_bgr``."""
        ...


@dataclass
class StageTimes:
    """Seconds spent in each stage for the last frame (for ``emojicam bench``)."""

    detect: float = 0.0
    track: float = 0.0
    classify: float = 0.0
    smooth: float = 0.0
    compose: float = 0.0


@dataclass
class Pipeline:
    detector: Detector
    tracker: Tracker
    classifier: Classifier
    smoother: Smoother
    compositor: Compositor
    mode: str = "replace"
    detect_every_n: int = 1
    classify_every_n: int = 1
    privacy_action: str | None = "blur"  # None: privacy fallback off
    privacy_min_score: float = 0.3  # replace mode: detector score from which a face is covered
    times: StageTimes = field(default_factory=StageTimes)
    failed_frames: int = 0
    _frames_seen: int = 0
    _warned: set[str] = field(default_factory=set)
    _stages_strict: bool | None = None  # what the detector and tracker were last told
    _last_classified: dict[int, int] = field(default_factory=dict)  # track id -> frame number
    _size_wh: tuple[int, int] | None = None  # of the last frame analysed

    def analyse(self, frame: Frame) -> list[FaceResult]:
        """Detect, track, classify and smooth; no drawing."""
        clock = time.perf_counter
        image = frame.image_bgr
        strict = self._sync_privacy()
        self._follow_resize((image.shape[1], image.shape[0]))
        # A frame without detection reuses the last boxes: a face that moves or
        # walks in would show, so the mask detects on every frame.
        run_detector = strict or self._frames_seen % self.detect_every_n == 0
        frame_no = self._frames_seen
        self._frames_seen += 1

        t0 = clock()
        boxes = self.detector.detect(image) if run_detector else None
        t1 = clock()
        tracks = self.tracker.update(boxes, frame.timestamp_s)
        t2 = clock()
        # Only on frames the detector ran: in between, the boxes stand where the faces were.
        to_classify = self._due_for_classification(tracks, frame_no) if boxes is not None else []
        raw_list = self.classifier.classify(image, [t.box for t in to_classify]) if to_classify else []
        raw_by_id = {t.track_id: s for t, s in zip(to_classify, raw_list, strict=False)}
        self._classified(to_classify, tracks, frame_no)
        t3 = clock()
        results = []
        for track in tracks:
            raw = raw_by_id.get(track.track_id)
            smoothed, shown = self.smoother.update(track.track_id, raw, frame.timestamp_s)
            results.append(
                FaceResult(track.track_id, track.box, shown, smoothed, raw, track.missed_frames)
            )
        self.smoother.forget({t.track_id for t in tracks})
        t4 = clock()
        self.times = StageTimes(t1 - t0, t2 - t1, t3 - t2, t4 - t3, 0.0)
        return results

    def _follow_resize(self, size_wh: tuple[int, int]) -> None:
        """A new frame size (the camera reopened at another resolution): a
        tracker that can (``resize``) moves its boxes with the picture, so a
        face the detector misses on the first such frame stays covered."""
        old, self._size_wh = self._size_wh, size_wh
        if old is not None and old != size_wh and isinstance(self.tracker, ResizableTracker):
            self.tracker.resize(old, size_wh)

    def mirror_faces(self) -> None:
        """The frames now come flipped left to right (or no longer): a tracker
        that can (``mirror``) flips its boxes, so a face the detector misses on
        the first flipped frame stays covered (finding 16 in RELIABILITY.md)."""
        if self._size_wh is not None and isinstance(self.tracker, MirrorableTracker):
            self.tracker.mirror(self._size_wh[0])

    def _due_for_classification(self, tracks: Sequence[Track], frame_no: int) -> list[Track]:
        """The tracks to classify on this frame: each face the detector saw on
        this frame, on its first frame and then every ``classify_every_n``
        frames (the smoother is time-based, so sparser scores need no other
        change). Faces that appear together are spread over different frames,
        so a group does not make every Nth frame slow."""
        due = []
        for track in tracks:
            last = self._last_classified.get(track.track_id)
            if track.missed_frames == 0 and (last is None or frame_no - last >= self.classify_every_n):
                due.append(track)
        return due

    def _classified(self, done: Sequence[Track], tracks: Sequence[Track], frame_no: int) -> None:
        """Record the faces just classified (a classifier that raised records
        nothing, so they are tried again next frame) and forget faces that are gone."""
        every_n = self.classify_every_n
        for track in done:
            # First look: pretend it happened (id mod N) frames ago, which staggers newcomers.
            offset = track.track_id % every_n if track.track_id not in self._last_classified else 0
            self._last_classified[track.track_id] = frame_no - offset
        alive = {t.track_id for t in tracks}
        for gone in [tid for tid in self._last_classified if tid not in alive]:
            del self._last_classified[gone]

    def process(self, frame: Frame) -> tuple[np.ndarray, list[FaceResult]]:
        """Run every stage on one frame; return the composed BGR image and results.

        Never raises for a bad frame or a failing stage: gray and BGRA frames
        are converted, an empty frame passes through (an unusable one too,
        but blank in ``replace`` mode with privacy on), and a stage error is
        logged once (per kind of error). After an error the frame passes
        through unchanged, except in ``replace`` mode with privacy on, where
        the whole frame is covered (blurred or blanked) instead: a face the
        pipeline cannot vouch for is never shown.
        """
        image = as_bgr(frame.image_bgr)
        if image is None:  # empty or unusable: nothing to draw on
            raw = np.asarray(frame.image_bgr)
            self._warn_once("frame", f"skipping unusable frame of shape {raw.shape} ({raw.dtype})")
            if raw.size and self.strict_privacy:  # not checked for faces: never shown
                shape = (*raw.shape[:2], 3) if raw.ndim in (2, 3) else raw.shape
                return np.zeros(shape, np.uint8), []
            return raw.copy(), []
        if image is not frame.image_bgr:
            frame = Frame(image, frame.index, frame.timestamp_s)
        try:
            results = self.analyse(frame) if self.mode != "off" else []
            t0 = time.perf_counter()
            out = self.compositor.compose(image, results, self.mode)
            self.times.compose = time.perf_counter() - t0
            return out, results
        except Exception as exc:  # noqa: BLE001 - one frame must never take the daemon down
            self._warn_once(type(exc).__name__, f"frame {frame.index} failed: {exc!r}")
            self.failed_frames += 1
            return unvouched_frame(image, self.mode, self.privacy_action), []

    @property
    def strict_privacy(self) -> bool:
        """Whether the mask must never slip: replace mode with privacy on."""
        return self.mode == "replace" and self.privacy_action is not None

    def _sync_privacy(self) -> bool:
        """``strict_privacy``, told to a privacy-aware detector and tracker too
        (checked every frame, so any way of changing the mode is honoured)."""
        strict = self.strict_privacy
        if strict != self._stages_strict:
            if isinstance(self.detector, PrivacyAwareDetector):
                self.detector.set_privacy(strict, self.privacy_min_score)
            if isinstance(self.tracker, PrivacyAwareTracker):
                self.tracker.set_privacy(strict)
            self._stages_strict = strict
        return strict

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s (further such warnings are suppressed)", message)

    def set_mode(self, mode: str) -> None:
        self.mode = mode


def build_pipeline(config: Config) -> Pipeline:
    """The real stages, configured. Loads model and emoji files (may raise
    ``emojicam.errors.SetupError`` naming the missing file and the fix)."""
    from emojicam.classify import TFLiteClassifier
    from emojicam.compose import EmojiCompositor
    from emojicam.detect import create_detector, crop_margins_for
    from emojicam.smooth import HysteresisSmoother
    from emojicam.track import IoUTracker

    detector = create_detector(config.detector)
    classifier = TFLiteClassifier.create(config.classifier, crop_margins=crop_margins_for(detector))
    return Pipeline(
        detector=detector,
        tracker=IoUTracker(config.tracker),
        classifier=classifier,
        smoother=HysteresisSmoother(config.smoothing),
        compositor=EmojiCompositor.create(config.emoji, config.privacy),
        mode=config.mode,
        privacy_action=config.privacy.action if config.privacy.enabled else None,
        privacy_min_score=config.privacy.min_score,
        detect_every_n=config.detector.every_n_frames,
        classify_every_n=config.classifier.every_n_frames,
    )


def reconfigure(pipeline: Pipeline, old: Config, new: Config) -> Pipeline:
    """Apply a new config to a running pipeline. A change of mode (or of
    settings the pipeline does not use, like the camera or the sink) keeps
    every stage, with its tracks and smoothed scores; a change to a stage's
    settings rebuilds the pipeline (reloading models), which takes over the
    old one's faces (``carry_faces``)."""
    if _pipeline_settings(old) == _pipeline_settings(new):
        pipeline.set_mode(new.mode)
        return pipeline
    fresh = build_pipeline(new)
    carry_faces(pipeline, fresh)
    return fresh


def carry_faces(old: Pipeline, new: Pipeline) -> None:
    """``new`` follows the faces ``old`` follows: the same track ids, boxes
    held after a miss (a face the detector misses on the frame after a config
    edit stays covered), shown emoji and classification schedule."""
    for mine, theirs in ((new.tracker, old.tracker), (new.smoother, old.smoother)):
        if isinstance(mine, StatefulStage):
            mine.adopt(theirs)
    new._frames_seen = old._frames_seen
    new._last_classified = dict(old._last_classified)
    new._size_wh = old._size_wh


def _pipeline_settings(config: Config) -> tuple[object, ...]:
    return (config.detector, config.classifier, config.tracker, config.smoothing, config.emoji,
            config.privacy)
