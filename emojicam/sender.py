"""The engine's sender thread: owns the sink and the optional preview window
for the daemon's whole life, and for each time the sink is open, the
on-demand reader watcher (a reopen by us must not count as an app watching).

Each turn it asks the engine for the frame to show (the newest processed
one, repeated when processing falls behind, or a placeholder), sends it, and
sleeps until the next frame is due (``sink.pace()``, a ``sources.Pacer`` that
never bursts to catch up), or ``IDLE_FPS`` when paused or nobody watches. A
sink that cannot be opened or keeps failing to write is retried with backoff;
the daemon keeps running meanwhile.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from emojicam.config import Config
from emojicam.sinks import Sink, SinkError

if TYPE_CHECKING:
    from emojicam.engine import EngineDeps

log = logging.getLogger(__name__)

IDLE_FPS = 2.0  # frames per second sent while paused or while nobody watches
SINK_MAX_FAILED_WRITES = 5
SINK_HEALTHY_WRITES = 30  # frames written in a row before a reopened sink counts as working
PREVIEW_POLL_S = 0.1  # while the sink is down: how soon a click on "Show preview" is seen


class SenderHost(Protocol):
    """What the sender needs from the engine."""

    config: Config
    shutdown: threading.Event

    def frame_to_send(self, size_wh: tuple[int, int]) -> np.ndarray: ...

    def send_slowly(self) -> bool: ...

    def report_sink(self, state: str, detail: str = "", device: str | None = None) -> None: ...

    def sink_working(self) -> None: ...

    def count_sent(self) -> None: ...

    def preview_wanted(self) -> bool: ...

    def set_preview(self, show: bool) -> None: ...

    def set_readers(self, readers: int | None) -> None: ...

    def request_stop(self) -> None: ...


def safe_close(sink: Any) -> None:
    try:
        sink.close()
    except Exception:  # noqa: BLE001 - closing must never stop the shutdown
        log.warning("closing the %s sink failed", getattr(sink, "kind", "?"), exc_info=True)


class Sender:
    def __init__(self, host: SenderHost, deps: EngineDeps) -> None:
        self.host = host
        self.deps = deps
        self._preview: Sink | None = None
        self._watcher: Any = None  # counts the apps reading the open sink (on-demand)
        self._watch_tried: Sink | None = None  # the sink a watcher was last started for
        self._size_wh = (host.config.camera.width, host.config.camera.height)  # the sink's, until a restart

    def run(self) -> None:
        host = self.host
        cam = host.config.camera
        size_wh = self._size_wh
        retry_s = cam.retry_initial_s
        sink: Sink | None = None
        failed_writes = good_writes = 0
        try:
            while not host.shutdown.is_set():
                if sink is None:
                    sink = self._open()
                    if sink is None:
                        self._wait_showing_preview(retry_s, size_wh)
                        retry_s = min(2 * retry_s, cam.retry_max_s)
                        continue
                    failed_writes = good_writes = 0
                self._follow_readers(sink)
                image = host.frame_to_send(size_wh)
                try:
                    sink.send(image)
                except Exception as exc:  # noqa: BLE001 - a failing device must not stop the daemon
                    failed_writes, good_writes = failed_writes + 1, 0
                    log.debug("writing to the %s sink failed (%s)", sink.kind, exc)
                    if failed_writes >= SINK_MAX_FAILED_WRITES:
                        host.report_sink("unavailable", f"writes failing: {exc}; reopening")
                        self._close(sink)
                        sink = None
                        # Back off as for a sink that cannot be opened: one that opens
                        # and then fails again is retried ever more slowly too.
                        self._wait_showing_preview(retry_s, size_wh)
                        retry_s = min(2 * retry_s, cam.retry_max_s)
                        continue
                else:
                    if getattr(sink, "closed_by_user", False):
                        # --sink preview: the window is the daemon's only output, and
                        # closing it is how a user ends the run (as with any app window).
                        log.info("the preview window was closed; stopping")
                        host.request_stop()
                        break
                    failed_writes, good_writes = 0, good_writes + 1
                    if good_writes == SINK_HEALTHY_WRITES:
                        retry_s = cam.retry_initial_s
                        host.sink_working()
                    host.count_sent()
                self._show_preview(sink, image)
                if host.send_slowly():
                    host.shutdown.wait(1.0 / IDLE_FPS)
                else:
                    sink.pace()
        finally:
            if self._preview is not None:
                safe_close(self._preview)
            if sink is not None:
                self._close(sink)
            host.report_sink("closed")

    def _open(self) -> Sink | None:
        host = self.host
        sink = self.deps.make_sink(self._sink_config())
        host.report_sink("opening")
        try:
            sink.open()
        except Exception as exc:  # noqa: BLE001 - SinkError or a backend's own error
            host.report_sink("unavailable", str(exc))
            return None
        # Count the readers before saying "ok": the engine turns the camera on
        # for an open on-demand sink whose readers it does not know.
        self._follow_readers(sink)
        host.report_sink("ok", "", sink.device)
        return sink

    def _sink_config(self) -> Config:
        """The config to (re)open the sink with. Like the sink settings, the virtual
        camera's size (the camera's at start) holds until a restart: v4l2loopback
        refuses another size while an app reads the device."""
        cfg = self.host.config
        w, h = self._size_wh
        if (cfg.camera.width, cfg.camera.height) == (w, h):
            return cfg
        return dataclasses.replace(cfg, camera=dataclasses.replace(cfg.camera, width=w, height=h))

    def _close(self, sink: Sink) -> None:
        self._stop_watcher()
        self._watch_tried = None
        safe_close(sink)

    def _follow_readers(self, sink: Sink) -> None:
        """Keep a reader watcher on ``sink`` while ``sink.on_demand`` asks for
        one (the setting can change while the daemon runs). A watcher belongs
        to one open sink: reopening the device ourselves would count as a reader."""
        wanted = (self.host.config.sink.on_demand and sink.kind == "virtual"
                  and self.deps.watch_readers is not None)
        if not wanted:
            self._watch_tried = None
            self._stop_watcher()
        elif self._watcher is not None and not self._watcher.running:
            # The node went away (module unloaded): stop counting; the writes fail next.
            self._stop_watcher()
        elif self._watch_tried is not sink:
            self._watch_tried = sink
            self._watcher = self._watch_readers(sink)

    def _watch_readers(self, sink: Sink) -> Any:
        device = sink.device
        if self.deps.watch_readers is None or not device or not Path(device).exists():
            return None
        watcher = self.deps.watch_readers(Path(device), self.host.set_readers)
        try:
            watcher.start()
        except Exception as exc:  # noqa: BLE001 - no inotify: stay always-on
            log.warning("cannot watch %s for readers (%s); the camera stays on", device, exc)
            return None
        log.info("on-demand: the camera turns on while an app reads %s", device)
        return watcher

    def _stop_watcher(self) -> None:
        """Stop counting readers; the engine then treats the count as unknown."""
        if self._watcher is None:
            return
        try:
            self._watcher.stop()
        except Exception:  # noqa: BLE001
            log.debug("reader watcher stop failed", exc_info=True)
        self._watcher = None
        self.host.set_readers(None)

    def _wait_showing_preview(self, seconds: float, size_wh: tuple[int, int]) -> None:
        """Wait ``seconds`` before the sink is opened again (or until shutdown);
        meanwhile a wanted preview window keeps showing frames: it is how a user
        sees EmojiCam work while the virtual camera is down (e.g. no v4l2loopback)."""
        host = self.host
        deadline = time.monotonic() + seconds
        while not host.shutdown.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if host.preview_wanted() or self._preview is not None:
                self._show_preview(None, host.frame_to_send(size_wh))
            step = 1.0 / host.config.sink.fps if self._preview is not None else PREVIEW_POLL_S
            host.shutdown.wait(min(left, step))

    def _show_preview(self, sink: Sink | None, image: np.ndarray) -> None:
        """The tray's "Show preview": a window beside the main sink (``None``:
        the main sink is down)."""
        main_kind = sink.kind if sink is not None else self.host.config.sink.kind
        wanted = self.host.preview_wanted() and main_kind != "preview"
        if not wanted:
            if self._preview is not None:
                safe_close(self._preview)
                self._preview = None
            return
        if self._preview is None:
            if self.deps.make_preview is None:
                return
            preview = self.deps.make_preview(self.host.config)
            try:
                preview.open()
            except SinkError as exc:
                log.warning("%s", exc)
                self.host.set_preview(False)
                return
            self._preview = preview
        try:
            self._preview.send(image)
            failed = getattr(self._preview, "closed_by_user", False)
        except Exception as exc:  # noqa: BLE001
            log.warning("preview failed (%s); closing it", exc)
            failed = True
        if failed:
            safe_close(self._preview)
            self._preview = None
            self.host.set_preview(False)
