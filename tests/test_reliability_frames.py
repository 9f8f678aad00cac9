"""Reliability, item 1: odd frames through the real pipeline.

Every test builds the pipeline users get (``build_pipeline`` on the shipped
config: the real detector, tracker, classifier, smoother and compositor) and
feeds it frames a desktop can produce: resolution changes mid-stream,
grayscale, BGRA, float and 16-bit frames, empty frames, faces hanging over the
edges or a few pixels wide, 0 and 20 faces, very dark and very bright frames.

"No exception escapes" is guaranteed by ``Pipeline.process``'s last-resort
handler, so the tests check more than that: no stage failed at all
(``failed_frames`` stays 0), every face the pipeline reports is covered by its
emoji in the output, and a warning, when there is one, is logged once per
kind, not per frame. Where a real face is pasted in and the product promises
to hide it (RELIABILITY.md findings 5 and 8), the face itself is checked too,
at the box it was pasted at: a face the pipeline does not report is not
"covered" by default. The classifier's answers are not checked (the shipped
model is provisional).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pytest

from benchmarks.face_leak import VISIBLE_LEAK_FRAC, face_ellipse
from emojicam.config import load_config
from emojicam.pipeline import Pipeline, as_bgr, build_pipeline
from emojicam.types import FaceBox, FaceResult, Frame
from tests.factories import blazeface_installed, make_scene, paste_face, selfie_face_patch, share_in_view


@pytest.fixture
def pipeline() -> Pipeline:
    return build_pipeline(load_config(use_user_file=False).with_mode("replace"))


@pytest.fixture(scope="module")
def face(selfie_mp4) -> tuple[np.ndarray, FaceBox]:
    return selfie_face_patch(selfie_mp4)


def face_scene(face: tuple[np.ndarray, FaceBox], size_wh: tuple[int, int] = (640, 480),
               center_frac: tuple[float, float] = (0.5, 0.5), side_frac: float = 0.3,
               seed: int = 0) -> tuple[np.ndarray, FaceBox]:
    """A scene with the selfie face pasted at a place and size relative to the
    frame, and the face's true box in it (not clipped to the frame)."""
    w, h = size_wh
    return paste_face(make_scene(size_wh, seed=seed), face[0], face[1],
                      (center_frac[0] * w, center_frac[1] * h), side_frac * min(w, h))


def face_frame(face: tuple[np.ndarray, FaceBox], size_wh: tuple[int, int] = (640, 480),
               center_frac: tuple[float, float] = (0.5, 0.5), side_frac: float = 0.3,
               seed: int = 0) -> np.ndarray:
    """``face_scene``'s image alone."""
    return face_scene(face, size_wh, center_frac, side_frac, seed)[0]


def covered_mask(pipeline: Pipeline, out: np.ndarray, results: list[FaceResult]) -> np.ndarray:
    """HxW bool: pixels of ``out`` that show the emoji, not the frame: they equal
    the same results composed over black and over white."""
    h, w = out.shape[:2]
    if not results:
        return np.zeros((h, w), bool)
    black = pipeline.compositor.compose(np.zeros((h, w, 3), np.uint8), results, "replace")
    white = pipeline.compositor.compose(np.full((h, w, 3), 255, np.uint8), results, "replace")
    return np.all((out == black) & (out == white), axis=2)


def assert_covered(
    pipeline: Pipeline, image_bgr: np.ndarray, out: np.ndarray, results: list[FaceResult]
) -> None:
    """Every pixel of every box the pipeline reports shows the emoji, not the
    frame. (Says nothing of a face it did not report: see ``face_shown``.)"""
    h, w = image_bgr.shape[:2]
    covered = covered_mask(pipeline, out, results)
    for r in results:
        c = r.box.clipped((w, h))
        if c is None:
            continue
        assert covered[c.y : c.y + c.h, c.x : c.x + c.w].all(), (
            f"face box {r.box.xywh} not fully covered in a {w}x{h} frame"
        )


def face_shown(pipeline: Pipeline, out: np.ndarray, results: list[FaceResult], face: FaceBox) -> float:
    """The share of the real face's region inside the frame (the ellipse in its
    true box, as ``benchmarks/face_leak.py`` defines it) that the output shows
    instead of an emoji: 1.0 when nothing covers it. Call it right after the
    frame: the compositor keeps each face's emoji size from frame to frame."""
    h, w = out.shape[:2]
    oval = face_ellipse(face, (w, h))
    uncovered = int(np.count_nonzero(oval & ~covered_mask(pipeline, out, results)))
    return uncovered / max(1, int(np.count_nonzero(oval)))


def run_stream(
    pipeline: Pipeline,
    images: Iterable[np.ndarray],
    on_frame: Callable[[int, np.ndarray, list[FaceResult]], None] | None = None,
) -> list[tuple[np.ndarray, list[FaceResult]]]:
    """Process ``images`` as consecutive frames at 30 fps; check each output
    (and pass it to ``on_frame`` before the next frame)."""
    outputs = []
    for i, image in enumerate(images):
        out, results = pipeline.process(Frame(image, i, i / 30.0))
        if on_frame is not None:
            on_frame(i, out, results)
        assert isinstance(out, np.ndarray)
        bgr = as_bgr(image)
        if bgr is not None:
            assert out.shape == bgr.shape and out.dtype == np.uint8, (
                f"frame {i}: output {out.shape} {out.dtype}"
            )
            if pipeline.mode == "replace":
                assert_covered(pipeline, bgr, out, results)
        outputs.append((out, results))
    assert pipeline.failed_frames == 0, "a pipeline stage raised on one of these frames"
    return outputs


def needs_blazeface() -> None:
    """Skip what follows (the checks above it have run) without the BlazeFace
    models: the promises on faces checked here are BlazeFace's, and ``auto``
    falls back to Haar without them."""
    if not blazeface_installed():
        pytest.skip("the face checks need the BlazeFace models (run 'emojicam models install')")


def run_scenes(
    pipeline: Pipeline, scenes: Sequence[tuple[np.ndarray, FaceBox]]
) -> list[tuple[list[FaceResult], float]]:
    """``run_stream`` on frames with a pasted face (``face_scene``): for each,
    the results and the share of the real face that shows (``face_shown``)."""
    shown: list[float] = []

    def measure(i: int, out: np.ndarray, results: list[FaceResult]) -> None:
        shown.append(face_shown(pipeline, out, results, scenes[i][1]))

    outputs = run_stream(pipeline, [image for image, _ in scenes], measure)
    return [(results, share) for (_, results), share in zip(outputs, shown, strict=True)]


def warnings_from(caplog: pytest.LogCaptureFixture) -> Counter[str]:
    return Counter(
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith("emojicam")
    )


def assert_each_warning_once(caplog: pytest.LogCaptureFixture) -> None:
    repeated = {m: n for m, n in warnings_from(caplog).items() if n > 1}
    assert not repeated, f"warnings repeated per frame: {repeated}"


class WithExtraBoxes:
    """The real detector plus fixed extra boxes: geometry no camera produces on demand."""

    def __init__(self, real, extra: list[FaceBox]) -> None:
        self.real, self.extra = real, extra

    def detect(self, image_bgr: np.ndarray) -> list[FaceBox]:
        return list(self.real.detect(image_bgr)) + list(self.extra)


# ---------------------------------------------------------------- resolution changes


@pytest.mark.shared_data
def test_resolution_changes_mid_stream(pipeline, face, caplog):
    sizes = (
        [(640, 480)] * 4
        + [(1280, 720)] * 4
        + [(320, 240)] * 4
        + [(1920, 1080)] * 2
        + [(160, 120)] * 3
        + [(480, 640)] * 3
        + [(640, 480)] * 3
    )
    with caplog.at_level(logging.WARNING):
        outputs = run_stream(pipeline, [face_frame(face, s, (0.45, 0.5)) for s in sizes])
    # the face is followed across every size: found again after each switch
    assert sum(bool(results) for _, results in outputs) >= len(sizes) - 6
    assert not warnings_from(caplog), "a resolution change is not a fault worth a warning"


def test_resolution_changes_without_faces(pipeline, caplog):
    sizes = [(640, 480), (1280, 720), (16, 16), (1, 1), (3, 1000), (1000, 3), (640, 480)]
    with caplog.at_level(logging.WARNING):
        outputs = run_stream(pipeline, [make_scene(s, seed=i) for i, s in enumerate(sizes)])
    assert all(out.shape[:2] == (h, w) for (out, _), (w, h) in zip(outputs, sizes, strict=True))
    assert_each_warning_once(caplog)


# ---------------------------------------------------------------- pixel formats


@pytest.mark.shared_data
def test_gray_bgra_float_and_16_bit_frames_mid_stream(pipeline, face, caplog):
    import cv2

    bgr = face_frame(face)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    variants = [
        bgr,
        gray,
        gray[:, :, None],
        cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA),
        bgr.astype(np.float32) / 255.0,
        bgr.astype(np.float32),
        bgr.astype(np.uint16) * 257,
        np.ascontiguousarray(bgr[:, ::-1]),  # a negative-stride view, as a mirror flip gives
        bgr,
    ]
    with caplog.at_level(logging.WARNING):
        outputs = run_stream(pipeline, variants)
    assert sum(bool(results) for _, results in outputs) >= len(variants) - 2
    assert_each_warning_once(caplog)


def test_empty_and_unusable_frames_pass_and_warn_once(pipeline, caplog):
    good = make_scene((320, 240))
    bad = [
        np.zeros((0, 0, 3), np.uint8),
        np.zeros((0, 640, 3), np.uint8),
        np.zeros((480, 0), np.uint8),
        np.zeros((4, 4, 7), np.uint8),
        np.zeros((240, 320, 3), np.int64),
        np.zeros((240, 320, 3), bool),
        np.zeros((2, 2, 2, 2), np.uint8),
        np.zeros(10, np.uint8),
    ]
    stream = [good] + [b for b in bad for _ in range(3)] + [good]
    with caplog.at_level(logging.WARNING):
        outputs = run_stream(pipeline, stream)
    assert np.array_equal(outputs[-1][0], good)  # processing goes on afterwards
    unusable = [m for m in warnings_from(caplog) if "unusable frame" in m]
    assert len(unusable) == 1 and sum(warnings_from(caplog).values()) == 1


def test_an_unusable_frame_is_never_shown_in_replace_mode(pipeline, caplog):
    """Whatever its shape: a flattened frame once came back unchanged."""
    image = make_scene((320, 240))
    with caplog.at_level(logging.WARNING):
        ((flat_out, results),) = run_stream(pipeline, [image.reshape(-1)])
    assert results == [] and flat_out.shape == (320 * 240 * 3,) and not flat_out.any()
    pipeline.set_mode("decorate")  # outside the mask it passes through, as before
    ((out, _),) = run_stream(pipeline, [image.reshape(-1)])
    assert np.array_equal(out, image.reshape(-1))


@pytest.mark.shared_data
def test_a_batch_of_one_frame_is_processed(pipeline, face):
    bgr = face_frame(face)
    ((out, results),) = run_stream(pipeline, [bgr[None]])
    assert out.shape == bgr.shape and results


def test_one_nan_pixel_does_not_change_the_scale_of_a_float_frame():
    image = make_scene((320, 240)).astype(np.float32) / 255.0
    clean = as_bgr(image)
    image[0, 0, 0] = np.nan
    image[0, 1, 0] = np.inf
    dirty = as_bgr(image)
    assert clean is not None and dirty is not None
    assert np.array_equal(dirty[1:], clean[1:])  # was all black: NaN made max() fail


def test_frame_with_nan_and_inf_pixels(pipeline, caplog):
    image = make_scene((320, 240)).astype(np.float32)
    image[10:50, 10:50] = np.nan
    image[60:90, 60:90] = np.inf
    image[100:120, 100:120] = -np.inf
    with caplog.at_level(logging.WARNING):
        ((out, _),) = run_stream(pipeline, [image])
    assert out.shape == (240, 320, 3)
    assert_each_warning_once(caplog)


# ---------------------------------------------------------------- faces at the edges, tiny faces


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "center_frac",
    [(0.0, 0.5), (1.0, 0.5), (0.5, 0.0), (0.5, 1.0), (0.02, 0.03), (0.97, 0.98), (-0.1, 0.5), (1.1, 1.1)],
    ids=["left", "right", "top", "bottom", "top-left", "bottom-right", "mostly-out", "gone"],
)
def test_faces_partly_outside_the_frame(pipeline, face, center_frac, caplog):
    """The face slides from the middle to the edge and stays there. What is
    promised (RELIABILITY.md finding 8): a face at least about half in view is
    found and no more than 5% of it shows (at the frame's edge the box is
    framed short: finding 13); a face in view whole does not show at all. A face
    less than about half in view may not be found (by design), so there only
    the boxes the pipeline reports are checked."""
    steps = [
        (0.5 + (center_frac[0] - 0.5) * t, 0.5 + (center_frac[1] - 0.5) * t) for t in np.linspace(0, 1, 6)
    ]
    scenes = [face_scene(face, (640, 480), c, 0.45) for c in steps + [center_frac] * 3]
    with caplog.at_level(logging.WARNING):
        outputs = run_scenes(pipeline, scenes)
    assert_each_warning_once(caplog)
    needs_blazeface()
    for i, ((results, shown), (_, box)) in enumerate(zip(outputs, scenes, strict=True)):
        share = share_in_view(box, (640, 480))
        if share < 0.5:
            continue
        assert results, f"frame {i}: face {box.xywh}, {share:.0%} in view, not found"
        assert shown <= (0.0 if share == 1.0 else VISIBLE_LEAK_FRAC), (
            f"frame {i}: {shown:.1%} of face {box.xywh} ({share:.0%} in view) shows"
        )


@pytest.mark.shared_data
def test_faces_a_few_pixels_wide(pipeline, face, caplog):
    """Faces 2 to 32 px wide in a 640x480 frame. The smallest face promised to
    be covered is about 3% of the frame's width (RELIABILITY.md finding 5:
    19 px here; the 20 px face, at that limit, is missed on this backdrop), so
    the faces of 2 to 20 px are only run through (no stage fails, what is
    reported is covered, warnings once) and the 32 px face (5%) must be found
    and not show at all."""
    scenes = [face_scene(face, (640, 480), (0.3, 0.4), side / 480) for side in (2, 4, 8, 12, 20, 32)]
    with caplog.at_level(logging.WARNING):
        (*_, (results, shown)) = run_scenes(pipeline, scenes)
    assert_each_warning_once(caplog)
    needs_blazeface()
    box = scenes[-1][1]
    assert box.w == 32 and results, f"the 32 px face {box.xywh} was not found"
    assert shown == 0.0, f"{shown:.1%} of the 32 px face {box.xywh} shows"


def test_degenerate_boxes_through_the_real_classifier_and_compositor(pipeline, caplog):
    extra = [
        FaceBox(5, 5, 1, 1),
        FaceBox(50, 50, 2, 3),
        FaceBox(100, 100, 0, 0),
        FaceBox(10, 200, 0, 30),
        FaceBox(-60, -60, 80, 80),
        FaceBox(300, 220, 200, 200),
        FaceBox(-10_000, 5, 3, 3),
        FaceBox(319, 239, 1, 1),
        FaceBox(-400, -300, 1200, 900),
    ]
    pipeline.detector = WithExtraBoxes(pipeline.detector, extra)
    with caplog.at_level(logging.WARNING):
        outputs = run_stream(pipeline, [make_scene((320, 240), seed=i) for i in range(4)])
    assert all(len(results) >= len(extra) for _, results in outputs)
    assert_each_warning_once(caplog)


# ---------------------------------------------------------------- 0 and 20 faces


def test_zero_faces_leave_the_frame_untouched(pipeline, caplog):
    scenes = [make_scene((640, 480), seed=i) for i in range(3)]
    with caplog.at_level(logging.WARNING):
        outputs = run_stream(pipeline, scenes)
    for (out, results), scene in zip(outputs, scenes, strict=True):
        assert results == [] and np.array_equal(out, scene)
    assert not warnings_from(caplog)


@pytest.mark.shared_data
def test_twenty_real_faces(pipeline, face, caplog):
    # (At 1280x720 with 105 px faces the whole-frame pass finds 11 of 20 and the
    # crowd tiles the rest: RELIABILITY.md, finding 5; here the point is 20 faces
    # through every stage at once.)
    w, h = 640, 480
    image = make_scene((w, h))
    for k in range(20):
        cx, cy = (k % 5 + 0.5) * w / 5, (k // 5 + 0.5) * h / 4
        image, _ = paste_face(image, face[0], face[1], (cx, cy), 55)
    with caplog.at_level(logging.WARNING):
        outputs = run_stream(pipeline, [image] * 4)
    assert max(len(results) for _, results in outputs) >= 10
    assert_each_warning_once(caplog)


def test_face_count_jumping_between_0_and_20(pipeline, caplog):
    # The classifier batches every face of a frame: the batch size changes
    # 0 -> 20 -> 1 -> 20 -> 0 (resizing the interpreter's input each time).
    rng = np.random.default_rng(5)
    twenty = [
        FaceBox(int(x), int(y), int(s), int(s))
        for x, y, s in zip(
            rng.integers(-30, 620, 20), rng.integers(-30, 460, 20), rng.integers(8, 120, 20), strict=True
        )
    ]
    wrapper = WithExtraBoxes(pipeline.detector, [])
    pipeline.detector = wrapper
    counts = [0, 20, 1, 20, 20, 0, 0, 20, 3]
    with caplog.at_level(logging.WARNING):
        for i, n in enumerate(counts):
            wrapper.extra = twenty[:n]
            out, results = pipeline.process(Frame(make_scene((640, 480), seed=i), i, i / 30))
            assert_covered(pipeline, make_scene((640, 480), seed=i), out, results)
    assert pipeline.failed_frames == 0
    assert_each_warning_once(caplog)


# ---------------------------------------------------------------- exposure


@pytest.mark.shared_data
@pytest.mark.parametrize("exposure", ["black", "white", "very dark face", "blown-out face", "low contrast"])
def test_very_dark_and_very_bright_frames(pipeline, face, exposure, caplog):
    """Black and white frames get no emoji. A very dark face (6% of its
    brightness) and a face at 5% contrast (a washed-out frame: the detector
    stretches it; before, no model scored it 0.3 and it showed whole) are found
    and do not show. A blown-out face is not promised: it is washed out to
    white (checked: that is why)."""
    scene, box = face_scene(face)
    base = scene.astype(np.float32)
    image = {
        "black": np.zeros_like(base),
        "white": np.full_like(base, 255),
        "very dark face": base * 0.06,
        "blown-out face": base * 3.0 + 120,
        "low contrast": 128 + (base - 128) * 0.05,
    }[exposure]
    image = np.clip(image, 0, 255).astype(np.uint8)
    with caplog.at_level(logging.WARNING):
        outputs = run_scenes(pipeline, [(image, box)] * 3)
    assert_each_warning_once(caplog)
    shown = [share for _, share in outputs]
    if exposure in ("black", "white"):
        assert all(results == [] for results, _ in outputs)
        return
    if exposure == "blown-out face":
        oval = face_ellipse(box, (image.shape[1], image.shape[0]))
        assert np.all(image[oval] == 255, axis=1).mean() > 0.9  # no face left to hide
        return
    needs_blazeface()
    assert all(results for results, _ in outputs) and shown == [0.0] * 3, shown


# ---------------------------------------------------------------- a failing stage


@pytest.mark.shared_data
def test_real_classifier_failure_covers_the_frame_and_warns_once(pipeline, face, caplog):
    from emojicam.compose import privacy_cover

    image = face_frame(face)
    interpreter = pipeline.classifier.interpreter

    class Broken:
        def __getattr__(self, name):
            return getattr(interpreter, name)

        def invoke(self):
            raise RuntimeError("tensor arena corrupted (injected)")

    pipeline.classifier.interpreter = Broken()
    with caplog.at_level(logging.WARNING):
        for i in range(6):
            out, results = pipeline.process(Frame(image, i, i / 30))
            assert results == [] and np.array_equal(out, privacy_cover(image, "blur"))
    assert pipeline.failed_frames == 6
    assert sum("tensor arena corrupted" in m for m in warnings_from(caplog)) == 1
    pipeline.classifier.interpreter = interpreter  # the fault clears: faces are masked again
    out, results = pipeline.process(Frame(image, 6, 6 / 30))
    assert results and pipeline.failed_frames == 6
    assert_covered(pipeline, image, out, results)
