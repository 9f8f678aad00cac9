"""BlazeFace: anchors, decoding, suppression and coordinate mapping without the
model; detection and eye keypoints on real frames when the model is installed
(``emojicam models install``)."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from emojicam import blazeface as bf
from emojicam import blazeface_model as bfm
from emojicam import face_merge as fm
from emojicam import models_install
from emojicam.config import DetectorConfig
from emojicam.errors import SetupError
from tests.factories import SELFIE_MP4, make_image, read_selfie_frames

TRUTH_CSV = Path(__file__).resolve().parents[1] / "benchmarks" / "selfie_faces.csv"


# ---------------------------------------------------------------- anchors and decoding


def test_short_range_has_896_anchors_in_two_grids() -> None:
    anchors = bfm.generate_anchors(bfm.SHORT_RANGE_GEOMETRY)
    assert anchors.shape == (896, 2)
    # 16x16 grid (stride 8), two anchors per cell, then 8x8 (stride 16), six per cell
    np.testing.assert_allclose(anchors[0], anchors[1])
    np.testing.assert_allclose(anchors[0], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(anchors[2], [1.5 / 16, 0.5 / 16])  # row-major: x moves first
    np.testing.assert_allclose(anchors[511], [15.5 / 16, 15.5 / 16])
    np.testing.assert_allclose(anchors[512:518], np.tile([0.5 / 8, 0.5 / 8], (6, 1)))
    np.testing.assert_allclose(anchors[-1], [7.5 / 8, 7.5 / 8])


def test_full_range_has_2304_anchors_one_per_cell() -> None:
    anchors = bfm.generate_anchors(bfm.FULL_RANGE_GEOMETRY)
    assert anchors.shape == (2304, 2)
    np.testing.assert_allclose(anchors[1], [1.5 / 48, 0.5 / 48])
    assert anchors.min() > 0 and anchors.max() < 1


def raw_outputs(n: int, hits: dict[int, tuple[float, list[float]]]) -> tuple[np.ndarray, np.ndarray]:
    """Regressors and logits where only ``hits`` (anchor -> (logit, 16 values)) score."""
    boxes = np.zeros((n, 16), np.float32)
    logits = np.full((n, 1), -100.0, np.float32)
    for k, (logit, values) in hits.items():
        boxes[k] = values
        logits[k] = logit
    return boxes, logits


def test_decode_places_box_and_keypoints_relative_to_the_anchor() -> None:
    anchors = bfm.generate_anchors(bfm.SHORT_RANGE_GEOMETRY)
    k = 600  # an anchor of the 8x8 grid
    ax, ay = anchors[k]
    values = [4, -2, 32, 40] + [-8, -6, 8, -6, 0, 2, 0, 10, -14, -4, 14, -4]  # input pixels
    raw_boxes, raw_scores = raw_outputs(896, {k: (2.0, values)})
    dets = bfm.decode(raw_boxes, raw_scores, anchors, 128, min_score=0.5)
    assert len(dets) == 1
    cx, cy = ax + 4 / 128, ay - 2 / 128
    np.testing.assert_allclose(
        dets.boxes_xyxy[0], [cx - 16 / 128, cy - 20 / 128, cx + 16 / 128, cy + 20 / 128], atol=1e-6
    )
    np.testing.assert_allclose(dets.keypoints_xy[0, bfm.RIGHT_EYE], [ax - 8 / 128, ay - 6 / 128], atol=1e-6)
    np.testing.assert_allclose(dets.keypoints_xy[0, bfm.LEFT_EYE], [ax + 8 / 128, ay - 6 / 128], atol=1e-6)
    assert dets.scores[0] == pytest.approx(1 / (1 + math.exp(-2.0)))


def test_decode_reframes_boxes_but_not_keypoints() -> None:
    anchors = bfm.generate_anchors(bfm.FULL_RANGE_GEOMETRY)
    k = 1000
    ax, ay = anchors[k]
    values = [0, 0, 40, 40] + [-8, -6, 8, -6, 0, 2, 0, 10, -14, -4, 14, -4]
    raw_boxes, raw_scores = raw_outputs(2304, {k: (2.0, values)})
    plain = bfm.decode(raw_boxes, raw_scores, anchors, 192, 0.5)
    framed = bfm.decode(raw_boxes, raw_scores, anchors, 192, 0.5, box_scale=0.5, box_shift_y=0.25)
    side = 40 / 192 * 0.5
    cy = ay + 0.25 * side  # the centre moves down by a quarter of the new side
    np.testing.assert_allclose(
        framed.boxes_xyxy[0], [ax - side / 2, cy - side / 2, ax + side / 2, cy + side / 2], atol=1e-6
    )
    np.testing.assert_array_equal(framed.keypoints_xy, plain.keypoints_xy)


def test_decode_drops_low_scores_and_survives_extreme_logits() -> None:
    anchors = bfm.generate_anchors(bfm.SHORT_RANGE_GEOMETRY)
    raw_boxes, raw_scores = raw_outputs(896, {3: (0.1, [0] * 16), 4: (-0.1, [0] * 16), 5: (1e9, [0] * 16)})
    raw_scores[7] = -1e9
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        dets = bfm.decode(raw_boxes, raw_scores, anchors, 128, min_score=0.5)
    assert len(dets) == 2  # anchors 3 and 5; 4 scores 0.475
    assert dets.scores.max() == pytest.approx(1.0)


def dets_of(boxes: list[list[float]], scores: list[float]) -> bfm.Detections:
    b = np.array(boxes, np.float32)
    kps = np.repeat(b[:, None, :2], bfm.NUM_KEYPOINTS, axis=1)  # keypoints at the top-left corner
    return bfm.Detections(b, kps, np.array(scores, np.float32))


def test_weighted_nms_averages_a_cluster_and_keeps_separate_faces() -> None:
    dets = dets_of([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], [0.6, 0.9, 0.7])
    out = bfm.weighted_nms(dets)
    assert len(out) == 2
    np.testing.assert_allclose(out.scores, [0.9, 0.7])
    w = np.array([0.9, 0.6]) / 1.5
    np.testing.assert_allclose(
        out.boxes_xyxy[0], w[0] * np.array([1, 1, 11, 11]) + w[1] * np.array([0, 0, 10, 10]), rtol=1e-5
    )
    np.testing.assert_allclose(out.keypoints_xy[0, 0], out.boxes_xyxy[0, :2], rtol=1e-5)
    np.testing.assert_allclose(out.boxes_xyxy[1], [50, 50, 60, 60])


def test_weighted_nms_of_boxes_scored_zero_is_their_mean_not_nan() -> None:
    out = bfm.weighted_nms(dets_of([[10, 10, 50, 50], [12, 12, 52, 52]], [0.0, 0.0]))
    assert np.allclose(out.boxes_xyxy, [[11, 11, 51, 51]])


def test_weighted_nms_keeps_boxes_that_barely_overlap() -> None:
    out = bfm.weighted_nms(dets_of([[0, 0, 10, 10], [7, 0, 17, 10]], [0.9, 0.8]))  # IoU 3/17
    assert len(out) == 2
    assert len(bfm.weighted_nms(bfm.Detections.empty())) == 0


# ---------------------------------------------------------------- letterbox mapping (fake interpreter)


class FakeInterpreter:
    """Returns fixed outputs and records the input it was given."""

    def __init__(self, boxes: np.ndarray, scores: np.ndarray) -> None:
        self.outputs = {1: boxes[None], 2: scores[None]}
        self.inputs: list[np.ndarray] = []

    def set_tensor(self, index: int, value: np.ndarray) -> None:
        self.inputs.append(value.copy())

    def invoke(self) -> None:
        pass

    def get_tensor(self, index: int) -> np.ndarray:
        return self.outputs[index]


def fake_model(hits: dict[int, tuple[float, list[float]]], margin_frac: float = 0.0) -> bfm.BlazeFaceModel:
    boxes, scores = raw_outputs(896, hits)
    anchors = bfm.generate_anchors(bfm.SHORT_RANGE_GEOMETRY)
    return bfm.BlazeFaceModel(
        FakeInterpreter(boxes, scores), bfm.SHORT_RANGE_GEOMETRY, anchors, 0, 1, 2, margin_frac
    )


def centre_hit(
    anchors: np.ndarray, k: int, centre_px: tuple[float, float], size_px: float, eye_dx_px: float = 10.0
) -> dict[int, tuple[float, list[float]]]:
    """Anchor ``k`` predicting a box centred at ``centre_px`` (input pixels) with eyes beside it."""
    dx = centre_px[0] - anchors[k][0] * 128
    dy = centre_px[1] - anchors[k][1] * 128
    kps = [dx - eye_dx_px, dy - 5, dx + eye_dx_px, dy - 5] + [dx, dy] * 4
    return {k: (5.0, [dx, dy, size_px, size_px, *kps])}


def test_detections_map_back_to_full_resolution_through_the_letterbox() -> None:
    anchors = bfm.generate_anchors(bfm.SHORT_RANGE_GEOMETRY)
    # 1280x720 -> 128x72 at scale 0.1, 28 px bars above and below; input centre = frame centre
    model = fake_model(centre_hit(anchors, 700, (64.0, 64.0), 25.6))
    detector = bf.BlazeFaceDetector(model, None, min_score=0.5, min_face_px=32)
    image = make_image((1280, 720))
    (box,) = detector.detect(image)
    assert (box.x, box.y, box.w, box.h) == (512, 232, 256, 256)
    assert box.right_eye_xy == pytest.approx((540.0, 310.0))  # subject's right eye: image left
    assert box.left_eye_xy == pytest.approx((740.0, 310.0))
    assert box.roll_deg == pytest.approx(0.0)
    # the input was the frame in [-1, 1] with mid-grey (0) bars
    tensor = model.interpreter.inputs[-1][0]
    assert np.all(tensor[:28] == 0.0) and np.all(tensor[100:] == 0.0)
    assert tensor[28:100].min() >= -1.0 and tensor[28:100].max() <= 1.0 and tensor[28:100].std() > 0


def test_margin_shrinks_the_frame_into_the_middle_of_the_input() -> None:
    anchors = bfm.generate_anchors(bfm.SHORT_RANGE_GEOMETRY)
    model = fake_model(centre_hit(anchors, 700, (64.0, 64.0), 25.6), margin_frac=0.1)
    detector = bf.BlazeFaceDetector(model, None, min_score=0.5, min_face_px=32)
    (box,) = detector.detect(make_image((1280, 720)))
    # usable 102.4 px: scale 0.08 (102x58 image at offset 13, 35), so 25.6 input px = 320 frame px
    assert box.center_xy == pytest.approx((640.0, 360.0), abs=4)
    assert box.w == pytest.approx(25.6 * 1280 / 102, abs=1)
    tensor = model.interpreter.inputs[-1][0]
    assert np.all(tensor[:, :13] == 0.0) and np.all(tensor[:, 115:] == 0.0)


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0, 255, (-1.0, 1.0)),  # a normal frame: 0..255 to [-1, 1] as the model wants
        (100, 200, (100 / 127.5 - 1, 200 / 127.5 - 1)),  # 100 levels: as it is
        (122, 134, (-48 / 255, 48 / 255)),  # a washed-out frame (12 levels): 4x, centred on 0
        (0, 16, (-64 / 255, 64 / 255)),  # a very dim one: 4x too, centred
        (60, 63, (60 / 127.5 - 1, 63 / 127.5 - 1)),  # 3 levels (noise on a flat frame): as it is
    ],
)
def test_a_washed_out_frame_is_stretched_for_the_model(low: int, high: int, expected: tuple) -> None:
    """A face at 5% contrast (a washed-out or fogged frame) scored 0.08 and was
    never covered; the detector now sees such a frame stretched (and centred,
    which also keeps dark sensor noise from looking like faces)."""
    model = fake_model({})
    image = np.full((96, 128, 3), low, np.uint8)
    image[:, 64:] = high  # the shrink to the input keeps both levels
    model.run(image, 0.5)
    tensor = model.interpreter.inputs[-1][0]
    picture = tensor[16:112]  # without the bars
    assert (float(picture.min()), float(picture.max())) == pytest.approx(expected, abs=1e-6)


def test_a_small_dark_or_bright_patch_does_not_turn_the_stretch_off() -> None:
    """The span was measured from the darkest to the brightest pixel: a logo or
    a lamp in a washed-out frame turned the stretch off, and a face at 3 to 5%
    contrast showed again (found by the second read)."""
    model = fake_model({})
    image = np.full((96, 128, 3), 122, np.uint8)
    image[:, 64:] = 134
    image[:4, :4], image[-4:, -4:] = 0, 255  # 32 of 12,288 pixels
    model.run(image, 0.5)
    picture = model.interpreter.inputs[-1][0][16:112]
    assert picture[50, 10, 0] == pytest.approx(-48 / 255, abs=1e-6)
    assert picture[50, 100, 0] == pytest.approx(48 / 255, abs=1e-6)
    assert picture[0, 0, 0] == -1.0 and picture[-1, -1, 0] == 1.0  # the patches: clipped to the model's range
    assert bfm.level_range(image) == (122, 134)


@pytest.mark.parametrize("size_wh", [(1280, 720), (1920, 1080), (640, 480), (720, 1280)])
def test_the_letterbox_maps_the_image_corners_back_exactly(size_wh: tuple[int, int]) -> None:
    """The image fills whole input pixels, so its two axes are scaled by slightly
    different factors (1280x720: 102 / 1280 and 58 / 720); one factor for both
    put boxes near the bottom of a 720p frame about 7 px too low."""
    model = fake_model({}, margin_frac=0.1)
    _, lb = model.run(make_image(size_wh), 0.5)
    tensor = model.interpreter.inputs[-1][0]
    rows = np.flatnonzero(np.any(tensor != 0.0, axis=(1, 2)))  # the image; bars and margin are 0
    cols = np.flatnonzero(np.any(tensor != 0.0, axis=(0, 2)))
    corners = np.array([[cols[0], rows[0]], [cols[-1] + 1, rows[-1] + 1]], np.float32) / 128
    np.testing.assert_allclose(lb.to_full(corners, 128), [[0, 0], list(size_wh)], atol=1e-3)


def test_small_boxes_are_dropped_and_boxes_are_clipped_to_the_frame() -> None:
    anchors = bfm.generate_anchors(bfm.SHORT_RANGE_GEOMETRY)
    hits = {**centre_hit(anchors, 700, (64.0, 64.0), 2.0), **centre_hit(anchors, 100, (4.0, 40.0), 20.0)}
    detector = bf.BlazeFaceDetector(fake_model(hits), None, min_score=0.5, min_face_px=32)
    (box,) = detector.detect(make_image((1280, 720)))  # the 20 px face is gone
    assert box.x == 0 and box.w == pytest.approx(140, abs=1)  # centre x 40, half-width 100: cut at 0


def test_empty_image_gives_no_faces() -> None:
    detector = bf.BlazeFaceDetector(fake_model({}), None)
    assert detector.detect(np.zeros((0, 0, 3), np.uint8)) == []


def test_merge_keeps_one_box_per_face_and_prefers_confident_boxes() -> None:
    first = dets_of([[0, 0, 100, 100], [300, 0, 400, 100]], [0.9, 0.8])
    second = dets_of(
        [
            [5, 5, 105, 105],  # the same face as first's: dropped
            [600, 0, 700, 100],  # a face only the second model found: kept
            [280, -30, 460, 150],  # doubtful and loose around a found face (IoU 0.31 < 1 but inside): dropped
            [900, 0, 960, 60],  # doubtful, and nobody else found a face there: kept, to be covered
            [905, 0, 965, 60],  # a weaker doubtful duplicate of it: dropped
        ],
        [0.7, 0.6, 0.35, 0.4, 0.31],
    )
    merged = fm.merge_models(first, second, min_score=0.5)
    np.testing.assert_allclose(
        merged.boxes_xyxy, [[0, 0, 100, 100], [300, 0, 400, 100], [600, 0, 700, 100], [900, 0, 960, 60]]
    )
    np.testing.assert_allclose(merged.scores, [0.9, 0.8, 0.6, 0.4])


def test_a_doubtful_box_never_replaces_a_confident_one() -> None:
    first = dets_of([[0, 0, 200, 200]], [0.35])  # the framing model is only unsure of this face
    second = dets_of([[20, 20, 170, 170]], [0.85])  # the other is sure of it
    merged = fm.merge_models(first, second, min_score=0.5)
    np.testing.assert_allclose(merged.boxes_xyxy, [[20, 20, 170, 170]])
    assert len(fm.merge_models(None, None, 0.5)) == 0


def test_a_confident_fragment_inside_a_doubtful_face_box_grows_to_cover_the_face() -> None:
    """Selfie frame 71 in a 360x480 portrait crop: the full-range model scores a 48 px
    patch of the cheek 0.59, the short-range one frames the whole face at 0.31. The
    face box was dropped as a duplicate of the patch, and 49% of the face showed."""
    face = dets_of([[277, 212, 385, 321]], [0.31])
    cheek = dets_of([[323, 235, 371, 283]], [0.59])
    merged = fm.merge_models(face, cheek, min_score=0.5)
    np.testing.assert_allclose(merged.boxes_xyxy, [[277, 212, 385, 321]])
    np.testing.assert_allclose(merged.scores, [0.59])  # the fragment's box, grown
    # a doubtful loose box about twice a confident one stays the same face, as before
    loose = dets_of([[300, 220, 380, 300]], [0.31])  # 6,400 px against the cheek's 2,304
    merged = fm.merge_models(loose, cheek, min_score=0.5)
    np.testing.assert_allclose(merged.boxes_xyxy, [[323, 235, 371, 283]])


def test_a_face_half_behind_another_keeps_its_own_box() -> None:
    # The second model's box overlaps the first's (IoU 0.33) but is centred half a
    # face away: another face, partly hidden. The same face framed 20% differently
    # (IoU 0.67) is still one face.
    first = dets_of([[0, 0, 100, 100]], [0.9])
    second = dets_of([[50, 0, 150, 100], [20, 0, 120, 100]], [0.7, 0.8])
    assert bfm.iou_one_to_many(first.boxes_xyxy[0], second.boxes_xyxy[:1])[0] > bfm.NMS_IOU
    merged = fm.merge_models(first, second, min_score=0.5)
    np.testing.assert_allclose(merged.boxes_xyxy, [[0, 0, 100, 100], [50, 0, 150, 100]])



def test_a_face_half_behind_another_keeps_its_box_when_the_models_are_unsure_of_it() -> None:
    """Privacy mode covers faces from score 0.3. A doubtful box overlapping a
    confident one (IoU 0.33) was dropped as "the same face" without looking
    where it was centred: the half-hidden face's visible half showed."""
    first = dets_of([[0, 0, 100, 100]], [0.9])
    for offset in (38, 50):  # 0.38 apart, the overlap of the smaller is 0.62: it too was dropped
        second = dets_of([[offset, 0, offset + 100, 100], [10, 5, 110, 105]], [0.35, 0.4])  # another; a copy
        merged = fm.merge_models(first, second, min_score=0.5)
        np.testing.assert_allclose(merged.boxes_xyxy, [[0, 0, 100, 100], [offset, 0, offset + 100, 100]])

# ---------------------------------------------------------------- which model runs when


class ScriptedModel:
    """Stands in for a ``BlazeFaceModel``: returns the faces (pixel boxes) it
    is told to see, and counts its runs."""

    def __init__(self, geometry: bfm.ModelGeometry) -> None:
        self.geometry = geometry
        self.sees: list[tuple[float, float, float, float]] = []
        self.scores: list[float] | None = None  # None: 0.9 for every face
        self.runs = 0

    def run(self, image_bgr: np.ndarray, min_score: float) -> tuple[bfm.Detections, bfm.Letterbox]:
        self.runs += 1
        side = self.geometry.input_side
        if not self.sees:
            return bfm.Detections.empty(), bfm.Letterbox((1.0, 1.0), (0.0, 0.0))
        scores = self.scores if self.scores is not None else [0.9] * len(self.sees)
        keep = [i for i, score in enumerate(scores) if score >= min_score]
        boxes = [[v / side for v in self.sees[i]] for i in keep]
        if not boxes:
            return bfm.Detections.empty(), bfm.Letterbox((1.0, 1.0), (0.0, 0.0))
        return dets_of(boxes, [scores[i] for i in keep]), bfm.Letterbox((1.0, 1.0), (0.0, 0.0))


BIG = (100.0, 100.0, 400.0, 400.0)
SMALL = (800.0, 100.0, 860.0, 160.0)


def scripted_detector(every_n: int = 4) -> tuple[bf.BlazeFaceDetector, ScriptedModel, ScriptedModel]:
    short, full = ScriptedModel(bfm.SHORT_RANGE_GEOMETRY), ScriptedModel(bfm.FULL_RANGE_GEOMETRY)
    detector = bf.BlazeFaceDetector(short, full, discovery_every_n=every_n)  # type: ignore[arg-type]
    return detector, short, full


def run_calls(detector: bf.BlazeFaceDetector, n: int) -> list[int]:
    image = make_image((1280, 720))
    return [len(detector.detect(image)) for _ in range(n)]


def test_a_close_face_costs_one_short_range_run_per_call() -> None:
    detector, short, full = scripted_detector(every_n=4)
    short.sees, full.sees = [BIG], [BIG]
    assert run_calls(detector, 12) == [1] * 12
    assert short.runs == 12 and full.runs <= 4  # full-range only looks for newcomers


@pytest.mark.parametrize("every_n", [4, 8])
def test_a_newcomer_is_found_within_the_discovery_interval(every_n: int) -> None:
    """While the short-range model follows a close face, the idle full-range
    model looks for newcomers once every ``every_n`` calls: a distant face
    that joins gets its box within that many calls, and no sooner costs more."""
    detector, short, full = scripted_detector(every_n=every_n)
    short.sees, full.sees = [BIG], [BIG]
    run_calls(detector, 24)
    assert full.runs <= 24 // every_n + 1
    full.sees = [BIG, SMALL]  # someone joins in the background
    counts = run_calls(detector, every_n)
    assert counts[-1] == 2
    assert counts.index(2) < every_n


def test_the_discovery_interval_comes_from_the_config(detector_paths) -> None:
    short_path, full_path = detector_paths
    cfg = DetectorConfig(discovery_every_n_frames=6)
    detector = bf.BlazeFaceDetector.create(cfg, model_path=short_path, full_range_path=full_path)
    assert detector.discovery_every_n == 6


def test_a_discovery_interval_of_one_runs_both_models_on_every_call() -> None:
    """``detector.discovery_every_n_frames: 1``: every model looks for faces on
    every frame (config.yaml). In an empty scene the two took turns, so a face
    that only the model off duty could see got its emoji a frame late (selfie
    frames 108 and 473, where the face comes back)."""
    detector, short, full = scripted_detector(every_n=1)
    assert run_calls(detector, 4) == [0] * 4
    assert short.runs == 4 and full.runs == 4
    full.sees = [SMALL]  # a distant face appears
    assert run_calls(detector, 1) == [1]


def test_a_distant_face_costs_one_full_range_run_per_call() -> None:
    detector, short, full = scripted_detector(every_n=4)
    full.sees = [SMALL]
    assert run_calls(detector, 12)[2:] == [1] * 10
    assert full.runs >= 10 and short.runs <= 5


def test_faces_only_each_model_sees_keep_both_running() -> None:
    detector, short, full = scripted_detector()
    short.sees, full.sees = [BIG], [SMALL]
    assert run_calls(detector, 8)[2:] == [2] * 6
    assert short.runs >= 7 and full.runs >= 7


def test_an_empty_scene_alternates_the_models_one_per_call() -> None:
    detector, short, full = scripted_detector()
    assert run_calls(detector, 10) == [0] * 10
    assert short.runs == 5 and full.runs == 5


def test_a_face_lost_by_one_model_is_looked_for_with_the_other_at_once() -> None:
    detector, short, full = scripted_detector()
    short.sees, full.sees = [BIG], []
    run_calls(detector, 6)
    short.sees, full.sees = [], [BIG]  # the face moves away from the camera
    before = full.runs
    assert run_calls(detector, 1) == [1]
    assert full.runs == before + 1


def test_privacy_first_mode_frames_faces_with_the_model_that_is_sure_of_them() -> None:
    """Both models run every call; short-range's doubtful extra box (a loose
    box that full-range does not confirm) must not make it the framing model."""
    detector, short, full = scripted_detector()
    detector.set_privacy(True, 0.3)
    big_full = (110.0, 90.0, 410.0, 390.0)  # full-range frames the big face a little differently
    false_alarm = (900.0, 500.0, 1000.0, 600.0)
    distant = (800.0, 100.0, 890.0, 190.0)  # (90 px: not small enough for a crowd search)
    short.sees, short.scores = [BIG, false_alarm], [0.9, 0.35]
    full.sees = [big_full, distant]
    image = make_image((1280, 720))
    for _ in range(3):
        boxes = detector.detect(image)
    assert short.runs == 3 and full.runs == 3
    assert (boxes[0].x, boxes[0].y) == (110, 90)  # the face is framed by the model sure of every face
    assert len(boxes) == 3  # and the false alarm is still covered


# ---------------------------------------------------------------- crowds: tiles


@pytest.mark.parametrize("size_wh", [(1280, 720), (1920, 1080), (640, 480), (720, 1280), (100, 60)])
def test_crowd_tiles_cover_the_frame_with_overlapping_squares(size_wh) -> None:
    w, h = size_wh
    tiles = bf.crowd_tiles(w, h)
    covered = np.zeros((h, w), int)
    for x0, y0, x1, y1 in tiles:
        assert x1 - x0 == y1 - y0 == round(bf.CROWD_TILE_FRAC * max(w, h)) or min(w, h) == x1 - x0
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        covered[y0:y1, x0:x1] += 1
    assert covered.min() >= 1
    side = tiles[0][2] - tiles[0][0]
    for axis in (0, 1):
        starts = sorted({t[axis] for t in tiles})
        for a, b in zip(starts, starts[1:], strict=False):
            assert a + side - b >= round(bf.CROWD_TILE_MIN_OVERLAP * side)  # overlap
    assert bf.crowd_tiles(1280, 720) == [(0, 0, 720, 720), (560, 0, 1280, 720)]


class SquaresModel(ScriptedModel):
    """A fake full-range model that really looks at the image it is given:
    it finds the white squares (the "faces") on black, as big in its input
    as the letterbox makes them, and only those of at least ``min_input_px``
    input pixels (a real model's smallest face). So a crowd of small squares
    is missed in the whole frame and found in tiles, and a square cut by a
    tile's edge gives a box cut there, as a real face would."""

    def __init__(self, min_input_px: float = 10.0) -> None:
        super().__init__(bfm.FULL_RANGE_GEOMETRY)
        self.min_input_px = min_input_px
        self.tile_runs = 0
        self.frame_shape: tuple[int, ...] | None = None

    def run(self, image_bgr: np.ndarray, min_score: float) -> tuple[bfm.Detections, bfm.Letterbox]:
        if self.frame_shape is None:
            self.frame_shape = image_bgr.shape
        self.tile_runs += image_bgr.shape != self.frame_shape
        scale = self.geometry.input_side / max(image_bgr.shape[:2])
        gray = np.ascontiguousarray(image_bgr[:, :, 0])
        n, _, stats, _ = cv2.connectedComponentsWithStats((gray > 128).astype(np.uint8))
        self.sees = [
            (float(x), float(y), float(x + w), float(y + h))
            for x, y, w, h, _ in stats[1:n]
            if min(w, h) * scale >= self.min_input_px
        ]
        return super().run(image_bgr, min_score)


def squares_frame(faces: list[tuple[float, float, float, float]]) -> np.ndarray:
    frame = np.zeros((720, 1280, 3), np.uint8)
    for x0, y0, x1, y1 in faces:
        frame[round(y0) : round(y1), round(x0) : round(x1)] = 255
    return frame


def crowd_detector(short_sees=()) -> tuple[bf.BlazeFaceDetector, SquaresModel]:
    short = ScriptedModel(bfm.SHORT_RANGE_GEOMETRY)
    short.sees = list(short_sees)
    full = SquaresModel()
    return bf.BlazeFaceDetector(short, full), full  # type: ignore[arg-type]


def grid_faces(sides: list[float]) -> list[tuple[float, float, float, float]]:
    """Squares of the given sides on a 5-wide grid over 1280x720 (the middle
    column lies in both tiles)."""
    out = []
    for k, side in enumerate(sides):
        cx, cy = (k % 5 + 0.5) * 256, (k // 5 + 0.5) * 180
        out.append((cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))
    return out


def found_squares(boxes: list) -> list[tuple[int, int, int, int]]:
    return sorted((b.x, b.y, b.w, b.h) for b in boxes)


def expected_squares(faces) -> list[tuple[int, int, int, int]]:
    return sorted((round(x0), round(y0), round(x1 - x0), round(y1 - y0)) for x0, y0, x1, y1 in faces)


def test_in_privacy_mode_a_crowd_is_searched_in_tiles_and_every_face_found() -> None:
    # four 100 px faces (under 10% of 1280) are found in the whole frame, six of 60 px
    # (9 px in the model's input) only in the tiles; one straddles the first tile's edge
    faces = grid_faces([100, 60, 100, 60, 100, 60, 100, 60, 60, 60])
    faces[3] = (680.0, 230.0, 760.0, 290.0)  # cut at x=720 by the first tile, whole in the second
    frame = squares_frame(faces)
    detector, full = crowd_detector()
    detector.set_privacy(True, 0.3)
    boxes = detector.detect(frame)
    assert full.tile_runs == 2
    assert len(boxes) == 10  # each face once, the cut one from the tile that holds it whole
    for got, want in zip(found_squares(boxes), expected_squares(faces), strict=True):
        assert np.abs(np.subtract(got, want)).max() <= 2  # tiles are searched at 0.53x: rounding


def test_one_small_face_is_enough_to_search_tiles() -> None:
    faces = grid_faces([70] + [60] * 9)  # 70 px: under 6% of 1280, still found in the whole frame
    detector, full = crowd_detector()
    detector.set_privacy(True, 0.3)
    assert len(detector.detect(squares_frame(faces))) == 10 and full.tile_runs == 2


def test_no_tiles_for_a_close_face_a_small_group_big_faces_or_outside_privacy_mode() -> None:
    scenes = [
        [BIG],  # a webcam user
        grid_faces([100, 100, 100]),  # three people: not a crowd
        grid_faces([160] * 8),  # eight people, all found in the whole frame
    ]
    for faces in scenes:
        detector, full = crowd_detector()
        detector.set_privacy(True, 0.3)
        assert len(detector.detect(squares_frame(faces))) == len(faces) and full.tile_runs == 0
    normal, full_normal = crowd_detector()
    frame = squares_frame(grid_faces([100, 60, 100, 60, 100, 60, 100, 60, 60, 60]))
    counts = [len(normal.detect(frame)) for _ in range(4)]
    assert counts[-1] == 4 and full_normal.tile_runs == 0  # decorate and label modes: no tiles


def test_without_the_full_range_model_short_range_runs_every_call() -> None:
    short = ScriptedModel(bfm.SHORT_RANGE_GEOMETRY)
    detector = bf.BlazeFaceDetector(short, None)  # type: ignore[arg-type]
    assert run_calls(detector, 5) == [0] * 5 and short.runs == 5


# ---------------------------------------------------------------- set-up errors


def test_create_without_an_installed_model_says_how_to_install(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(models_install, "user_models_dir", lambda: tmp_path)
    with pytest.raises(SetupError, match="emojicam models install"):
        bf.BlazeFaceDetector.create(DetectorConfig())
    assert bf.find_blazeface_model() is None
    with pytest.raises(SetupError, match=str(tmp_path / "absent.tflite")):
        bf.BlazeFaceDetector.create(DetectorConfig(), model_path=tmp_path / "absent.tflite")


def test_a_damaged_installed_model_is_called_damaged_not_missing(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(models_install, "user_models_dir", lambda: tmp_path)
    (tmp_path / models_install.SHORT_RANGE.filename).write_bytes(b"garbage")
    with pytest.raises(SetupError, match=r"is damaged \(corrupt\); run 'emojicam models install --force'"):
        bf.BlazeFaceDetector.create(DetectorConfig())


def test_create_rejects_a_file_that_is_not_a_model(tmp_path) -> None:
    bogus = tmp_path / "face_detection_short_range.tflite"
    bogus.write_bytes(b"not a flatbuffer" * 64)
    with pytest.raises(SetupError, match="models install --force"):
        bf.BlazeFaceDetector.create(DetectorConfig(), model_path=bogus)


# ---------------------------------------------------------------- the real models


@pytest.fixture(scope="module")
def detector_paths() -> tuple[Path, Path | None]:
    path = bf.find_blazeface_model()
    if path is None:
        pytest.skip("BlazeFace model not installed (run 'emojicam models install')")
    return path, bf.find_full_range_model()


@pytest.fixture(scope="module")
def labelled_frames() -> tuple[dict[int, np.ndarray], dict[int, tuple[int, int]]]:
    if not SELFIE_MP4.exists():
        pytest.skip(f"selfie clip not found at {SELFIE_MP4} (needs ../shared beside the repo)")
    truth = {}
    for line in TRUTH_CSV.read_text().splitlines():
        if line[:1].isdigit():
            frame, clear, partial = line.split(",")[:3]
            truth[int(frame)] = (int(clear), int(partial))
    return read_selfie_frames(sorted(truth)), truth


def test_wrong_model_for_the_geometry_is_rejected(detector_paths) -> None:
    with pytest.raises(SetupError, match="expected a float32 1x192x192x3 input"):
        bfm.BlazeFaceModel.load(detector_paths[0], bfm.FULL_RANGE_GEOMETRY)


def test_finds_faces_in_hand_labelled_frames_far_more_often_than_haar(
    detector_paths, labelled_frames
) -> None:
    from emojicam.detect import HaarDetector

    frames, truth = labelled_frames
    blaze = bf.BlazeFaceDetector.create(DetectorConfig(), *detector_paths)
    haar = HaarDetector.create(DetectorConfig())
    with_face = [i for i, (clear, _) in truth.items() if clear]
    no_face = [i for i, (clear, partial) in truth.items() if not clear and not partial]
    found = {i: blaze.detect(frames[i]) for i in sorted(frames)}
    blaze_hits = sum(1 for i in with_face if found[i])
    haar_hits = sum(1 for i in with_face if haar.detect(frames[i]))
    assert blaze_hits >= 0.9 * len(with_face), f"BlazeFace found {blaze_hits} of {len(with_face)}"
    assert blaze_hits >= haar_hits + 0.3 * len(with_face), (blaze_hits, haar_hits)
    assert sum(len(found[i]) for i in no_face) <= 1, "faces reported in frames without a visible face"


def test_eye_keypoints_sit_on_the_eyes_and_follow_head_roll(detector_paths, labelled_frames) -> None:
    frames, _ = labelled_frames
    blaze = bf.BlazeFaceDetector.create(DetectorConfig(), *detector_paths)
    image = frames[100]  # one frontal, upright face
    (box,) = blaze.detect(image)
    (rx, ry), (lx, ly) = box.right_eye_xy, box.left_eye_xy
    assert box.x < rx < lx < box.x + box.w, "subject's right eye must be on the image's left"
    assert box.y < min(ry, ly) and max(ry, ly) < box.y + 0.5 * box.h, "eyes in the upper half of the box"
    assert 0.25 < (lx - rx) / box.w < 0.6
    assert abs(box.roll_deg) < 12
    # Turn the picture 20 degrees clockwise about the face: the roll follows.
    rot = cv2.getRotationMatrix2D(box.center_xy, -20.0, 1.0)
    turned = cv2.warpAffine(image, rot, (image.shape[1], image.shape[0]), borderMode=cv2.BORDER_REFLECT)
    (turned_box,) = blaze.detect(turned)
    assert turned_box.roll_deg - box.roll_deg == pytest.approx(20.0, abs=6.0)
    eye_mid = rot @ np.array([(rx + lx) / 2, (ry + ly) / 2, 1.0])
    got_mid = np.mean([turned_box.right_eye_xy, turned_box.left_eye_xy], axis=0)
    assert np.linalg.norm(got_mid - eye_mid) < 0.08 * box.w


def test_both_models_frame_the_same_face_alike(detector_paths, labelled_frames) -> None:
    """The full-range boxes are reframed to the short-range framing, which
    the FER crop margins and the emoji sizes were measured with."""
    if detector_paths[1] is None:
        pytest.skip("full-range BlazeFace model not installed")
    frames, _ = labelled_frames
    short = bfm.BlazeFaceModel.load(detector_paths[0], bfm.SHORT_RANGE_GEOMETRY, 1, bfm.SHORT_RANGE_MARGIN)
    full = bfm.BlazeFaceModel.load(detector_paths[1], bfm.FULL_RANGE_GEOMETRY)

    def boxes(model: bfm.BlazeFaceModel, image: np.ndarray) -> np.ndarray:
        dets, lb = model.run(image, 0.5)
        dets = bfm.weighted_nms(dets)
        return lb.to_full(dets.boxes_xyxy.reshape(-1, 2, 2), model.geometry.input_side).reshape(-1, 4)

    side_ratio, dy = [], []
    for image in frames.values():
        full_boxes = boxes(full, image)
        for s in boxes(short, image):
            iou = bfm.iou_one_to_many(s, full_boxes) if len(full_boxes) else np.zeros(0)
            if len(iou) and iou.max() >= 0.5:
                f = full_boxes[int(iou.argmax())]
                side_ratio.append((f[2] - f[0]) / (s[2] - s[0]))
                dy.append(((f[1] + f[3]) - (s[1] + s[3])) / 2 / (s[3] - s[1]))
    assert len(side_ratio) >= 30, f"only {len(side_ratio)} faces found by both models"
    assert np.median(side_ratio) == pytest.approx(1.0, abs=0.03)
    assert abs(np.median(dy)) < 0.03


def paste_face(background: np.ndarray, face: np.ndarray, face_side_px: int, xy: tuple[int, int]) -> None:
    crop = cv2.resize(face, (face_side_px, face_side_px), interpolation=cv2.INTER_AREA)
    x, y = xy
    background[y : y + face_side_px, x : x + face_side_px] = crop


def face_crop(detector: bf.BlazeFaceDetector, image: np.ndarray) -> np.ndarray:
    box = detector.detect(image)[0]
    side = int(box.w * 1.6)
    padded = cv2.copyMakeBorder(image, side, side, side, side, cv2.BORDER_REPLICATE)
    x0, y0 = int(box.center_xy[0] - side / 2) + side, int(box.center_xy[1] - side / 2) + side
    return padded[y0 : y0 + side, x0 : x0 + side].copy()


def test_small_distant_faces_need_and_get_the_full_range_model(detector_paths, labelled_frames) -> None:
    if detector_paths[1] is None:
        pytest.skip("full-range BlazeFace model not installed")
    frames, _ = labelled_frames
    both = bf.BlazeFaceDetector.create(DetectorConfig(), *detector_paths)
    short_only = bf.BlazeFaceDetector.create(DetectorConfig(), detector_paths[0], use_full_range=False)
    face = face_crop(both, frames[100])
    scene = cv2.resize(frames[400], (1280, 720))  # a landscape without people
    paste_face(scene, face, 96, (300, 200))  # a face about 60 px wide
    assert short_only.detect(scene) == []
    seen = [both.detect(scene) for _ in range(3)]  # the full-range model runs within two calls
    boxes = [b for found in seen for b in found]
    assert boxes, "the full-range model missed a 60 px face"
    assert all(300 <= b.center_xy[0] <= 396 and 200 <= b.center_xy[1] <= 296 for b in boxes)


def test_eight_faces_in_a_720p_frame(detector_paths, labelled_frames) -> None:
    frames, _ = labelled_frames
    detector = bf.BlazeFaceDetector.create(DetectorConfig(), *detector_paths)
    faces = [face_crop(detector, frames[i]) for i in (60, 65, 100, 120, 240, 250, 300, 310)]  # frontal
    scene = cv2.resize(frames[400], (1280, 720))
    for i, face in enumerate(faces):
        paste_face(scene, face, 280, (20 + (i % 4) * 320, 40 + (i // 4) * 360))
    found = max((detector.detect(scene) for _ in range(3)), key=len)
    assert len(found) == 8


def test_auto_backend_falls_back_to_haar_with_one_warning(tmp_path, monkeypatch, caplog) -> None:
    from emojicam.detect import HaarDetector, create_detector

    monkeypatch.setattr(models_install, "user_models_dir", lambda: tmp_path)
    with caplog.at_level("WARNING"):
        detector = create_detector(DetectorConfig(backend="auto"))
    assert isinstance(detector, HaarDetector)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "emojicam models install" in warnings[0]
    with pytest.raises(SetupError, match="emojicam models install"):
        create_detector(DetectorConfig(backend="blazeface"))
