"""Quantisation-aware fine-tuning (QAT) of a trained run.

Plain post-training quantisation leaves the int8 file agreeing with the float
model on about 98.8% of PrivateTest: the int8 activations inside the net
flip near-ties. QAT fine-tunes the net while it *simulates* int8 in its
forward pass, so the weights settle where quantisation does not move the
answer, and the exported file computes what the trained model computes.

How the simulation matches LiteRT's int8 kernels:

* batch norm is folded into the convolution or dense layer before it (LiteRT
  folds it too), giving a kernel and a bias;
* kernels are fake-quantised symmetrically to 8 bits, per output channel for
  convolutions, per tensor for dense layers;
* every activation LiteRT stores in int8 (after each ReLU, after pooling,
  the logits, the softmax) is fake-quantised to a fixed range, calibrated
  once on training images as the converter would;
* fake-quantisation passes gradients straight through (TensorFlow's
  ``FakeQuantWithMinMaxVars``), and the converter reads its ranges.

Hand-written because the TensorFlow Model Optimization toolkit, which would
do this, only supports Keras 2 (tf-keras), and our model is Keras 3.

The result is a normal run folder: ``python -m train export --run NAME``
exports it. The converter keeps the ranges of the fake-quantised tensors; its
representative set only calibrates what the QAT graph leaves out (the flip
average that the export wraps around it).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from train.data import load_fer

log = logging.getLogger("train")

CALIBRATION_IMAGES = 1000


def _layers():
    """Keras layers for the QAT graph (imported lazily: TensorFlow is optional)."""
    import keras
    import tensorflow as tf

    class FakeQuant(keras.layers.Layer):
        """Fixed-range 8-bit fake quantisation of an activation."""

        def __init__(self, lo: float, hi: float, **kw: Any) -> None:
            super().__init__(**kw)
            self.lo, self.hi = float(lo), float(hi)

        def call(self, x):
            return tf.quantization.fake_quant_with_min_max_vars(x, self.lo, self.hi, num_bits=8)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "lo": self.lo, "hi": self.hi}

    class QuantConv(keras.layers.Layer):
        """3x3 'same' convolution + bias + ReLU with a per-channel int8 kernel."""

        def __init__(self, kernel: np.ndarray, bias: np.ndarray, **kw: Any) -> None:
            super().__init__(**kw)
            self.kernel = self.add_weight(shape=kernel.shape, initializer=keras.initializers.Constant(kernel),
                                          name="kernel")
            self.bias = self.add_weight(shape=bias.shape, initializer=keras.initializers.Constant(bias),
                                        name="bias")

        def call(self, x):
            m = tf.maximum(tf.reduce_max(tf.abs(self.kernel), axis=[0, 1, 2]), 1e-8)
            k = tf.quantization.fake_quant_with_min_max_vars_per_channel(self.kernel, -m, m, num_bits=8,
                                                                           narrow_range=True)
            return tf.nn.relu(tf.nn.conv2d(x, k, 1, "SAME") + self.bias)

    class QuantDense(keras.layers.Layer):
        """Dense + bias (+ ReLU) with a per-tensor int8 kernel."""

        def __init__(self, kernel: np.ndarray, bias: np.ndarray, relu: bool, **kw: Any) -> None:
            super().__init__(**kw)
            self.relu = relu
            self.kernel = self.add_weight(shape=kernel.shape, initializer=keras.initializers.Constant(kernel),
                                          name="kernel")
            self.bias = self.add_weight(shape=bias.shape, initializer=keras.initializers.Constant(bias),
                                        name="bias")

        def call(self, x):
            m = tf.maximum(tf.reduce_max(tf.abs(self.kernel)), 1e-8)
            k = tf.quantization.fake_quant_with_min_max_vars(self.kernel, -m, m, num_bits=8,
                                                             narrow_range=True)
            y = tf.matmul(x, k) + self.bias
            return tf.nn.relu(y) if self.relu else y

    return FakeQuant, QuantConv, QuantDense


def fold_batchnorm(kernel: np.ndarray, bn: list[np.ndarray], eps: float) -> tuple[np.ndarray, np.ndarray]:
    """A bias-free layer's kernel followed by batch norm -> (kernel, bias) of one layer."""
    gamma, beta, mean, var = bn
    s = gamma / np.sqrt(var + eps)
    return (kernel * s).astype(np.float32), (beta - mean * s).astype(np.float32)


def build_qat_model(float_model, ranges: dict[str, list[float]] | None, dropout: float):
    """The QAT twin of a trained ``train.model`` net, initialised from its
    (folded) weights. ``ranges``: activation ranges per fake-quant point;
    None builds the twin that ``calibrate`` measures them with (activations in
    float; kernels already fake-quantised)."""
    import keras
    from keras import layers

    FakeQuant, QuantConv, QuantDense = _layers()

    def fq(name: str, x):
        if ranges is None:
            return layers.Identity(name=name)(x)
        return FakeQuant(*ranges[name], name=name)(x)

    inputs = keras.Input((48, 48, 1), name="face_gray")
    x = inputs if ranges is None else FakeQuant(0.0, 255.0, name="raw_pixels")(inputs)  # uint8 input
    # Rescaling as two steps, each with its own exact range: left to itself the
    # converter gives the product a range of [-1, 2] and loses a third of the
    # pixel levels before the first convolution.
    x = layers.Rescaling(1.0 / 127.5)(x)
    x = x if ranges is None else FakeQuant(0.0, 2.0, name="scaled_pixels")(x)
    x = layers.Rescaling(1.0, offset=-1.0)(x)
    x = fq("fq_input", x)
    stage = 0
    while True:
        convs = [layer for layer in float_model.layers if layer.name.startswith(f"conv{stage}_")]
        if not convs:
            break
        for i, conv in enumerate(convs):
            bn = float_model.get_layer(f"bn{stage}_{i}")
            kernel, bias = fold_batchnorm(conv.get_weights()[0], bn.get_weights(), bn.epsilon)
            x = QuantConv(kernel, bias, name=f"qconv{stage}_{i}")(x)
            x = fq(f"fq_conv{stage}_{i}", x)
        x = layers.MaxPooling2D(2)(x)
        stage += 1
    x = layers.GlobalAveragePooling2D()(x)
    x = fq("fq_pool", x)
    x = layers.Dropout(dropout)(x)
    bn = float_model.get_layer("bn_fc")
    kernel, bias = fold_batchnorm(float_model.get_layer("fc").get_weights()[0], bn.get_weights(), bn.epsilon)
    x = QuantDense(kernel, bias, relu=True, name="qfc")(x)
    x = fq("fq_fc", x)
    x = layers.Dropout(dropout)(x)
    kernel, bias = float_model.get_layer("logits").get_weights()
    x = QuantDense(kernel, bias, relu=False, name="qlogits")(x)
    x = fq("fq_logits", x)
    x = layers.Softmax()(x)
    x = fq("fq_probs", x)
    return keras.Model(inputs, x, name=float_model.name + "_qat")


def calibrate(float_twin, images: np.ndarray) -> dict[str, list[float]]:
    """Min/max of every fake-quant point over ``images`` (as the converter's calibration)."""
    import keras

    names = [layer.name for layer in float_twin.layers if layer.name.startswith("fq_")]
    probe = keras.Model(float_twin.input, [float_twin.get_layer(n).output for n in names])
    outs = probe.predict(images, batch_size=256, verbose=0)
    ranges = {n: [min(0.0, float(o.min())), max(0.0, float(o.max()))]
              for n, o in zip(names, outs, strict=True)}
    ranges["fq_probs"] = [0.0, 1.0]
    return ranges


def qat_run(source_run: Path, data: Path, out_run: Path, *, epochs: int = 2, lr: float = 1e-3,
            progress: str = "auto") -> Path:
    """Fine-tune ``source_run``'s best weights with simulated int8 into ``out_run``."""
    from train.fit import (
        Recipe,
        datasets,
        read_manifest,
        refuse_finished,
        resumed_epoch,
        run_callbacks,
        schedule_steps,
        stream_seed,
        verbosity,
    )

    refuse_finished(out_run)
    _refuse_other_run(out_run, source_run, epochs, lr)
    import keras

    from train.export import load_float_model

    keras.mixed_precision.set_global_policy("float32")
    source = read_manifest(source_run)
    recipe = Recipe(**source["recipe"])
    first_epoch = resumed_epoch(out_run)
    keras.utils.set_random_seed(stream_seed(recipe.seed, first_epoch))
    trained = load_float_model(source_run, flip_average=False)

    train = load_fer(data, "train")
    val = load_fer(data, "public")
    pick = np.random.default_rng(0).choice(len(train.images), min(CALIBRATION_IMAGES, len(train.images)),
                                           replace=False)
    ranges = calibrate(build_qat_model(trained, None, recipe.dropout),
                       train.images[pick][..., None].astype(np.float32))
    model = build_qat_model(trained, ranges, recipe.dropout)

    out_run.mkdir(parents=True, exist_ok=True)
    manifest = {"recipe": source["recipe"], "data": str(data), "qat": {
        "from": str(source_run / "best.weights.h5"), "epochs": epochs, "lr": lr, "ranges": ranges}}
    (out_run / "run.json").write_text(json.dumps(manifest, indent=2) + "\n")

    onehot = np.eye(7, dtype=np.float32)
    # Fine-tuning for int8 uses plain targets: no mixup even if the source run had it.
    ds, val_ds = datasets(train.images[..., None].astype(np.float32), onehot[train.labels],
                          val.images[..., None].astype(np.float32), onehot[val.labels],
                          dataclasses.replace(recipe, mixup=0.0), first_epoch)
    _, steps = schedule_steps(len(train.images), dataclasses.replace(recipe, epochs=epochs, warmup_epochs=0))
    model.compile(
        optimizer=keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(lr, steps, alpha=0.01),
                                       momentum=recipe.momentum, nesterov=True,
                                       weight_decay=recipe.weight_decay),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing),
        metrics=["accuracy"],
    )
    log.info("QAT from %s: PublicTest before fine-tuning %.2f%%", source_run.name,
             100 * model.evaluate(val_ds, verbose=0)[1])
    model.fit(ds, epochs=epochs, validation_data=val_ds, verbose=verbosity(progress),
              callbacks=run_callbacks(out_run))
    (out_run / "DONE").write_text("qat\n")
    return out_run / "best.weights.h5"


def _refuse_other_run(out_run: Path, source_run: Path, epochs: int, lr: float) -> None:
    """Stop unless ``out_run`` is new or an interrupted QAT run of the same
    source and options (which then resumes): its ``run.json`` is rewritten, and
    its log and backup would carry on under another run's recipe."""
    from train.fit import read_manifest

    if not (out_run / "run.json").is_file():
        return
    saved = read_manifest(out_run).get("qat")
    if saved is None:
        raise SystemExit(f"{out_run} holds a run made by 'python -m train fit', not a QAT run; "
                         "give --run a new name")
    asked = {"from": str(source_run / "best.weights.h5"), "epochs": epochs, "lr": lr}
    was = {k: saved.get(k) for k in asked}
    if was != asked:
        raise SystemExit(f"{out_run / 'run.json'}: this QAT run was started with {was}, now asked "
                         f"{asked}; use the same options to resume, or a new --run name")


def load_qat_model(run_dir: Path, weights: str = "best.weights.h5"):
    """A QAT run's model (without flip averaging), weights loaded."""
    from train.fit import Recipe, read_manifest
    from train.model import build_model

    manifest = read_manifest(run_dir)
    recipe = Recipe(**manifest["recipe"])
    # The QAT graph is built from a float net of the same architecture; its
    # weights are then replaced by the fine-tuned ones.
    float_net = build_model(recipe.arch, recipe.dropout)
    model = build_qat_model(float_net, manifest["qat"]["ranges"], recipe.dropout)
    model.load_weights(str(run_dir / weights))
    return model
