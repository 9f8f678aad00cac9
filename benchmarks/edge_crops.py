"""Faces cut by the frame's edge: does the classifier do better on a crop that
keeps the FER-2013 framing (``preprocess.fer_crop``: the missing part filled
by repeating the edge) than on the clipped crop, which the resize to 48x48
stretches?

Each FER-2013 PublicTest face (the split we choose on; never PrivateTest) is
upscaled 4x onto a canvas with a replicated border, as a webcam face at
about 190 px, then the canvas is cut through the face: its top by 10, 20 or
30% of the face, its left side by 20%, or its bottom by 15%. BlazeFace finds
the face (faces it misses are left out of that cut's count) and the shipped
model classifies both crops of the same box.

    python benchmarks/edge_crops.py [--faces 800] [--offset 0]

Prints, per cut: faces found, accuracy on the stretched crop, on the crop
framed around the box clipped to the frame (as in session 12), and on the crop
framed around the detector's whole box (``FaceBox.classifier_xywh``, session
15). Needs ``../shared`` beside the checkout and ``emojicam models install``.
About 3 minutes per 800 faces on one core.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emojicam.blazeface import BlazeFaceDetector  # noqa: E402
from emojicam.classify import TFLiteClassifier  # noqa: E402
from emojicam.config import DetectorConfig  # noqa: E402
from emojicam.detect import crop_margins_for  # noqa: E402
from emojicam.preprocess import batch_to_model_input, crop_box_xywh, fer_crop  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "fer2013.npz"
SIDE, PAD = 192, 96  # the face upscaled 4x, on a canvas PAD px wider on each side
CUTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda c: c,
    "top 10%": lambda c: c[PAD + SIDE // 10 :],
    "top 20%": lambda c: c[PAD + SIDE // 5 :],
    "top 30%": lambda c: c[PAD + 3 * SIDE // 10 :],
    "left 20%": lambda c: c[:, PAD + SIDE // 5 :],
    "bottom 15%": lambda c: c[: PAD + SIDE - 3 * SIDE // 20],
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", type=int, default=800, help="PublicTest faces to use")
    ap.add_argument("--offset", type=int, default=0, help="skip this many PublicTest faces first")
    args = ap.parse_args(argv)
    if not DATA.is_file():
        print(f"missing {DATA} (needs ../shared beside the checkout)", file=sys.stderr)
        return 2
    with np.load(DATA) as d:
        public = d["usage"] == 1
        faces = d["images"][public][args.offset : args.offset + args.faces]
        labels = d["labels"][public][args.offset : args.offset + args.faces]
    classifier = TFLiteClassifier.create()
    detector = BlazeFaceDetector.create(DetectorConfig(min_face_px=10))
    margins = crop_margins_for(detector)
    print(f"{len(faces)} PublicTest faces from #{args.offset}")
    print("cut | faces found | stretched crop | framed on the clipped box | framed on the detected box")
    for name, cut in CUTS.items():
        stretched, framed, whole = [], [], []
        for face, label in zip(faces, labels, strict=True):
            big = cv2.resize(face, (SIDE, SIDE), interpolation=cv2.INTER_CUBIC)
            canvas = cv2.copyMakeBorder(big, PAD, PAD, PAD, PAD, cv2.BORDER_REPLICATE)
            frame = np.ascontiguousarray(cv2.cvtColor(cut(canvas), cv2.COLOR_GRAY2BGR))
            boxes = detector.detect(frame)
            if not boxes:
                continue
            best = max(boxes, key=lambda b: b.score)
            box = best.xywh  # clipped to the frame
            x, y, w, h = crop_box_xywh(box, (frame.shape[1], frame.shape[0]), margins)
            crops = [
                frame[y : y + h, x : x + w],
                fer_crop(frame, box, margins),
                fer_crop(frame, best.classifier_xywh, margins),  # what the classifier uses
            ]
            top = classifier.predict(batch_to_model_input(crops)).argmax(axis=1)
            stretched.append(top[0] == label)
            framed.append(top[1] == label)
            whole.append(top[2] == label)
        rates = " | ".join(f"{np.mean(hits):.1%}" for hits in (stretched, framed, whole))
        print(f"{name} | {len(framed)} | {rates}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
