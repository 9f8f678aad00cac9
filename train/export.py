"""Export a run to ``models/emotion.tflite`` (full-integer int8).

The exported graph averages the network over the face and its mirror image
(flip test-time augmentation), takes uint8 pixels and returns uint8
probabilities. A labels file with the class order is written beside it, and
a parity check compares the .tflite with the trained Keras model on
PrivateTest (top-1 agreement must be >= 99%). The trained model is the float
net, or for a run made by ``python -m train qat`` its int8-simulating graph.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from train import CLASS_NAMES
from train.data import load_fer

log = logging.getLogger("train")

REPRESENTATIVE_IMAGES = 1000
MIN_AGREEMENT = 0.99


def load_float_model(run_dir: Path, weights: str = "best.weights.h5", flip_average: bool = True):
    """The trained model of a run (for a QAT run: its int8-simulating graph)."""
    import keras

    from train.fit import Recipe, read_manifest
    from train.model import build_model, with_flip_average

    keras.mixed_precision.set_global_policy("float32")
    manifest = read_manifest(run_dir)
    if not (run_dir / weights).is_file():
        raise SystemExit(
            f"{run_dir / weights} not found: run {run_dir.name!r} has not finished an epoch yet"
            + ("" if weights == "last.weights.h5" else " (or pass --weights with another file in it)")
        )
    if "qat" in manifest:
        from train.qat import load_qat_model

        model = load_qat_model(run_dir, weights)
    else:
        recipe = Recipe(**manifest["recipe"])
        model = build_model(recipe.arch, recipe.dropout)
        model.load_weights(str(run_dir / weights))
    return with_flip_average(model) if flip_average else model


def convert_int8(model, representative: np.ndarray) -> bytes:
    """Full-integer conversion. ``representative``: images to calibrate the
    activation ranges (a QAT model's fake-quantised tensors keep the ranges
    in its graph)."""
    import tensorflow as tf

    def rep():
        for i in range(len(representative)):
            yield [representative[i : i + 1]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = rep
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    return converter.convert()


def _near_tie_report(model, split, tflite_path: Path) -> dict:
    """Where int8 and float disagree: how close the float model's top two
    classes were (the uint8 output has a resolution of 1/256)."""
    x = split.images[..., None].astype(np.float32)
    p_float = model.predict(x, batch_size=256, verbose=0)
    p_int8 = tflite_predict(tflite_path, x)
    top2 = np.sort(p_float, axis=1)[:, -2:]
    gap = top2[:, 1] - top2[:, 0]
    differ = p_float.argmax(1) != p_int8.argmax(1)
    q = np.sort(p_int8, axis=1)
    return {
        "disagreements": int(differ.sum()),
        "float_top2_gap_median_of_disagreements": float(np.median(gap[differ])) if differ.any() else 0.0,
        "disagreements_that_are_exact_int8_ties": int((differ & (q[:, -1] == q[:, -2])).sum()),
        "images_with_float_top2_gap_below_0.01": float(np.mean(gap < 0.01)),
    }


def tflite_predict(model_path: Path, x: np.ndarray, batch: int = 256) -> np.ndarray:
    from emojicam.classify import TFLiteClassifier

    clf = TFLiteClassifier.create(model_path=model_path)
    return np.concatenate([clf.predict(x[i : i + batch]) for i in range(0, len(x), batch)])


def export(run_dir: Path, data: Path, out_dir: Path, weights: str = "best.weights.h5",
           representative_images: int = REPRESENTATIVE_IMAGES,
           min_agreement: float = MIN_AGREEMENT) -> dict:
    """Write ``out_dir/emotion.tflite`` and its labels file, if the parity check passes."""
    if out_dir.suffix == ".tflite":
        # Checked first: the conversion takes minutes, and this would end it in a
        # folder named emotion.tflite (or a FileExistsError beside the shipped file).
        raise SystemExit(f"--out {out_dir}: --out is the folder that receives emotion.tflite and "
                         f"emotion.labels.txt; pass --out {out_dir.parent}")
    model = load_float_model(run_dir, weights)
    train = load_fer(data, "train")
    representative_images = min(representative_images, len(train.images))
    rng = np.random.default_rng(0)
    pick = rng.choice(len(train.images), representative_images, replace=False)
    rep = train.images[pick][..., None].astype(np.float32)
    # Half of them mirrored: the exported graph sees every face both ways.
    rep[1::2] = rep[1::2, :, ::-1]
    tflite = convert_int8(model, rep)

    private = load_fer(data, "private")
    public = load_fer(data, "public")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_model = Path(tmp) / "emotion.tflite"
        tmp_model.write_bytes(tflite)
        tmp_model.with_suffix(".labels.txt").write_text("\n".join(CLASS_NAMES) + "\n")
        report: dict[str, Any] = {"file_bytes": len(tflite)}
        for name, split in (("private", private), ("public", public)):
            x = split.images[..., None].astype(np.float32)
            p_float = model.predict(x, batch_size=256, verbose=0)
            p_int8 = tflite_predict(tmp_model, x)
            report[name] = {
                "float_accuracy": float(np.mean(p_float.argmax(1) == split.labels)),
                "int8_accuracy": float(np.mean(p_int8.argmax(1) == split.labels)),
                "top1_agreement": float(np.mean(p_float.argmax(1) == p_int8.argmax(1))),
            }
        log.info("export report: %s", json.dumps(report, indent=2))
        agreement = report["private"]["top1_agreement"]
        report["near_ties"] = _near_tie_report(model, private, tmp_model)
        if agreement < min_agreement:
            raise SystemExit(
                f"parity check failed: int8 agrees with float on {agreement:.2%} of PrivateTest "
                f"(need {min_agreement:.1%}); nothing written"
            )
        if agreement < MIN_AGREEMENT:
            log.warning("int8 agrees with float on %.2f%% of PrivateTest, under the %.0f%% target "
                        "(accepted by --min-agreement %.3f)", 100 * agreement, 100 * MIN_AGREEMENT,
                        min_agreement)
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_model, out_dir / "emotion.tflite")
        shutil.copy(tmp_model.with_suffix(".labels.txt"), out_dir / "emotion.labels.txt")
    report["run"] = run_dir.name
    report["weights"] = weights
    report["representative_images"] = representative_images
    (out_dir / "export_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report
