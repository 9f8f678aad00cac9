"""One BlazeFace model (Google, Apache-2.0) in ai-edge-litert: its anchors,
the letterboxed input, and the decoding of its outputs into detections.

The ``.tflite`` files come from ``emojicam models install`` (see
``emojicam.models_install``). A model outputs, for each of its SSD anchors,
16 regressors (box centre/size and six keypoints, in input pixels relative to
the anchor) and one score logit. MediaPipe decodes these inside its graph,
which we do not use, so the anchor layout and decoding are written here
(numpy, a few dozen lines) following the published model cards and the
SsdAnchorsCalculator / TensorsToDetectionsCalculator options of the model's
graph.

Two models (``SHORT_RANGE_GEOMETRY``, ``FULL_RANGE_GEOMETRY``):

* short-range (128x128 input, 896 anchors): fast, wants faces that fill a good
  part of the frame (a webcam user);
* full-range (192x192 input, 2304 anchors): finds small and distant faces.

Keypoints, in model order: subject's right eye, left eye, nose tip, mouth
centre, right ear tragion, left ear tragion.

``emojicam.blazeface`` decides when each model runs; ``emojicam.face_merge``
makes one detection per face of the two models' detections.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from emojicam.errors import SetupError

NUM_KEYPOINTS = 6
RIGHT_EYE, LEFT_EYE = 0, 1  # the subject's eyes
NMS_IOU = 0.3  # MediaPipe's min_suppression_threshold for both models
SCORE_CLIP = 100.0
#: A shrunk frame whose levels span at least STRETCH_MIN_LEVELS and fewer than
#: STRETCH_BELOW_LEVELS (a washed-out, fogged or very dim picture) is shown to
#: the model STRETCH_GAIN times stronger, centred on mid-grey
#: (``BlazeFaceModel.run``); 4 x 63 levels still fit the range. The span is
#: taken between the 1st and 99th percentiles (``level_range``), so that a
#: small dark or bright patch (a logo, a lamp) does not turn the stretch off.
STRETCH_MIN_LEVELS, STRETCH_BELOW_LEVELS, STRETCH_GAIN = 6, 64, 4.0
RANGE_PERCENTILE = 1.0


def level_range(image: np.ndarray) -> tuple[int, int]:
    """The grey levels (all channels together) at ``image``'s 1st and 99th
    percentiles, from a histogram (about 50 microseconds on a shrunk frame,
    measured with a training run beside it; ``np.percentile`` would sort)."""
    hist = cv2.calcHist([image.reshape(-1, 1)], [0], None, [256], [0, 256]).ravel()
    cum = np.cumsum(hist)
    cut = cum[-1] * RANGE_PERCENTILE / 100.0
    return int(np.searchsorted(cum, cut, side="right")), int(np.searchsorted(cum, cum[-1] - cut))


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


def overlap_areas(box: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(intersections, area of ``box``, areas of ``boxes``), xyxy boxes."""
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter, area, areas


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    return iou_of(*overlap_areas(box, boxes))


def iou_of(inter: np.ndarray, area: np.ndarray, areas: np.ndarray) -> np.ndarray:
    """Intersection over union from ``overlap_areas``' three results."""
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
        members = remaining & (iou_one_to_many(boxes[i], boxes) > iou_threshold)
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
        gain, offset = 2.0 / 255.0, -1.0  # 0..255 to the model's [-1, 1]
        lo, hi = level_range(rgb)
        stretch = STRETCH_MIN_LEVELS <= hi - lo < STRETCH_BELOW_LEVELS
        if stretch:
            # A face at 5% contrast scored 0.08 and was never covered; stretched 4x it is
            # found (3% to 20% contrast, the selfie face). Centred, dark sensor noise
            # also gives fewer false faces than as it was (20 frames of grey noise at
            # mean 30: 0 boxes against 46). A real camera's frames span far more
            # levels (the selfie clip: at least 204), so they reach the model as before.
            mid = (hi + lo) / 2.0
            gain, offset = 2.0 * STRETCH_GAIN / 255.0, -2.0 * STRETCH_GAIN * mid / 255.0
        self._input.fill(0.0)  # bars and margin: mid-grey in the model's [-1, 1] range
        np.multiply(rgb, gain, out=self._input[0, oy : oy + rh, ox : ox + rw], casting="unsafe")
        self._input[0, oy : oy + rh, ox : ox + rw] += offset
        if stretch:  # the 1% beyond the range's ends would reach past the model's range
            np.clip(self._input, -1.0, 1.0, out=self._input)
        self.interpreter.set_tensor(self.input_index, self._input)
        self.interpreter.invoke()
        raw_boxes = self.interpreter.get_tensor(self.boxes_index)[0]
        raw_scores = self.interpreter.get_tensor(self.scores_index)[0]
        geo = self.geometry
        dets = decode(raw_boxes, raw_scores, self.anchors, side, min_score, geo.box_scale, geo.box_shift_y)
        return dets, Letterbox((rw / w, rh / h), (float(ox), float(oy)))
