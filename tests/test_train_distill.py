"""train/distill.py: teacher targets for knowledge distillation. The arithmetic and the
file checks need no framework; the ensemble of real runs and fit's teacher checks need Keras."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

from train.distill import blend_teacher, load_teacher, soften
from train.fit import Recipe, fit


def _probs(n: int, seed: int = 0) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(0, 2, (n, 7))
    p = np.exp(logits)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def test_temperature_one_keeps_the_distribution_and_higher_flattens_it():
    p = _probs(50)
    np.testing.assert_allclose(soften(p, 1.0), p, atol=1e-6)
    flat = soften(p, 3.0)
    np.testing.assert_allclose(flat.sum(axis=1), 1.0, atol=1e-6)
    assert np.array_equal(flat.argmax(1), p.argmax(1))  # the ranking never changes
    assert np.all(flat.max(axis=1) < p.max(axis=1))  # the top class gives weight away
    with pytest.raises(ValueError, match="temperature"):
        soften(p, 0.0)


def test_blend_moves_targets_towards_the_teacher_by_the_mix():
    labels = np.eye(7, dtype=np.float32)[[0, 3, 6]]
    teacher = _probs(3, seed=1)
    np.testing.assert_array_equal(blend_teacher(labels, teacher, 0.0), labels)
    np.testing.assert_allclose(blend_teacher(labels, teacher, 1.0), teacher, atol=1e-7)
    half = blend_teacher(labels, teacher, 0.5)
    np.testing.assert_allclose(half, (labels + teacher) / 2, atol=1e-7)
    np.testing.assert_allclose(half.sum(axis=1), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        blend_teacher(labels, teacher, 1.5)


def test_a_teacher_file_for_another_dataset_is_refused_with_the_reason(tmp_path):
    path = tmp_path / "teacher.npz"
    np.savez(path, probs=_probs(10), runs=np.array(["a"]), temperature=np.float32(1))
    probs, sha = load_teacher(path, 10)
    assert probs.shape == (10, 7) and len(sha) == 64
    with pytest.raises(SystemExit, match="10 rows.*12 images"):
        load_teacher(path, 12)
    with pytest.raises(SystemExit, match="python -m train teach"):
        load_teacher(tmp_path / "missing.npz", 10)


def test_fit_asks_for_the_teacher_file_before_loading_anything(tmp_path):
    with pytest.raises(SystemExit, match="--teacher FILE"):
        fit(tmp_path / "no-data.npz", tmp_path / "run", Recipe(teacher_mix=0.5))


def _tiny_fer(path, n_train: int = 20) -> None:
    rng = np.random.default_rng(0)
    n = n_train + 10
    np.savez(path, images=rng.integers(0, 256, (n, 48, 48), dtype=np.uint8),
             labels=rng.integers(0, 7, n).astype(np.uint8),
             usage=np.array([0] * n_train + [1] * 5 + [2] * 5, np.uint8))


def test_a_run_refuses_to_resume_with_another_teacher(tmp_path):
    pytest.importorskip("keras", reason="fit needs Keras; install the 'train' extra")
    data = tmp_path / "fer.npz"
    _tiny_fer(data)
    first, second = tmp_path / "t1.npz", tmp_path / "t2.npz"
    np.savez(first, probs=_probs(20, 1), runs=np.array(["a"]), temperature=np.float32(1))
    np.savez(second, probs=_probs(20, 2), runs=np.array(["b"]), temperature=np.float32(1))
    recipe = Recipe(teacher_mix=0.5)
    run = tmp_path / "run"
    run.mkdir()
    _, sha = load_teacher(first, 20)
    (run / "run.json").write_text(json.dumps({"recipe": asdict(recipe), "data": str(data),
                                              "teacher": str(first), "teacher_sha256": sha}))
    with pytest.raises(SystemExit, match="another --teacher file"):
        fit(data, run, recipe, teacher=second)


def _views_averaged(model, images: np.ndarray, flip=lambda x: x[:, :, ::-1]) -> np.ndarray:
    """The model's probabilities averaged over each face and ``flip`` of it (by
    default its mirror image), computed here with Keras alone. ``images`` is
    (N, H, W) and the model takes NHWC: the width is axis 2 of both."""
    import keras

    x = images[..., None].astype(np.float32)
    views = [keras.ops.convert_to_numpy(model(v, training=False)) for v in (x, flip(x))]
    return (views[0] + views[1]) / 2


def test_teach_averages_the_runs_flip_averaged_predictions(tmp_path):
    pytest.importorskip("keras", reason="teach runs Keras models; install the 'train' extra")
    import keras

    from train.data import load_fer
    from train.distill import run_probabilities, teach
    from train.model import build_model

    data = tmp_path / "fer.npz"
    _tiny_fer(data)
    runs, models = [], []
    for seed in (1, 2):
        run = tmp_path / f"run{seed}"
        run.mkdir()
        recipe = Recipe(arch="small", seed=seed)
        (run / "run.json").write_text(json.dumps({"recipe": asdict(recipe), "data": str(data)}))
        keras.utils.set_random_seed(seed)
        model = build_model("small")
        model.save_weights(str(run / "best.weights.h5"))
        runs.append(run)
        models.append(model)
    out = teach(runs, data, tmp_path / "teacher.npz")
    with np.load(out) as f:
        ensemble, names = f["probs"], list(f["runs"])
    assert names == ["run1", "run2"]

    images = load_fer(data, "train").images
    each = [_views_averaged(m, images) for m in models]  # the nets in memory, not read back
    assert not np.allclose(each[0], each[1], atol=1e-4)  # two different nets
    np.testing.assert_allclose(ensemble, (each[0] + each[1]) / 2, atol=1e-5)
    # The expectation can tell: no flip, or the picture turned upside down, gives another answer.
    for flip in (lambda x: x, lambda x: x[:, ::-1]):
        other = [_views_averaged(m, images, flip) for m in models]
        assert not np.allclose(ensemble, (other[0] + other[1]) / 2, atol=1e-4)
    for run, expected in zip(runs, each, strict=True):  # each run flip-averaged, so mirror-invariant
        np.testing.assert_allclose(run_probabilities(run, images), expected, atol=1e-5)
        np.testing.assert_allclose(run_probabilities(run, images[:, :, ::-1]), expected, atol=1e-5)
