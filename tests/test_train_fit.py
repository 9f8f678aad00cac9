"""train/fit.py: the learning-rate schedule's step counts (no TensorFlow needed)."""

from __future__ import annotations

import pytest

from train.fit import Recipe, schedule_steps


def test_full_dataset_warms_up_for_one_epoch_then_decays_over_the_rest():
    recipe = Recipe(epochs=20, batch_size=128, warmup_epochs=1.0)
    warmup, decay = schedule_steps(28709, recipe)
    assert warmup == 224  # 28709 // 128 steps per epoch
    assert warmup + decay == 20 * 224


def test_tiny_dataset_still_leaves_a_step_to_decay_over():
    # 2 batches per epoch, 1 epoch, 1.5 epochs of warm-up: keras would get decay_steps <= 0
    warmup, decay = schedule_steps(256, Recipe(epochs=1, batch_size=128, warmup_epochs=1.5))
    assert (warmup, decay) == (1, 1)


def test_fewer_images_than_a_batch_says_what_to_change():
    with pytest.raises(SystemExit, match="--batch-size"):
        schedule_steps(100, Recipe(batch_size=128))


def test_a_run_folder_without_run_json_says_what_it_expected(tmp_path):
    from train.fit import read_manifest

    with pytest.raises(SystemExit, match="python -m train fit"):
        read_manifest(tmp_path / "typo")
