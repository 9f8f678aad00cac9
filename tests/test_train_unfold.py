"""train/unfold.py: a warm start from the shipped .tflite instead of a lost run folder.

Reading and dequantising the file needs only NumPy and the interpreter, so
those tests run in CI; putting the weights into a Keras net needs the 'train'
extra.
"""

from __future__ import annotations

import numpy as np
import pytest

from emojicam.classify import TFLiteClassifier, default_model_path
from tests.factories import fer_private_sample
from train.model import ARCHITECTURES
from train.qat import fold_batchnorm
from train.unfold import FoldedLayer, arch_of, read_folded_layers, unfold_batchnorm


@pytest.fixture(scope="module")
def shipped_layers() -> list[FoldedLayer]:
    return read_folded_layers(default_model_path())


def _conv_same(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """3x3 'same' convolution, NHWC x HWIO, in NumPy."""
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))  # N H W C 3 3
    return np.einsum("nhwcij,ijcd->nhwd", windows, kernel, optimize=True)


def _folded_forward(layers: list[FoldedLayer], arch: str, pixels: np.ndarray) -> np.ndarray:
    """The folded net in float NumPy: what the .tflite computes, without int8."""
    x = pixels.astype(np.float64)[..., None] / 127.5 - 1.0
    convs = iter(layer for layer in layers if layer.kind == "conv")
    for _, count in ARCHITECTURES[arch]:
        for _ in range(count):
            layer = next(convs)
            x = np.maximum(_conv_same(x, layer.kernel) + layer.bias, 0.0)
        n, h, w, c = x.shape
        x = x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
    fc, logits = (layer for layer in layers if layer.kind == "dense")
    x = np.maximum(x.mean(axis=(1, 2)) @ fc.kernel + fc.bias, 0.0)
    z = x @ logits.kernel + logits.bias
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_the_shipped_file_gives_back_every_layer_of_its_architecture_once(shipped_layers):
    kinds = [layer.kind for layer in shipped_layers]
    assert kinds == ["conv"] * 8 + ["dense"] * 2  # the flip average's second pass is not listed again
    assert arch_of(shipped_layers) == "deep"
    assert shipped_layers[0].kernel.shape == (3, 3, 1, 64)  # HWIO, as Keras holds it
    assert shipped_layers[-1].kernel.shape == (256, 7)  # in x out
    for layer in shipped_layers:
        assert layer.kernel.dtype == np.float32 and layer.bias.shape == (layer.kernel.shape[-1],)
        assert np.isfinite(layer.kernel).all() and np.abs(layer.kernel).max() > 0


@pytest.mark.shared_data
def test_the_dequantised_layers_compute_what_the_shipped_file_does(shipped_layers, fer_npz):
    # A wrong layout (OHWI left as is) or scale axis would scramble the
    # kernels and the answers with them; the float net agrees with the int8
    # file on 99.3% of PublicTest, so 40 faces may differ by a near-tie or two.
    images, _ = fer_private_sample(40, seed=5)
    flip = (_folded_forward(shipped_layers, "deep", images)
            + _folded_forward(shipped_layers, "deep", images[:, :, ::-1])) / 2
    shipped = TFLiteClassifier.create(model_path=default_model_path()).predict(
        images[..., None].astype(np.float32))
    assert np.mean(flip.argmax(1) == shipped.argmax(1)) >= 38 / 40
    assert np.abs(flip - shipped).mean() < 0.02


def test_an_unknown_net_names_the_filters_it_found():
    layer = FoldedLayer("conv", np.zeros((3, 3, 1, 48), np.float32), np.zeros(48, np.float32))
    with pytest.raises(ValueError, match=r"\[48\] filters"):
        arch_of([layer])


def test_unfolded_batchnorm_folds_back_to_the_same_kernel_and_bias():
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(3, 3, 4, 6)).astype(np.float32)
    bias = rng.normal(size=6).astype(np.float32)
    mean, var = rng.normal(size=6), rng.uniform(0.01, 5.0, 6)
    eps = 1e-3
    bn = unfold_batchnorm(bias, mean, var, eps)
    # Batch norm with these weights adds the bias to an input of that mean and variance ...
    x = rng.normal(size=(1000, 6)) * np.sqrt(var) + mean
    gamma, beta, moving_mean, moving_var = bn
    np.testing.assert_allclose(gamma * (x - moving_mean) / np.sqrt(moving_var + eps) + beta, x + bias,
                               rtol=1e-4, atol=1e-4)
    # ... and the exporter's folding turns it back into the folded layer.
    folded_kernel, folded_bias = fold_batchnorm(kernel, bn, eps)
    np.testing.assert_allclose(folded_kernel, kernel, rtol=1e-6)
    np.testing.assert_allclose(folded_bias, bias, rtol=1e-5, atol=1e-5)


@pytest.mark.shared_data
@pytest.mark.slow
def test_a_keras_net_loaded_from_the_shipped_file_answers_as_the_file(shipped_layers, fer_npz):
    pytest.importorskip("keras", reason="the float net is Keras; install the 'train' extra")
    from train.model import build_model
    from train.unfold import load_into

    images, _ = fer_private_sample(64, seed=6)
    x = images[..., None].astype(np.float32)
    model = build_model("deep", dropout=0.3)
    load_into(model, shipped_layers, x)
    got = np.asarray(model(x, training=False))
    np.testing.assert_allclose(got, _folded_forward(shipped_layers, "deep", images), atol=2e-3)
    # Running statistics are the real ones, so training mode (batch statistics
    # of these same images, dropout off) computes the same net.
    for layer in model.layers:
        if layer.name.startswith("dropout"):
            layer.rate = 0.0
    np.testing.assert_allclose(np.asarray(model(x, training=True)), got, atol=2e-3)
