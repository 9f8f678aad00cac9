"""Reliability, items 3, 4 and 8: the live engine under faults.

What ``test_engine.py`` already covers is not repeated here (camera
unplugged and replugged, a missing video file, the virtual device missing at
start, failing writes, slow processing, a bad config edit, a failing
pipeline). This file adds the faults it does not inject:

* config: a series of bad edits of a real file (syntax, not UTF-8, bad
  value, file deleted, file replaced by a folder) and a reload onto a
  truncated model with the real ``build_pipeline``: the last good config
  keeps running, the error shows in the status, the user's file is never
  rewritten; a "billion laughs" YAML document is rejected in bounded time
  and memory;
* camera: busy at start, hanging in a read, changing resolution and pixel
  format mid-stream, a driver whose close() raises on unplug;
* sink: a slow consumer (every write blocks);
* every state shows in the status that ``emojicam ctl status`` prints (read
  here through the real control socket);
* shutdown: SIGTERM to ``python -m emojicam run`` while it processes a heavy
  clip with the real pipeline exits within 2 s.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest

from emojicam import control, engine
from emojicam.config import CameraConfig, Config, SinkConfig, load_config
from emojicam.sources import SourceError
from tests.factories import (
    make_box,
    make_fake_pipeline,
    paste_face,
    selfie_face_patch,
    wait_for,
    write_test_video,
)

REPO = Path(__file__).resolve().parents[1]
SIZE_WH = (320, 240)
BOX = make_box(110, 60, 100, 100)
T = TypeVar("T")
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Unix sockets, /proc: Linux")


class RecordingSink:
    """A ``sinks.Sink`` that keeps the last frames it was sent. While
    ``writes`` is cleared every write blocks until it is set again (a consumer
    that does not keep up), with ``stuck`` set."""

    kind = "virtual"
    device = "/dev/video-test"

    def __init__(self, fps: float = 20.0) -> None:
        self.fps = fps
        self.frames: list[np.ndarray] = []
        self.count = 0
        self.closed = False
        self.writes, self.stuck = threading.Event(), threading.Event()
        self.writes.set()
        self._next = time.monotonic()

    def open(self) -> None:
        self.closed = False

    def send(self, image_bgr: np.ndarray) -> None:
        if not self.writes.is_set():
            self.stuck.set()
            self.writes.wait()
        self.count += 1
        self.frames = (self.frames + [image_bgr.copy()])[-10:]

    def pace(self) -> None:
        self._next = max(self._next + 1.0 / self.fps, time.monotonic())
        time.sleep(max(0.0, self._next - time.monotonic()))

    def close(self) -> None:
        self.closed = True


class ScriptedCamera:
    """A ``sources.Source`` driven by the test: ``frames`` is called for each
    read; ``open_errors`` are raised by the first opens (a busy camera);
    ``hang`` blocks reads (a stuck driver); ``close_error`` is raised by close."""

    description = "scripted camera"

    def __init__(
        self,
        make_frame: Callable[[int], np.ndarray | None],
        open_errors: list[Exception] | None = None,
        hang: threading.Event | None = None,
        close_error: Exception | None = None,
        log: list[str] | None = None,
    ) -> None:
        self.make_frame, self.open_errors = make_frame, open_errors if open_errors is not None else []
        self.hang, self.close_error = hang, close_error
        self.log = log if log is not None else []
        self.reads = 0

    def open(self) -> None:
        if self.open_errors:
            self.log.append("open-failed")
            raise self.open_errors.pop(0)
        self.log.append("open")

    def read(self) -> np.ndarray | None:
        time.sleep(1 / 60)
        if self.hang is not None:
            self.hang.wait()
        self.reads += 1
        return self.make_frame(self.reads)

    def close(self) -> None:
        self.log.append("close")
        if self.close_error is not None:
            raise self.close_error


def config(source: str | int = 0, **camera: object) -> Config:
    cam = dict(source=source, width=SIZE_WH[0], height=SIZE_WH[1], retry_initial_s=0.1, retry_max_s=0.4)
    cam.update(camera)
    return Config(
        camera=CameraConfig(**cam),  # type: ignore[arg-type]
        sink=SinkConfig(fps=20, on_demand=False),
    )


def grey(_i: int) -> np.ndarray:
    return np.full((SIZE_WH[1], SIZE_WH[0], 3), 90, np.uint8)


@pytest.fixture
def start():
    """Start engines (and their control servers); close everything afterwards."""
    running: list[tuple[engine.Engine, control.ControlServer | None]] = []

    def _start(
        cfg: Config,
        *,
        camera: Callable[[Config], object] | None = None,
        sink: RecordingSink | None = None,
        pipeline=None,
        make_pipeline=None,
        reconfigure=None,
        socket_path: Path | None = None,
        **kw,
    ) -> tuple[engine.Engine, RecordingSink]:
        sink = sink or RecordingSink()
        deps = engine.EngineDeps(
            make_pipeline=make_pipeline or (lambda c: pipeline or make_fake_pipeline([BOX], mode=c.mode)),
            reconfigure=reconfigure or (lambda p, old, new: p),
            make_sink=lambda c: sink,
            watch_readers=None,
            **({"make_source": camera} if camera is not None else {}),
        )
        eng = engine.Engine(cfg, deps, **kw)
        eng.start()
        server = None
        if socket_path is not None:
            server = control.ControlServer(control.engine_handler(eng), socket_path)
            server.start()
        running.append((eng, server))
        return eng, sink

    yield _start
    for eng, server in running:
        if server is not None:
            server.stop()
        eng.close()


def ctl_status(path: Path) -> dict:
    """What ``emojicam ctl status --json`` prints, read over the real socket."""
    reply = control.send_request({"cmd": "status"}, path)
    assert reply["ok"], reply
    return reply["status"]


# ---------------------------------------------------------------- config (item 3)


def _write(path: Path, data: str | bytes) -> int:
    """Write like an editor (atomic rename); returns the file's mtime_ns."""
    tmp = path.with_name(path.name + ".tmp-edit")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)
    return path.stat().st_mtime_ns


@linux_only
def test_bad_edits_keep_the_last_good_config_and_never_touch_the_file(start, tmp_path):
    folder = tmp_path / "config"
    folder.mkdir()
    path = folder / "config.yaml"
    video = write_test_video(tmp_path / "clip.avi", 30, SIZE_WH)
    good = f"mode: label\ncamera:\n  source: {video}\n  width: 320\n  height: 240\n"
    _write(path, good)

    def load() -> Config:
        return dataclasses.replace(
            load_config(path, use_user_file=False), sink=SinkConfig(fps=20, on_demand=False)
        )

    sock = tmp_path / "rt" / "control.sock"
    eng, sink = start(load(), load_config=load, watch_paths=[path], reload_poll_s=0.1, socket_path=sock)
    wait_for(lambda: eng.status().frames_processed > 3)
    assert ctl_status(sock)["mode"] == "label"

    bad_edits = {
        "syntax": "mode: [label\n",
        "not-utf8": b"mode: \xff\xfe label\n",
        "bad-value": "mode: sepia\n",
        "unknown-key": "moed: replace\n",
        "not-a-mapping": "- mode\n- replace\n",
        "binary-tag": "mode: !!binary aGVsbG8=\n",
        "python-tag": "mode: !!python/object/apply:os.system ['touch pwned']\n",
    }
    for name, text in bad_edits.items():
        mtime = _write(path, text)
        wait_for(lambda: eng.status().config_error is not None, timeout_s=3)
        status = ctl_status(sock)
        assert status["mode"] == "label" and status["state"] == "running", name
        assert "config.yaml" in status["config_error"], (name, status["config_error"])
        sent = eng.status().frames_sent
        wait_for(lambda s=sent: eng.status().frames_sent > s + 3)  # still streaming
        assert path.read_bytes() == (text.encode() if isinstance(text, str) else text), (
            f"{name}: file changed"
        )
        assert path.stat().st_mtime_ns == mtime, f"{name}: file rewritten"
        _write(path, good)  # fixed again
        wait_for(lambda: eng.status().config_error is None, timeout_s=3)
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()

    # the file deleted, then a folder in its place: reported, the last good config keeps running
    path.unlink()
    wait_for(lambda: eng.status().config_error is not None, timeout_s=3)
    assert "not found" in eng.status().config_error and eng.status().mode == "label"
    path.mkdir()
    wait_for(lambda: eng.status().config_error is not None and eng.status().state == "running", timeout_s=3)
    path.rmdir()
    _write(path, good.replace("label", "decorate"))
    wait_for(lambda: eng.status().mode == "decorate" and eng.status().config_error is None, timeout_s=3)

    # a mode switch from ctl is a runtime choice: the file is not rewritten for it
    mtime = path.stat().st_mtime_ns
    assert control.send_request({"cmd": "mode", "mode": "replace"}, sock)["ok"]
    assert eng.close() < 2.0
    assert path.stat().st_mtime_ns == mtime and path.read_text() == good.replace("label", "decorate")
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml"]  # no backups, no temp files left


def _raw_share(sent: np.ndarray, raw: np.ndarray, box) -> float:
    """The share of the middle of ``box`` (half its width and height, inside any
    face) that ``sent`` shows as the camera gave it."""
    x, y, w, h = box.xywh
    x0, y0 = max(0, x + w // 4), max(0, y + h // 4)
    x1, y1 = min(raw.shape[1], x + 3 * w // 4), min(raw.shape[0], y + 3 * h // 4)
    same = np.all(np.abs(sent[y0:y1, x0:x1].astype(int) - raw[y0:y1, x0:x1].astype(int)) <= 2, axis=2)
    return float(same.mean()) if same.size else 0.0


@pytest.mark.shared_data
def test_reload_onto_a_truncated_model_keeps_masking_faces(start, tmp_path, selfie_mp4):
    from emojicam.pipeline import build_pipeline, reconfigure

    # (what the pipeline was given, what it made of it, the faces it found): the last few
    made: list[tuple[np.ndarray, np.ndarray, list]] = []

    def spied_pipeline(cfg: Config):
        pipeline = build_pipeline(cfg)
        process = pipeline.process

        def spy(frame):
            image, results = process(frame)
            made.append((frame.image_bgr, image, [r.box for r in results]))
            del made[:-30]
            return image, results

        pipeline.process = spy
        return pipeline

    broken = tmp_path / "broken.tflite"
    broken.write_bytes((REPO / "models" / "emotion.tflite").read_bytes()[:10_000])
    broken.with_suffix(".labels.txt").write_bytes((REPO / "models" / "emotion.labels.txt").read_bytes())
    path = tmp_path / "config.yaml"
    base = f"camera:\n  source: {selfie_mp4}\n  width: 640\n  height: 480\n"
    path.write_text(base)

    def load() -> Config:
        return dataclasses.replace(
            load_config(path, use_user_file=False), sink=SinkConfig(fps=15, on_demand=False)
        )

    eng, sink = start(
        load(),
        make_pipeline=spied_pipeline,
        reconfigure=reconfigure,
        load_config=load,
        watch_paths=[path],
        reload_poll_s=0.1,
    )
    wait_for(lambda: eng.status().faces >= 1, timeout_s=20)
    path.write_text(base + f"classifier:\n  model: {broken}\n")
    wait_for(lambda: eng.status().config_error is not None, timeout_s=10)
    assert (
        "broken.tflite" in eng.status().config_error
        and "not a valid TFLite model" in eng.status().config_error
    )
    n = eng.status().frames_processed
    wait_for(lambda: eng.status().frames_processed > n + 5, timeout_s=10)
    status = eng.status()
    assert status.state == "running" and status.mode == "replace"
    assert eng.config.classifier.model is None  # the last good config is still the running one
    wait_for(lambda: eng.status().faces >= 1, timeout_s=5)  # faces still found...

    def newest_sent_with_faces():
        """(camera frame, faces, frame sent) for the newest frame sent, if the
        pipeline found faces in it."""
        sent = sink.frames[-1]
        for raw, image, boxes in reversed(list(made)):
            if np.array_equal(image, sent):
                return (raw, boxes, sent) if boxes else None
        return None

    checked = 0
    while checked < 3:  # ...and masked in what the virtual camera gets, frame after frame
        sent_before = sink.count
        wait_for(lambda: newest_sent_with_faces() is not None, timeout_s=10)
        raw, boxes, sent = newest_sent_with_faces()
        # Covered: at most a few pixels as the camera gave them, where the emoji's own
        # colours happen to match (its white teeth on a sunlit wall: up to 11% in this
        # clip); an uncovered face shows all of them.
        assert all(_raw_share(sent, raw, box) < 0.3 for box in boxes), [
            _raw_share(sent, raw, box) for box in boxes
        ]
        checked += 1
        wait_for(lambda s=sent_before: sink.count > s + 2, timeout_s=10)


BILLION_LAUGHS = (
    "mode: ["
    + ", ".join(
        ['&a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
        + [f"&a{k} [" + ",".join([f"*a{k - 1}"] * 9) + "]" for k in range(1, 9)]
    )
    + "]\n"
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="resource limits: Linux")
def test_yaml_alias_bomb_is_rejected_in_bounded_time_and_memory(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 500  # a few hundred bytes that expand to 9**9 strings
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from emojicam.config import ConfigError, load_config\n"
        "try:\n"
        f"    load_config({str(bomb)!r}, use_user_file=False)\n"
        "except ConfigError as exc:\n"
        "    print('ConfigError', str(exc)[:200])\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=15
        )
    except subprocess.TimeoutExpired:
        pytest.fail("loading a 300-byte alias bomb took more than 15 s")
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stdout.startswith("ConfigError") and "bomb.yaml: mode" in done.stdout


def test_yaml_oddities_load_safely_and_fast(tmp_path):
    from emojicam.config import ConfigError

    docs = {
        "self-reference": "mode: &a [*a]\n",
        "self-referencing-map": "camera: &c {width: 640, source: *c}\n",
        "merge-key": "camera: &c\n  width: 640\ndetector:\n  <<: *c\n",
        "deep-nesting": "mode: " + "[" * 3000 + "]" * 3000 + "\n",
        "5000-digit-int": "camera:\n  width: " + "9" * 5000 + "\n",
        "timestamp": "mode: 2001-12-14\n",
        "set": "mode: !!set {a, b}\n",
        "nul-in-string": 'mode: "repl\\0ace"\n',
    }
    for name, text in docs.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        t0 = time.monotonic()
        with pytest.raises(ConfigError, match=rf"{name}\.yaml"):
            load_config(path, use_user_file=False)
        assert time.monotonic() - t0 < 10, name


# ---------------------------------------------------------------- camera and device (item 4)


@linux_only
def test_camera_busy_at_start_shows_in_status_then_recovers(start, tmp_path):
    log: list[str] = []
    errors = [SourceError("camera 0 is missing or busy (another app may be using it)") for _ in range(3)]
    sock = tmp_path / "rt" / "control.sock"
    eng, sink = start(config(), camera=lambda c: ScriptedCamera(grey, errors, log=log), socket_path=sock)
    wait_for(lambda: ctl_status(sock)["camera"] == "unavailable")
    status = ctl_status(sock)
    assert "busy" in status["camera_detail"] and status["state"] == "running"
    n = sink.count
    wait_for(lambda: sink.count > n + 3)  # the call does not freeze: placeholders keep coming
    wait_for(lambda: ctl_status(sock)["camera"] == "ok", timeout_s=5)  # freed: picked up by itself
    assert log[:3] == ["open-failed"] * 3 and log[3] == "open"
    n = eng.status().frames_processed
    wait_for(lambda: eng.status().frames_processed > n + 5)


def test_camera_driver_raising_on_close_does_not_kill_capture(start):
    # A USB camera pulled out: reads fail, and releasing the dead device
    # raises. The capture thread must survive that and reopen when it returns.
    plugged = threading.Event()
    plugged.set()
    log: list[str] = []

    class Dying(ScriptedCamera):
        def close(self) -> None:
            self.log.append("close")
            if not plugged.is_set():
                raise OSError(19, "No such device")

    def camera(_cfg: Config) -> ScriptedCamera:
        errors = [] if plugged.is_set() else [SourceError("no such device")]
        return Dying(lambda i: grey(i) if plugged.is_set() else None, errors, log=log)

    eng, sink = start(config(), camera=camera)
    wait_for(lambda: eng.status().camera == "ok" and eng.status().frames_processed > 3)
    plugged.clear()
    wait_for(lambda: "close" in log, timeout_s=3)
    time.sleep(0.5)
    plugged.set()
    wait_for(lambda: eng.status().camera == "ok" and log.count("open") >= 2, timeout_s=4)


def test_camera_hanging_in_a_read_shows_a_placeholder_and_shutdown_is_prompt(start):
    hang = threading.Event()
    hang.set()
    eng, sink = start(config(), camera=lambda c: ScriptedCamera(grey, hang=hang))
    wait_for(lambda: eng.status().frames_processed > 3)
    hang.clear()  # the driver stops returning
    t0 = time.monotonic()
    wait_for(
        lambda: eng.status().frames_sent > 0 and sink.frames and float(sink.frames[-1][:20].mean()) < 60,
        timeout_s=engine.STALL_S + 3,
    )
    assert time.monotonic() - t0 >= engine.STALL_S - 0.5  # the last frame is repeated only briefly
    assert eng.status().state == "running"
    took = eng.close(timeout_s=2.0)
    hang.set()
    assert took < 2.0 and sink.closed


def test_camera_changing_resolution_and_format_mid_stream(start):
    shapes = [
        (480, 640, 3),
        (720, 1280, 3),
        (240, 320),
        (480, 640, 4),
        (120, 160, 3),
        (1080, 1920, 3),
        (0, 0, 3),
    ]

    def frame(i: int) -> np.ndarray:
        shape = shapes[(i // 4) % len(shapes)]
        return np.full(shape, 90, np.uint8)

    pipeline = make_fake_pipeline([BOX])
    eng, sink = start(config(), camera=lambda c: ScriptedCamera(frame), pipeline=pipeline)
    wait_for(lambda: eng.status().frames_processed > 4 * len(shapes) * 2, timeout_s=10)
    assert eng.status().state == "running" and eng.status().camera == "ok"
    assert pipeline.failed_frames == 0
    # every frame reaches the sink as HxWx3 uint8, whatever the camera gave (the virtual
    # camera then letterboxes it to its own size: test_sinks.py)
    frames = list(sink.frames)
    assert frames and all(f.ndim == 3 and f.shape[2] == 3 and f.dtype == np.uint8 for f in frames)
    assert len({f.shape for f in frames}) >= 3  # the sizes did change on the way


def _answered(call: Callable[[], T], timeout_s: float = 5.0) -> T:
    """``call()``'s result, failing the test (instead of hanging it) if it blocks."""
    result: list[T] = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert result, f"{call} did not return within {timeout_s} s"
    return result[0]


def test_slow_consumer_never_slows_processing_or_control(start):
    """The slowest consumer: its writes block until the test lets them go. Only
    the sender waits; processing, status and commands go on."""
    sink = RecordingSink(fps=20)
    eng, _ = start(config(), camera=lambda c: ScriptedCamera(grey), sink=sink)
    wait_for(lambda: sink.count >= 2, timeout_s=5)
    sink.writes.clear()
    try:
        assert sink.stuck.wait(5)  # the sender is stuck in a write now
        sent = sink.count

        def processed() -> int:
            return _answered(eng.status).frames_processed  # status never waits for the sink

        p0 = processed()
        wait_for(lambda: processed() > p0 + 10, timeout_s=10)  # processing goes on
        eng.set_mode("label").result(timeout=5)  # and so do commands
        assert _answered(eng.status).mode == "label"
        assert sink.count == sent  # all the while, not one write got through
    finally:
        sink.writes.set()
    wait_for(lambda: sink.count > sent + 2)  # the consumer is back: frames flow again
    assert eng.close(timeout_s=2.0) < 2.0  # README: shutdown within 2 s


# ---------------------------------------------------------------- shutdown under load (item 8)


def _heavy_clip(path: Path, selfie_mp4: Path) -> Path:
    """A 1280x720 clip with six real faces: the real pipeline cannot keep up."""
    import cv2

    patch, face = selfie_face_patch(selfie_mp4)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 30.0, (1280, 720))
    base = np.full((720, 1280, 3), 150, np.uint8)
    for i in range(40):
        image = base
        for k in range(6):
            image, _ = paste_face(
                image, patch, face, (200 + 440 * (k % 3) + 3 * i, 200 + 330 * (k // 3)), 170
            )
        writer.write(image)
    writer.release()
    return path


@linux_only
@pytest.mark.shared_data
def test_sigterm_during_heavy_processing_exits_within_two_seconds(tmp_path, selfie_mp4):
    clip = _heavy_clip(tmp_path / "heavy.avi", selfie_mp4)
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    env = dict(
        os.environ,
        XDG_RUNTIME_DIR=str(run),
        XDG_STATE_HOME=str(tmp_path / "state"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        PYTHONPATH=str(REPO),
    )
    env.pop("DISPLAY", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "emojicam", "run", "--no-tray", "--source", str(clip), "--sink", "null"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sock = run / "emojicam" / "control.sock"
    try:
        wait_for(
            lambda: proc.poll() is not None or (sock.exists() and ctl_status(sock)["frames_processed"] > 10),
            timeout_s=60,
            poll_s=0.2,
        )
        assert proc.poll() is None, proc.communicate()[1]
        status = ctl_status(sock)
        assert status["faces"] >= 1 and status["camera"] == "ok"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=15)
        exit_s = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _, err = proc.communicate()
    print(f"SIGTERM under load ({status['fps']} fps processed of a 30 fps clip, {status['faces']} faces): "
          f"exit after {exit_s:.2f} s")
    assert rc == 0, err[-2000:]
    assert exit_s < 2.0, f"exited {exit_s:.2f} s after SIGTERM"
    assert not sock.exists()
    log_text = (tmp_path / "state" / "emojicam" / "log" / "emojicam.log").read_text()
    assert "released video file" in log_text and "EmojiCam stopped" in log_text
    assert "did not stop in time" not in log_text
