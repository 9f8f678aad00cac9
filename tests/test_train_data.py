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


def _csv(path, rows, header="emotion,pixels,Usage"):
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def _row(label=0, usage="Training", pixels=None):
    pixels = [7] * 2304 if pixels is None else pixels
    return f"{label},{' '.join(map(str, pixels))},{usage}"


@pytest.mark.parametrize("bad_row, why", [
    (_row(3)[:2000], r"line 3: \d+ pixel values, expected 2304"),  # a truncated download
    (_row(pixels=[7] * 1024), "line 3: 1024 pixel values"),  # was upscaled to 48x48 silently
    (_row(usage="Test"), "line 3: Usage 'Test', expected one of Training, PublicTest, PrivateTest"),
    (_row(label=9), "line 3: emotion 9, expected 0 to 6"),  # was accepted, and broke training later
    (_row(pixels=[7] * 2303 + [300]), "line 3: a pixel value outside 0..255"),
])
def test_a_damaged_csv_row_is_named_with_its_line_and_the_fix(tmp_path, bad_row, why):
    from train.data import FerDataError

    data = _csv(tmp_path / "fer2013.csv", [_row(), bad_row])
    with pytest.raises(FerDataError, match=why) as err:
        load_fer(data, "train")
    assert "download it again, or pass --data with fer2013.npz" in str(err.value)


def test_a_csv_that_is_not_fer2013_says_which_columns_it_expected(tmp_path):
    from train.data import FerDataError

    votes = _csv(tmp_path / "fer2013new.csv", ["Training,fer0000000.png,4,0,0,0,6,0,0,0,0,0"],
                 header="Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,"
                 "contempt,unknown,NF")
    with pytest.raises(FerDataError, match="expected the columns emotion, pixels, Usage.*--ferplus"):
        load_fer(votes, "train")
    with pytest.raises(FerDataError, match="no rows"):
        load_fer(_csv(tmp_path / "header-only.csv", []), "train")


def test_a_csv_saved_by_a_spreadsheet_with_a_byte_order_mark_loads(tmp_path):
    path = tmp_path / "fer2013.csv"
    path.write_text("\ufeffemotion,pixels,Usage\r\n" + _row(4) + "\r\n", encoding="utf-8")
    assert load_fer(path, "train").labels.tolist() == [4]


def test_an_npz_that_is_not_fer2013_says_what_to_pass(tmp_path):
    from train.data import FerDataError

    np.savez(tmp_path / "ferplus_votes.npz", ferplus_votes=np.zeros((3, 10), np.uint8),
             usage=np.zeros(3, np.uint8))
    with pytest.raises(FerDataError, match="no images, labels array in it.*pass --data"):
        load_fer(tmp_path / "ferplus_votes.npz", "train")
    (tmp_path / "notes.npz").write_text("not an archive")
    with pytest.raises(FerDataError, match="not a NumPy .npz archive; pass --data"):
        load_fer(tmp_path / "notes.npz", "train")
    with pytest.raises(FerDataError, match="is a folder; pass --data with the fer2013.npz"):
        load_fer(tmp_path, "train")


def _tiny_npz(path, usage):
    n = len(usage)
    np.savez(path, images=np.zeros((n, 48, 48), np.uint8), labels=np.arange(n, dtype=np.uint8) % 7,
             usage=np.array(usage, np.uint8))
    return path


def test_ferplus_votes_in_another_row_order_are_refused(tmp_path):
    """The votes are matched to the images by row number only: a file with the right
    row count in another order gave every image someone else's votes, silently."""
    from train.data import FerDataError

    data = _tiny_npz(tmp_path / "fer.npz", [0, 0, 1, 2])
    votes = np.eye(10, dtype=np.uint8)[[0, 1, 2, 3]] * 10
    np.savez(tmp_path / "aligned.npz", ferplus_votes=votes, usage=np.array([0, 0, 1, 2], np.uint8))
    assert load_fer(data, "train", ferplus_votes=tmp_path / "aligned.npz").soft.shape == (2, 7)
    np.savez(tmp_path / "shuffled.npz", ferplus_votes=votes, usage=np.array([0, 1, 0, 2], np.uint8))
    with pytest.raises(FerDataError, match="row 1 is in another split"):
        load_fer(data, "train", ferplus_votes=tmp_path / "shuffled.npz")
    with pytest.raises(FileNotFoundError, match="pass --ferplus"):
        load_fer(data, "train", ferplus_votes=tmp_path / "missing.npz")


def test_the_csv_is_parsed_once_for_several_splits_until_it_changes(tmp_path, monkeypatch):
    """fit reads two splits, export and eval three (with also_in_training): each
    parsed the whole 287 MB fer2013.csv again, tens of seconds apiece."""
    import train.data

    path = _csv(tmp_path / "fer2013.csv", [_row(1), _row(2, "PublicTest"), _row(3, "PrivateTest")])
    parsed = []
    real = train.data._load_csv
    monkeypatch.setattr(train.data, "_load_csv", lambda p: parsed.append(p) or real(p))
    assert [load_fer(path, s).labels.tolist() for s in ("train", "public", "private")] == [[1], [2], [3]]
    also_in_training(path, "private")
    assert len(parsed) == 1
    load_fer(path, "train").images[:] = 0  # callers get their own copy
    assert load_fer(path, "train").images.max() == 7
    _csv(path, [_row(4), _row(5)])  # rewritten: read again
    assert load_fer(path, "train").labels.tolist() == [4, 5] and len(parsed) == 2
