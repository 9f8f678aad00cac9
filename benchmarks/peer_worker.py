"""One side of ``compare_fer.py``: EmojiCam or the ``fer`` package, in its own process.

Runs in EmojiCam's environment (``--impl emojicam``) or in a separate one with
``fer`` installed (``--impl fer``), so neither package's dependencies touch the
other. Pinned to one CPU core. Speaks JSON lines on stdin/stdout:

    {"cmd": "frame", "i": 12}          -> {"i": 12, "wall_ms": ..., "cpu_ms": ..., "faces": 1}
    {"cmd": "fer2013", "path": "..."}  -> {"accuracy": ..., ...}
    {"cmd": "quit"}

Frames come from a ``.npy`` file (N, 720, 1280, 3) uint8 BGR, opened as a
memory map, so both sides read identical pixels.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def pin_to_cpu(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


class EmojiCamSide:
    """The daemon's pipeline (detect, track, classify, smooth, compose) plus a
    full-frame BGR -> RGB conversion, standing in for the conversion to the
    device's pixel format that pyvirtualcam makes before it writes a frame."""

    def __init__(self, mode: str | None = None, config: Path | None = None) -> None:
        sys.path.insert(0, str(ROOT))
        import cv2

        from emojicam.config import load_config
        from emojicam.pipeline import build_pipeline

        cv2.setNumThreads(1)
        self.cv2 = cv2
        self.config = load_config(config, use_user_file=False)
        self.pipeline = build_pipeline(self.config)
        if mode is not None:
            self.config = self.config.with_mode(mode)
            self.pipeline.set_mode(mode)
        privacy = "" if self.config.privacy.enabled else ", privacy off"
        self.name = f"emojicam ({type(self.pipeline.detector).__name__}, mode {self.config.mode}{privacy})"

    def process(self, image: np.ndarray, index: int) -> int:
        from emojicam.types import Frame

        out, results = self.pipeline.process(Frame(image, index, index / 30.0))
        self.cv2.cvtColor(out, self.cv2.COLOR_BGR2RGB)
        return len(results)

    def fer2013(self, images: np.ndarray) -> np.ndarray:
        from emojicam.classify import TFLiteClassifier
        from emojicam.preprocess import batch_to_model_input

        classifier = TFLiteClassifier.create(self.config.classifier)
        probs = [
            classifier.predict(batch_to_model_input(list(images[i : i + 64])))
            for i in range(0, len(images), 64)
        ]
        return np.concatenate(probs).argmax(axis=1)

    def describe_model(self) -> dict[str, Any]:
        import hashlib

        from emojicam.classify import default_model_path

        path = Path(self.config.classifier.model or default_model_path())
        return {"model": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


class FerSide:
    """``fer.FER()`` with its defaults (Haar cascade + its emotion model)."""

    def __init__(self) -> None:
        import cv2
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        cv2.setNumThreads(1)
        import fer
        from fer.fer import FER

        self.cv2 = cv2
        self.detector = FER()
        self.name = f"fer {fer.__version__} (FER() defaults)"

    def process(self, image: np.ndarray, index: int) -> int:
        return len(self.detector.detect_emotions(image))

    def fer2013(self, images: np.ndarray) -> np.ndarray:
        """Through fer's public API with the whole 48x48 image as the face box
        (fer adds its own padding and offsets, as it does for detected faces)."""
        preds = []
        for gray in images:
            bgr = self.cv2.cvtColor(gray, self.cv2.COLOR_GRAY2BGR)
            found = self.detector.detect_emotions(bgr, face_rectangles=[(0, 0, 48, 48)])
            scores = found[0]["emotions"]
            order = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
            preds.append(int(np.argmax([scores[k] for k in order])))
        return np.array(preds)

    def fer2013_direct(self, images: np.ndarray) -> np.ndarray:
        """fer's classifier alone on each 48x48 image resized to its 64x64 input,
        scaled as fer scales faces: its best case, without fer's padding."""
        faces = np.stack([self.cv2.resize(g, (64, 64)) for g in images]).astype(np.float32)
        faces = (faces / 255.0 - 0.5) * 2.0
        return np.asarray(self.detector._classify_emotions(faces)).argmax(axis=1)

    def describe_model(self) -> dict[str, Any]:
        return {"model": "fer/data/emotion_model_quantized.tflite (mini-Xception, 64x64 input)"}


def fer2013_accuracy(side: Any, path: str) -> dict[str, Any]:
    with np.load(path) as d:
        test = d["usage"] == 2
        images, labels, exact = d["images"][test], d["labels"][test], d["pixels_exact"][test] == 1
    t0 = time.perf_counter()
    pred = side.fer2013(images)
    result = {
        "n": int(len(labels)),
        **scores(pred, labels, exact),
        "seconds": round(time.perf_counter() - t0, 1),
        **side.describe_model(),
    }
    if hasattr(side, "fer2013_direct"):
        result["classifier_alone"] = scores(side.fer2013_direct(images), labels, exact)
    return result


def scores(pred: np.ndarray, labels: np.ndarray, exact: np.ndarray) -> dict[str, Any]:
    return {
        "accuracy": round(float((pred == labels).mean()), 4),
        "accuracy_exact_rows": round(float((pred[exact] == labels[exact]).mean()), 4),
        "n_exact_rows": int(exact.sum()),
        "recall_per_class": {int(c): round(float((pred[labels == c] == c).mean()), 4) for c in range(7)},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", choices=("emojicam", "fer"), required=True)
    ap.add_argument("--frames", type=Path, required=True, help=".npy file of BGR frames")
    ap.add_argument("--cpu", type=int, help="pin to this CPU core")
    ap.add_argument("--mode", help="EmojiCam's mode (default: the configured one)")
    ap.add_argument("--config", type=Path, help="EmojiCam settings over the defaults (never the user's file)")
    args = ap.parse_args()
    pin_to_cpu(args.cpu)
    frames = np.load(args.frames, mmap_mode="r")
    side = EmojiCamSide(args.mode, args.config) if args.impl == "emojicam" else FerSide()
    for i in range(min(3, len(frames))):  # warm up: first inference allocates
        side.process(np.ascontiguousarray(frames[i]), i)
    if isinstance(side, EmojiCamSide):  # start the measured run with no tracks
        side.pipeline.tracker.reset()  # type: ignore[attr-defined]
        side.pipeline.smoother.forget(set())
    print(json.dumps({"ready": side.name, "pid": os.getpid()}), flush=True)
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["cmd"] == "quit":
            break
        if msg["cmd"] == "frame":
            i = int(msg["i"])
            image = np.ascontiguousarray(frames[i])  # copied outside the timing
            c0, t0 = time.process_time(), time.perf_counter()
            faces = side.process(image, i)
            t1, c1 = time.perf_counter(), time.process_time()
            reply = {"i": i, "wall_ms": (t1 - t0) * 1000, "cpu_ms": (c1 - c0) * 1000, "faces": faces}
        elif msg["cmd"] == "fer2013":
            reply = fer2013_accuracy(side, msg["path"])
        else:
            reply = {"error": f"unknown command {msg['cmd']!r}"}
        print(json.dumps(reply), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
