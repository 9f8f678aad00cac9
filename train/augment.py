"""Training augmentation in NumPy and OpenCV, for Keras backends without tf.data.

On the TensorFlow backend (our CPU machines) ``fit`` augments inside a
``tf.data`` pipeline (``train.fit._augmenter``). A GPU machine may have only
JAX or PyTorch; there ``fit`` feeds batches from ``augment_batch`` instead.
Both apply the same recipe, in the same order:

1. pad 4 pixels by reflection, crop a random 48x48 window;
2. mirror half of the images;
3. rotate by up to ``rotate_deg`` and scale by up to ``zoom`` (edges reflected);
4. when ``brightness`` > 0, each image's pixels times a gain drawn from
   U(1 - ``brightness``, 1 + ``brightness``), clipped to 0..255 (webcam faces
   are darker than FER-2013's: see the model card's known limits);
5. random erasing: with probability ``erase_prob`` one rectangle of 2% to 25%
   of the image (aspect 0.3 to 3.3) filled with noise (Zhong et al. 2017);
6. mixup with weight ~ Beta(``mixup``, ``mixup``), when ``mixup`` > 0.

Only NumPy and OpenCV are needed, so this runs (and is tested) without any
deep-learning framework.
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np

SIDE = 48
PAD = 4


class AugmentRecipe(Protocol):
    """What ``augment_batch`` reads of a recipe (``train.fit.Recipe``, frozen)."""

    @property
    def rotate_deg(self) -> float: ...
    @property
    def zoom(self) -> float: ...
    @property
    def brightness(self) -> float: ...
    @property
    def erase_prob(self) -> float: ...
    @property
    def mixup(self) -> float: ...


def augment_batch(x: np.ndarray, y: np.ndarray, recipe: AugmentRecipe,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Augmented copies of a batch: ``x`` (n, 48, 48, 1) float32 pixels 0..255,
    ``y`` (n, 7) float32 targets."""
    n = len(x)
    padded = np.pad(x[..., 0], ((0, 0), (PAD, PAD), (PAD, PAD)), mode="reflect")
    offsets = rng.integers(0, 2 * PAD + 1, size=(n, 2))
    mirror = rng.random(n) < 0.5
    angles = rng.uniform(-recipe.rotate_deg, recipe.rotate_deg, n)
    scales = 1.0 + rng.uniform(-recipe.zoom, recipe.zoom, n)
    centre = (SIDE - 1) / 2.0
    out = np.empty((n, SIDE, SIDE), np.float32)
    for i in range(n):
        oy, ox = offsets[i]
        image = padded[i, oy : oy + SIDE, ox : ox + SIDE]
        if mirror[i]:
            image = image[:, ::-1]
        m = cv2.getRotationMatrix2D((centre, centre), float(angles[i]), float(scales[i]))
        out[i] = cv2.warpAffine(np.ascontiguousarray(image), m, (SIDE, SIDE), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT)
    if recipe.brightness > 0:  # drawn only when on: recipes without it keep their random stream
        gains = rng.uniform(1.0 - recipe.brightness, 1.0 + recipe.brightness, n).astype(np.float32)
        out = np.clip(out * gains[:, None, None], 0.0, 255.0)
    out = random_erase(out, recipe.erase_prob, rng)[..., None]
    y = y.astype(np.float32)
    if recipe.mixup > 0:
        out, y = mixup(out, y, recipe.mixup, rng)
    return out, y


def random_erase(images: np.ndarray, prob: float, rng: np.random.Generator) -> np.ndarray:
    """``images`` (n, H, W) with one noise-filled rectangle in each of a random
    ``prob`` share of them (a new array)."""
    n, h_img, w_img = images.shape
    area = rng.uniform(0.02, 0.25, n) * h_img * w_img
    ratio = np.exp(rng.uniform(np.log(0.3), np.log(3.3), n))
    h = np.clip(np.sqrt(area * ratio), 1.0, h_img)
    w = np.clip(np.sqrt(area / ratio), 1.0, w_img)
    y0 = rng.random(n) * (h_img - h)
    x0 = rng.random(n) * (w_img - w)
    rows, cols = np.arange(h_img), np.arange(w_img)
    in_y = (rows[None, :] >= y0[:, None]) & (rows[None, :] < (y0 + h)[:, None])
    in_x = (cols[None, :] >= x0[:, None]) & (cols[None, :] < (x0 + w)[:, None])
    apply = np.asarray(rng.random(n) < prob)
    mask = in_y[:, :, None] & in_x[:, None, :] & apply[:, None, None]
    noise = rng.uniform(0.0, 255.0, images.shape).astype(np.float32)
    return np.where(mask, noise, images).astype(np.float32)


def mixup(x: np.ndarray, y: np.ndarray, alpha: float,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each image and target blended with another of the batch by a weight
    drawn from Beta(alpha, alpha) (Zhang et al. 2018)."""
    n = len(x)
    lam = rng.beta(alpha, alpha, n).astype(np.float32)
    partner = rng.permutation(n)
    lam_x = lam.reshape((n,) + (1,) * (x.ndim - 1))
    lam_y = lam[:, None]
    return lam_x * x + (1 - lam_x) * x[partner], lam_y * y + (1 - lam_y) * y[partner]


def batch_order(num_images: int, batch_size: int, seed: int, epoch: int) -> np.ndarray:
    """Image indices of one epoch, shuffled, as (batches, batch_size): whole
    batches only, like ``drop_remainder`` in the tf.data pipeline."""
    order = np.random.default_rng([seed, epoch]).permutation(num_images)
    batches = num_images // batch_size
    return order[: batches * batch_size].reshape(batches, batch_size)
