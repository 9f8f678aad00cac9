"""Device lookup by card label against a fake sysfs tree, reader counting
with inotify on a fake device node, and the engine's on-demand switching."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from emojicam import v4l2
from tests.factories import make_sysfs_tree

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux only")


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    return make_sysfs_tree(
        tmp_path / "sys",
        [
            (10, "EmojiCam", True),
            (0, "Integrated Camera", False),
            (2, "Dummy video device (0x0000)", True),
            (11, "emojicam", True),
        ],
    )


def test_list_devices_sorted_with_kind(sysfs: Path) -> None:
    devices = v4l2.list_devices(sysfs, Path("/dev"))
    assert [d.node for d in devices] == ["video0", "video2", "video10", "video11"]
    assert [d.is_loopback for d in devices] == [False, True, True, True]
    assert devices[2].path == Path("/dev/video10") and devices[2].number == 10


def test_find_by_label_exact_first(sysfs: Path) -> None:
    assert v4l2.find_device_by_label("EmojiCam", sysfs).node == "video10"
    assert v4l2.find_device_by_label("emojicam", sysfs).node == "video11"
    assert v4l2.find_device_by_label("EMOJICAM", sysfs).node == "video10"  # case-insensitive fallback
    assert v4l2.find_device_by_label("Nope", sysfs) is None


def test_loopback_preferred_over_a_camera_with_the_same_label(tmp_path: Path) -> None:
    sysfs = make_sysfs_tree(tmp_path / "s", [(0, "EmojiCam", False), (5, "EmojiCam", True)])
    assert v4l2.find_device_by_label("EmojiCam", sysfs).node == "video5"


def test_missing_tree_and_unreadable_entries(tmp_path: Path) -> None:
    assert v4l2.list_devices(tmp_path / "nothing") == []
    sysfs = make_sysfs_tree(tmp_path / "s", [(1, "Cam", True)])
    (sysfs / "class" / "video4linux" / "video3").mkdir()  # no name file
    assert [d.node for d in v4l2.list_devices(sysfs)] == ["video1"]
    message = v4l2.describe_missing("EmojiCam", sysfs)
    assert "'Cam'" in message and 'card_label="EmojiCam"' in message


def test_count_openers_from_a_fake_proc(tmp_path: Path) -> None:
    node = tmp_path / "video10"
    node.touch()
    proc = tmp_path / "proc"
    for pid, targets in {"100": [node, node], "200": [tmp_path / "other"], "300": []}.items():
        (proc / pid / "fd").mkdir(parents=True)
        for i, target in enumerate(targets):
            os.symlink(target, proc / pid / "fd" / str(i))
    (proc / "self").mkdir()  # not a pid
    assert v4l2.count_openers(node, proc, exclude_pid=1) == 2
    assert v4l2.count_openers(node, proc, exclude_pid=100) == 0


@linux_only
def test_reader_watcher_counts_opens_and_closes(tmp_path: Path) -> None:
    pytest.importorskip("inotify_simple")
    node = tmp_path / "video10"
    node.touch()
    counts: list[int] = []
    changed = threading.Event()

    def on_change(n: int) -> None:
        counts.append(n)
        changed.set()

    watcher = v4l2.ReaderWatcher(node, on_change, proc_root=tmp_path / "noproc")
    watcher.start()
    try:
        assert counts == [0]

        def wait(n: int) -> None:
            deadline = time.monotonic() + 2
            while watcher.readers != n and time.monotonic() < deadline:
                time.sleep(0.01)
            assert watcher.readers == n

        a = open(node, "rb")  # noqa: SIM115 - opened and closed by hand on purpose
        wait(1)
        b = open(node, "r+b")  # noqa: SIM115
        wait(2)
        a.close()
        wait(1)
        b.close()
        wait(0)
        assert counts == [0, 1, 2, 1, 0]
        node.unlink()  # the module was unloaded
        time.sleep(0.3)
        assert watcher.readers == 0
    finally:
        watcher.stop()


@linux_only
def test_reader_watcher_start_fails_on_missing_node(tmp_path: Path) -> None:
    pytest.importorskip("inotify_simple")
    watcher = v4l2.ReaderWatcher(tmp_path / "video99", lambda n: None)
    with pytest.raises(OSError):
        watcher.start()


@linux_only
def test_engine_on_demand_with_a_fake_device_node(tmp_path: Path) -> None:
    """No reader: camera released, idle frames at a low rate; an app opens
    the node: camera on within a second; it closes: released again."""
    pytest.importorskip("inotify_simple")
    pyvirtualcam = pytest.importorskip("pyvirtualcam")
    from emojicam import engine, sinks
    from emojicam.config import CameraConfig, Config, SinkConfig
    from emojicam.pipeline import reconfigure
    from tests.factories import RecordingBackend, make_box, make_fake_pipeline

    pyvirtualcam.register_backend("emojicam-test-recorder", RecordingBackend)
    RecordingBackend.instances.clear()
    RecordingBackend.fail_sends = False
    dev = tmp_path / "dev"
    dev.mkdir()
    node = dev / "video7"
    node.touch()  # the fake device node
    sysfs = make_sysfs_tree(tmp_path / "sys", [(7, "EmojiCam", True)])
    opened: list[str] = []

    class Cam:
        description = "fake camera"

        def open(self):
            opened.append("open")

        def read(self):
            time.sleep(1 / 60)
            return np.full((120, 160, 3), 90, np.uint8)

        def close(self):
            opened.append("close")

    cfg = Config(camera=CameraConfig(width=160, height=120), sink=SinkConfig(fps=20, on_demand=True))
    deps = engine.EngineDeps(
        make_pipeline=lambda c: make_fake_pipeline([make_box(50, 30, 50, 50)]),
        reconfigure=reconfigure,
        make_sink=lambda c: sinks.VirtualCameraSink(
            c.sink,
            (160, 120),
            system="Linux",
            sysfs_root=sysfs,
            dev_root=dev,
            pyvirtualcam_backend="emojicam-test-recorder",
        ),
        make_source=lambda c: Cam(),
        watch_readers=lambda device, cb: v4l2.ReaderWatcher(device, cb, proc_root=tmp_path / "noproc"),
    )
    eng = engine.Engine(cfg, deps)
    eng.start()

    def wait(pred, timeout_s=3.0) -> float:
        t0 = time.monotonic()
        while not pred():
            assert time.monotonic() - t0 < timeout_s, eng.status()
            time.sleep(0.02)
        return time.monotonic() - t0

    try:
        wait(lambda: eng.status().readers == 0 and eng.status().state == "idle")
        time.sleep(0.5)
        assert opened == []  # nobody watches: the webcam light never comes on
        cam = RecordingBackend.instances[0]
        n0, t0 = cam.count, time.monotonic()
        time.sleep(1.0)
        assert (cam.count - n0) / (time.monotonic() - t0) <= 5  # cheap idle frames, low rate

        reader = open(node, "rb")  # noqa: SIM115 - an app opens EmojiCam
        took = wait(lambda: eng.status().camera == "ok" and eng.status().faces == 1)
        assert took < 1.0, f"resumed after {took:.2f} s"
        assert eng.status().readers == 1 and eng.status().state == "running"

        reader.close()  # the app is gone: after the grace period the camera is released
        wait(
            lambda: eng.status().state == "idle" and eng.status().camera == "released",
            timeout_s=engine.IDLE_GRACE_S + 2,
        )
        assert opened == ["open", "close"]
    finally:
        assert eng.close() < 2.0
