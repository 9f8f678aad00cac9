"""The live engine: capture thread -> processing loop -> paced sender.

Threads and what each owns:
- capture (``sources.CaptureThread``): the camera; writes the newest frame
  into a one-item slot (older frames are dropped, so latency never builds up).
- processing: the pipeline and the config. Every command (mode, pause,
  reload, ...) is queued here, so nothing else ever touches the pipeline.
  It also starts and stops the capture thread (pause, on-demand idle,
  camera settings changed).
- sender (``sender.Sender``): the sink. Sends at the sink's frame rate
  whatever is newest, repeating the last frame when processing falls
  behind, or a placeholder when the camera is unavailable, paused or nobody
  watches.
- config watcher (``live_config.LiveConfig.watch``): hot reload.
- reader watcher (Linux, on-demand): ``v4l2.ReaderWatcher``.

``request_stop()`` sets the shutdown event; ``close()`` joins everything
and releases camera and device, within the given budget.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from emojicam.config import MODES, Config
from emojicam.detect import privacy_warning
from emojicam.live_config import LiveConfig
from emojicam.pipeline import Pipeline, unvouched_frame
from emojicam.sender import Sender
from emojicam.sinks import Sink
from emojicam.sources import (
    CameraState,
    CaptureThread,
    Clock,
    LatestSlot,
    OpenCVSource,
    Source,
    cached_placeholder,
)
from emojicam.status import EngineState, EngineStatus
from emojicam.types import FaceResult, Frame

log = logging.getLogger(__name__)

IDLE_GRACE_S = 1.5  # readers must be gone this long before the camera is released
STALL_S = 2.0  # no new frame for this long while the camera is "ok": show a placeholder


@dataclass
class EngineDeps:
    """Everything the engine builds, replaceable in tests."""

    make_pipeline: Callable[[Config], Pipeline]
    reconfigure: Callable[[Pipeline, Config, Config], Pipeline]
    make_sink: Callable[[Config], Sink]
    make_source: Callable[[Config], Source] = field(
        default=lambda cfg: OpenCVSource(cfg.camera.source, cfg.camera)
    )
    make_preview: Callable[[Config], Sink] | None = None
    watch_readers: Callable[[Path, Callable[[int], None]], Any] | None = None
    clock: Clock = time.monotonic


def default_deps(**overrides: Any) -> EngineDeps:
    from emojicam import sinks
    from emojicam.pipeline import build_pipeline, reconfigure

    def make_sink(cfg: Config) -> Sink:
        return sinks.create_sink(cfg.sink, (cfg.camera.width, cfg.camera.height))

    def watch_readers(device: Path, on_change: Callable[[int], None]) -> Any:
        from emojicam.v4l2 import ReaderWatcher

        return ReaderWatcher(device, on_change)

    base: dict[str, Any] = dict(
        make_pipeline=build_pipeline,
        reconfigure=reconfigure,
        make_sink=make_sink,
        make_preview=lambda cfg: sinks.PreviewSink(cfg.sink.fps),
        watch_readers=watch_readers if os.name == "posix" else None,
    )
    base.update(overrides)
    return EngineDeps(**base)


class Engine:
    """Construct, ``start()``, send commands, ``request_stop()``, ``close()``."""

    def __init__(
        self,
        config: Config,
        deps: EngineDeps,
        *,
        load_config: Callable[[], Config] | None = None,
        watch_paths: Sequence[Path] = (),
        reload_poll_s: float = 0.2,
    ) -> None:
        self._live = LiveConfig(config, load_config, watch_paths, reload_poll_s)
        self.config = config  # effective config (file + runtime choices), owned by the processing thread
        self._deps = deps
        self._clock = deps.clock

        self.shutdown = threading.Event()
        self._wake = threading.Event()
        self._commands: queue.Queue[tuple[Callable[[], Any], Future[Any]]] = queue.Queue()
        # Held while a command is queued and while the stopping loop fails what is left,
        # so that no command lands after that and waits forever for an answer.
        self._submit_lock = threading.Lock()
        self._reload_lock = threading.Lock()  # one reload reads and queues at a time
        self._frames: LatestSlot[Frame] = LatestSlot()
        self._output: LatestSlot[np.ndarray] = LatestSlot()
        self._lock = threading.Lock()
        self._listeners: list[Callable[[str, str], None]] = []
        self._threads: list[threading.Thread] = []
        self._pipeline: Pipeline | None = None
        self._capture: CaptureThread | None = None
        # Bumped whenever a capture thread is replaced: a thread given up on
        # (stuck in a driver call) may report back later, and must be ignored.
        self._capture_gen = 0

        # status, written under _lock
        self._state = EngineState.STARTING
        self._paused = False
        self._preview = False
        self._camera = CameraState.RELEASED
        self._camera_detail = ""
        self._sink_state = "closed"
        self._sink_detail = ""
        self._sink_error_reported: str | None = None
        self._device: str | None = None
        self._readers: int | None = None
        self._last_reader_s = float("-inf")
        self._faces = 0
        self._dominant: str | None = None
        self._config_error: str | None = None
        self._detector_warning: str | None = None
        self._frame_times: deque[float] = deque(maxlen=60)
        self._frames_processed = 0
        self._frames_sent = 0
        self._last_output_s = float("-inf")
        self._warned: set[str] = set()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Build the pipeline (raises ``SetupError`` on missing models or
        emoji), then start the threads."""
        self._pipeline = self._deps.make_pipeline(self.config)
        self._note_detector()
        self._threads = [
            threading.Thread(target=self._process_loop, name="emojicam-process", daemon=True),
            threading.Thread(target=Sender(self, self._deps).run, name="emojicam-send", daemon=True),
        ]
        if self._live.can_reload and self._live.watch_paths:
            self._threads.append(
                threading.Thread(
                    target=self._live.watch,
                    args=(self.shutdown, self._reload_from_watch),
                    name="emojicam-config",
                    daemon=True,
                )
            )
        for t in self._threads:
            t.start()

    def request_stop(self) -> None:
        """Ask every thread to stop. Takes no lock: the signal handler calls it,
        and the main thread it interrupts may be holding ``_lock`` (``status()``)."""
        if not self.shutdown.is_set():
            log.info("shutting down")
        self.shutdown.set()
        self._wake.set()

    def close(self, timeout_s: float = 2.0) -> float:
        """Stop (if not already), join all threads, release camera and sink.
        Returns the seconds it took."""
        t0 = time.monotonic()
        self.request_stop()
        deadline = t0 + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                log.warning("thread %s did not stop in time", t.name)
        with self._lock:
            self._state = EngineState.STOPPED
        return time.monotonic() - t0

    def add_listener(self, callback: Callable[[str, str], None]) -> None:
        """``callback(kind, message)`` for events a user should see
        (``config-error``, ``config-reloaded``, ``camera``, ``sink``)."""
        self._listeners.append(callback)

    def _emit(self, kind: str, message: str) -> None:
        for cb in list(self._listeners):
            try:
                cb(kind, message)
            except Exception:  # noqa: BLE001 - a broken listener must not stop the engine
                log.exception("event listener failed")

    # ------------------------------------------------------------ commands

    def _submit(self, fn: Callable[[], Any]) -> Future[Any]:
        fut: Future[Any] = Future()
        with self._submit_lock:
            accepted = not self.shutdown.is_set()
            if accepted:
                self._commands.put((fn, fut))
        if not accepted:
            fut.set_exception(RuntimeError("EmojiCam is shutting down"))
        self._wake.set()
        return fut

    def set_mode(self, mode: str) -> Future[Any]:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        return self._submit(lambda: self._set_override("mode", mode))

    def set_mirror(self, mirror: bool) -> Future[Any]:
        return self._submit(lambda: self._set_override("mirror", bool(mirror)))

    def pause(self) -> Future[Any]:
        return self._submit(lambda: self._set_paused(True))

    def resume(self) -> Future[Any]:
        return self._submit(lambda: self._set_paused(False))

    def set_preview(self, show: bool) -> None:
        with self._lock:
            self._preview = bool(show)
        self._wake.set()  # an idle on-demand engine turns the camera on for the preview

    def reload(self) -> Future[Any]:
        """Reload the config files now; the future raises ``ConfigError`` (or
        ``SetupError``) for a bad edit, which leaves the old config running."""
        # One reload reads and queues at a time: the processing thread applies in
        # queue order, so the file read last is applied last (a 'ctl reload' racing
        # the watcher once applied its older read after the newer one).
        with self._reload_lock:
            try:
                new = self._live.load()
            except Exception as exc:  # noqa: BLE001 - report anything as a bad edit
                self._report_bad_config(exc)
                fut: Future[Any] = Future()
                fut.set_exception(exc)
                return fut
            return self._submit(lambda: self._apply_file_config(new))

    def _reload_from_watch(self) -> None:
        with contextlib.suppress(Exception):  # a bad edit is already reported
            self.reload().result(timeout=5.0)

    def set_readers(self, readers: int | None) -> None:
        """Called by the reader watcher (any thread); None: not counted."""
        with self._lock:
            if (readers or 0) > 0 or (self._readers or 0) > 0:
                self._last_reader_s = self._clock()
            self._readers = readers
        self._wake.set()

    # ------------------------------------------------------------ status

    def status(self) -> EngineStatus:
        with self._lock:
            times = list(self._frame_times)
            now = self._clock()
            recent = [t for t in times if now - t <= 2.0]
            fps = (
                (len(recent) - 1) / (recent[-1] - recent[0])
                if len(recent) > 1 and recent[-1] > recent[0]
                else 0.0
            )
            stopping = self.shutdown.is_set() and self._state is not EngineState.STOPPED
            return EngineStatus(
                state=EngineState.STOPPING.value if stopping else self._state.value,
                mode=self.config.mode,
                fps=round(fps, 1),
                faces=self._faces,
                camera=self._camera.value,
                camera_detail=self._camera_detail,
                sink=self._sink_state,
                sink_detail=self._sink_detail,
                sink_kind=self.config.sink.kind,
                device=self._device,
                readers=self._readers,
                dominant=self._dominant,
                mirror=self.config.camera.mirror,
                preview=self._preview,
                config_error=self._config_error,
                frames_processed=self._frames_processed,
                frames_sent=self._frames_sent,
                detector_warning=self._detector_warning,
            )

    # ------------------------------------------------------------ processing thread

    def _set_override(self, key: str, value: Any) -> None:
        new, commit = self._live.propose_override(key, value)
        self._apply(new)
        commit()

    def _set_paused(self, paused: bool) -> None:
        with self._lock:
            self._paused = paused
        log.info("paused" if paused else "resumed")

    def _apply_file_config(self, new_file: Config) -> None:
        if dataclasses.replace(self.config.sink, on_demand=new_file.sink.on_demand) != new_file.sink:
            log.warning("sink settings change after a restart (the virtual camera stays open while running)")
        new, commit = self._live.propose_file(new_file)
        try:
            self._apply(new)
        except Exception as exc:  # noqa: BLE001 - e.g. SetupError: a model file named in the edit is bad
            self._report_bad_config(exc)
            raise
        commit()
        with self._lock:
            self._config_error = None
        log.info("config reloaded")
        self._emit("config-reloaded", "settings applied")

    def _apply(self, new: Config) -> None:
        """Run ``new`` (in the processing thread); raises if the pipeline
        cannot be rebuilt, leaving the old config running."""
        old = self.config
        assert self._pipeline is not None
        # Sink settings other than on_demand take a restart (``_apply_file_config`` says so):
        # the sender keeps the sink it opened. Keep running them, so that on-demand, the
        # status and a reopen follow that sink, not an edit still waiting for the restart.
        new = dataclasses.replace(new, sink=dataclasses.replace(old.sink, on_demand=new.sink.on_demand))
        # Only the pipeline's own sections matter to it: a mirror, camera,
        # sink, tray or logging change must not rebuild it (and reload models).
        old_for_pipeline = dataclasses.replace(
            old, camera=new.camera, sink=new.sink, tray=new.tray, logging=new.logging
        )
        if new != old_for_pipeline:
            self._pipeline = self._deps.reconfigure(self._pipeline, old_for_pipeline, new)
            self._note_detector()
        with self._lock:
            self.config = new
        if _strict_privacy(new) and not _strict_privacy(old):
            self._cover_last_output(new.privacy.action)
        if old.camera.mirror != new.camera.mirror:
            self._pipeline.mirror_faces()
        if dataclasses.replace(old.camera, mirror=False) != dataclasses.replace(new.camera, mirror=False):
            log.info("camera settings changed: reopening the camera")
            self._stop_capture()
        if old.tray.enabled != new.tray.enabled:
            log.warning("tray.enabled changes after a restart (use --no-tray to run without the icon)")
        if old.mode != new.mode:
            log.info("mode: %s", new.mode)

    def _cover_last_output(self, action: str) -> None:
        """The mask was just turned on (replace mode with privacy on, from
        another mode or with privacy off): the newest processed frame, which
        the sender repeats until the next camera frame has been processed, was
        made without it and may show a face. Send it covered instead."""
        _, last = self._output.latest()
        if last is not None:
            self._output.put(unvouched_frame(last, "replace", action))

    def _note_detector(self) -> None:
        warning = privacy_warning(self._pipeline.detector) if self._pipeline is not None else None
        with self._lock:
            self._detector_warning = warning
        if warning and warning not in self._warned:
            self._warned.add(warning)
            log.warning("%s", warning)

    def _report_bad_config(self, exc: BaseException) -> None:
        message = str(exc)
        with self._lock:
            self._config_error = message
        log.error("config not applied, the previous settings keep running: %s", message)
        self._emit("config-error", message)

    def _active(self) -> bool:
        """Whether the camera should be open and frames processed."""
        with self._lock:
            if self._paused or self.shutdown.is_set():
                return False
            if self._preview or not (self.config.sink.on_demand and self.config.sink.kind == "virtual"):
                return True
            if self._sink_state != "ok":
                # Not open yet, or not openable: nobody can watch it. (The sender
                # counts the readers before it reports "ok".)
                return False
            if self._readers is None:
                return True  # readers cannot be counted (no inotify): stay on
            return self._readers > 0 or self._clock() - self._last_reader_s < IDLE_GRACE_S

    def _update_state(self) -> bool:
        """Set the state from ``_active()``; returns whether the engine is active."""
        active = self._active()
        with self._lock:
            self._state = (
                EngineState.RUNNING if active else EngineState.PAUSED if self._paused else EngineState.IDLE
            )
        return active

    def _on_camera(self, state: CameraState, detail: str, gen: int | None = None) -> None:
        with self._lock:
            if gen is not None and gen != self._capture_gen:
                return  # from a capture thread already replaced
            self._camera, self._camera_detail = state, detail
            if state is not CameraState.OK:
                # No camera, no faces: the tray's icon and status line must not
                # keep showing the last frame's faces and frame rate.
                self._faces, self._dominant = 0, None
                self._frame_times.clear()
        if state is not CameraState.OK:
            self._output.clear()  # never repeat the last face frame over a placeholder
        if state is CameraState.UNAVAILABLE:
            self._emit("camera", f"camera unavailable: {detail}")

    def _start_capture(self) -> None:
        cfg = self.config
        self._frames.clear()
        with self._lock:
            self._capture_gen += 1
            gen = self._capture_gen
        self._capture = CaptureThread(
            lambda: self._deps.make_source(self.config),
            self._frames,
            retry_initial_s=cfg.camera.retry_initial_s,
            retry_max_s=cfg.camera.retry_max_s,
            clock=self._clock,
            on_state=lambda state, detail: self._on_camera(state, detail, gen),
        )
        self._capture.start()

    def _stop_capture(self) -> None:
        if self._capture is not None:
            if not self._capture.stop(timeout_s=1.5):
                log.warning("the camera driver did not return in time; it is released at exit")
            self._capture = None
            with self._lock:
                self._capture_gen += 1
            self._on_camera(CameraState.RELEASED, "")

    def _drain_commands(self) -> None:
        while True:
            try:
                fn, fut = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                result = fn()
            except Exception as exc:  # noqa: BLE001 - handed to whoever asked
                fut.set_exception(exc)
                continue
            # Publish what the command changed (a pause) before its caller hears back,
            # not after the commands queued behind it: a status read then must agree.
            self._update_state()
            fut.set_result(result)

    def _process_loop(self) -> None:
        seq = 0
        try:
            while not self.shutdown.is_set():
                self._drain_commands()
                active = self._update_state()
                if not active:
                    if self._capture is not None:
                        self._stop_capture()
                    self._wake.wait(0.1)
                    self._wake.clear()
                    continue
                if self._capture is not None and not self._capture.running:
                    log.warning("the capture thread ended unexpectedly; restarting it")
                    self._capture = None
                if self._capture is None:
                    self._start_capture()
                got = self._frames.wait_newer(seq, timeout_s=0.1)
                if got is None:
                    continue
                seq, frame = got
                self._process(frame)
        except Exception:  # noqa: BLE001 - last resort: log, stop cleanly
            log.exception("processing loop failed; shutting down")
            self.request_stop()
        finally:
            self._stop_capture()
            self._fail_pending()

    def _fail_pending(self) -> None:
        """Answer the commands left (shutdown is set: ``_submit`` queues no more)."""
        pending = []
        with self._submit_lock:
            while True:
                try:
                    pending.append(self._commands.get_nowait()[1])
                except queue.Empty:
                    break
        for fut in pending:
            fut.set_exception(RuntimeError("EmojiCam is shutting down"))

    def _process(self, frame: Frame) -> None:
        cfg = self.config
        if cfg.camera.mirror:
            frame = Frame(cv2.flip(frame.image_bgr, 1), frame.index, frame.timestamp_s)
        assert self._pipeline is not None
        results: list[FaceResult] = []
        try:
            image, results = self._pipeline.process(frame)
        except Exception as exc:  # noqa: BLE001 - no exception may escape a frame
            # Pipeline.process already turns a failing stage into a covered frame;
            # this is the last line for what it cannot catch (its own fallback failing).
            key = f"{type(exc).__name__}: {exc}"
            if key not in self._warned:
                self._warned.add(key)
                log.warning(
                    "frame %d could not be processed (%s); showing it %s",
                    frame.index,
                    key,
                    {"blur": "blurred", "blank": "blanked"}[cfg.privacy.action]
                    if _strict_privacy(cfg)
                    else "unchanged",
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
            action = cfg.privacy.action if cfg.privacy.enabled else None
            image = unvouched_frame(frame.image_bgr, cfg.mode, action)
        now = self._clock()
        self._output.put(image)
        largest = max(results, key=lambda r: r.box.area, default=None)
        with self._lock:
            if self._camera is CameraState.OK:  # not a late frame from a camera just lost or released
                self._faces = len(results)
                self._dominant = largest.emotion.value if largest is not None else None
                self._frame_times.append(now)
            self._frames_processed += 1
            self._last_output_s = now

    # ------------------------------------------------------------ sender thread

    def _placeholder(self, size_wh: tuple[int, int]) -> np.ndarray | None:
        """The placeholder for the current state, or None to send real frames."""
        with self._lock:
            state, camera, detail = self._state, self._camera, self._camera_detail
            stalled = self._clock() - self._last_output_s > STALL_S
        if state is EngineState.PAUSED:
            return cached_placeholder(size_wh, ("EmojiCam paused",))
        if state is EngineState.IDLE:
            return cached_placeholder(size_wh, ("EmojiCam",))
        if camera is CameraState.UNAVAILABLE:
            return cached_placeholder(size_wh, ("camera unavailable — retrying", detail[:80]))
        if camera is not CameraState.OK:
            return cached_placeholder(size_wh, ("starting the camera…",))
        if stalled:
            return cached_placeholder(size_wh, ("waiting for the camera…",))
        return None

    # ------------------------------------------------------------ for the sender (emojicam.sender)

    def frame_to_send(self, size_wh: tuple[int, int]) -> np.ndarray:
        """The newest processed frame, or the placeholder for the state."""
        image = self._placeholder(size_wh)
        if image is None:
            _, image = self._output.latest()
        return image if image is not None else cached_placeholder(size_wh, ("starting…",))

    def send_slowly(self) -> bool:
        """Paused or nobody watching: a cheap frame at ``sender.IDLE_FPS`` is enough."""
        with self._lock:
            return self._state in (EngineState.PAUSED, EngineState.IDLE)

    def report_sink(self, state: str, detail: str = "", device: str | None = None) -> None:
        with self._lock:
            self._sink_state, self._sink_detail = state, detail
            if device is not None:
                self._device = device
            # Retries go "opening" -> "unavailable" each time (or "opening" ->
            # "ok" -> "unavailable" for a sink that opens but cannot be written):
            # report a problem once, and again only when it changes or after the
            # sink worked (``sink_working``).
            new_problem = state == "unavailable" and detail != self._sink_error_reported
            if state == "unavailable":
                self._sink_error_reported = detail
        self._wake.set()  # an on-demand engine may turn the camera on or off
        if new_problem:
            log.error("%s", detail)
            self._emit("sink", detail)
        elif state == "unavailable":
            log.debug("still unavailable: %s", detail)

    def sink_working(self) -> None:
        """The sink took frames for a while: its next failure is news again."""
        with self._lock:
            self._sink_error_reported = None

    def count_sent(self) -> None:
        with self._lock:
            self._frames_sent += 1

    def preview_wanted(self) -> bool:
        with self._lock:
            return self._preview


def _strict_privacy(config: Config) -> bool:
    """Whether ``config`` promises that no face shows (``Pipeline.strict_privacy``)."""
    return config.mode == "replace" and config.privacy.enabled
