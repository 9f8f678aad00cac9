"""Logging for the daemon: stderr plus a rotating file in the platform's
state folder (``~/.local/state/emojicam/log/emojicam.log`` on Linux,
``~/Library/Logs/emojicam`` on macOS,
``%LOCALAPPDATA%\\emojicam\\Logs`` on Windows). Only the CLI calls this."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MAX_BYTES = 1_000_000
BACKUPS = 3
_OURS = "_emojicam_handler"
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def log_dir() -> Path:
    from emojicam.assets import user_dirs

    if sys.platform.startswith("linux"):
        return user_dirs().user_state_path / "log"
    return user_dirs().user_log_path


def setup_logging(
    *, debug: bool = False, level: str = "info", folder: Path | None = None, stderr: bool = True
) -> Path | None:
    """(Re)configure the root logger; returns the log file, or None when the
    folder is not writable (then only stderr is used, with a warning).
    Safe to call twice: handlers it added before are replaced."""
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(h)
        h.close()
    numeric = logging.DEBUG if debug else _LEVELS.get(level, logging.INFO)
    root.setLevel(numeric)
    formatter = logging.Formatter(FORMAT)
    has_stderr = any(
        isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is sys.stderr
        for h in root.handlers
    )
    if stderr and not has_stderr:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        setattr(handler, _OURS, True)
        root.addHandler(handler)
    for h in root.handlers:
        h.setLevel(numeric)
    path = (folder or log_dir()) / "emojicam.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8"
        )
    except OSError as exc:
        logging.getLogger(__name__).warning(
            "cannot write the log file %s (%s); logging to stderr only", path, exc
        )
        return None
    file_handler.setFormatter(formatter)
    file_handler.setLevel(numeric)
    setattr(file_handler, _OURS, True)
    root.addHandler(file_handler)
    return path


def set_level(level: str) -> None:
    """Apply a reloaded ``logging.level`` (not used while ``--debug``)."""
    numeric = _LEVELS.get(level, logging.INFO)
    root = logging.getLogger()
    root.setLevel(numeric)
    for h in root.handlers:
        h.setLevel(numeric)
