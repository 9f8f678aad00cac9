"""Where bundled files live: ``models/``, ``emoji_pngs/`` and ``config.yaml``.

In a source checkout they sit at the repository root; a wheel carries them
inside the package as ``emojicam/_assets/`` (see ``pyproject.toml``), so a
plain ``pip install .`` works from any working directory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from platformdirs import PlatformDirs

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
_CANDIDATES = (_PACKAGE_DIR / "_assets", _PACKAGE_DIR.parent)


def asset_path(relative: str) -> Path:
    """Absolute path of a bundled asset; raises FileNotFoundError naming
    every place looked in."""
    for root in _CANDIDATES:
        p = root / relative
        if p.exists():
            return p
    looked = ", ".join(str(r / relative) for r in _CANDIDATES)
    raise FileNotFoundError(
        f"bundled file {relative!r} is missing (looked in {looked}); "
        "reinstall EmojiCam with 'pip install .' from a complete checkout"
    )


def models_dir() -> Path:
    return asset_path("models")


def emoji_dir() -> Path:
    return asset_path("emoji_pngs")


def user_dirs() -> PlatformDirs:
    """The user's folders for EmojiCam (config, data, state, logs, runtime).

    ``appauthor=False``: on Windows ``%LOCALAPPDATA%\\emojicam``, not platformdirs'
    default ``%LOCALAPPDATA%\\emojicam\\emojicam`` (it repeats the app name as the
    author's folder)."""
    from platformdirs import PlatformDirs

    return PlatformDirs("emojicam", appauthor=False)
