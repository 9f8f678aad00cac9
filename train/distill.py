"""Teacher targets for knowledge distillation (Hinton et al. 2015).

``python -m train teach`` averages the flip-averaged float predictions of
several finished runs (an ensemble: more accurate than any one of them, but
too big and slow to ship) on the Training split and writes them to one file.
``python -m train fit --teacher FILE --teacher-mix W`` then trains the one
small network we ship towards ``(1 - W) * label + W * teacher``.

The teacher sees each training image as it is (and mirrored), not as the
augmented batch shows it: its targets are computed once, so distilling costs
no extra time per epoch, which matters on a 2-core CPU.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from train.data import file_sha256

log = logging.getLogger("train")


def run_probabilities(run_dir: Path, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Flip-averaged float probabilities (N, 7) of a run's best weights."""
    from train.export import load_float_model

    weights = run_dir / "best.weights.h5"
    if not weights.is_file():
        raise SystemExit(f"{weights} not found: has run {run_dir.name!r} finished an epoch?")
    model = load_float_model(run_dir)  # with the mirror average built in, as exported
    x = images[..., None].astype(np.float32)
    return model.predict(x, batch_size=batch_size, verbose=0).astype(np.float32)


def teach(run_dirs: list[Path], data: Path, out: Path, temperature: float = 1.0) -> Path:
    """Write the ensemble's probabilities on the Training split to ``out`` (.npz)."""
    from train.data import load_fer

    if not run_dirs:
        raise SystemExit("teach needs at least one --runs entry")
    train = load_fer(data, "train")
    probs = []
    for run_dir in run_dirs:
        p = run_probabilities(run_dir, train.images)
        log.info("%s: %.2f%% of Training images right (flip-averaged, unaugmented)",
                 run_dir.name, 100 * float(np.mean(p.argmax(1) == train.labels)))
        probs.append(p)
    ensemble = soften(np.mean(probs, axis=0), temperature)
    log.info("ensemble of %d: %.2f%% of Training images right", len(probs),
             100 * float(np.mean(ensemble.argmax(1) == train.labels)))
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, probs=ensemble, runs=np.array([d.name for d in run_dirs]),
                        temperature=np.float32(temperature))
    log.info("wrote %s", out)
    return out


def soften(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Rescale a probability distribution as if its logits were divided by
    ``temperature`` (above 1: flatter, so the runner-up classes count more)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    logp = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    p = np.exp(logp)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def load_teacher(path: Path, num_images: int) -> tuple[np.ndarray, str]:
    """The teacher's (N, 7) targets and the file's sha256 (recorded in run.json)."""
    if not path.is_file():
        raise SystemExit(f"{path}: teacher file not found; make it with 'python -m train teach'")
    with np.load(path) as f:
        probs = f["probs"].astype(np.float32)
    if probs.shape != (num_images, 7):
        raise SystemExit(
            f"{path}: holds {probs.shape[0]} rows of {probs.shape[1]} classes, but Training has "
            f"{num_images} images of 7: was it made from another copy of FER-2013?"
        )
    return probs, file_sha256(path)


def blend_teacher(targets: np.ndarray, teacher: np.ndarray, mix: float) -> np.ndarray:
    """``(1 - mix) * targets + mix * teacher``, each row still summing to 1."""
    if not 0.0 <= mix <= 1.0:
        raise ValueError(f"teacher mix must be in [0, 1], got {mix}")
    return ((1.0 - mix) * targets + mix * teacher).astype(np.float32)
