"""BlazeFace face detection (Google, Apache-2.0) run directly in ai-edge-litert.

The ``.tflite`` files come from ``emojicam models install`` (see
``emojicam.models_install``). A model outputs, for each of its SSD anchors,
16 regressors (box centre/size and six keypoints, in input pixels relative to
the anchor) and one score logit. MediaPipe decodes these inside its graph,
which we do not use, so the anchor layout and decoding are written here
(numpy, a few dozen lines) following the published model cards and the
SsdAnchorsCalculator / TensorsToDetectionsCalculator options of the model's
graph.

Two models:

* short-range (128x128 input, 896 anchors): fast, wants faces that fill a good
  part of the frame (a webcam user);
* full-range (192x192 input, 2304 anchors, optional): finds small and distant
  faces; ``BlazeFaceDetector`` runs it only as often as the scene needs.

Keypoints, in model order: subject's right eye, left eye, nose tip, mouth
centre, right ear tragion, left ear tragion.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

from emojicam.config import DetectorConfig
from emojicam.errors import SetupError
from emojicam.models_install import FULL_RANGE, SHORT_RANGE, find_model, user_models_dir
from emojicam.preprocess import BLAZEFACE_CROP_MARGINS, CropMargins
from emojicam.types import FaceBox

log = logging.getLogger(__name__)

NUM_KEYPOINTS = 6
RIGHT_EYE, LEFT_EYE = 0, 1  # the subject's eyes
NMS_IOU = 0.3  # MediaPipe's min_suppression_threshold for both models
SCORE_CLIP = 100.0


@dataclass(frozen=True)
class ModelGeometry:
    """What a BlazeFace variant expects and how its anchors are laid out."""

    input_side: int
    strides: tuple[int, ...]  # one per SSD layer; equal neighbours share a grid
    anchors_per_layer: int  # 2 when MediaPipe's interpolated_scale_aspect_ratio is on
    num_anchors: int
    # How to turn this model's box into the short-range model's framing of the
    # same face (the framing the FER crop margins and the emoji sizes were
    # measured with): side times ``box_scale``, then the centre moved down by
    # ``box_shift_y`` of the new side.
    box_scale: float = 1.0
    box_shift_y: float = 0.0


SHORT_RANGE_GEOMETRY = ModelGeometry(128, (8, 16, 16, 16), 2, 896)
#: A border of 10% of the input around the frame: a big face cut by the frame's
#: edge is found far more often when the model sees something beyond the cut
#: (selfie clip cropped to 1280x720: 10 of 71 hand-labelled face frames missed
#: without it, 1 with it). The full-range model gets none: its faces are small.
SHORT_RANGE_MARGIN = 0.1
#: The full-range model frames a face larger and higher than the short-range
#: one. Measured on the selfie clip (all 511 frames, at 1280x720 and 640x480):
#: 643 faces both models found at score 0.5 with IoU >= 0.5. The full-range
#: box side is 1.110x the short-range one (quartiles 1.067 and 1.157, the same
#: for the smaller and the larger half of the faces) and its centre sits
#: higher by 0.064 of the short-range side (quartiles 0.044 and 0.085); the
#: eye distances agree (ratio 1.017), so it is framing, not a different
#: estimate of the face's size. Left-right: no consistent offset (0.017).
FULL_RANGE_GEOMETRY = ModelGeometry(192, (4,), 1, 2304, box_scale=1 / 1.110, box_shift_y=0.064)

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
#: Privacy-first detection (replace mode) covers faces from this size, in frame
#: pixels, whatever ``detector.min_face_px`` says.
PRIVACY_MIN_FACE_PX = 8
#: Privacy-first detection: boxes from this score (or ``detector.min_score`` when
#: lower) are confident; the merging rules were measured with it (finding 12 of
#: RELIABILITY.md, a face half behind another).
STRICT_CONFIDENT_SCORE = 0.5
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


def generate_anchors(geometry: ModelGeometry) -> np.ndarray:
    """Anchor centres ``(num_anchors, 2)`` as ``(x, y)`` in [0, 1] of the input.

    BlazeFace uses fixed-size anchors (width = height = 1), so an anchor is
    only its centre; layers with the same stride share one grid and stack
    their anchors per cell, cells in row-major order.
    """
    centres = []
    i = 0
    while i < len(geometry.strides):
        stride = geometry.strides[i]
        layers = 1
        while i + layers < len(geometry.strides) and geometry.strides[i + layers] == stride:
            layers += 1
        side = -(-geometry.input_side // stride)  # ceil
        coords = (np.arange(side, dtype=np.float32) + 0.5) / side
        ys, xs = np.meshgrid(coords, coords, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(grid, layers * geometry.anchors_per_layer, axis=0))
        i += layers
    anchors = np.concatenate(centres).astype(np.float32)
    if len(anchors) != geometry.num_anchors:  # programming error in a geometry constant
        raise ValueError(f"anchor layout gives {len(anchors)} anchors, expected {geometry.num_anchors}")
    return anchors


@dataclass(frozen=True)
class Detections:
    """Decoded detections in normalised input coordinates ([0, 1] of the input tensor)."""

    boxes_xyxy: np.ndarray  # (n, 4)
    keypoints_xy: np.ndarray  # (n, 6, 2)
    scores: np.ndarray  # (n,)

    def __len__(self) -> int:
        return len(self.scores)

    @staticmethod
    def empty() -> Detections:
        return Detections(
            np.zeros((0, 4), np.float32), np.zeros((0, NUM_KEYPOINTS, 2), np.float32), np.zeros(0, np.float32)
        )

    @staticmethod
    def concat(parts: list[Detections]) -> Detections:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Detections.empty()
        return Detections(
            np.concatenate([p.boxes_xyxy for p in parts]),
            np.concatenate([p.keypoints_xy for p in parts]),
            np.concatenate([p.scores for p in parts]),
        )


def decode(
    raw_boxes: np.ndarray,
    raw_scores: np.ndarray,
    anchors: np.ndarray,
    input_side: int,
    min_score: float,
    box_scale: float = 1.0,
    box_shift_y: float = 0.0,
) -> Detections:
    """Turn the model's ``(N, 16)`` regressors and ``(N,)`` or ``(N, 1)`` logits into
    detections scoring at least ``min_score`` (before suppression); boxes are
    reframed by ``box_scale`` and ``box_shift_y`` (see ``ModelGeometry``)."""
    logits = np.clip(np.asarray(raw_scores, np.float32).reshape(-1), -SCORE_CLIP, SCORE_CLIP)
    with np.errstate(over="ignore"):  # exp(100) is inf in float32; the score is then 0, as it should be
        scores = 1.0 / (1.0 + np.exp(-logits))
    keep = np.flatnonzero(scores >= min_score)
    if keep.size == 0:
        return Detections.empty()
    reg = np.asarray(raw_boxes, np.float32).reshape(len(logits), -1)[keep] / float(input_side)
    anc = anchors[keep]
    half_w, half_h = reg[:, 2] * (box_scale / 2.0), reg[:, 3] * (box_scale / 2.0)
    cx, cy = reg[:, 0] + anc[:, 0], reg[:, 1] + anc[:, 1] + box_shift_y * 2.0 * half_h
    boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)
    kps = reg[:, 4 : 4 + 2 * NUM_KEYPOINTS].reshape(-1, NUM_KEYPOINTS, 2) + anc[:, None, :]
    return Detections(boxes, kps, scores[keep])


def _areas(box: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(intersections, area of ``box``, areas of ``boxes``), xyxy boxes."""
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter, area, areas


def _iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    inter, area, areas = _areas(box, boxes)
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(dets: Detections, iou_threshold: float = NMS_IOU) -> Detections:
    """MediaPipe's "weighted" suppression: each cluster of overlapping boxes
    becomes one box, the score-weighted mean of its members (boxes and
    keypoints), scored by its best member.

    Hand-written because OpenCV's ``NMSBoxes`` only drops boxes; averaging
    the cluster gives steadier boxes from frame to frame, which keeps the
    emoji still.
    """
    if len(dets) == 0:
        return dets
    order = np.argsort(-dets.scores, kind="stable")
    boxes, kps, scores = dets.boxes_xyxy[order], dets.keypoints_xy[order], dets.scores[order]
    remaining = np.ones(len(scores), bool)
    out_b, out_k, out_s = [], [], []
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        members = remaining & (_iou_one_to_many(boxes[i], boxes) > iou_threshold)
        members[i] = True
        w = scores[members][:, None]
        if not w.sum() > 0:  # all scores 0: a plain mean rather than 0/0
            w = np.ones_like(w)
        total = float(w.sum())
        out_b.append((boxes[members] * w).sum(0) / total)
        out_k.append((kps[members] * w[:, :, None]).sum(0) / total)
        out_s.append(scores[i])
        remaining &= ~members
    return Detections(np.array(out_b, np.float32), np.array(out_k, np.float32), np.array(out_s, np.float32))


# ---------------------------------------------------------------- one model


def shrink(image: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Downscale with some anti-aliasing, cheaply.

    ``INTER_AREA`` straight to 128 px costs ~1 ms on a 1280x720 frame;
    bilinear to twice the size and then a 2x2 area average costs ~0.1 ms and
    finds the same faces (bilinear alone aliases badly at 10x).
    """
    w, h = size_wh
    if image.shape[1] >= 4 * w and image.shape[0] >= 4 * h:
        image = cv2.resize(image, (2 * w, 2 * h), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)


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


@dataclass(frozen=True)
class Letterbox:
    """How a full image maps into the square input: ``input = full * scale + offset``,
    per axis (the image is resized to whole pixels, so the two scales differ a little)."""

    scale_xy: tuple[float, float]
    offset_xy: tuple[float, float]

    def to_full(self, xy: np.ndarray, input_side: int) -> np.ndarray:
        """Normalised input coordinates (..., 2) -> full-image pixels."""
        off = np.array(self.offset_xy, np.float32)
        return (xy * input_side - off) / np.array(self.scale_xy, np.float32)


@dataclass
class BlazeFaceModel:
    """One BlazeFace ``.tflite`` in a LiteRT interpreter, with its anchors."""

    interpreter: Any
    geometry: ModelGeometry
    anchors: np.ndarray
    input_index: int
    boxes_index: int
    scores_index: int
    margin_frac: float = 0.0  # border left on every side of the letterboxed image
    _input: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        side = self.geometry.input_side
        self._input = np.zeros((1, side, side, 3), np.float32)

    @classmethod
    def load(
        cls, path: Path, geometry: ModelGeometry, threads: int = 1, margin_frac: float = 0.0
    ) -> BlazeFaceModel:
        """Load and check a model; raises SetupError naming the file and the fix."""
        from emojicam.litert import open_interpreter

        try:
            interpreter = open_interpreter(path, threads)
        except (ValueError, RuntimeError) as exc:
            raise SetupError(
                f"{path}: not a loadable TFLite model ({exc}); run 'emojicam models install --force'"
            ) from exc
        (inp,) = interpreter.get_input_details()
        side = geometry.input_side
        if tuple(inp["shape"]) != (1, side, side, 3) or inp["dtype"] != np.float32:
            raise SetupError(
                f"{path}: expected a float32 1x{side}x{side}x3 input, got "
                f"{inp['dtype'].__name__} {tuple(inp['shape'])}"
            )
        outs = interpreter.get_output_details()
        by_width = {int(o["shape"][-1]): o for o in outs}
        n = geometry.num_anchors
        if (
            len(outs) != 2
            or 16 not in by_width
            or 1 not in by_width
            or any(int(o["shape"][1]) != n for o in outs)
        ):
            raise SetupError(
                f"{path}: expected outputs (1, {n}, 16) and (1, {n}, 1), got "
                f"{[tuple(o['shape']) for o in outs]}"
            )
        return cls(
            interpreter,
            geometry,
            generate_anchors(geometry),
            int(inp["index"]),
            int(by_width[16]["index"]),
            int(by_width[1]["index"]),
            margin_frac,
        )

    def run(self, image_bgr: np.ndarray, min_score: float) -> tuple[Detections, Letterbox]:
        """Letterbox the whole image into the input, run, decode (no suppression)."""
        side = self.geometry.input_side
        h, w = image_bgr.shape[:2]
        usable = side * (1.0 - 2.0 * self.margin_frac)
        scale = usable / max(h, w)
        rw, rh = max(1, round(w * scale)), max(1, round(h * scale))
        ox, oy = (side - rw) // 2, (side - rh) // 2
        small = shrink(image_bgr, (rw, rh))
        rgb = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
        self._input.fill(0.0)  # bars and margin: mid-grey in the model's [-1, 1] range
        np.multiply(rgb, 2.0 / 255.0, out=self._input[0, oy : oy + rh, ox : ox + rw], casting="unsafe")
        self._input[0, oy : oy + rh, ox : ox + rw] -= 1.0
        self.interpreter.set_tensor(self.input_index, self._input)
        self.interpreter.invoke()
        raw_boxes = self.interpreter.get_tensor(self.boxes_index)[0]
        raw_scores = self.interpreter.get_tensor(self.scores_index)[0]
        geo = self.geometry
        dets = decode(raw_boxes, raw_scores, self.anchors, side, min_score, geo.box_scale, geo.box_shift_y)
        return dets, Letterbox((rw / w, rh / h), (float(ox), float(oy)))


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
        path = model_path or find_blazeface_model()
        if path is None or not Path(path).is_file():
            where = path or user_models_dir() / SHORT_RANGE.filename
            raise SetupError(f"BlazeFace model not found at {where}; run 'emojicam models install'")
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
        return cls(short, full, cfg.min_score, cfg.min_face_px, cfg.discovery_every_n_frames)

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
        turns, and at least one always runs."""
        every_n = self.discovery_every_n if self._last_count else min(2, self.discovery_every_n)
        short_busy = self._short.recently_found(call, every_n)
        full_busy = self._full.recently_found(call, every_n)
        run_short = short_busy or self._short.looking_due(call, every_n)
        run_full = full_busy or self._full.looking_due(call, every_n)
        if not (short_busy or full_busy) and run_short == run_full:
            run_short = self._short.last_run <= self._full.last_run
            run_full = not run_short
        return run_short, run_full

    def _settle(self, call: int, short: Detections | None, full: Detections | None) -> None:
        """Record what each model found. When both ran, a model whose faces the
        other also found is not needed until the next look (prefer the cheaper
        short-range model when either would do)."""
        if short is not None and full is not None:
            # Doubtful boxes (privacy-first mode) do not decide which model frames the faces.
            short, full = (_select(d, d.scores >= self._confident_score) for d in (short, full))
            if len(_not_overlapping(full, short)) == 0:  # short-range sees everything
                self._short.ran(call, len(short) > 0)
                self._full.ran(call, False, idle=True)
                self._full_primary = False
            elif len(_not_overlapping(short, full)) == 0:  # full-range sees everything, and more
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
        out = []
        for (x0, y0, x1, y1), kps, score in zip(dets.boxes_xyxy, dets.keypoints_xy, dets.scores, strict=True):
            bw, bh = x1 - x0, y1 - y0
            box = FaceBox(
                int(round(x0)),
                int(round(y0)),
                int(round(bw)),
                int(round(bh)),
                float(score),
                left_eye_xy=(float(kps[LEFT_EYE, 0]), float(kps[LEFT_EYE, 1])),
                right_eye_xy=(float(kps[RIGHT_EYE, 0]), float(kps[RIGHT_EYE, 1])),
            )
            clipped = box.clipped((w, h))
            if clipped is not None:
                out.append(clipped)
        out.sort(key=lambda b: -b.area)
        return out


#: A doubtful box (scored below ``min_score``; kept only to cover faces in
#: replace mode) is the same face as an accepted box when at least this much
#: of the smaller of the two lies inside the other. IoU alone misses the
#: common case: the short-range model, near the small end of its range,
#: gives a loose box around a face that the full-range model frames tightly.
SAME_FACE_OVERLAP = 0.6
#: ...unless the doubtful box is this many times larger than that confident
#: box: then the confident box is a fragment of the face (the full-range model
#: scoring a cheek at 0.59 while the short-range one frames the whole face at
#: 0.31, a face cut by the frame's edge), and it grows to the doubtful box.
#: The loose boxes of one face seen on the selfie clip are about 2x.
FRAGMENT_AREA_RATIO = 4.0
#: Two confident boxes from the two models that overlap (IoU above ``NMS_IOU``)
#: are one face only if their centres are at most this far apart, in sides of
#: the larger box. On the selfie clip the two models' boxes of one face lie at
#: most 0.25 apart (99th percentile 0.20, 336 pairs); a face half hidden
#: behind another lies about 0.5 away and would otherwise lose its own box.
SAME_FACE_CENTRES = 0.35


def merge_models(first: Detections | None, second: Detections | None, min_score: float) -> Detections:
    """One detection per face from two models' (suppressed) detections.

    Confident detections (``score >= min_score``) first: all of ``first``'s
    (the model whose framing is in use), then ``second``'s faces that
    ``first`` did not find. Then the doubtful ones, best first, for faces
    nobody found yet: a doubtful box never replaces or duplicates a
    confident one (it is usually a loose box around the same face, and would
    give that face a second, bigger, tilted emoji)."""
    parts = [d for d in (first, second) if d is not None and len(d)]
    if not parts:
        return Detections.empty()
    sure = [_select(d, d.scores >= min_score) for d in parts]
    merged = sure[0]
    for extra in sure[1:]:
        merged = Detections.concat([merged, _not_overlapping(extra, merged)])
    doubtful = Detections.concat([_select(d, d.scores < min_score) for d in parts])
    for i in np.argsort(-doubtful.scores, kind="stable"):
        box = doubtful.boxes_xyxy[i]
        if len(merged):
            same = (_iou_one_to_many(box, merged.boxes_xyxy) > NMS_IOU) | (
                _overlap_of_smaller(box, merged.boxes_xyxy) >= SAME_FACE_OVERLAP
            )
            if np.any(same):
                _, area, areas = _areas(box, merged.boxes_xyxy)
                confident = merged.scores >= min_score
                fragments = np.flatnonzero(same & confident & (area >= FRAGMENT_AREA_RATIO * areas))
                if len(fragments) == 1:  # the face around a confident fragment of it: cover both
                    merged = _grown_to_hold(merged, int(fragments[0]), box)
                continue
        merged = Detections.concat([merged, _select(doubtful, np.arange(len(doubtful)) == i)])
    return merged


def _grown_to_hold(dets: Detections, j: int, box: np.ndarray) -> Detections:
    """``dets`` with box ``j`` grown to the union of it and ``box`` (keypoints
    and score kept)."""
    boxes = dets.boxes_xyxy.copy()
    boxes[j, :2] = np.minimum(boxes[j, :2], box[:2])
    boxes[j, 2:] = np.maximum(boxes[j, 2:], box[2:])
    return Detections(boxes, dets.keypoints_xy, dets.scores)


def _select(dets: Detections, keep: np.ndarray) -> Detections:
    return Detections(dets.boxes_xyxy[keep], dets.keypoints_xy[keep], dets.scores[keep])


def _overlap_of_smaller(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection area over the smaller box's area, for ``box`` against each of ``boxes``."""
    inter, area, areas = _areas(box, boxes)
    smaller = np.minimum(area, areas)
    return np.where(smaller > 0, inter / np.maximum(smaller, 1e-12), 0.0)


def _not_overlapping(extra: Detections, base: Detections) -> Detections:
    """Those of ``extra`` that are other faces than ``base``'s: each overlaps
    no box of ``base`` (IoU), or only boxes centred too far away to be the
    same face (``SAME_FACE_CENTRES``)."""
    if len(extra) == 0 or len(base) == 0:
        return extra
    keep = np.array([not np.any(_same_face(b, base.boxes_xyxy)) for b in extra.boxes_xyxy])
    return Detections(extra.boxes_xyxy[keep], extra.keypoints_xy[keep], extra.scores[keep])


def _same_face(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """For each of ``boxes`` (x0, y0, x1, y1): could it frame the same face as ``box``?"""
    centre = (box[:2] + box[2:]) / 2.0
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    sides = np.maximum(np.max(boxes[:, 2:] - boxes[:, :2], axis=1), np.max(box[2:] - box[:2]))
    near = np.hypot(*(centres - centre).T) <= SAME_FACE_CENTRES * sides
    return (_iou_one_to_many(box, boxes) > NMS_IOU) & near
