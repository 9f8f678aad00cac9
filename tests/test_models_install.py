"""``emojicam models install``: the wheel -> verified model files path, without the network.

The downloader (``pip download``) is replaced by a function that writes a fake
wheel; ``pip_download`` itself is tested with a fake ``_run_pip``. Everything
else (zip reading, hashing, atomic writes, messages) runs for real.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from emojicam import commands_bench, models_install
from emojicam.errors import SetupError
from emojicam.models_install import ModelFile
from tests.factories import make_fake_wheel

MODEL_BYTES = b"TFL3 fake short-range model " * 10
OTHER_BYTES = b"TFL3 fake full-range model " * 12


def spec(
    data: bytes, name: str = "short.tflite", member: str = "mediapipe/modules/x/short.tflite"
) -> ModelFile:
    return ModelFile(name, member, hashlib.sha256(data).hexdigest(), len(data))


SHORT = spec(MODEL_BYTES)
FULL = spec(OTHER_BYTES, "full.tflite", "mediapipe/modules/x/full.tflite")


class FakeDownloader:
    """Writes a fake wheel into the folder it is given, like ``pip download``."""

    def __init__(self, members: dict[str, bytes]) -> None:
        self.members = members
        self.calls: list[Path] = []

    def __call__(self, dest_dir: Path) -> Path:
        self.calls.append(dest_dir)
        return make_fake_wheel(
            dest_dir / "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl", self.members
        )


def must_not_download(dest_dir: Path) -> Path:
    raise AssertionError("the downloader must not run when the files are already installed")


def test_install_extracts_verifies_and_writes(tmp_path: Path) -> None:
    downloader = FakeDownloader(
        {SHORT.wheel_member: MODEL_BYTES, FULL.wheel_member: OTHER_BYTES, "mediapipe/__init__.py": b""}
    )
    paths = models_install.install_models(tmp_path / "models", downloader=downloader, models=[SHORT, FULL])
    assert paths == [tmp_path / "models" / "short.tflite", tmp_path / "models" / "full.tflite"]
    assert paths[0].read_bytes() == MODEL_BYTES
    assert paths[1].read_bytes() == OTHER_BYTES
    assert len(downloader.calls) == 1
    assert not downloader.calls[0].exists(), "the temporary download folder must be removed"
    assert not list((tmp_path / "models").glob("*.part")), "no partial files left behind"


def test_second_install_keeps_valid_files_without_downloading(tmp_path: Path) -> None:
    models_install.install_models(
        tmp_path, downloader=FakeDownloader({SHORT.wheel_member: MODEL_BYTES}), models=[SHORT]
    )
    assert models_install.install_models(tmp_path, downloader=must_not_download, models=[SHORT]) == [
        tmp_path / "short.tflite"
    ]


def test_force_and_corrupt_files_download_again(tmp_path: Path) -> None:
    (tmp_path / "short.tflite").write_bytes(b"damaged")
    assert models_install.file_state(SHORT, tmp_path) == "corrupt"
    downloader = FakeDownloader({SHORT.wheel_member: MODEL_BYTES})
    models_install.install_models(tmp_path, downloader=downloader, models=[SHORT])
    assert (tmp_path / "short.tflite").read_bytes() == MODEL_BYTES
    models_install.install_models(tmp_path, downloader=downloader, models=[SHORT], force=True)
    assert len(downloader.calls) == 2


def test_wrong_hash_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    tampered = b"x" * len(OTHER_BYTES)  # the right size, other bytes
    downloader = FakeDownloader({SHORT.wheel_member: MODEL_BYTES, FULL.wheel_member: tampered})
    with pytest.raises(SetupError, match=r"full\.tflite in mediapipe-.*\.whl has sha256 .* expected"):
        models_install.install_models(tmp_path / "m", downloader=downloader, models=[SHORT, FULL])
    # all or nothing: the good file was not installed either
    assert not (tmp_path / "m" / "short.tflite").exists()


def test_missing_member_names_the_file_and_the_wheel_version(tmp_path: Path) -> None:
    downloader = FakeDownloader({"mediapipe/__init__.py": b""})
    with pytest.raises(
        SetupError, match=r"does not contain mediapipe/modules/x/short\.tflite.*mediapipe==0\.10\.21"
    ):
        models_install.install_models(tmp_path, downloader=downloader, models=[SHORT])


def test_a_file_that_is_not_a_zip_is_reported(tmp_path: Path) -> None:
    bogus = tmp_path / "mediapipe-0.10.21-py3-none-any.whl"
    bogus.write_bytes(b"<html>proxy login page</html>")
    with pytest.raises(SetupError, match="cannot read the wheel as a zip"):
        models_install.install_models(tmp_path / "m", wheel=bogus, models=[SHORT])


def test_an_entry_of_the_wrong_size_is_refused_before_it_is_read(tmp_path: Path) -> None:
    downloader = FakeDownloader({SHORT.wheel_member: MODEL_BYTES + b"more"})
    with pytest.raises(SetupError, match=rf"is {len(MODEL_BYTES) + 4} bytes, expected {len(MODEL_BYTES)}"):
        models_install.install_models(tmp_path / "m", downloader=downloader, models=[SHORT])
    assert not (tmp_path / "m" / "short.tflite").exists()


def test_a_damaged_wheel_is_a_setup_error_not_a_traceback(tmp_path: Path) -> None:
    """A bad block in a browser download fails in the decompressor (zlib.error)."""
    import os
    import zipfile

    data = os.urandom(1000) + bytes(range(256)) * 900  # compressible: deflated
    model = spec(data)
    wheel = tmp_path / "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(model.wheel_member, data)
    raw = bytearray(wheel.read_bytes())
    start = 30 + len(model.wheel_member) + 200  # inside the compressed stream
    raw[start : start + 64] = bytes(b ^ 0xFF for b in raw[start : start + 64])
    wheel.write_bytes(bytes(raw))
    with pytest.raises(SetupError, match="cannot read the wheel as a zip file .*download it again"):
        models_install.install_models(tmp_path / "m", wheel=wheel, models=[model])
    assert not (tmp_path / "m" / "short.tflite").exists()


def test_local_wheel_is_used_instead_of_downloading(tmp_path: Path) -> None:
    wheel = make_fake_wheel(tmp_path / "dl" / "mediapipe-0.10.21-x.whl", {SHORT.wheel_member: MODEL_BYTES})
    models_install.install_models(tmp_path / "m", wheel=wheel, downloader=must_not_download, models=[SHORT])
    assert (tmp_path / "m" / "short.tflite").read_bytes() == MODEL_BYTES
    with pytest.raises(SetupError, match="wheel file not found"):
        models_install.install_models(tmp_path / "n", wheel=tmp_path / "nope.whl", models=[SHORT])


def fake_pip(
    results: list[subprocess.CompletedProcess[str]],
    commands: list[list[str]],
    wheel_members: dict[str, bytes] | None = None,
):
    def run(cmd):
        commands.append(list(cmd))
        result = results[len(commands) - 1]
        if result.returncode == 0 and wheel_members is not None:
            dest = Path(cmd[cmd.index("--dest") + 1])
            make_fake_wheel(dest / "mediapipe-0.10.21-cp312-cp312-manylinux_2_28_x86_64.whl", wheel_members)
        return result

    return run


def test_pip_download_falls_back_to_a_fixed_platform_when_no_wheel_matches(tmp_path, monkeypatch) -> None:
    commands: list[list[str]] = []
    no_match = subprocess.CompletedProcess(
        [], 1, "", "ERROR: No matching distribution found for mediapipe==0.10.21"
    )
    monkeypatch.setattr(
        models_install,
        "_run_pip",
        fake_pip(
            [no_match, subprocess.CompletedProcess([], 0, "Saved", "")],
            commands,
            {SHORT.wheel_member: MODEL_BYTES},
        ),
    )
    wheel = models_install.pip_download(tmp_path)
    assert wheel.parent == tmp_path and wheel.suffix == ".whl"
    assert "--no-deps" in commands[0] and "mediapipe==0.10.21" in commands[0]
    assert "--platform" not in commands[0]
    assert commands[1][-4:] == list(models_install.FALLBACK_PLATFORM_ARGS)


def test_pip_failure_says_what_failed_and_how_to_work_around_it(tmp_path, monkeypatch) -> None:
    commands: list[list[str]] = []
    offline = subprocess.CompletedProcess(
        [], 1, "", "WARNING: Retrying...\nERROR: Could not connect to pypi.org"
    )
    monkeypatch.setattr(models_install, "_run_pip", fake_pip([offline], commands))
    with pytest.raises(SetupError) as info:
        models_install.install_models(tmp_path, models=[SHORT])  # the real pip_download, faked pip
    message = str(info.value)
    assert "pip download mediapipe==0.10.21' failed (exit 1)" in message
    assert "Could not connect to pypi.org" in message
    assert "emojicam models install --wheel PATH" in message
    assert len(commands) == 1, "no platform fallback for network errors"


def test_an_unreachable_index_is_not_taken_for_a_missing_wheel(tmp_path, monkeypatch) -> None:
    """pip says "No matching distribution" when it never reached the index too: the
    platform fallback then ran a second full download against the dead index."""
    commands: list[list[str]] = []
    offline = subprocess.CompletedProcess([], 1, "", (
        "WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) after "
        "connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPConnection object>: "
        "Failed to establish a new connection: [Errno 111] Connection refused')': /simple/mediapipe/\n"
        "ERROR: Could not find a version that satisfies the requirement mediapipe==0.10.21 "
        "(from versions: none)\n"
        "ERROR: No matching distribution found for mediapipe==0.10.21"))
    monkeypatch.setattr(models_install, "_run_pip", fake_pip([offline], commands))
    with pytest.raises(SetupError, match="Check your network or proxy"):
        models_install.pip_download(tmp_path)
    assert len(commands) == 1


def test_a_python_without_pip_is_not_blamed_on_the_network(tmp_path, monkeypatch) -> None:
    commands: list[list[str]] = []
    no_pip = subprocess.CompletedProcess([], 1, "", "/venv/bin/python: No module named pip")
    monkeypatch.setattr(models_install, "_run_pip", fake_pip([no_pip], commands))
    with pytest.raises(SetupError) as info:
        models_install.pip_download(tmp_path)
    message = str(info.value)
    assert "has no pip" in message and "ensurepip" in message
    assert "--wheel PATH" in message
    assert "network" not in message
    assert len(commands) == 1


def test_pip_success_without_a_wheel_is_an_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(
        models_install, "_run_pip", fake_pip([subprocess.CompletedProcess([], 0, "", "")], [])
    )
    with pytest.raises(SetupError, match="left no mediapipe wheel"):
        models_install.pip_download(tmp_path)


def test_find_model_only_returns_verified_files(tmp_path: Path) -> None:
    assert models_install.find_model(SHORT, tmp_path) is None
    (tmp_path / "short.tflite").write_bytes(MODEL_BYTES)
    assert models_install.find_model(SHORT, tmp_path) == tmp_path / "short.tflite"
    (tmp_path / "short.tflite").write_bytes(MODEL_BYTES + b"x")
    assert models_install.find_model(SHORT, tmp_path) is None


def test_installed_files_are_readable_by_everyone(tmp_path: Path) -> None:
    """mkstemp makes private files; after 'sudo emojicam models install' (HOME kept)
    the user's daemon must still read them."""
    downloader = FakeDownloader({SHORT.wheel_member: MODEL_BYTES})
    (path,) = models_install.install_models(tmp_path, downloader=downloader, models=[SHORT])
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_folder_that_cannot_be_written_is_a_setup_error(tmp_path: Path) -> None:
    (tmp_path / "models").write_text("a file where the folder should be")
    downloader = FakeDownloader({SHORT.wheel_member: MODEL_BYTES})
    with pytest.raises(SetupError, match="cannot write to .*models.*owner and permissions"):
        models_install.install_models(tmp_path / "models", downloader=downloader, models=[SHORT])


def test_an_unreadable_model_is_reported_not_raised(tmp_path: Path, monkeypatch, caplog) -> None:
    (tmp_path / "short.tflite").write_bytes(MODEL_BYTES)

    def denied(path: Path) -> str:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(models_install, "sha256_of", denied)  # root reads anything: simulate
    assert models_install.file_state(SHORT, tmp_path) == "unreadable"
    with caplog.at_level("WARNING"):
        assert models_install.find_model(SHORT, tmp_path) is None
    assert "cannot be read; check its owner and permissions" in caplog.text


def test_pinned_files_are_the_mediapipe_face_detectors() -> None:
    for model in models_install.MODEL_FILES:
        assert model.wheel_member.startswith("mediapipe/modules/face_detection/")
        assert model.wheel_member.endswith(model.filename)
        assert re.fullmatch(r"[0-9a-f]{64}", model.sha256)


def test_models_status_command_reports_missing_files(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(models_install, "user_models_dir", lambda: tmp_path)
    assert commands_bench.cmd_models_status(argparse.Namespace()) == 1
    out = capsys.readouterr().out
    assert f"missing  {tmp_path / models_install.SHORT_RANGE.filename}" in out
    assert "emojicam models install" in out


def test_models_status_command_hashes_each_file_once(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(models_install, "user_models_dir", lambda: tmp_path)
    monkeypatch.setattr(models_install, "MODEL_FILES", (SHORT, FULL))
    monkeypatch.setattr(models_install, "SHORT_RANGE", SHORT)
    (tmp_path / SHORT.filename).write_bytes(MODEL_BYTES)
    (tmp_path / FULL.filename).write_bytes(OTHER_BYTES)
    hashed: list[Path] = []
    real = models_install.sha256_of
    monkeypatch.setattr(models_install, "sha256_of", lambda path: hashed.append(path) or real(path))
    assert commands_bench.cmd_models_status(argparse.Namespace()) == 0
    assert sorted(hashed) == sorted([tmp_path / SHORT.filename, tmp_path / FULL.filename])
    assert f"ok       {tmp_path / FULL.filename}" in capsys.readouterr().out


def test_models_install_command_uses_the_given_wheel(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(models_install, "user_models_dir", lambda: tmp_path / "m")
    monkeypatch.setattr(models_install, "MODEL_FILES", (SHORT,))
    wheel = make_fake_wheel(tmp_path / "mediapipe-0.10.21-x.whl", {SHORT.wheel_member: MODEL_BYTES})
    args = argparse.Namespace(wheel=wheel, force=False)
    assert commands_bench.cmd_models_install(args) == 0
    assert f"ok  {tmp_path / 'm' / 'short.tflite'}" in capsys.readouterr().out


def test_models_install_command_says_nothing_of_downloading_when_all_is_installed(
    tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(models_install, "user_models_dir", lambda: tmp_path / "m")
    monkeypatch.setattr(models_install, "MODEL_FILES", (SHORT,))
    wheel = make_fake_wheel(tmp_path / "mediapipe-0.10.21-x.whl", {SHORT.wheel_member: MODEL_BYTES})
    commands_bench.cmd_models_install(argparse.Namespace(wheel=wheel, force=False))
    capsys.readouterr()
    assert commands_bench.cmd_models_install(argparse.Namespace(wheel=None, force=False)) == 0
    out = capsys.readouterr().out
    assert "Downloading" not in out and f"ok  {tmp_path / 'm' / 'short.tflite'}" in out


def test_a_folder_that_cannot_be_written_is_found_before_downloading(tmp_path: Path) -> None:
    """A read-only or wrongly owned data folder was found only after the 36 MB download."""
    (tmp_path / "models").write_text("a file where the folder should be")
    with pytest.raises(SetupError, match="cannot write to .*models.*owner and permissions"):
        models_install.install_models(tmp_path / "models", downloader=must_not_download, models=[SHORT])
    assert (tmp_path / "models").read_text() == "a file where the folder should be"
