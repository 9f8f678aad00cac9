"""Make docs/before_after.png with ``emojicam process`` in each mode.

    python docs/make_before_after.py [--frame 100] [--video ../shared/data/video/selfie_outdoor.mp4]

The frame comes from "selfie" by Aaron "tango" Tang, CC BY 2.0 (credited in
the README).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
VIDEO = HERE.parents[1] / "shared" / "data" / "video" / "selfie_outdoor.mp4"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--video", type=Path, default=VIDEO)
    ap.add_argument("--frame", type=int, default=100)
    ap.add_argument("-o", "--output", type=Path, default=HERE / "before_after.png")
    args = ap.parse_args()
    cap = cv2.VideoCapture(str(args.video))
    cap.set(cv2.CAP_PROP_POS_FRAMES, args.frame)
    ok, frame = cap.read()
    cap.release()
    if not ok:
        raise SystemExit(f"{args.video}: cannot read frame {args.frame}")
    tiles = [("original", frame)]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "frame.png"
        cv2.imwrite(str(src), frame)
        for mode in ("replace", "decorate", "label"):
            dst = Path(tmp) / f"{mode}.png"
            subprocess.run([sys.executable, "-m", "emojicam", "process", str(src), "-o", str(dst),
                            "--mode", mode], check=True)
            tiles.append((mode, cv2.imread(str(dst))))
    row = []
    for name, image in tiles:
        image = cv2.resize(image, (400, 300), interpolation=cv2.INTER_AREA)
        bar = np.full((34, 400, 3), 255, np.uint8)
        cv2.putText(bar, name, (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.75, (40, 40, 40), 2, cv2.LINE_AA)
        row.append(np.vstack([bar, image]))
        row.append(np.full((334, 6, 3), 255, np.uint8))
    cv2.imwrite(str(args.output), np.hstack(row[:-1]))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
