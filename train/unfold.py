"""Warm start from an exported ``.tflite``: its int8 weights back into the float net.

Training runs live outside the repository (``~/.cache/emojicam-train``), so a
new machine starts without them. The shipped ``models/emotion.tflite`` still
holds every weight of the net it was exported from, folded and quantised:

* each convolution (and the first dense layer) carries its batch norm folded
  in, as one int8 kernel with per-channel scales and an int32 bias
  (``train.qat.fold_batchnorm`` is the forward direction);
* the flip average runs the net twice on the same weight tensors, so the
  first pass alone lists every layer once.

``read_folded_layers`` dequantises them (NumPy and the TFLite interpreter
only: no TensorFlow). ``load_into`` puts them into a fresh ``build_model``
net and gives each batch norm back parameters under which the net computes
exactly what the folded one does: batch norm of ``k * x`` with the running
mean ``m`` and variance ``v`` of ``k * x`` over training images, scale
``sqrt(v + eps)`` and offset ``m + bias``, is ``k * x + bias``. Because the
running statistics are the real ones, training mode (which normalises by the
batch's statistics) starts where inference mode is, as a warm restart from a
run's own checkpoint does. What cannot come back: the split of each folded
kernel into kernel and batch-norm scale (the loss does not depend on it, the
step size does) and the optimiser state, which a warm restart resets anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from train.model import ARCHITECTURES

# How many training images measure each batch norm's running statistics.
STATISTICS_IMAGES = 4096


@dataclass(frozen=True)
class FoldedLayer:
    """One convolution or dense layer of the exported net, dequantised.

    ``kernel`` is in Keras layout (HWIO for a convolution, in x out for dense).
    """

    kind: str  # "conv" or "dense"
    kernel: np.ndarray
    bias: np.ndarray


def _dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    q = detail["quantization_parameters"]
    scales, zeros = np.asarray(q["scales"], np.float64), np.asarray(q["zero_points"], np.float64)
    if values.dtype == np.float32 or scales.size == 0:
        return values.astype(np.float32)
    shape = [1] * values.ndim
    if scales.size > 1:
        shape[q["quantized_dimension"]] = scales.size
    return ((values.astype(np.float64) - zeros.reshape(shape)) * scales.reshape(shape)).astype(np.float32)


def read_folded_layers(path: Path) -> list[FoldedLayer]:
    """The convolution and dense layers of ``path`` in graph order, each once."""
    from emojicam.litert import open_interpreter

    interpreter = open_interpreter(path, threads=1)
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    layers: list[FoldedLayer] = []
    seen: set[int] = set()
    # The runtime has no public API for the op graph; both ai-edge-litert and
    # tflite-runtime expose this one, and a missing method fails loudly here.
    for op in interpreter._get_ops_details():
        if op["op_name"] not in ("CONV_2D", "FULLY_CONNECTED"):
            continue
        weights, bias = int(op["inputs"][1]), int(op["inputs"][2])
        if weights in seen:  # the flip average's second pass
            continue
        seen.add(weights)
        kernel = _dequantize(interpreter.get_tensor(weights), details[weights])
        b = (_dequantize(interpreter.get_tensor(bias), details[bias]) if bias >= 0
             else np.zeros(kernel.shape[0], np.float32))  # no bias tensor: -1
        if op["op_name"] == "CONV_2D":
            layers.append(FoldedLayer("conv", kernel.transpose(1, 2, 3, 0), b))  # OHWI -> HWIO
        else:
            layers.append(FoldedLayer("dense", kernel.T, b))  # (out, in) -> (in, out)
    if not layers:
        raise ValueError(f"{path}: no convolution or dense layers found; is it an emotion model?")
    return layers


def arch_of(layers: list[FoldedLayer]) -> str:
    """The ``train.model`` architecture whose convolutions these are."""
    filters = [layer.kernel.shape[-1] for layer in layers if layer.kind == "conv"]
    for name, stages in ARCHITECTURES.items():
        if filters == [f for f, convs in stages for _ in range(convs)]:
            return name
    raise ValueError(f"no architecture in train/model.py has convolutions of {filters} filters")


def unfold_batchnorm(bias: np.ndarray, mean: np.ndarray, var: np.ndarray, eps: float) -> list[np.ndarray]:
    """Batch-norm weights (gamma, beta, moving mean, moving variance) that turn a
    layer output with running statistics ``mean``/``var`` into output + ``bias``."""
    mean = mean.astype(np.float32)
    var = var.astype(np.float32)
    return [np.sqrt(var + eps).astype(np.float32), (mean + bias).astype(np.float32), mean, var]


def load_into(model, layers: list[FoldedLayer], images: np.ndarray) -> None:
    """Set ``model`` (a fresh ``build_model`` net) to the folded net ``layers``.

    ``images``: training images (N, 48, 48, 1), raw pixels, that measure the
    batch norms' running statistics.
    """
    import keras

    convs = [layer for layer in layers if layer.kind == "conv"]
    dense = [layer for layer in layers if layer.kind == "dense"]
    conv_names = [layer.name for layer in model.layers if layer.name.startswith("conv")]  # graph order
    if len(conv_names) != len(convs) or len(dense) != 2:
        raise ValueError(f"the file has {len(convs)} convolutions and {len(dense)} dense layers; "
                         f"{model.name} has {len(conv_names)} and 2")
    pairs = [(name, "bn" + name[4:], folded) for name, folded in zip(conv_names, convs, strict=True)]
    pairs.append(("fc", "bn_fc", dense[0]))
    # First with each batch norm an identity plus the bias: the folded net
    # exactly (in inference mode); then measure what each batch norm sees.
    for name, bn_name, folded in pairs:
        model.get_layer(name).set_weights([folded.kernel])
        bn = model.get_layer(bn_name)
        bn.set_weights(unfold_batchnorm(folded.bias, np.zeros_like(folded.bias),
                                        np.full_like(folded.bias, 1.0 - bn.epsilon), bn.epsilon))
    model.get_layer("logits").set_weights([dense[1].kernel, dense[1].bias])
    probe = keras.Model(model.input, [model.get_layer(name).output for name, _, _ in pairs])
    # Running sums, batch by batch: the first layers' outputs for all images
    # at once would take gigabytes.
    sums = [np.zeros(folded.bias.shape, np.float64) for _, _, folded in pairs]
    squares = [np.zeros(folded.bias.shape, np.float64) for _, _, folded in pairs]
    for start in range(0, len(images), 256):
        outputs = probe(images[start:start + 256], training=False)
        for i, out in enumerate(outputs):
            flat = np.asarray(out, np.float64).reshape(-1, out.shape[-1])
            sums[i] += flat.sum(0)
            squares[i] += np.square(flat).sum(0)
    for (_, bn_name, folded), total, square, out in zip(pairs, sums, squares, outputs, strict=True):
        n = len(images) * int(np.prod(out.shape[1:-1]))
        mean = total / n
        bn = model.get_layer(bn_name)
        bn.set_weights(unfold_batchnorm(folded.bias, mean, np.maximum(square / n - mean**2, 0.0),
                                        bn.epsilon))
