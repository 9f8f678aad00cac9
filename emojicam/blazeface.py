"""BlazeFace face detection: when each model runs, and faces in crowds.

``BlazeFaceDetector`` is the pipeline's ``Detector`` on the two BlazeFace
models (``emojicam.blazeface_model``): the short-range one for faces close to
the camera, the full-range one (optional) for small and distant faces, each
run as often as the scene needs (``_plan``, ``_settle``), both on every frame
in replace mode with privacy on, where a crowd of small faces is also
searched in tiles of the frame. ``emojicam.face_merge`` makes one detection
per face of what they find.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np

from emojicam.blazeface_model import (
    FULL_RANGE_GEOMETRY,
    LEFT_EYE,
    RIGHT_EYE,
    SHORT_RANGE_GEOMETRY,
    SHORT_RANGE_MARGIN,
    BlazeFaceModel,
    Detections,
    weighted_nms,
)
from emojicam.config import DetectorConfig
from emojicam.errors import SetupError
from emojicam.face_merge import merge_models, not_overlapping, select
from emojicam.models_install import FULL_RANGE, SHORT_RANGE, file_state, find_model, user_models_dir
from emojicam.preprocess import BLAZEFACE_CROP_MARGINS, CropMargins
from emojicam.types import FaceBox, boxes_in_frame

log = logging.getLogger(__name__)

#: Crowds (privacy-first detection only). In a group the full-range model
#: loses faces it finds alone: 20 faces of 105 px at 1280x720 (a 5x4 grid of
#: one real face) score 0.3 or more for 11 of them, where a single face of that
#: size scores 0.87; 20 faces of 60 px: 2. Run on two 720x720 halves of that
#: frame it finds all of them. So when the whole-frame pass finds at least
#: ``CROWD_MIN_FACES`` faces narrower than ``CROWD_FACE_FRAC`` of the frame's
#: longer side (128 px at 1280x720), or any narrower than
#: ``CROWD_SMALL_FACE_FRAC`` (77 px), the full-range model also runs on
#: overlapping tiles of the frame. (Larger faces are found in the whole frame:
#: 8 faces of 160 px all are.) Selfie clip: tiles on 5 of its 511 frames.
CROWD_MIN_FACES = 4
CROWD_FACE_FRAC = 0.10
CROWD_SMALL_FACE_FRAC = 0.06
#: Tile side as a fraction of the frame's longer side (720 px at 1280x720).
CROWD_TILE_FRAC = 9 / 16
#: Neighbouring tiles overlap by at least this fraction of the tile side
#: (90 px at 1280x720; the two 720x720 halves there overlap by 160), so a
#: face of a crowd lies wholly inside one tile.
CROWD_TILE_MIN_OVERLAP = 1 / 8
#: A tile's box that comes this close (fraction of the tile side) to a cut
#: between tiles may be part of a face; it is dropped (the neighbouring tile
#: or the whole-frame pass holds the whole face).
CROWD_TILE_CUT_MARGIN = 0.01
#: Privacy-first detection (replace mode) covers faces from this size, in frame
#: pixels, whatever ``detector.min_face_px`` says.
PRIVACY_MIN_FACE_PX = 8
#: Privacy-first detection: boxes from this score (or ``detector.min_score`` when
#: lower) are confident; the merging rules were measured with it (finding 12 of
#: RELIABILITY.md, a face half behind another).
STRICT_CONFIDENT_SCORE = 0.5


def tile_starts(length: int, tile: int, min_overlap: int) -> list[int]:
    """Evenly spaced starts of tiles of ``tile`` px covering ``length`` px,
    neighbours overlapping by at least ``min_overlap`` px."""
    if length <= tile:
        return [0]
    n = -(-(length - min_overlap) // (tile - min_overlap))  # ceiling division; 2 or more here
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def maybe_crowd(dets: Detections, w: int, h: int) -> bool:
    """Whether the full-range model may have missed faces of a group (see
    ``CROWD_MIN_FACES``); ``dets`` in full-image pixels."""
    widths = dets.boxes_xyxy[:, 2] - dets.boxes_xyxy[:, 0]
    long_side = max(w, h)
    return bool(
        np.count_nonzero(widths < CROWD_FACE_FRAC * long_side) >= CROWD_MIN_FACES
        or np.any(widths < CROWD_SMALL_FACE_FRAC * long_side)
    )


def crowd_tiles(w: int, h: int) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) of the tiles a crowd is searched in: squares of
    ``CROWD_TILE_FRAC`` of the longer side (two 720x720 halves at 1280x720,
    four 360x360 tiles at 640x480)."""
    side = max(1, min(w, h, round(CROWD_TILE_FRAC * max(w, h))))
    overlap = round(CROWD_TILE_MIN_OVERLAP * side)
    return [
        (x, y, x + side, y + side)
        for y in tile_starts(h, side, overlap)
        for x in tile_starts(w, side, overlap)
    ]

# ---------------------------------------------------------------- detector


def find_blazeface_model(models_dir: Path | None = None) -> Path | None:
    """The installed, verified short-range model, or None."""
    return find_model(SHORT_RANGE, models_dir)


def find_full_range_model(models_dir: Path | None = None) -> Path | None:
    """The installed, verified full-range model, or None."""
    return find_model(FULL_RANGE, models_dir)


@dataclass
class _Schedule:
    """When a model last ran and when it last found a face."""

    last_run: int = -(10**9)
    last_found: int = -(10**9)

    def recently_found(self, call: int, every_n: int) -> bool:
        # Keep running for every_n calls after the last find, so a face at the
        # edge of the model's range that it sees only now and then stays found.
        return call - self.last_found <= every_n

    def looking_due(self, call: int, every_n: int) -> bool:
        return call - self.last_run >= every_n

    def ran(self, call: int, found: bool, idle: bool = False) -> None:
        """Record a run; ``idle``: the model is not needed now (forget past finds)."""
        self.last_run = call
        if found:
            self.last_found = call
        elif idle:
            self.last_found = -(10**9)


@dataclass
class BlazeFaceDetector:
    """The ``Detector`` protocol on BlazeFace: full-resolution ``FaceBox`` es with eye keypoints.

    The short-range model sees faces from about 12% of the frame's long side
    up (about 150 px at 1280x720); the full-range one from about 32 px (at
    1280x720) to well over 300 px, at twice the cost. Each call runs the
    model(s) needed for the faces seen lately, and each other model once
    every ``discovery_every_n`` calls to look for newcomers (see ``_plan``
    and ``_settle``). So a webcam user close to the camera costs one
    short-range run per frame, a group farther away one full-range run, and
    a face of any size is picked up within ``discovery_every_n`` frames (8 by
    default: a quarter of a second at 30 fps). Where both models
    see a face, one model's box is used consistently (the two frame faces
    slightly differently, and alternating would make the box jump).

    In privacy-first mode (``set_privacy``) both models run on every call,
    and in a crowd of small faces the full-range model also searches
    overlapping tiles of the frame (``maybe_crowd``, ``crowd_tiles``).
    """

    # Measured against FER-2013 framing: see emojicam/preprocess.py.
    fer_crop_margins: ClassVar[CropMargins] = BLAZEFACE_CROP_MARGINS

    short_range: BlazeFaceModel
    full_range: BlazeFaceModel | None = None
    min_score: float = 0.5
    min_face_px: int = 32
    discovery_every_n: int = 8  # detector.discovery_every_n_frames
    _calls: int = 0
    _short: _Schedule = field(default_factory=_Schedule)
    _full: _Schedule = field(default_factory=_Schedule)
    _last_count: int = 0  # faces returned by the previous call
    _strict_min_score: float | None = None  # set by set_privacy(); None: normal detection
    _full_primary: bool = False  # prefer full-range boxes (it alone covers the faces)

    @classmethod
    def create(
        cls,
        cfg: DetectorConfig,
        model_path: Path | None = None,
        full_range_path: Path | None = None,
        *,
        use_full_range: bool = True,
        threads: int = 1,
    ) -> BlazeFaceDetector:
        """Load the models. Without ``model_path`` the installed one is used;
        raises SetupError when it is absent. The full-range model is optional
        (used when installed and ``use_full_range``)."""
        # The installed file's state is read once: missing and damaged need different fixes.
        state = ("ok" if Path(model_path).is_file() else "missing") if model_path else file_state(SHORT_RANGE)
        path = Path(model_path) if model_path else user_models_dir() / SHORT_RANGE.filename
        if state == "missing":
            raise SetupError(f"BlazeFace model not found at {path}; run 'emojicam models install'")
        if state != "ok":
            raise SetupError(f"BlazeFace model at {path} is damaged ({state}); "
                             "run 'emojicam models install --force'")
        short = BlazeFaceModel.load(Path(path), SHORT_RANGE_GEOMETRY, threads, SHORT_RANGE_MARGIN)
        full = None
        if use_full_range:
            fpath = full_range_path or find_full_range_model()
            if fpath is not None and Path(fpath).is_file():
                full = BlazeFaceModel.load(Path(fpath), FULL_RANGE_GEOMETRY, threads)
            else:
                log.warning(
                    "full-range BlazeFace model not installed, so faces narrower than about "
                    "an eighth of the frame will be missed; run 'emojicam models install'"
                )
        return cls(short, full, cfg.min_score, cfg.min_face_px, max(1, cfg.discovery_every_n_frames))

    def detect(self, image_bgr: np.ndarray) -> list[FaceBox]:
        if image_bgr.size == 0:
            return []
        h, w = image_bgr.shape[:2]
        call = self._calls
        self._calls += 1
        if self.full_range is None:
            boxes = self._to_boxes(self._run(self.short_range, image_bgr), w, h)
            self._last_count = len(boxes)
            return boxes
        run_short, run_full = (True, True) if self._strict_min_score is not None else self._plan(call)
        short = self._run(self.short_range, image_bgr) if run_short else None
        full = self._run(self.full_range, image_bgr) if run_full else None
        if full is not None and self._strict_min_score is not None and maybe_crowd(full, w, h):
            full = merge_models(self._run_tiles(self.full_range, image_bgr), full, self._confident_score)
        # Fewer faces than last call: one may have left the reach of the model that ran; ask the other.
        if short is None and full is not None and len(full) < self._last_count:
            short = self._run(self.short_range, image_bgr)
        elif full is None and short is not None and len(short) < self._last_count:
            full = self._run(self.full_range, image_bgr)
        self._settle(call, short, full)
        first, second = (full, short) if self._full_primary else (short, full)
        merged = merge_models(first, second, self._confident_score)
        boxes = self._to_boxes(merged, w, h)
        self._last_count = len(boxes)
        return boxes

    def _plan(self, call: int) -> tuple[bool, bool]:
        """Which models run this call: those that found a face lately, and each
        of the others once every ``discovery_every_n`` calls (every other call
        when the last call found nothing); models that are only looking take
        turns (unless ``discovery_every_n`` is 1: then both look on every
        call), and at least one always runs."""
        every_n = self.discovery_every_n if self._last_count else min(2, self.discovery_every_n)
        short_busy = self._short.recently_found(call, every_n)
        full_busy = self._full.recently_found(call, every_n)
        run_short = short_busy or self._short.looking_due(call, every_n)
        run_full = full_busy or self._full.looking_due(call, every_n)
        if not (short_busy or full_busy) and run_short == run_full and every_n > 1:
            run_short = self._short.last_run <= self._full.last_run
            run_full = not run_short
        return run_short, run_full

    def _settle(self, call: int, short: Detections | None, full: Detections | None) -> None:
        """Record what each model found. When both ran, a model whose faces the
        other also found is not needed until the next look (prefer the cheaper
        short-range model when either would do)."""
        if short is not None and full is not None:
            # Doubtful boxes (privacy-first mode) do not decide which model frames the faces.
            short, full = (select(d, d.scores >= self._confident_score) for d in (short, full))
            if len(not_overlapping(full, short)) == 0:  # short-range sees everything
                self._short.ran(call, len(short) > 0)
                self._full.ran(call, False, idle=True)
                self._full_primary = False
            elif len(not_overlapping(short, full)) == 0:  # full-range sees everything, and more
                self._short.ran(call, False, idle=True)
                self._full.ran(call, True)
                self._full_primary = True
            else:
                self._short.ran(call, True)
                self._full.ran(call, True)
                self._full_primary = False
        elif short is not None:
            self._short.ran(call, len(short) > 0)
        elif full is not None:
            self._full.ran(call, len(full) > 0)

    def set_privacy(self, strict: bool, min_score: float) -> None:
        """Privacy-first detection (replace mode with privacy on): every model
        runs on every call, so a face that only the idle model would see is
        not missed for a frame, and faces scored from ``min_score`` count too
        (a face the detector is unsure of is covered rather than shown). In a
        crowd (``CROWD_MIN_FACES``) the full-range model also searches tiles
        of the frame."""
        self._strict_min_score = min(min_score, self.min_score) if strict else None

    @property
    def _confident_score(self) -> float:
        """The score from which a box is confident (it frames a face, and two
        overlapping confident boxes are two faces when their centres lie apart),
        not doubtful (kept only to cover a face nobody else found). Privacy-first
        detection keeps it at most ``STRICT_CONFIDENT_SCORE``: a raised
        ``detector.min_score`` once made the box of a face half behind another
        doubtful, and that face was merged into the front one and showed."""
        if self._strict_min_score is None:
            return self.min_score
        return min(self.min_score, STRICT_CONFIDENT_SCORE)

    def _run(self, model: BlazeFaceModel, image_bgr: np.ndarray, px_scale: float = 1.0) -> Detections:
        """One model on the whole image, suppressed, in the image's pixels;
        faces under ``min_face_px`` dropped (``px_scale``: the image's pixels
        per frame pixel, for a downscaled image)."""
        threshold = self.min_score if self._strict_min_score is None else self._strict_min_score
        dets, lb = model.run(image_bgr, threshold)
        dets = weighted_nms(dets)
        side = model.geometry.input_side
        boxes = lb.to_full(dets.boxes_xyxy.reshape(-1, 2, 2), side).reshape(-1, 4)
        min_side = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        # Privacy-first, a face found is covered whatever its size (a 30 px face in the
        # background of a 640x480 frame is a face too); only specks are dropped.
        min_px = self.min_face_px if self._strict_min_score is None else PRIVACY_MIN_FACE_PX
        big = min_side >= min_px * px_scale
        return Detections(boxes[big], lb.to_full(dets.keypoints_xy, side)[big], dets.scores[big])

    def _run_tiles(self, model: BlazeFaceModel, image_bgr: np.ndarray) -> Detections:
        """``model`` on each of ``crowd_tiles``, in full-image pixels, without
        boxes that reach a cut between tiles (suppressed across tiles)."""
        h, w = image_bgr.shape[:2]
        tiles = crowd_tiles(w, h)
        # One bilinear pass to twice the model's input scale, so that each tile
        # then needs an exact 2x area average: at 1280x720, 0.45 CPU ms for both
        # tiles, against 2.45 ms for ``INTER_AREA`` at the tiles' own 3.75x.
        side = tiles[0][2] - tiles[0][0]
        scale = min(1.0, 2.0 * model.geometry.input_side / side)
        small = cv2.resize(image_bgr, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR)
        small_side = round(side * scale)
        parts = []
        for x0, y0, x1, y1 in tiles:
            sx = min(round(x0 * scale), small.shape[1] - small_side)
            sy = min(round(y0 * scale), small.shape[0] - small_side)
            dets = self._run(model, small[sy : sy + small_side, sx : sx + small_side], scale)
            if len(dets) == 0:
                continue
            b = dets.boxes_xyxy
            margin = CROWD_TILE_CUT_MARGIN * small_side
            whole = (
                ((x0 == 0) | (b[:, 0] > margin))
                & ((y0 == 0) | (b[:, 1] > margin))
                & ((x1 == w) | (b[:, 2] < small_side - margin))
                & ((y1 == h) | (b[:, 3] < small_side - margin))
            )
            shift = np.array([sx, sy], np.float32)
            parts.append(Detections(
                ((b[whole].reshape(-1, 2, 2) + shift) / scale).reshape(-1, 4),
                (dets.keypoints_xy[whole] + shift) / scale,
                dets.scores[whole],
            ))
        return weighted_nms(Detections.concat(parts))

    def _to_boxes(self, dets: Detections, w: int, h: int) -> list[FaceBox]:
        found = zip(dets.boxes_xyxy, dets.keypoints_xy, dets.scores, strict=True)
        boxes = (
            FaceBox(
                int(round(x0)),
                int(round(y0)),
                int(round(x1 - x0)),
                int(round(y1 - y0)),
                float(score),
                left_eye_xy=(float(kps[LEFT_EYE, 0]), float(kps[LEFT_EYE, 1])),
                right_eye_xy=(float(kps[RIGHT_EYE, 0]), float(kps[RIGHT_EYE, 1])),
            )
            for (x0, y0, x1, y1), kps, score in found
        )
        return boxes_in_frame(boxes, (w, h))
