"""train/data.py needs only NumPy, so its loaders are tested here even where
the training extra (TensorFlow) is not installed."""

from __future__ import annotations

import numpy as np
import pytest

from emojicam.types import Emotion
from train import CLASS_NAMES
from train.data import also_in_training, load_fer, soft_labels_from_votes
from train.evaluate import confusion_matrix


def test_class_names_match_runtime_enum():
    assert list(CLASS_NAMES) == [e.value for e in Emotion]


def test_ferplus_votes_map_to_fer_order():
    # columns: neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF
    votes = np.array([[0, 8, 2, 0, 0, 0, 0, 0, 0, 0],
                      [1, 0, 0, 0, 5, 0, 0, 4, 0, 0],
                      [0, 0, 0, 0, 0, 0, 0, 0, 0, 10]], np.uint8)
    soft = soft_labels_from_votes(votes)
    happy, surprise, neutral, angry = (
        CLASS_NAMES.index(c) for c in ("happy", "surprise", "neutral", "angry"))
    assert soft[0, happy] == pytest.approx(0.8) and soft[0, surprise] == pytest.approx(0.2)
    assert soft[1, angry] == pytest.approx(5 / 6) and soft[1, neutral] == pytest.approx(1 / 6)
    assert soft[2].sum() == 0  # not a face: no target


def test_csv_and_npz_give_the_same_split(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (6, 48, 48), dtype=np.uint8)
    labels = np.array([0, 3, 6, 3, 2, 1], np.uint8)
    usage = np.array([0, 0, 1, 2, 2, 0], np.uint8)
    np.savez(tmp_path / "f.npz", images=images, labels=labels, usage=usage,
             pixels_exact=np.ones(6, np.uint8))
    names = {0: "Training", 1: "PublicTest", 2: "PrivateTest"}
    rows = ["emotion,pixels,Usage"] + [
        f"{lab},{' '.join(map(str, im.reshape(-1)))},{names[u]}"
        for im, lab, u in zip(images, labels, usage, strict=True)
    ]
    (tmp_path / "f.csv").write_text("\n".join(rows) + "\n")
    for split, expect in (("train", [0, 1, 5]), ("public", [2]), ("private", [3, 4])):
        a, b = load_fer(tmp_path / "f.npz", split), load_fer(tmp_path / "f.csv", split)
        np.testing.assert_array_equal(a.images, images[expect])
        np.testing.assert_array_equal(b.images, images[expect])
        np.testing.assert_array_equal(a.labels, b.labels)


def test_test_images_that_are_also_in_training_are_found(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (6, 48, 48), dtype=np.uint8)
    images[4] = images[0]  # a PrivateTest image byte-identical to a Training one
    usage = np.array([0, 0, 1, 2, 2, 2], np.uint8)
    np.savez(tmp_path / "f.npz", images=images, labels=np.zeros(6, np.uint8), usage=usage,
             pixels_exact=np.ones(6, np.uint8))
    assert also_in_training(tmp_path / "f.npz", "private").tolist() == [False, True, False]
    assert also_in_training(tmp_path / "f.npz", "public").tolist() == [False]


@pytest.mark.shared_data
def test_fer2013_test_splits_share_about_8_percent_of_their_images_with_training(fer_npz):
    assert int(also_in_training(fer_npz, "private").sum()) == 288
    assert int(also_in_training(fer_npz, "public").sum()) == 280


def test_missing_data_file_says_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="pass --data"):
        load_fer(tmp_path / "nope.npz", "train")


def test_confusion_matrix_counts():
    cm = confusion_matrix(np.array([0, 0, 3, 6]), np.array([0, 3, 3, 6]))
    assert cm.sum() == 4 and cm[0, 0] == 1 and cm[0, 3] == 1 and cm[3, 3] == 1 and cm[6, 6] == 1


@pytest.mark.shared_data
def test_real_split_sizes(fer_npz):
    sizes = {s: len(load_fer(fer_npz, s).labels) for s in ("train", "public", "private")}
    assert sizes == {"train": 28709, "public": 3589, "private": 3589}
    private = load_fer(fer_npz, "private")
    assert np.bincount(private.labels, minlength=7).tolist() == [491, 55, 528, 879, 594, 416, 626]
