"""One detection per face from the two BlazeFace models' detections.

The short-range and the full-range model often both find a face, and frame
it a little differently; in replace mode with privacy on, faces they are
unsure of (doubtful boxes, below ``min_score``) are kept too, to be covered.
``merge_models`` keeps one box per face: the confident boxes of the model in
use, then the other model's faces it missed, then doubtful boxes for faces
nobody found. The rules below were each measured on the selfie clip and the
synthetic clips of ``benchmarks/face_leak.py`` (RELIABILITY.md, findings 12
and 15).
"""

from __future__ import annotations

import numpy as np

from emojicam.blazeface_model import NMS_IOU, Detections, iou_of, iou_one_to_many, overlap_areas

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
#: A doubtful box mostly over a kept one is that face if centred near it, or if
#: it is at least this many times larger (a loose box around the face, whose
#: centre may sit further off); a box of about the same size centred away is
#: another face, half hidden behind the kept one.
LOOSE_AREA_RATIO = 1.5
#: Two boxes that overlap (IoU above ``NMS_IOU``), from the two models or a
#: doubtful one against a kept one, are one face only if their centres are at
#: most this far apart, in sides of the larger box. On the selfie clip the two
#: models' boxes of one face lie at most 0.25 apart (99th percentile 0.20, 336
#: pairs); a face half hidden behind another lies about 0.5 away and would
#: otherwise lose its own box.
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
    sure = [select(d, d.scores >= min_score) for d in parts]
    merged = sure[0]
    for extra in sure[1:]:
        merged = Detections.concat([merged, not_overlapping(extra, merged)])
    doubtful = Detections.concat([select(d, d.scores < min_score) for d in parts])
    for i in np.argsort(-doubtful.scores, kind="stable"):
        box = doubtful.boxes_xyxy[i]
        if len(merged):
            inter, area, areas = overlap_areas(box, merged.boxes_xyxy)
            near = _centres_near(box, merged.boxes_xyxy)
            # Mostly inside a kept box and centred near it, or a loose box around one
            # (larger: its centre may sit further off), is that face; a box half over
            # a kept one but centred away is another face, half hidden: kept.
            inside = (_overlap_of_smaller(inter, area, areas) >= SAME_FACE_OVERLAP) & (
                near | (area >= LOOSE_AREA_RATIO * areas)
            )
            same = ((iou_of(inter, area, areas) > NMS_IOU) & near) | inside
            if np.any(same):
                confident = merged.scores >= min_score
                fragments = np.flatnonzero(same & confident & (area >= FRAGMENT_AREA_RATIO * areas))
                if len(fragments) == 1:  # the face around a confident fragment of it: cover both
                    merged = _grown_to_hold(merged, int(fragments[0]), box)
                continue
        merged = Detections.concat([merged, select(doubtful, np.arange(len(doubtful)) == i)])
    return merged


def _grown_to_hold(dets: Detections, j: int, box: np.ndarray) -> Detections:
    """``dets`` with box ``j`` grown to the union of it and ``box`` (keypoints
    and score kept)."""
    boxes = dets.boxes_xyxy.copy()
    boxes[j, :2] = np.minimum(boxes[j, :2], box[:2])
    boxes[j, 2:] = np.maximum(boxes[j, 2:], box[2:])
    return Detections(boxes, dets.keypoints_xy, dets.scores)


def select(dets: Detections, keep: np.ndarray) -> Detections:
    return Detections(dets.boxes_xyxy[keep], dets.keypoints_xy[keep], dets.scores[keep])


def _overlap_of_smaller(inter: np.ndarray, area: np.ndarray, areas: np.ndarray) -> np.ndarray:
    """Intersection over the smaller box's area, from ``overlap_areas``' three results."""
    smaller = np.minimum(area, areas)
    return np.where(smaller > 0, inter / np.maximum(smaller, 1e-12), 0.0)


def not_overlapping(extra: Detections, base: Detections) -> Detections:
    """Those of ``extra`` that are other faces than ``base``'s: each overlaps
    no box of ``base`` (IoU), or only boxes centred too far away to be the
    same face (``SAME_FACE_CENTRES``)."""
    if len(extra) == 0 or len(base) == 0:
        return extra
    keep = np.array([not np.any(_same_face(b, base.boxes_xyxy)) for b in extra.boxes_xyxy])
    return Detections(extra.boxes_xyxy[keep], extra.keypoints_xy[keep], extra.scores[keep])


def _same_face(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """For each of ``boxes`` (x0, y0, x1, y1): could it frame the same face as ``box``?"""
    return (iou_one_to_many(box, boxes) > NMS_IOU) & _centres_near(box, boxes)


def _centres_near(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """For each of ``boxes``: is its centre within ``SAME_FACE_CENTRES`` sides
    (of the larger of the two) of ``box``'s?"""
    centre = (box[:2] + box[2:]) / 2.0
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    sides = np.maximum(np.max(boxes[:, 2:] - boxes[:, :2], axis=1), np.max(box[2:] - box[:2]))
    return np.hypot(*(centres - centre).T) <= SAME_FACE_CENTRES * sides
