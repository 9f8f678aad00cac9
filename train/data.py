"""Load FER-2013 from the released ``fer2013.csv`` or our ``fer2013.npz``.

Splits follow the original ``Usage`` column: Training is for fitting,
PublicTest for model selection, PrivateTest only for the final report.
"""

from __future__ import annotations

import csv
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emojicam.preprocess import MODEL_INPUT_SIDE

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


class FerDataError(ValueError):
    """A data file that is not FER-2013 as this package reads it; the message
    names the file (and row) and what to do. ``python -m train`` prints it as
    one line."""


_NPZ_ARRAYS = ("images", "labels", "usage")
_CSV_COLUMNS = ("emotion", "pixels", "Usage")
_PIXELS = MODEL_INPUT_SIDE * MODEL_INPUT_SIDE


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    try:
        archive = np.load(path)
    except (OSError, ValueError) as exc:  # not an .npz (NumPy refuses to unpickle other files)
        raise FerDataError(
            f"{path}: not a NumPy .npz archive; pass --data with fer2013.npz or fer2013.csv "
            "(a .csv is read by its name ending)"
        ) from exc
    with archive as d:
        missing = [k for k in _NPZ_ARRAYS if k not in d]
        if missing:
            raise FerDataError(
                f"{path}: no {', '.join(missing)} array in it (it has {', '.join(d.files)}); "
                "pass --data with fer2013.npz (see shared/data/README.md) or the original fer2013.csv"
            )
        images, labels, usage = d["images"], d["labels"], d["usage"]
        exact = d["pixels_exact"] if "pixels_exact" in d else np.ones_like(labels)
    return images, labels, usage, exact


def _csv_row_error(path: Path, line: int, why: str) -> FerDataError:
    return FerDataError(
        f"{path}, line {line}: {why}; the file looks damaged or truncated (copies of fer2013.csv "
        "often are): download it again, or pass --data with fer2013.npz"
    )


def _load_csv(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The released ``fer2013.csv``: columns emotion, pixels (2304 numbers), Usage."""
    images, labels, usage = [], [], []
    # utf-8-sig: a copy saved by a spreadsheet starts with a byte-order mark.
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        if not set(_CSV_COLUMNS) <= set(columns):
            hint = (" (FER+'s fer2013new.csv holds votes, not pixels: --ferplus takes them, "
                    "as ferplus_votes.npz)" if "neutral" in columns else "")
            raise FerDataError(
                f"{path}: expected the columns {', '.join(_CSV_COLUMNS)} of the original fer2013.csv, "
                f"found {', '.join(columns) or 'none'}{hint}"
            )
        for row in reader:
            line = reader.line_num
            try:
                pixels = np.array((row["pixels"] or "").split(), dtype=np.int64)
                label = int(row["emotion"] or "")
            except (ValueError, OverflowError) as exc:
                raise _csv_row_error(path, line, f"not a number ({exc})") from exc
            if pixels.size != _PIXELS:
                raise _csv_row_error(path, line, f"{pixels.size} pixel values, expected {_PIXELS} (48x48)")
            if pixels.min() < 0 or pixels.max() > 255:
                raise _csv_row_error(path, line, "a pixel value outside 0..255")
            if not 0 <= label < 7:
                raise _csv_row_error(path, line, f"emotion {label}, expected 0 to 6")
            if row["Usage"] not in _CSV_USAGE:
                raise _csv_row_error(path, line, f"Usage {row['Usage']!r}, expected one of "
                                     f"{', '.join(_CSV_USAGE)}")
            images.append(pixels.astype(np.uint8).reshape(MODEL_INPUT_SIDE, MODEL_INPUT_SIDE))
            labels.append(label)
            usage.append(_CSV_USAGE[row["Usage"]])
    if not images:
        raise FerDataError(f"{path}: no rows; pass --data with the original fer2013.csv or fer2013.npz")
    lab = np.array(labels, np.uint8)
    return np.stack(images), lab, np.array(usage, np.uint8), np.ones_like(lab)


@functools.lru_cache(maxsize=1)
def _load_file(path: Path, mtime_ns: int, size: int) -> tuple[np.ndarray, ...]:
    """All rows of a data file, kept for the next split of the same (unchanged)
    file: fit reads two splits, export and eval three, and parsing the 287 MB
    CSV takes tens of seconds each time. Callers get copies (``load_fer``
    selects rows with a mask)."""
    return _load_csv(path) if path.suffix == ".csv" else _load_npz(path)


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


def split_digest(*splits: FerSplit) -> str:
    """sha256 of splits' images and labels as loaded (the same for fer2013.csv
    and an .npz made from it), recorded in run.json so a resume can check that
    it trains on the same data."""
    h = hashlib.sha256()
    for s in splits:
        h.update(np.ascontiguousarray(s.images).tobytes())
        h.update(np.ascontiguousarray(s.labels).tobytes())
    return h.hexdigest()


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
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: FER-2013 not found; pass --data with fer2013.npz or fer2013.csv"
        )
    if path.is_dir():
        raise FerDataError(f"{path} is a folder; pass --data with the fer2013.npz or fer2013.csv in it")
    stat = path.stat()
    images, labels, usage, exact = _load_file(path.resolve(), stat.st_mtime_ns, stat.st_size)
    if images.ndim != 3 or images.shape[1:] != (MODEL_INPUT_SIDE, MODEL_INPUT_SIDE):
        raise FerDataError(f"{path}: expected 48x48 images, got {images.shape[1:]}")
    if not len(images) == len(labels) == len(usage) == len(exact):
        raise FerDataError(f"{path}: images, labels and usage have different lengths")
    if labels.size and labels.max() > 6:
        raise FerDataError(f"{path}: a label of {labels.max()}; FER-2013 labels run from 0 to 6")
    mask = usage == SPLITS[split]
    if exact_only:
        mask &= exact == 1
    soft = None
    if ferplus_votes is not None:
        soft = soft_labels_from_votes(_load_votes(Path(ferplus_votes), path, usage))[mask]
    return FerSplit(images[mask], labels[mask], soft)


def _load_votes(votes_path: Path, data_path: Path, usage: np.ndarray) -> np.ndarray:
    """FER+ votes (N, 10), checked to be row-aligned with the data file.

    The two files are matched by row number only, so a votes file in another
    row order would quietly give every image another image's votes; its
    ``usage`` column (the split of each row) catches that."""
    if not votes_path.is_file():
        raise FileNotFoundError(
            f"{votes_path}: FER+ votes not found; pass --ferplus with ferplus_votes.npz"
        )
    with np.load(votes_path) as v:
        if "ferplus_votes" not in v:
            raise FerDataError(f"{votes_path}: no ferplus_votes array in it; pass --ferplus with "
                               "ferplus_votes.npz (see shared/data/README.md)")
        votes = v["ferplus_votes"]
        vote_usage = v.get("usage")
    if len(votes) != len(usage):
        raise FerDataError(f"{votes_path}: {len(votes)} rows, but {data_path} has {len(usage)}; "
                           "the two files must hold the same rows in the same order")
    if vote_usage is not None and not np.array_equal(vote_usage, usage):
        first = int(np.flatnonzero(vote_usage != usage)[0])
        raise FerDataError(f"{votes_path}: row {first} is in another split than in {data_path}; "
                           "the two files must hold the same rows in the same order")
    return votes
