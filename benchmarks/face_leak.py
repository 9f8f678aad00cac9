"""Face leaks in replace mode: in how many frames does part of a face show?

A frame *leaks* when some pixel of a face region in the original frame is
not covered by an emoji in the output. "Covered" is measured, not assumed:
the frame's results are composed again over a black and over a white frame,
and a pixel counts as covered only where those two outputs agree, i.e. where
the output no longer depends on what the camera saw (alpha 1, or the
compositor's fill). A frame the pipeline gave up on (``privacy_cover``:
blurred or blanked) counts as covered, and is reported on its own.

"Face region" must not come from the detector under test, or a face it
misses would never count. So:

* On real video (the selfie clip), an independent *reference* looks at every
  original frame: BlazeFace, both models on every frame from score 0.3 (as
  replace mode's privacy-first detection does; the other modes run them on a
  schedule from 0.5), on the original frame; and OpenCV's Haar cascade at full
  resolution (the pipeline's Haar runs on a 480 px copy). A reference box is a face
  region. Haar finds some false faces in foliage and clouds; ``--sheet``
  draws every leaking frame, so each can be checked by eye.
* On synthetic motion, the face region is known exactly: a real face (the
  selfie clip's frame 100) is pasted moving fast (with motion blur), cut in
  and out, scaled from small to large, sliding in over the frame's edge, as a
  crowd of 20, and sliding half behind another face and out again.

For each leak the report says why: ``missed`` (no emoji overlaps the face:
the detector did not find it, or had not looked yet), ``stale`` (the only
emoji is a tracker box held from an earlier frame, the face has moved), or
``partial`` (an emoji overlaps the face but does not cover all of it).

    python benchmarks/face_leak.py [--clip PATH] [--frames N] [--no-synthetic] [--sheet DIR] [--json]

Reported per source: frames, frames with a face region, leaking frames (any
uncovered face pixel), leaking frames with more than 5% of a face showing,
and each leak's frame, reason and uncovered share.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emojicam.config import Config, load_config  # noqa: E402
from emojicam.pipeline import Compositor, Pipeline, build_pipeline  # noqa: E402
from emojicam.types import FaceBox, FaceResult, Frame  # noqa: E402

CLIP = ROOT.parent / "shared" / "data" / "video" / "selfie_outdoor.mp4"
REVIEW = Path(__file__).with_name("face_leak_review.csv")
REFERENCE_MIN_SCORE = 0.3
VISIBLE_LEAK_FRAC = 0.05  # "a face shows": more than this share of its region uncovered

log = logging.getLogger("face_leak")


# ---------------------------------------------------------------- reference faces


@dataclass
class ReferenceDetector:
    """Faces in an original frame, found independently of the pipeline."""

    blazeface: list = field(default_factory=list)  # BlazeFaceModel instances
    haar: cv2.CascadeClassifier | None = None
    min_score: float = REFERENCE_MIN_SCORE

    @classmethod
    def create(cls, use_haar: bool = True) -> ReferenceDetector:
        models = []
        try:
            from emojicam import blazeface as bf
            from emojicam import blazeface_model as bfm

            for find, geometry, margin in (
                (bf.find_blazeface_model, bfm.SHORT_RANGE_GEOMETRY, bfm.SHORT_RANGE_MARGIN),
                (bf.find_full_range_model, bfm.FULL_RANGE_GEOMETRY, 0.0),
            ):
                path = find()
                if path is not None:
                    models.append(bfm.BlazeFaceModel.load(Path(path), geometry, 1, margin))
        except ImportError:
            pass
        haar = None
        if use_haar:
            haar = cv2.CascadeClassifier(
                str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml")
            )
        return cls(models, haar)

    @property
    def names(self) -> list[str]:
        return (["blazeface"] if self.blazeface else []) + (["haar"] if self.haar is not None else [])

    def detect(self, image_bgr: np.ndarray) -> list[tuple[str, FaceBox]]:
        from emojicam import blazeface_model as bfm

        found: list[tuple[str, FaceBox]] = []
        h, w = image_bgr.shape[:2]
        parts = []
        for model in self.blazeface:
            dets, lb = model.run(image_bgr, self.min_score)
            dets = bfm.weighted_nms(dets)
            side = model.geometry.input_side
            boxes = lb.to_full(dets.boxes_xyxy.reshape(-1, 2, 2), side).reshape(-1, 4)
            parts.append(bfm.Detections(boxes, dets.keypoints_xy, dets.scores))
        merged = bfm.weighted_nms(bfm.Detections.concat(parts)) if parts else None
        if merged is not None:
            for (x0, y0, x1, y1), score in zip(merged.boxes_xyxy, merged.scores, strict=False):
                box = FaceBox(
                    int(round(x0)), int(round(y0)), int(round(x1 - x0)), int(round(y1 - y0)), float(score)
                ).clipped((w, h))
                if box is not None and min(box.w, box.h) >= 8:
                    found.append(("blazeface", box))
        if self.haar is not None:
            gray = cv2.equalizeHist(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY))
            rects = self.haar.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(40, 40))
            for x, y, bw, bh in rects if len(rects) else []:
                found.append(("haar", FaceBox(int(x), int(y), int(bw), int(bh))))
        return found


# ---------------------------------------------------------------- coverage


def coverage_mask(compositor: Compositor, results: list[FaceResult], size_wh: tuple[int, int]) -> np.ndarray:
    """HxW bool: pixels whose replace-mode output does not depend on the
    input (composed over black and over white, they agree)."""
    w, h = size_wh
    if not results:
        return np.zeros((h, w), bool)
    black = compositor.compose(np.zeros((h, w, 3), np.uint8), results, "replace")
    white = compositor.compose(np.full((h, w, 3), 255, np.uint8), results, "replace")
    return np.all(black == white, axis=2)


@dataclass
class Leak:
    source: str  # "truth", "blazeface" or "haar"
    frame: int
    box_xywh: tuple[int, int, int, int]
    uncovered_px: int  # in the face ellipse
    face_px: int  # pixels of the face ellipse inside the frame
    box_uncovered_px: int  # anywhere in the (rectangular) box, corners included
    reason: str  # missed, stale, partial
    verdict: str = "unreviewed"  # truth (synthetic), face / not_face (hand review), unreviewed
    note: str = ""

    @property
    def counts(self) -> bool:
        """A leak of a face: known (truth), reviewed as one, or not yet reviewed."""
        return self.uncovered_px > 0 and self.verdict != "not_face"

    @property
    def uncovered_frac(self) -> float:
        return self.uncovered_px / max(1, self.face_px)


@dataclass
class Report:
    name: str
    frames: int = 0
    frames_with_face: int = 0
    privacy_covered_frames: int = 0  # the pipeline failed and covered the whole frame
    leaks: list[Leak] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def leak_frames(self) -> list[int]:
        return sorted({lk.frame for lk in self.leaks if lk.counts})

    @property
    def box_leak_frames(self) -> list[int]:
        return sorted({lk.frame for lk in self.leaks if lk.verdict != "not_face"})

    @property
    def visible_leak_frames(self) -> list[int]:
        return sorted({lk.frame for lk in self.leaks if lk.counts and lk.uncovered_frac > VISIBLE_LEAK_FRAC})

    @property
    def not_face_frames(self) -> list[int]:
        """Frames where only reference false alarms (reviewed) were uncovered."""
        return sorted({lk.frame for lk in self.leaks if lk.verdict == "not_face"} - set(self.leak_frames))

    @property
    def unreviewed_frames(self) -> list[int]:
        return sorted({lk.frame for lk in self.leaks if lk.counts and lk.verdict == "unreviewed"})

    def by_reason(self) -> dict[str, int]:
        frames: dict[str, set[int]] = {}
        for lk in self.leaks:
            if lk.counts:
                frames.setdefault(lk.reason, set()).add(lk.frame)
        return {k: len(v) for k, v in sorted(frames.items())}

    def summary(self) -> dict:
        return {
            "name": self.name,
            "frames": self.frames,
            "frames_with_face": self.frames_with_face,
            "leak_frames": len(self.leak_frames),
            "box_leak_frames": len(self.box_leak_frames),
            "visible_leak_frames": len(self.visible_leak_frames),
            "unreviewed_leak_frames": len(self.unreviewed_frames),
            "not_face_frames": len(self.not_face_frames),
            "privacy_covered_frames": self.privacy_covered_frames,
            "leak_frames_by_reason": self.by_reason(),
            "seconds": round(self.seconds, 1),
            "leaks": [dict(asdict(lk), uncovered_frac=round(lk.uncovered_frac, 3)) for lk in self.leaks],
        }


def face_ellipse(box: FaceBox, size_wh: tuple[int, int]) -> np.ndarray:
    """HxW bool: the ellipse inscribed in ``box`` (faces are oval; a box's
    corners are hair, ears or background), clipped to the frame."""
    w, h = size_wh
    mask = np.zeros((h, w), np.uint8)
    centre = (round((box.x + box.w / 2.0) * 16), round((box.y + box.h / 2.0) * 16))
    axes = (round(box.w / 2.0 * 16), round(box.h / 2.0 * 16))
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 1, -1, cv2.LINE_8, 4)
    return mask.astype(bool)


def _reason(face: FaceBox, results: list[FaceResult]) -> str:
    overlapping = [r for r in results if r.box.iou(face) > 0.0]
    if not overlapping:
        return "missed"
    if all(r.missed_frames > 0 for r in overlapping):
        return "stale"
    return "partial"


@dataclass(frozen=True)
class Reviewed:
    frame: int
    source: str
    box: FaceBox
    verdict: str
    note: str


def read_review(path: Path = REVIEW) -> list[Reviewed]:
    if not path.is_file():
        return []
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if not ln.startswith("#")]
    return [
        Reviewed(
            int(r["frame"]),
            r["source"],
            FaceBox(int(r["x"]), int(r["y"]), int(r["w"]), int(r["h"])),
            r["verdict"],
            r["note"],
        )
        for r in csv.DictReader(lines)
    ]


def _apply_review(leak: Leak, review: list[Reviewed]) -> None:
    box = FaceBox(*leak.box_xywh)
    for r in review:
        if r.frame == leak.frame and r.source == leak.source and r.box.iou(box) >= 0.5:
            leak.verdict, leak.note = r.verdict, r.note
            return


def measure(
    name: str,
    pipeline: Pipeline,
    frames: Iterable[tuple[np.ndarray, list[FaceBox]]],
    reference: ReferenceDetector | None = None,
    sheet_dir: Path | None = None,
    fps: float = 30.0,
    review: list[Reviewed] | None = None,
) -> Report:
    """Run ``frames`` (image, known face boxes) through ``pipeline`` in
    replace mode and check every face region against what came out."""
    pipeline.set_mode("replace")
    report = Report(name)
    t0 = time.perf_counter()
    for index, (image, truth) in enumerate(frames):
        failed_before = pipeline.failed_frames
        out, results = pipeline.process(Frame(image, index, index / fps))
        faces = [("truth", b) for b in truth]
        if reference is not None:
            faces += reference.detect(image)
        report.frames += 1
        size_wh = (image.shape[1], image.shape[0])
        visible = [(src, b, c) for src, b in faces if (c := b.clipped(size_wh)) is not None]
        report.frames_with_face += bool(visible)
        # A failed frame is covered only where privacy blurred or blanked it
        # (``unvouched_frame``); with privacy off it left as the camera saw it,
        # with no results, so every face region in it counts as missed below.
        if pipeline.failed_frames > failed_before and pipeline.strict_privacy:
            report.privacy_covered_frames += 1
            continue
        mask = coverage_mask(pipeline.compositor, results, size_wh)
        frame_leaks = []
        for src, box, c in visible:
            region = ~mask[c.y : c.y + c.h, c.x : c.x + c.w]
            oval = face_ellipse(box, size_wh)[c.y : c.y + c.h, c.x : c.x + c.w]
            if region.any():
                leak = Leak(
                    src,
                    index,
                    c.xywh,
                    int(np.count_nonzero(region & oval)),
                    int(np.count_nonzero(oval)),
                    int(np.count_nonzero(region)),
                    _reason(c, results),
                    "truth" if src == "truth" else "unreviewed",
                )
                if src != "truth":
                    _apply_review(leak, review or [])
                frame_leaks.append(leak)
        report.leaks += frame_leaks
        if sheet_dir is not None and frame_leaks:
            _draw_leaks(sheet_dir / f"{name}_{index:04d}.png", image, out, mask, frame_leaks, results)
    report.seconds = time.perf_counter() - t0
    return report


def _draw_leaks(
    path: Path,
    image: np.ndarray,
    out: np.ndarray,
    mask: np.ndarray,
    leaks: list[Leak],
    results: list[FaceResult],
) -> None:
    left = image.copy()
    for r in results:
        x, y, w, h = r.box.xywh
        cv2.rectangle(
            left, (x, y), (x + w - 1, y + h - 1), (255, 0, 0) if r.missed_frames else (0, 255, 0), 2
        )
    right = out.copy()
    for lk in leaks:
        x, y, w, h = lk.box_xywh
        colour = {"truth": (0, 0, 255), "blazeface": (0, 200, 255), "haar": (255, 0, 255)}[lk.source]
        cv2.rectangle(left, (x, y), (x + w - 1, y + h - 1), colour, 1)
        cv2.rectangle(right, (x, y), (x + w - 1, y + h - 1), colour, 1)
        cv2.putText(
            right,
            f"{lk.source} {lk.reason} {lk.uncovered_frac:.1%}",
            (x, max(12, y - 4)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            colour,
            1,
            cv2.LINE_AA,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.hstack([left, right]))


# ---------------------------------------------------------------- inputs


def clip_frames(path: Path, limit: int | None = None) -> Iterator[tuple[np.ndarray, list[FaceBox]]]:
    cap = cv2.VideoCapture(str(path))
    try:
        n = 0
        while limit is None or n < limit:
            ok, image = cap.read()
            if not ok:
                return
            yield image, []
            n += 1
    finally:
        cap.release()


def synthetic_background(size_wh: tuple[int, int], seed: int = 0) -> np.ndarray:
    """An indoor-ish backdrop: soft gradients and a few blurred shapes."""
    w, h = size_wh
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    image = np.dstack([120 + 60 * xx / w, 110 + 50 * yy / h, 140 - 40 * xx / w]).astype(np.uint8)
    for _ in range(8):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        colour = tuple(int(c) for c in rng.integers(40, 220, 3))
        cv2.rectangle(
            image, (x, y), (x + int(rng.integers(20, w // 3)), y + int(rng.integers(20, h // 3))), colour, -1
        )
    return cv2.GaussianBlur(image, (0, 0), 3)


def synthetic_scenarios(
    patch: np.ndarray,
    face: FaceBox,
    size_wh: tuple[int, int] = (640, 480),
    fps: float = 30.0,
    seconds: float = 2.0,
) -> dict[str, list[tuple[np.ndarray, list[FaceBox]]]]:
    """Named clips of a real face moving in ways that stress tracking. Each
    frame comes with the face's exact box (the face region)."""
    from tests.factories import paste_face

    w, h = size_wh
    n = round(fps * seconds)
    bg = synthetic_background(size_wh)
    clips: dict[str, list[tuple[np.ndarray, list[FaceBox]]]] = {}

    def frame(cx: float, cy: float, side: float, blur: int = 0) -> tuple[np.ndarray, list[FaceBox]]:
        image, box = paste_face(bg, patch, face, (cx, cy), side, blur)
        return image, [box]

    # 1. Fast sweep: left to right and back in one second each, 35-40 px per frame, blurred.
    sweep = []
    for i in range(n):
        t = (i % fps) / fps
        x = 90 + (w - 180) * (t if (i // fps) % 2 == 0 else 1 - t)
        sweep.append(frame(x, h * 0.5, 150, blur=int((w - 180) / fps)))
    clips["fast_sweep"] = sweep
    # 2. Cuts: the face jumps to a new place every 6 frames, with empty frames between.
    rng = np.random.default_rng(1)
    cuts = []
    for i in range(n):
        if i % 6 == 0:
            spot = (
                float(rng.uniform(100, w - 100)),
                float(rng.uniform(110, h - 110)),
                float(rng.uniform(110, 180)),
            )
        if i % 12 >= 9:  # 3 frames with no face out of every 12
            cuts.append((bg.copy(), []))
        else:
            cuts.append(frame(*spot))
    clips["cuts_and_gaps"] = cuts
    # 3. Zoom: the face grows from 50 px to 420 px and back (a person walking up to the camera).
    zoom = []
    for i in range(n):
        s = 50 + 370 * (1 - abs(2 * i / (n - 1) - 1))
        zoom.append(frame(w * 0.5, h * 0.5, s))
    clips["zoom"] = zoom
    # 4. Edge: the face slides in over the left edge, then out over the right one.
    edge = []
    for i in range(n):
        x = -100 + (w + 200) * i / (n - 1)
        edge.append(frame(x, h * 0.45, 190, blur=int((w + 200) / n)))
    clips["over_the_edges"] = edge
    # 5. A crowd: 20 faces of 105 px in a 1280x720 frame (a group photo), still, for half a second.
    clips["crowd_of_20"] = [crowd_frame(patch, face, 105)] * round(fps / 2)
    # 6. Behind another: a second face (100 px) slides from beside a 110 px face to half
    # behind it and back out, the front head cut out as an oval so the other one shows.
    behind = []
    for i in range(n):
        gap = 1.3 - 0.9 * (1 - abs(2 * i / (n - 1) - 1))  # centre distance in face sides: 1.3 -> 0.4 -> 1.3
        image, back = paste_face(bg, patch, face, (w * 0.42 + gap * 110, h * 0.5), 100)
        image, front = paste_head(image, patch, face, (w * 0.42, h * 0.5), 110)
        behind.append((image, [front, back]))
    clips["behind_another"] = behind
    return clips


def paste_head(
    image: np.ndarray, patch: np.ndarray, face: FaceBox, centre_xy: tuple[float, float], side_px: float
) -> tuple[np.ndarray, FaceBox]:
    """``paste_face``, but only an oval head (the face box and 24% around it)
    replaces ``image``: what lies behind the head stays visible around it."""
    from tests.factories import paste_face

    pasted, box = paste_face(image, patch, face, centre_xy, side_px)
    head = np.zeros(image.shape[:2], np.uint8)
    axes = (round(box.w * 0.62), round(box.h * 0.62))
    cv2.ellipse(head, (box.x + box.w // 2, box.y + box.h // 2), axes, 0, 0, 360, 255, -1)
    return np.where(head[..., None] > 0, pasted, image), box


def crowd_frame(
    patch: np.ndarray, face: FaceBox, side_px: float, size_wh: tuple[int, int] = (1280, 720), n: int = 20
) -> tuple[np.ndarray, list[FaceBox]]:
    """A group photo: ``n`` copies of the face, ``side_px`` wide, on a 5-wide grid."""
    from tests.factories import paste_face

    w, h = size_wh
    rows = -(-n // 5)
    image, boxes = synthetic_background(size_wh), []
    for k in range(n):
        centre = ((k % 5 + 0.5) * w / 5, (k // 5 + 0.5) * h / rows)
        image, box = paste_face(image, patch, face, centre, side_px)
        boxes.append(box)
    return image, boxes


# ---------------------------------------------------------------- main


def replace_config(path: Path | None = None) -> Config:
    cfg = load_config(path, use_user_file=False)
    return cfg.with_mode("replace")


def vigilant(pipeline: Pipeline, min_score: float) -> Pipeline:
    """What-if for the proposed fix (not product code): BlazeFace with both
    models on every frame and faces from ``min_score`` up also covered."""
    from emojicam import blazeface as bf

    det = pipeline.detector
    if not isinstance(det, bf.BlazeFaceDetector):
        raise SystemExit("--what-if-unsure needs the BlazeFace detector (emojicam models install)")
    reference = ReferenceDetector(
        [m for m in (det.short_range, det.full_range) if m is not None], None, min_score
    )

    class Vigilant:
        def detect(self, image_bgr: np.ndarray) -> list[FaceBox]:
            return [b for _, b in reference.detect(image_bgr) if min(b.w, b.h) >= det.min_face_px]

    pipeline.detector = Vigilant()
    return pipeline


def print_reports(detector: str, reports: list[Report]) -> None:
    print(
        f"detector: {detector}. leak: a frame where a pixel of a face (the ellipse in its box) shows; "
        f"visible: more than {VISIBLE_LEAK_FRAC:.0%} of a face shows; box: a pixel anywhere in a face's box "
        "(corners included) shows; covered: the pipeline blurred the whole frame; not-face: only reference "
        "false alarms (hand-reviewed in face_leak_review.csv) were uncovered"
    )
    print(
        f"{'source':16} {'frames':>6} {'w/face':>6} {'leak':>5} {'visible':>7} {'box':>5} {'covered':>7} "
        f"{'not-face':>8} {'unreviewed':>10}  leak frames by reason"
    )
    for r in reports:
        print(
            f"{r.name:16} {r.frames:6d} {r.frames_with_face:6d} {len(r.leak_frames):5d} "
            f"{len(r.visible_leak_frames):7d} {len(r.box_leak_frames):5d} {r.privacy_covered_frames:7d} "
            f"{len(r.not_face_frames):8d} {len(r.unreviewed_frames):10d}  {r.by_reason()}"
        )
    for r in reports:
        for lk in r.leaks:
            if lk.counts:
                print(
                    f"  {r.name} frame {lk.frame}: {lk.source} face {lk.box_xywh} {lk.reason}, "
                    f"{lk.uncovered_px}/{lk.face_px} px ({lk.uncovered_frac:.1%}) uncovered"
                    f" [{lk.verdict}{': ' + lk.note if lk.note else ''}]"
                )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, default=CLIP)
    parser.add_argument("--frames", type=int, default=None, help="only the first N frames of the clip")
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--no-synthetic", action="store_true")
    parser.add_argument("--no-clip", action="store_true")
    parser.add_argument("--sheet", type=Path, default=None, help="write each leaking frame here")
    parser.add_argument(
        "--what-if-unsure",
        type=float,
        default=None,
        metavar="SCORE",
        help="measure the proposed fix: run both BlazeFace models every frame and cover faces from SCORE up",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    cfg = replace_config(args.config)

    def pipeline() -> Pipeline:
        p = build_pipeline(cfg)
        return p if args.what_if_unsure is None else vigilant(p, args.what_if_unsure)

    reports: list[Report] = []
    if not args.no_clip:
        if not args.clip.is_file():
            parser.error(f"{args.clip}: clip not found")
        reports.append(
            measure(
                "selfie_clip",
                pipeline(),
                clip_frames(args.clip, args.frames),
                ReferenceDetector.create(),
                args.sheet,
                review=read_review(),
            )
        )
    if not args.no_synthetic:
        from tests.factories import selfie_face_patch

        patch, face = selfie_face_patch(args.clip)
        for name, frames in synthetic_scenarios(patch, face).items():
            reports.append(measure(name, pipeline(), frames, None, args.sheet))

    detector = type(build_pipeline(cfg).detector).__name__
    if args.what_if_unsure is not None:
        detector += f" (what-if: both models every frame, faces from score {args.what_if_unsure} covered)"
    if args.json:
        print(json.dumps({"detector": detector, "reports": [r.summary() for r in reports]}, indent=1))
    else:
        print_reports(detector, reports)
    return 0


if __name__ == "__main__":
    sys.exit(main())
