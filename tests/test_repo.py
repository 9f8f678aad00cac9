"""Promises the repository makes about itself."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]


def readme_command(title: str) -> str:
    text = (REPO / "README.md").read_text()
    block = re.search(re.escape(title) + r".*?```sh\n(.*?)\n```", text, re.S)
    assert block, f"README has no command under {title!r}"
    return block.group(1).strip()


def test_ci_runs_the_readme_test_command_verbatim():
    command = readme_command("**Set up and run the tests:**")
    ci = (REPO / ".ci" / "run").read_text()
    assert command in ci.splitlines()


def test_runtime_dependencies_follow_the_design_card():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!\s\[]", d)[0].lower() for d in deps}
    card = {"numpy", "opencv-python", "pillow", "pyyaml", "ai-edge-litert", "pyvirtualcam", "pystray"}
    assert card <= names
    assert not names & {"tensorflow", "tensorflow-cpu", "torch", "mediapipe"}
    assert any(d.replace(" ", "").startswith("opencv-python") and "<5" in d for d in deps)


def test_runtime_never_imports_train():
    for path in (REPO / "emojicam").rglob("*.py"):
        source = path.read_text()
        assert not re.search(r"^\s*(from|import)\s+train\b", source, re.M), path


def test_bundled_assets_are_ours_and_present():
    assert (REPO / "models" / "emotion.tflite").stat().st_size <= 3 * 1024 * 1024
    labels = (REPO / "models" / "emotion.labels.txt").read_text().split()
    assert labels == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    for name in [*labels, "paused"]:  # an emoji per class, and the tray's paused icon
        assert (REPO / "emoji_pngs" / f"{name}.png").is_file(), name
    assert (REPO / "emoji_pngs" / "LICENSE.md").is_file()
    assert (REPO / "models" / "README.md").is_file()
