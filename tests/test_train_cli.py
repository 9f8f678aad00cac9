"""``python -m train``: a wrong path, a damaged data file or a missing extra ends in one
line that says what to do, not in a traceback. Most of these need no TensorFlow."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from train.__main__ import main


def _tiny_fer(path, n_train: int = 20):
    rng = np.random.default_rng(0)
    n = n_train + 10
    np.savez(path, images=rng.integers(0, 256, (n, 48, 48), dtype=np.uint8),
             labels=rng.integers(0, 7, n).astype(np.uint8),
             usage=np.array([0] * n_train + [1] * 5 + [2] * 5, np.uint8))
    return path


def _fail(argv, capsys) -> str:
    """The one line ``python -m train`` ends with (SystemExit, not an exception)."""
    with pytest.raises(SystemExit) as err:
        main(argv)
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in capsys.readouterr().err
    return message


def test_a_missing_data_file_is_one_line_naming_the_option(tmp_path, capsys):
    message = _fail(["eval", "--data", str(tmp_path / "fer2013.npz"), "--model",
                     str(tmp_path / "x.tflite")], capsys)
    assert "x.tflite: no such model; pass --model" in message
    from emojicam.classify import default_model_path

    message = _fail(["eval", "--data", str(tmp_path / "fer2013.npz"), "--model",
                     str(default_model_path())], capsys)
    assert message.startswith("python -m train eval: ") and "pass --data with fer2013.npz" in message


def test_a_damaged_csv_is_one_line_naming_its_line(tmp_path, capsys):
    from emojicam.classify import default_model_path

    (tmp_path / "fer2013.csv").write_text("emotion,pixels,Usage\n0,1 2 3,Training\n")
    message = _fail(["eval", "--data", str(tmp_path / "fer2013.csv"), "--model",
                     str(default_model_path())], capsys)
    assert "fer2013.csv, line 2: 3 pixel values, expected 2304" in message


def test_without_the_training_extra_the_fix_is_named(tmp_path, capsys, monkeypatch):
    data = _tiny_fer(tmp_path / "fer.npz")
    monkeypatch.setitem(sys.modules, "keras", None)  # as if TensorFlow (and its Keras) were absent
    message = _fail(["fit", "--data", str(data), "--run", str(tmp_path / "run")], capsys)
    assert "keras is not installed" in message and "pip install '.[train]'" in message

    run = tmp_path / "done"
    run.mkdir()
    (run / "log.csv").write_text("epoch,accuracy,loss,val_accuracy,val_loss\n0,0.2,1.9,0.2,1.9\n")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    message = _fail(["curves", "--run", str(run), "-o", str(tmp_path / "c.png")], capsys)
    assert "matplotlib is not installed" in message


def test_curves_of_a_misspelt_run_say_what_was_expected(tmp_path, capsys):
    message = _fail(["curves", "--run", str(tmp_path / "deep-r1O"), "-o", str(tmp_path / "c.png")], capsys)
    assert "log.csv not found: is 'deep-r1O' the name of a run" in message


def test_export_out_is_a_folder_and_a_file_name_is_refused_before_converting(tmp_path):
    from train.export import export

    with pytest.raises(SystemExit, match=r"--out is the folder .*pass --out .*models$"):
        export(tmp_path / "no-run", tmp_path / "fer.npz", tmp_path / "models" / "emotion.tflite")


def test_export_of_a_run_without_weights_says_so(tmp_path):
    pytest.importorskip("keras", reason="export builds the Keras model; install the 'train' extra")
    from train.export import export

    run = tmp_path / "deep-new"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"recipe": {"arch": "small"}, "data": "fer.npz"}))
    with pytest.raises(SystemExit, match="best.weights.h5 not found: run 'deep-new' has not finished an"):
        export(run, _tiny_fer(tmp_path / "fer.npz"), tmp_path / "models")


def test_export_needs_at_least_one_representative_image(capsys):
    """0 got through to the int8 converter, which failed after minutes of work."""
    with pytest.raises(SystemExit):
        main(["export", "--run", "x", "--data", "fer.npz", "--representative-images", "0"])
    assert "at least 1 image" in capsys.readouterr().err
