"""train/qat.py: the NumPy part (batch-norm folding) runs without TensorFlow."""

from __future__ import annotations

import numpy as np

from train.qat import fold_batchnorm


def test_folding_batchnorm_gives_the_same_outputs_as_layer_then_batchnorm():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3, 3, 5)).astype(np.float32)  # patches of a 3x3 conv with 5 input channels
    kernel = rng.normal(size=(3, 3, 5, 4)).astype(np.float32)
    gamma, beta = rng.uniform(0.5, 2, 4), rng.normal(size=4)
    mean, var = rng.normal(size=4), rng.uniform(0.1, 3, 4)
    eps = 1e-3

    pre = np.einsum("nhwc,hwcd->nd", x, kernel)
    expected = gamma * (pre - mean) / np.sqrt(var + eps) + beta

    folded_kernel, bias = fold_batchnorm(kernel, [gamma, beta, mean, var], eps)
    got = np.einsum("nhwc,hwcd->nd", x, folded_kernel) + bias
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert folded_kernel.dtype == np.float32 and bias.dtype == np.float32


def test_folding_a_dense_kernel_scales_its_output_columns():
    kernel = np.ones((3, 2), np.float32)
    folded, bias = fold_batchnorm(kernel, [np.array([2.0, 1.0]), np.array([0.5, 0.0]),
                                           np.array([1.0, 0.0]), np.array([1.0, 4.0])], eps=0.0)
    np.testing.assert_allclose(folded, [[2.0, 0.5]] * 3)
    np.testing.assert_allclose(bias, [0.5 - 2.0, 0.0])
