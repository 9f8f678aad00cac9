"""Face recall on the selfie clip: in how many frames with a visible face does the face get an emoji?

Ground truth: ``benchmarks/selfie_faces.csv``, every 5th frame of
``../shared/data/video/selfie_outdoor.mp4`` labelled by hand (see the header
of that file for the definitions). The clip is run through the real detector
and tracker frame by frame (the tracker needs every frame); a face "gets an
emoji" when the tracker reports a box for it that frame, including a box
held at the last known position after a miss, as the compositor draws it.

    python benchmarks/face_recall.py [--backend blazeface|haar] [--size 1280x720] [--privacy] [--sheet PNG]

Without ``--privacy`` the detector and tracker run as in decorate and label
modes (and replace mode with ``privacy.enabled: false``): BlazeFace's idle
model on a schedule, faces from ``detector.min_score``. ``--privacy`` runs them
as replace mode with privacy on (the default) does: both models on every
frame, faces from ``privacy.min_score``, a missed face's box held in place.

Counting is per frame (a frame counts as covered when it shows at least as
many boxes as it has clear faces) and per face (``min(boxes, clear faces)``),
which assumes boxes lie on faces: check that with ``--sheet``, which draws the
boxes on the labelled frames.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emojicam.bench import fit_frame  # noqa: E402
from emojicam.config import DetectorConfig, PrivacyConfig, TrackerConfig  # noqa: E402
from emojicam.detect import create_detector  # noqa: E402
from emojicam.track import IoUTracker  # noqa: E402

CLIP = ROOT.parent / "shared" / "data" / "video" / "selfie_outdoor.mp4"
TRUTH = Path(__file__).with_name("selfie_faces.csv")


def read_truth(path: Path = TRUTH) -> dict[int, tuple[int, int]]:
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    return {int(r["frame"]): (int(r["clear_faces"]), int(r["partial_faces"])) for r in csv.DictReader(lines)}


def run(
    backend: str, size_wh: tuple[int, int] | None, every_n: int = 1, privacy: bool = False
) -> tuple[dict[int, list], dict[int, list]]:
    """Boxes shown (tracker output) and boxes detected, for every frame of the
    clip; ``privacy``: as replace mode with privacy on sets the stages up."""
    detector = create_detector(DetectorConfig(backend=backend))  # type: ignore[arg-type]
    tracker = IoUTracker(TrackerConfig())
    if privacy:  # what Pipeline._sync_privacy tells the stages in replace mode
        if hasattr(detector, "set_privacy"):
            detector.set_privacy(True, PrivacyConfig().min_score)
        tracker.set_privacy(True)
    cap = cv2.VideoCapture(str(CLIP))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    shown: dict[int, list] = {}
    detected: dict[int, list] = {}
    index = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        image = fit_frame(frame, size_wh) if size_wh else frame
        boxes = detector.detect(image) if index % every_n == 0 else None
        shown[index] = [t.box for t in tracker.update(boxes, index / fps)]
        detected[index] = boxes or []
        index += 1
    cap.release()
    return shown, detected


def score(truth: dict[int, tuple[int, int]], shown: dict[int, list]) -> dict[str, float | int]:
    with_face = [i for i, (clear, _) in truth.items() if clear > 0]
    empty = [i for i, (clear, partial) in truth.items() if clear == 0 and partial == 0]
    frames_hit = sum(1 for i in with_face if len(shown[i]) >= truth[i][0])
    faces = sum(truth[i][0] for i in with_face)
    faces_hit = sum(min(len(shown[i]), truth[i][0]) for i in with_face)
    return {
        "frames_with_face": len(with_face),
        "frames_covered": frames_hit,
        "frame_recall": round(frames_hit / len(with_face), 4),
        "faces": faces,
        "faces_covered": faces_hit,
        "face_recall": round(faces_hit / faces, 4),
        "frames_without_face": len(empty),
        "boxes_in_frames_without_face": sum(len(shown[i]) for i in empty),
    }


def contact_sheet(
    path: Path, truth: dict[int, tuple[int, int]], shown: dict[int, list], size_wh: tuple[int, int] | None
) -> None:
    cap = cv2.VideoCapture(str(CLIP))
    tiles, index = [], 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if index in truth:
            image = fit_frame(frame, size_wh) if size_wh else frame
            for b in shown[index]:
                cv2.rectangle(image, (b.x, b.y), (b.x + b.w, b.y + b.h), (0, 255, 0), 3)
            tile = cv2.resize(image, (320, round(320 * image.shape[0] / image.shape[1])))
            clear, partial = truth[index]
            ok_frame = len(shown[index]) >= clear
            colour = (0, 200, 0) if ok_frame else (0, 0, 255)
            cv2.putText(
                tile,
                f"{index} gt {clear}+{partial} shown {len(shown[index])}",
                (4, 18),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.5,
                colour,
                2,
            )
            tiles.append(tile)
        index += 1
    while len(tiles) % 6:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[r : r + 6]) for r in range(0, len(tiles), 6)]
    cv2.imwrite(str(path), np.vstack(rows))


def parse_size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="blazeface", choices=("blazeface", "haar"))
    ap.add_argument(
        "--size", type=parse_size, help="scale to cover WxH and crop the centre first (e.g. 1280x720)"
    )
    ap.add_argument("--every-n", type=int, default=1, help="run the detector every Nth frame")
    ap.add_argument("--privacy", action="store_true",
                    help="detect and track as replace mode with privacy on (the default mode) does")
    ap.add_argument("--sheet", type=Path, help="write the labelled frames with the shown boxes to this PNG")
    args = ap.parse_args()
    if not CLIP.exists():
        print(f"clip not found: {CLIP}", file=sys.stderr)
        return 2
    truth = read_truth()
    shown, detected = run(args.backend, args.size, args.every_n, args.privacy)
    result = {
        "backend": args.backend,
        "privacy_first": args.privacy,
        "size": args.size and "x".join(map(str, args.size)),
        "detect_every_n": args.every_n,
        "shown (detector + tracker, what gets an emoji)": score(truth, shown),
        "detected (detector alone)": score(truth, detected),
        "frames_with_a_detection_of_511": sum(1 for b in detected.values() if b),
    }
    print(json.dumps(result, indent=1))
    if args.sheet:
        contact_sheet(args.sheet, truth, shown, args.size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
