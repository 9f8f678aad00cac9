"""Evaluate the shipped .tflite on a FER-2013 split; plot training curves.

Evaluation runs the exact file EmojiCam ships, through EmojiCam's own
classifier wrapper, so the figure is what users get.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from train import CLASS_NAMES
from train.data import also_in_training, load_fer


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n: int = 7) -> np.ndarray:
    cm = np.zeros((n, n), np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def evaluate(model: Path, data: Path, split: str, confusion_png: Path | None,
             json_out: Path | None = None) -> dict:
    from train.export import tflite_predict

    if not model.is_file():
        raise SystemExit(f"{model}: no such model; pass --model with an exported .tflite "
                         "('python -m train export' writes models/emotion.tflite)")
    s = load_fer(data, split)
    probs = tflite_predict(model, s.images[..., None].astype(np.float32))
    pred = probs.argmax(1)
    cm = confusion_matrix(s.labels.astype(np.int64), pred)
    recall = cm.diagonal() / np.maximum(cm.sum(1), 1)
    correct = pred == s.labels
    acc = float(np.mean(correct))
    seen = also_in_training(data, split)
    unseen_acc = float(np.mean(correct[~seen]))
    result = {
        "model": str(model), "split": split, "images": int(len(pred)), "accuracy": acc,
        "also_in_training": int(seen.sum()), "accuracy_without_those": unseen_acc,
        "recall": {c: float(r) for c, r in zip(CLASS_NAMES, recall, strict=True)},
        "confusion": cm.tolist(),
    }
    print(f"{model} on FER-2013 {split} ({len(pred)} images): accuracy {acc:.2%}")
    print(f"  without the {seen.sum()} images that are also in Training (FER-2013's own duplicates): "
          f"{unseen_acc:.2%}")
    for c, r, total in zip(CLASS_NAMES, recall, cm.sum(1), strict=True):
        print(f"  {c:9s} recall {r:6.1%}  ({total} images)")
    if confusion_png:
        plot_confusion(cm, confusion_png, f"{split} accuracy {acc:.2%}")
        print(f"confusion matrix written to {confusion_png}")
    if json_out:
        json_out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def plot_confusion(cm: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=100)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(7), CLASS_NAMES, rotation=45, ha="right")
    ax.set_yticks(range(7), CLASS_NAMES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (FER-2013 label)")
    for i in range(7):
        for j in range(7):
            ax.text(j, i, f"{norm[i, j]:.2f}\n{cm[i, j]}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_curves(run_dir: Path, path: Path) -> None:
    log_csv = run_dir / "log.csv"
    if not log_csv.is_file():
        raise SystemExit(f"{log_csv} not found: is {run_dir.name!r} the name of a run made by "
                         "'python -m train fit'?")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with log_csv.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"{run_dir / 'log.csv'}: no epochs logged yet")
    ep = [int(r["epoch"]) + 1 for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    a1.plot(ep, [float(r["loss"]) for r in rows], label="train")
    a1.plot(ep, [float(r["val_loss"]) for r in rows], label="PublicTest")
    a1.set_xlabel("epoch")
    a1.set_ylabel("loss")
    a1.legend()
    a2.plot(ep, [float(r["accuracy"]) for r in rows], label="train (augmented)")
    a2.plot(ep, [float(r["val_accuracy"]) for r in rows], label="PublicTest")
    a2.set_xlabel("epoch")
    a2.set_ylabel("accuracy")
    a2.legend()
    fig.suptitle(f"run {run_dir.name}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
