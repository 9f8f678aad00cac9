"""train/fit.py: the learning-rate schedule's step counts (no framework needed); mixup, the
per-image crop (need TensorFlow) and the batches for backends without tf.data (need Keras)."""

from __future__ import annotations

import dataclasses

import numpy as np
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


def test_ferplus_mix_without_the_votes_file_stops_instead_of_training_one_hot(tmp_path):
    from train.fit import fit

    with pytest.raises(SystemExit, match="--ferplus-mix needs --ferplus"):
        fit(tmp_path / "fer2013.npz", tmp_path / "run", Recipe(ferplus_mix=0.4))
    assert not (tmp_path / "run").exists()


def test_a_finished_run_is_not_started_over(tmp_path):
    """Keras deletes a run's backup when it ends: running it again retrained the whole
    cycle from its start weights and appended a second set of epochs to its log."""
    from train.fit import fit
    from train.qat import qat_run

    run = tmp_path / "deep-x"
    run.mkdir()
    (run / "DONE").write_text("2026-11-22\n")
    with pytest.raises(SystemExit, match=r"finished run .* --init-from deep-x"):
        fit(tmp_path / "fer2013.npz", run, Recipe())
    with pytest.raises(SystemExit, match="finished run"):
        qat_run(tmp_path / "source", tmp_path / "fer2013.npz", run)


def _run_with_arch(tmp_path, arch):
    import json

    run = tmp_path / "source"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"recipe": {"arch": arch}}))
    return run


def test_a_warm_restart_builds_the_architecture_its_source_run_trained(tmp_path):
    from train.fit import warm_start_arch

    source = _run_with_arch(tmp_path, "deep")
    assert warm_start_arch(source, None) == "deep"  # --arch left out: follow the source
    assert warm_start_arch(source, "deep") == "deep"


def test_a_warm_restart_into_another_architecture_names_the_one_that_fits(tmp_path):
    from train.fit import warm_start_arch

    with pytest.raises(SystemExit, match="--arch deep"):
        warm_start_arch(_run_with_arch(tmp_path, "deep"), "base")


def test_a_warm_restart_from_the_shipped_file_builds_the_net_inside_it(tmp_path):
    from emojicam.classify import default_model_path
    from train.__main__ import _init_weights
    from train.fit import warm_start_arch

    shipped = default_model_path()
    assert _init_weights(str(shipped)) == shipped  # a file is used as given, not as a run name
    assert warm_start_arch(shipped, None) == "deep"
    with pytest.raises(SystemExit, match="that file holds --arch deep"):
        warm_start_arch(shipped, "base")
    with pytest.raises(SystemExit, match="no such file"):
        warm_start_arch(tmp_path / "emotion.tflite", None)
    (tmp_path / "notes.tflite").write_text("not a model")
    with pytest.raises(SystemExit, match="notes.tflite"):
        warm_start_arch(tmp_path / "notes.tflite", None)


def test_mixup_blends_each_image_and_its_target_with_the_same_partner_and_weight():
    tf = pytest.importorskip("tensorflow", reason="mixup runs inside the tf.data pipeline; "
                             "install the 'train' extra to test it")
    from train.fit import mixup

    tf.random.set_seed(3)
    n = 64
    # Image i is filled with the value i, and its target is one-hot on class i % 7,
    # so every output shows which partner and which weight it was mixed with.
    x = tf.constant(np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1) * np.ones((1, 48, 48, 1), np.float32))
    y = tf.constant(np.eye(7, dtype=np.float32)[np.arange(n) % 7])
    mx, my = (t.numpy() for t in mixup(x, y, alpha=0.4))

    assert mx.shape == (n, 48, 48, 1) and my.shape == (n, 7)
    np.testing.assert_allclose(my.sum(axis=1), 1.0, atol=1e-6)  # still a distribution
    assert np.all(mx.std(axis=(1, 2, 3)) < 1e-4)  # whole images blended, not patches
    mixed = 0
    for i in range(n):
        value = mx[i, 0, 0, 0]
        own = my[i, i % 7]
        if abs(value - i) < 1e-3:
            continue  # weight ~1, or partnered with itself
        mixed += 1
        # value = lam * i + (1 - lam) * j for one partner j, and the target must
        # give image i's class that same weight lam (all of it when j shares it).
        partners = []
        for j in range(n):
            if j == i:
                continue
            lam = (value - j) / (i - j)
            class_share = 1.0 if j % 7 == i % 7 else lam
            if 0 <= lam <= 1 and abs(class_share - own) < 1e-3:
                partners.append(j)
        assert partners, f"image {i}: value {value} and target {my[i]} do not come from one partner"
    assert mixed > n // 2


def test_random_crop_cuts_each_image_of_a_batch_at_its_own_place():
    tf = pytest.importorskip("tensorflow", reason="the crop runs inside the tf.data pipeline; "
                             "install the 'train' extra to test it")
    from train.fit import random_crop

    tf.random.set_seed(4)
    x = np.random.default_rng(0).uniform(0, 255, (32, 48, 48, 1)).astype(np.float32)
    out = random_crop(tf.constant(x)).numpy()
    assert out.shape == (32, 48, 48, 1)
    offsets = []
    for i in range(32):
        padded = np.pad(x[i, :, :, 0], 4, mode="reflect")
        found = [(dy, dx) for dy in range(9) for dx in range(9)
                 if np.array_equal(out[i, :, :, 0], padded[dy : dy + 48, dx : dx + 48])]
        assert found, f"image {i} is not a 48x48 window of its reflect-padded self"
        offsets.append(found[0])
    assert len(set(offsets)) > 10  # not one place for the whole batch


def test_the_tf_augmenter_applies_brightness_like_the_numpy_one():
    """The tf.data pipeline (TensorFlow) and ``augment_batch`` (other
    backends) apply the same recipe: one gain in [1 - b, 1 + b] per image."""
    tf = pytest.importorskip("tensorflow", reason="the tf.data augmenter needs the 'train' extra")
    from train.fit import _augmenter

    tf.random.set_seed(6)
    n = 32
    x = np.full((n, 48, 48, 1), 100.0, np.float32)
    y = np.eye(7, dtype=np.float32)[np.zeros(n, int)]
    recipe = Recipe(rotate_deg=0.0, zoom=0.0, erase_prob=0.0, mixup=0.0, brightness=0.4)
    out, _ = _augmenter(recipe, seed=3)(tf.constant(x), tf.constant(y))
    levels = out.numpy().reshape(n, -1)
    assert np.allclose(levels.min(axis=1), levels.max(axis=1), atol=1e-3)
    assert levels.min() >= 60.0 - 1e-3 and levels.max() <= 140.0 + 1e-3 and levels[:, 0].std() > 10.0
    plain, _ = _augmenter(dataclasses.replace(recipe, brightness=0.0), seed=3)(tf.constant(x), tf.constant(y))
    assert np.allclose(plain.numpy(), 100.0, atol=1e-3)


def numbered_images(n: int = 300):
    """Images whose every pixel is their index (a crop keeps it), their labels
    (index mod 7), and a recipe without value-changing augmentation."""
    x = np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1) * np.ones((1, 48, 48, 1), np.float32)
    y = np.eye(7, dtype=np.float32)[np.arange(n) % 7]
    return x, y, Recipe(batch_size=64, rotate_deg=0.0, zoom=0.0, erase_prob=0.0, mixup=0.0, seed=3)


def test_numpy_batches_for_backends_without_tf_data_cover_the_data_and_reshuffle():
    pytest.importorskip("keras", reason="the batches are a keras.utils.PyDataset; install the 'train' extra")
    from train.fit import _numpy_batches

    x, y, recipe = numbered_images()
    train = _numpy_batches(x, y, recipe)
    assert len(train) == 4  # 300 // 64 whole batches
    xb, yb = train[0]
    assert xb.shape == (64, 48, 48, 1) and yb.shape == (64, 7)
    first = [int(round(float(np.median(xb[i])))) for i in range(64)]  # the crop keeps each image's value
    np.testing.assert_array_equal(yb, np.eye(7, dtype=np.float32)[np.array(first) % 7])
    train.on_epoch_end()
    xb2, _ = train[0]
    assert [int(round(float(np.median(xb2[i])))) for i in range(64)] != first  # a new order each epoch

    val = _numpy_batches(x, y, None)
    seen = np.concatenate([val[i][0][:, 0, 0, 0] for i in range(len(val))])
    np.testing.assert_array_equal(seen, np.arange(300))  # every image once, in order, unchanged


def test_init_from_a_run_without_best_weights_stops_before_loading_anything(tmp_path):
    """It ended, after loading the data and building the net, in h5py's 'Unable to
    synchronously open file'."""
    from train.fit import fit

    source = tmp_path / "deep-a"
    source.mkdir()
    with pytest.raises(SystemExit, match=r"--init-from: .*best.weights.h5 not found \(has run 'deep-a' "
                       "finished an epoch"):
        fit(tmp_path / "fer2013.npz", tmp_path / "run", Recipe(), init_from=source / "best.weights.h5")
    with pytest.raises(SystemExit, match=r"--init-from: .*emotion.tflite not found$"):
        fit(tmp_path / "fer2013.npz", tmp_path / "run", Recipe(), init_from=tmp_path / "emotion.tflite")


def test_qat_into_a_fit_run_or_with_other_options_is_refused(tmp_path):
    """qat rewrote the run.json of whatever folder --run named, and resumed its
    backup and log under other options."""
    import json

    from train.qat import qat_run

    fit_run = _run_with_arch(tmp_path, "deep")
    with pytest.raises(SystemExit, match="made by 'python -m train fit', not a QAT run"):
        qat_run(tmp_path / "deep-a", tmp_path / "fer2013.npz", fit_run)
    assert json.loads((fit_run / "run.json").read_text()) == {"recipe": {"arch": "deep"}}

    qat = tmp_path / "deep-a-qat1"
    qat.mkdir()
    (qat / "run.json").write_text(json.dumps({"recipe": {}, "qat": {
        "from": str(tmp_path / "deep-a" / "best.weights.h5"), "epochs": 1, "lr": 3e-4, "ranges": {}}}))
    with pytest.raises(SystemExit, match="use the same options to resume"):
        qat_run(tmp_path / "deep-a", tmp_path / "fer2013.npz", qat, epochs=2, lr=3e-4)
    from train.qat import _refuse_other_run

    _refuse_other_run(qat, tmp_path / "deep-a", 1, 3e-4)  # the same options: it resumes


def test_a_resumed_run_starts_a_new_data_stream_where_the_backup_left_off(tmp_path):
    """Keras restores weights, optimizer and epoch count, not the random state:
    re-seeded alike, the epochs after a resume replayed epoch 0's order and
    augmentations. The epoch comes from BackupAndRestore's record."""
    from train.fit import resumed_epoch, stream_seed

    assert resumed_epoch(tmp_path) == 0  # a new run
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "training_metadata.json").write_text('{"epoch": 3, "batch": 0}')
    assert resumed_epoch(tmp_path) == 3
    assert stream_seed(1337, 0) == 1337  # a run that was never stopped is as before
    assert len({stream_seed(1337, e) for e in range(0, 200)}) == 200
    assert all(stream_seed(1337, e) < 2**32 for e in range(200))  # numpy's seed range


def test_tf_data_after_a_resume_is_not_epoch_0_again():
    tf = pytest.importorskip("tensorflow", reason="the pipeline is tf.data; install the 'train' extra")
    from train.fit import datasets

    n = 256
    x = np.zeros((n, 48, 48, 1), np.float32)
    ids = np.eye(n, dtype=np.float32)  # the targets carry each image's index
    recipe = Recipe(batch_size=64, mixup=0.0, seed=5)

    def first_batch(first_epoch: int) -> list[int]:
        tf.keras.utils.set_random_seed(1)
        ds, _ = datasets(x, ids, x[:8], ids[:8], recipe, first_epoch)
        _, yb = next(iter(ds))
        return [int(i) for i in np.argmax(yb.numpy(), axis=1)]

    assert first_batch(0) == first_batch(0)  # reproducible
    assert first_batch(4) != first_batch(0)  # a resume at epoch 4 does not replay epoch 0


def test_numpy_batches_after_a_resume_go_on_with_that_epochs_order():
    pytest.importorskip("keras", reason="the batches are a keras.utils.PyDataset; install the 'train' extra")
    from train.fit import _numpy_batches

    x, y, recipe = numbered_images()
    uninterrupted = _numpy_batches(x, y, recipe)
    for _ in range(2):
        uninterrupted.on_epoch_end()
    resumed = _numpy_batches(x, y, recipe, first_epoch=2)
    np.testing.assert_array_equal(resumed.order, uninterrupted.order)
    np.testing.assert_array_equal(resumed[1][0], uninterrupted[1][0])


def _tiny_fer(path, value: int = 0):
    """A FER-2013-shaped .npz: 16 Training and 8 PublicTest images."""
    usage = np.array([0] * 16 + [1] * 8, np.uint8)
    images = np.full((24, 48, 48), value, np.uint8)
    np.savez(path, images=images, labels=np.arange(24, dtype=np.uint8) % 7, usage=usage)
    return path


def test_a_resume_on_other_data_is_refused(tmp_path):
    """run.json recorded the --data path only: a resume on another file (or the
    same file, changed) trained the rest of the cycle on other images unnoticed.
    The digest is of the images and labels as loaded, so fer2013.csv and the
    .npz made from it resume each other."""
    pytest.importorskip("keras", reason="fit needs Keras; install the 'train' extra")
    import json

    from train.data import load_fer, split_digest
    from train.fit import fit

    data = _tiny_fer(tmp_path / "fer.npz")
    run = tmp_path / "run"
    run.mkdir()
    recipe = Recipe(epochs=1, batch_size=8, bf16=False)  # bf16 is Keras-global: later tests would inherit it
    digest = split_digest(load_fer(data, "train"), load_fer(data, "public"))
    (run / "run.json").write_text(json.dumps(
        {"recipe": dataclasses.asdict(recipe), "data": str(data), "data_digest": digest[::-1]}))
    with pytest.raises(SystemExit, match=r"started on other images or labels .*same data to resume"):
        fit(data, run, recipe)
    fresh = tmp_path / "fresh"
    fit(data, fresh, recipe, progress="line")  # records the digest a resume is checked against
    assert json.loads((fresh / "run.json").read_text())["data_digest"] == digest
