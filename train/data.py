"""Load FER-2013 from the released ``fer2013.csv`` or our ``fer2013.npz``.

Splits follow the original ``Usage`` column: Training is for fitting,
PublicTest for model selection, PrivateTest only for the final report.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emojicam.preprocess import MODEL_INPUT_SIDE, face_to_model_input

SPLITS = {"train": 0, "public": 1, "private": 2}
_CSV_USAGE = {"Training": 0, "PublicTest": 1, "PrivateTest": 2}

# FER+ vote columns: neutral, happiness, surprise, sadness, anger, disgust,
# fear, contempt, unknown, NF. Map the 7 that FER-2013 has onto FER order.
_FERPLUS_TO_FER = {0: 6, 1: 3, 2: 5, 3: 4, 4: 0, 5: 1, 6: 2}


@dataclass(frozen=True)
class FerSplit:
    images: np.ndarray  # (N, 48, 48) uint8
    labels: np.ndarray  # (N,) uint8, FER-2013 order
    soft: np.ndarray | None  # (N, 7) float32 FER+ vote distribution, or None


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    with np.load(path) as d:
        images, labels, usage = d["images"], d["labels"], d["usage"]
        exact = d["pixels_exact"] if "pixels_exact" in d else np.ones_like(labels)
    return images, labels, usage, exact


def _load_csv(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    images, labels, usage = [], [], []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            pixels = np.array(row["pixels"].split(), dtype=np.uint8)
            side = int(round(len(pixels) ** 0.5))
            face = face_to_model_input(pixels.reshape(side, side))
            images.append(face)
            labels.append(int(row["emotion"]))
            usage.append(_CSV_USAGE[row["Usage"]])
    lab = np.array(labels, np.uint8)
    return np.stack(images), lab, np.array(usage, np.uint8), np.ones_like(lab)


def soft_labels_from_votes(votes: np.ndarray) -> np.ndarray:
    """FER+ votes (N, 10) -> (N, 7) distribution in FER order (zeros if none)."""
    soft = np.zeros((len(votes), 7), np.float32)
    for src, dst in _FERPLUS_TO_FER.items():
        soft[:, dst] = votes[:, src]
    total = soft.sum(axis=1, keepdims=True)
    return np.divide(soft, total, out=np.zeros_like(soft), where=total > 0)


def file_sha256(path: str | Path) -> str:
    """A data file's sha256, recorded in run.json so a resume can check it."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def also_in_training(path: str | Path, split: str) -> np.ndarray:
    """For each image of ``split``, whether a byte-identical image is in Training.

    FER-2013 itself has such duplicates (about 8% of each test split, see the
    data's README): a model has seen those answers, so an honest report also
    gives the accuracy without them."""
    train = load_fer(path, "train")
    seen = {img.tobytes() for img in train.images}
    return np.array([img.tobytes() in seen for img in load_fer(path, split).images], bool)


def load_fer(
    path: str | Path,
    split: str,
    *,
    ferplus_votes: str | Path | None = None,
    exact_only: bool = False,
) -> FerSplit:
    """Load one split (``train``, ``public`` or ``private``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: FER-2013 not found; pass --data with fer2013.npz or fer2013.csv"
        )
    if path.suffix == ".csv":
        images, labels, usage, exact = _load_csv(path)
    else:
        images, labels, usage, exact = _load_npz(path)
    if images.shape[1:] != (MODEL_INPUT_SIDE, MODEL_INPUT_SIDE):
        raise ValueError(f"{path}: expected 48x48 images, got {images.shape[1:]}")
    mask = usage == SPLITS[split]
    if exact_only:
        mask &= exact == 1
    soft = None
    if ferplus_votes is not None:
        with np.load(ferplus_votes) as v:
            votes = v["ferplus_votes"]
        if len(votes) != len(labels):
            raise ValueError(f"{ferplus_votes}: row count differs from {path}")
        soft = soft_labels_from_votes(votes)[mask]
    return FerSplit(images[mask], labels[mask], soft)
