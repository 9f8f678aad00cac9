"""Reliability, item 2: bad models and emoji files, found at start.

Each fault is made for real on disk (a missing, empty, truncated, garbage or
wrong-shape model; a labels file missing, reordered, short, empty or not
text; an emoji folder missing, a file, or holding corrupt, non-RGBA,
transparent or decompression-bomb PNGs) and the config points at it. Then:

* ``build_pipeline(config)`` raises ``SetupError`` naming the file and the
  fix, or (emoji) falls back as documented with one warning naming the
  file, and the pipeline still masks faces;
* ``emojicam --config C process IMAGE -o OUT`` (a subprocess) exits non-zero
  with one ``emojicam: error:`` line and no traceback.

``test_classify.py`` and ``test_emoji.py`` test the loaders themselves; this
file tests the path a user takes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from emojicam.config import Config, load_config
from emojicam.errors import SetupError
from emojicam.pipeline import build_pipeline
from emojicam.types import Emotion, Frame
from tests.factories import make_box, make_result, make_scene

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "emotion.tflite"
LABELS = MODEL.with_suffix(".labels.txt")
WRONG_SHAPE = REPO / "tests" / "data" / "wrong_shape.tflite"
EMOJI = REPO / "emoji_pngs"
NAMES = [f"{e}.png" for e in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")]


def base_config() -> Config:
    return load_config(use_user_file=False)


def with_model(path: Path) -> Config:
    cfg = base_config()
    return dataclasses.replace(cfg, classifier=dataclasses.replace(cfg.classifier, model=str(path)))


def with_emoji(folder: Path) -> Config:
    cfg = base_config()
    return dataclasses.replace(cfg, emoji=dataclasses.replace(cfg.emoji, folder=str(folder)))


def model_pair(folder: Path, name: str, model: bytes | None, labels: bytes | None) -> Path:
    path = folder / f"{name}.tflite"
    if model is not None:
        path.write_bytes(model)
    if labels is not None:
        path.with_suffix(".labels.txt").write_bytes(labels)
    return path


GOOD_LABELS = LABELS.read_bytes()

# name -> (make the model file in a folder, the error's pattern: file, then the fix)
MODEL_FAULTS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing": (
        lambda d: d / "missing.tflite",
        r"missing\.tflite: emotion model not found; set classifier\.model",
    ),
    "a-folder": (
        lambda d: (d / "dir.tflite").mkdir() or model_pair(d, "dir", None, GOOD_LABELS),
        r"dir\.tflite: emotion model not found; set classifier\.model",
    ),
    "empty": (
        lambda d: model_pair(d, "empty", b"", GOOD_LABELS),
        r"empty\.tflite: not a valid TFLite model .*; restore the bundled models/emotion\.tflite",
    ),
    "truncated": (
        lambda d: model_pair(d, "cut", MODEL.read_bytes()[:20_000], GOOD_LABELS),
        r"cut\.tflite: not a valid TFLite model .*; restore the bundled",
    ),
    "garbage": (
        lambda d: model_pair(d, "noise", np.random.default_rng(0).bytes(50_000), GOOD_LABELS),
        r"noise\.tflite: not a valid TFLite model .*; restore the bundled",
    ),
    "a-png": (
        lambda d: model_pair(d, "png", (EMOJI / "happy.png").read_bytes(), GOOD_LABELS),
        r"png\.tflite: not a valid TFLite model",
    ),
    "wrong-shape": (
        lambda d: model_pair(d, "shape", WRONG_SHAPE.read_bytes(), GOOD_LABELS),
        r"shape\.tflite: model takes \(32, 32, 1\) .* EmojiCam needs \(48, 48, 1\)",
    ),
    "labels-missing": (
        lambda d: model_pair(d, "nolabels", MODEL.read_bytes(), None),
        r"nolabels\.labels\.txt: labels file missing .* must sit beside the model",
    ),
    "labels-reordered": (
        lambda d: model_pair(
            d, "order", MODEL.read_bytes(), b"happy\nangry\ndisgust\nfear\nsad\nsurprise\nneutral\n"
        ),
        r"order\.labels\.txt: class order .* does not match .*re-export the model",
    ),
    "labels-short": (
        lambda d: model_pair(d, "six", MODEL.read_bytes(), b"angry\ndisgust\nfear\nhappy\nsad\n"),
        r"six\.labels\.txt: class order .* does not match",
    ),
    "labels-empty": (
        lambda d: model_pair(d, "blank", MODEL.read_bytes(), b"\n\n"),
        r"blank\.labels\.txt: class order \[\] does not match",
    ),
}


@pytest.mark.parametrize("fault", list(MODEL_FAULTS))
def test_bad_model_is_a_setup_error_naming_file_and_fix(tmp_path, fault):
    make, pattern = MODEL_FAULTS[fault]
    with pytest.raises(SetupError, match=pattern):
        build_pipeline(with_model(make(tmp_path)))


def test_models_under_a_non_ascii_folder_load(tmp_path, monkeypatch):
    """On Windows the runtime opens a model by name with the ANSI C library and
    cannot open one under C:\\Users\\José (the detector models live under the
    user's folder): the models are handed to it as bytes instead. Here the
    runtime is made to refuse such names, as there."""
    from emojicam import litert

    real = litert.load_interpreter_class()

    def ansi_only(*args, model_path=None, **kwargs):
        if model_path is not None and not model_path.isascii():
            raise ValueError(f"Could not open '{model_path}'.")
        return real(*args, model_path=model_path, **kwargs)

    monkeypatch.setattr(litert, "load_interpreter_class", lambda: ansi_only)
    (tmp_path / "José").mkdir()
    path = model_pair(tmp_path / "José", "emotion", MODEL.read_bytes(), GOOD_LABELS)
    pipeline = build_pipeline(with_model(path))
    _, results = pipeline.process(Frame(make_scene((320, 240))))
    assert isinstance(results, list)


def test_a_model_that_cannot_be_read_is_a_setup_error(tmp_path, monkeypatch):
    path = model_pair(tmp_path, "locked", MODEL.read_bytes(), GOOD_LABELS)
    real_read = Path.read_bytes

    def refuse(self: Path) -> bytes:  # as chmod 0 would (the tests may run as root, who reads anyway)
        if self.name == "locked.tflite":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(SetupError, match=r"locked\.tflite: cannot read it .*permissions"):
        build_pipeline(with_model(path))


def test_labels_file_that_is_not_text_is_a_setup_error(tmp_path):
    path = model_pair(tmp_path, "bin", MODEL.read_bytes(), b"\xff\xfe\x00\x81 not text")
    with pytest.raises(SetupError, match=r"bin\.labels\.txt"):
        build_pipeline(with_model(path))


# ---------------------------------------------------------------- emoji


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width`` x ``height`` RGBA, with almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def emoji_folder(tmp_path: Path, replace: dict[str, bytes | None]) -> Path:
    """A copy of the bundled emoji with some files replaced (None: deleted)."""
    folder = tmp_path / "emoji"
    folder.mkdir()
    for name in NAMES:
        shutil.copy(EMOJI / name, folder / name)
    for name, data in replace.items():
        if data is None:
            (folder / name).unlink()
        else:
            (folder / name).write_bytes(data)
    return folder


def png_bytes(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


EMOJI_FAULTS: dict[str, tuple[dict[str, bytes | None], str]] = {
    "missing-file": ({"happy.png": None}, r"happy\.png is missing \(using the bundled one\)"),
    "empty-file": ({"sad.png": b""}, r"sad\.png cannot be decoded .*\(using the bundled one\)"),
    "truncated": (
        {"fear.png": (EMOJI / "fear.png").read_bytes()[:3000]},
        r"fear\.png cannot be decoded .*\(using the bundled one\)",
    ),
    "not-a-png": ({"angry.png": b"GIF89a but not really"}, r"angry\.png cannot be decoded"),
    "rgb-no-alpha": (
        {"neutral.png": png_bytes(np.full((64, 64, 3), 200, np.uint8))},
        r"neutral\.png has no alpha channel; it is used as an opaque square",
    ),
    "gray": (
        {"surprise.png": png_bytes(np.full((64, 64), 90, np.uint8))},
        r"surprise\.png has no alpha channel",
    ),
    "fully-transparent": (
        {"disgust.png": png_bytes(np.zeros((64, 64, 4), np.uint8))},
        r"disgust\.png is fully transparent \(using the bundled one\)",
    ),
    "too-large": (  # a real 8000 px PNG took 3.2 GB and 16 s to load before the size check
        {"fear.png": bomb_png(8000, 8000)},
        r"fear\.png is 8000x8000 pixels; emoji art is drawn from at most 512 px",
    ),
    "decompression-bomb": (
        {"happy.png": bomb_png(20_000, 20_000), "sad.png": bomb_png(12_000, 12_000)},
        r"happy\.png cannot be decoded \(DecompressionBombError",
    ),
}


@pytest.mark.filterwarnings(
    "ignore::PIL.Image.DecompressionBombWarning"
)  # the 12,000 px one: an error follows
@pytest.mark.parametrize("fault", list(EMOJI_FAULTS))
def test_bad_emoji_png_falls_back_with_one_warning_and_still_masks(tmp_path, fault, caplog):
    replace, pattern = EMOJI_FAULTS[fault]
    folder = emoji_folder(tmp_path, replace)
    with caplog.at_level(logging.WARNING):
        pipeline = build_pipeline(with_emoji(folder).with_mode("replace"))
    warnings = [
        r.getMessage() for r in caplog.records if r.name == "emojicam.emoji" and r.levelno >= logging.WARNING
    ]
    assert len(warnings) == 1, warnings
    assert str(folder) in warnings[0] and re.search(pattern, warnings[0]), warnings[0]
    # every emotion still masks a face exactly
    image = make_scene((320, 240))
    for emotion in Emotion:
        results = [make_result(make_box(100, 60, 90, 100), emotion)]
        a = pipeline.compositor.compose(image, results, "replace")
        b = pipeline.compositor.compose(255 - image, results, "replace")
        assert np.array_equal(a[60:160, 100:190], b[60:160, 100:190]), f"{emotion} does not cover the face"
    out, _ = pipeline.process(Frame(image, 0, 0.0))
    assert out.shape == image.shape and pipeline.failed_frames == 0


@pytest.mark.parametrize(
    "make",
    [lambda d: d / "nope", lambda d: (d / "file").write_text("x") and d / "file"],
    ids=["missing-folder", "a-file"],
)
def test_emoji_folder_missing_is_a_setup_error_naming_it_and_the_fix(tmp_path, make):
    folder = make(tmp_path)
    with pytest.raises(SetupError, match=rf"emoji folder {folder} .*set emoji\.folder: null"):
        build_pipeline(with_emoji(folder))


# ---------------------------------------------------------------- the same faults through the CLI


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["XDG_CONFIG_HOME"] = str(cwd / "xdg-config")  # the user's own config stays out
    return subprocess.run(
        [sys.executable, "-m", "emojicam", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def error_lines(stderr: str) -> list[str]:
    """stderr without log records (a missing optional model logs a warning first)."""
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith(("WARNING ", "INFO "))]


CLI_MODEL_FAULTS = ["missing", "truncated", "wrong-shape", "labels-reordered", "labels-missing", "empty"]


@pytest.mark.parametrize("fault", CLI_MODEL_FAULTS)
def test_cli_bad_model_is_one_clear_line(tmp_path, fault):
    make, pattern = MODEL_FAULTS[fault]
    model = make(tmp_path)
    config = tmp_path / "c.yaml"
    config.write_text(f"classifier:\n  model: {model}\n")
    image = tmp_path / "in.png"
    cv2.imwrite(str(image), make_scene((160, 120)))
    out = run_cli(["--config", str(config), "process", str(image), "-o", str(tmp_path / "out.png")], tmp_path)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    lines = error_lines(out.stderr)
    assert len(lines) == 1 and lines[0].startswith("emojicam: error: "), out.stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert not (tmp_path / "out.png").exists()


def test_cli_missing_emoji_folder_is_one_clear_line(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"emoji:\n  folder: {tmp_path / 'no-such-folder'}\n")
    image = tmp_path / "in.png"
    cv2.imwrite(str(image), make_scene((160, 120)))
    out = run_cli(["--config", str(config), "process", str(image), "-o", str(tmp_path / "out.png")], tmp_path)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    lines = error_lines(out.stderr)
    assert len(lines) == 1 and "no-such-folder does not exist" in lines[0] and "emoji.folder" in lines[0]


def test_cli_corrupt_emoji_falls_back_and_processes(tmp_path):
    folder = emoji_folder(tmp_path, {"happy.png": b"", "neutral.png": bomb_png(20_000, 20_000)})
    config = tmp_path / "c.yaml"
    config.write_text(f"emoji:\n  folder: {folder}\n")
    image = tmp_path / "in.png"
    cv2.imwrite(str(image), make_scene((160, 120)))
    out = run_cli(["--config", str(config), "process", str(image), "-o", str(tmp_path / "out.png")], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    warned = [ln for ln in out.stderr.splitlines() if "emoji folder" in ln]
    assert len(warned) == 1 and "happy.png" in warned[0] and "neutral.png" in warned[0]
    assert cv2.imread(str(tmp_path / "out.png")) is not None
