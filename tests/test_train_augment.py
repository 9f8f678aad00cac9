"""train/augment.py: the NumPy/OpenCV augmentation used on Keras backends
without tf.data (a GPU machine with JAX or PyTorch only). No framework needed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from train.augment import augment_batch, batch_order, mixup, random_erase


@dataclass(frozen=True)
class R:
    rotate_deg: float = 0.0
    zoom: float = 0.0
    erase_prob: float = 0.0
    mixup: float = 0.0
    brightness: float = 0.0


def _faces(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 48, 48, 1)).astype(np.float32)
    y = np.eye(7, dtype=np.float32)[rng.integers(0, 7, n)]
    return x, y


def test_crop_and_mirror_only_gives_a_window_of_the_reflect_padded_image():
    x, y = _faces(16)
    out, targets = augment_batch(x, y, R(), np.random.default_rng(1))
    assert out.shape == (16, 48, 48, 1) and out.dtype == np.float32
    np.testing.assert_array_equal(targets, y)  # no mixup: targets untouched
    mirrored = shifted = 0
    for i in range(16):
        padded = np.pad(x[i, :, :, 0], 4, mode="reflect")
        windows = {(dy, dx, flip) for dy in range(9) for dx in range(9) for flip in (False, True)
                   if np.array_equal(out[i, :, :, 0],
                                     padded[dy : dy + 48, dx : dx + 48][:, ::-1] if flip
                                     else padded[dy : dy + 48, dx : dx + 48])}
        assert windows, f"image {i} is not a (mirrored) 48x48 window of the padded image"
        dy, dx, flip = next(iter(windows))
        mirrored += flip
        shifted += (dy, dx) != (4, 4)
    assert 2 <= mirrored <= 14 and shifted >= 12  # both happen, neither always


def test_rotation_and_zoom_change_the_image_but_keep_its_range():
    x, y = _faces(8)
    smooth = np.tile(np.linspace(0, 255, 48, dtype=np.float32), (8, 48, 1))[..., None]
    out, _ = augment_batch(smooth, y, R(rotate_deg=10, zoom=0.1), np.random.default_rng(2))
    assert out.min() >= 0 and out.max() <= 255
    plain, _ = augment_batch(smooth, y, R(), np.random.default_rng(2))
    assert np.abs(out - plain).mean() > 1.0  # the warp did something


def test_random_erasing_fills_one_rectangle_in_the_chosen_share_of_images():
    images = np.full((200, 48, 48), 128.0, np.float32)
    rng = np.random.default_rng(3)
    assert np.array_equal(random_erase(images, 0.0, rng), images)
    erased = random_erase(images, 1.0, rng)
    changed = erased != images
    for i in range(200):
        ys, xs = np.nonzero(changed[i])
        assert len(ys), f"image {i} was not erased"
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        # one rectangle: the changed pixels fill their bounding box (noise may hit 128 exactly, rarely)
        assert len(ys) >= 0.98 * box
        assert box <= 0.25 * 48 * 48 + 2 * 48  # area at most 25%, plus rounding to whole rows/columns
    half = random_erase(images, 0.5, np.random.default_rng(4))
    share = np.mean([(half[i] != images[i]).any() for i in range(200)])
    assert 0.35 < share < 0.65


def test_mixup_blends_images_and_targets_with_the_same_partner_and_weight():
    n = 32
    x = np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1) * np.ones((1, 48, 48, 1), np.float32)
    y = np.eye(n, dtype=np.float32)  # a class per image: the target names the partner
    mx, my = mixup(x, y, 0.4, np.random.default_rng(5))
    np.testing.assert_allclose(my.sum(axis=1), 1.0, rtol=1e-6)
    mixed = 0
    for i in range(n):
        lam = my[i, i] if np.count_nonzero(my[i]) == 2 else 1.0
        partners = [j for j in np.nonzero(my[i])[0] if j != i]
        mixed += bool(partners)
        expected = i if not partners else lam * i + (1 - lam) * partners[0]
        np.testing.assert_allclose(mx[i], expected, rtol=1e-5, atol=1e-4)
    assert mixed > n // 2  # blended at all (an image paired with itself stays as it was)


def test_batch_order_is_whole_shuffled_batches_new_each_epoch_and_reproducible():
    a = batch_order(1000, 128, seed=7, epoch=0)
    assert a.shape == (7, 128)  # 1000 // 128 whole batches, the rest dropped
    assert len(np.unique(a)) == a.size and a.max() < 1000
    assert not np.array_equal(a, batch_order(1000, 128, seed=7, epoch=1))
    np.testing.assert_array_equal(a, batch_order(1000, 128, seed=7, epoch=0))


def test_same_generator_seed_gives_the_same_batch():
    x, y = _faces(8)
    recipe = R(rotate_deg=10, zoom=0.1, erase_prob=0.5, mixup=0.2)
    a = augment_batch(x, y, recipe, np.random.default_rng([1, 2, 3]))
    b = augment_batch(x, y, recipe, np.random.default_rng([1, 2, 3]))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_brightness_scales_each_image_by_its_own_gain_within_the_range():
    """Webcam faces are darker than FER-2013's: ``brightness`` multiplies each
    image by a gain in [1 - b, 1 + b], clipped to 0..255."""
    n = 64
    x = np.full((n, 48, 48, 1), 100.0, np.float32)
    x[n // 2 :] = 240.0  # bright images: a gain above 1.06 saturates them
    y = np.eye(7, dtype=np.float32)[np.zeros(n, int)]
    out, _ = augment_batch(x, y, R(brightness=0.4), np.random.default_rng(5))
    levels = out.reshape(n, -1)
    assert np.all(levels.min(axis=1) == levels.max(axis=1))  # one gain for the whole image
    dark, bright = levels[: n // 2, 0], levels[n // 2 :, 0]
    assert dark.min() >= 60.0 - 1e-3 and dark.max() <= 140.0 + 1e-3
    assert dark.std() > 10.0  # gains differ between images
    assert bright.max() == 255.0 and bright.min() >= 144.0 - 1e-3
    same, _ = augment_batch(x, y, R(), np.random.default_rng(5))
    assert np.array_equal(same, x)  # off by default: the images are untouched
