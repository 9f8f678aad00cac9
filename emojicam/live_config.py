"""The running daemon's config: the last good file config, the user's
runtime choices on top, and the file watcher that triggers hot reloads.

Runtime choices (mode, mirror: from the tray or ``emojicam ctl``) are never
written to the user's file; each one holds until the file changes that same
setting, so editing an unrelated setting does not undo a tray click.

The watcher polls the files' (mtime, size, inode, CRC-32 of the bytes) five
times a second. Reading one or two small files is nearly free, behaves the
same on every OS, network home folder and editor (atomic-rename saves
included), and needs no extra dependency or thread pool, so watchdog/inotify
would buy nothing here. The checksum catches a same-size save within the
filesystem's timestamp resolution (2 s on FAT, 1 s on HFS+), which the stat
fields alone miss. A change is applied once the files hold still for half a poll (an
editor may write in several steps): about 0.3 s after a save.
"""

from __future__ import annotations

import dataclasses
import logging
import stat
import threading
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from emojicam.config import Config, ConfigError

log = logging.getLogger(__name__)

OVERRIDABLE = ("mode", "mirror")
CHECKSUM_BYTES = 1 << 20


def file_signature(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block the open (the loader skips it too)
            return st.st_mtime_ns, st.st_size, st.st_ino, 0
        with path.open("rb") as f:  # a config is a few kB; the size field covers anything past 1 MiB
            checksum = zlib.crc32(f.read(CHECKSUM_BYTES))
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino, checksum


class LiveConfig:
    def __init__(
        self,
        config: Config,
        load: Callable[[], Config] | None = None,
        watch_paths: Sequence[Path] = (),
        poll_s: float = 0.2,
    ) -> None:
        self.file_config = config  # last good config from the files
        self.overrides: dict[str, Any] = {}
        self._load = load
        self.watch_paths = [Path(p) for p in watch_paths]
        self.poll_s = poll_s
        # Taken now, just after ``config`` was read, not when watch() starts: the daemon loads
        # its models in between (seconds), and a save made then must still be applied.
        self._baseline = self._signatures()

    @property
    def can_reload(self) -> bool:
        return self._load is not None

    def load(self) -> Config:
        """Read the files again; raises ``ConfigError`` (or anything the
        loader raises) for a bad edit."""
        if self._load is None:
            raise ConfigError("no config file to reload")
        return self._load()

    def effective(self, file_config: Config | None = None, overrides: dict[str, Any] | None = None) -> Config:
        cfg = self.file_config if file_config is None else file_config
        chosen = self.overrides if overrides is None else overrides
        if "mode" in chosen:
            cfg = cfg.with_mode(chosen["mode"])
        if "mirror" in chosen:
            cfg = dataclasses.replace(cfg, camera=dataclasses.replace(cfg.camera, mirror=chosen["mirror"]))
        return cfg

    def propose_override(self, key: str, value: Any) -> tuple[Config, Callable[[], None]]:
        """(the config with this choice, a commit function)."""
        if key not in OVERRIDABLE:
            raise ValueError(f"{key} cannot be changed at runtime")
        overrides = {**self.overrides, key: value}

        def commit() -> None:
            self.overrides = overrides

        return self.effective(overrides=overrides), commit

    def propose_file(self, new_file: Config) -> tuple[Config, Callable[[], None]]:
        """(the config to run after this file edit, a commit function)."""
        old = self.file_config
        overrides = dict(self.overrides)
        if new_file.mode != old.mode:
            overrides.pop("mode", None)
        if new_file.camera.mirror != old.camera.mirror:
            overrides.pop("mirror", None)

        def commit() -> None:
            self.file_config, self.overrides = new_file, overrides

        return self.effective(new_file, overrides), commit

    def watch(self, stop: threading.Event, on_change: Callable[[], None]) -> None:
        """Call ``on_change()`` after each settled change of the watched
        files since this object was made, until ``stop`` is set (run it in
        its own thread)."""
        seen = self._baseline
        while not stop.wait(self.poll_s):
            now = self._signatures()
            if now == seen:
                continue
            while not stop.wait(self.poll_s / 2):  # let the writer finish
                again = self._signatures()
                if again == now:
                    break
                now = again
            if stop.is_set():  # stopped while the writer was still busy: no reload while shutting down
                return
            seen = now
            log.info("config file changed; reloading")
            on_change()

    def _signatures(self) -> dict[Path, tuple[int, int, int, int] | None]:
        return {p: file_signature(p) for p in self.watch_paths}
