"""Device lookup by card label against a fake sysfs tree, reader counting
with inotify on a fake device node, and the engine's on-demand switching."""

from __future__ import annotations

import dataclasses
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
        assert watcher.running
        node.unlink()  # the module was unloaded: the watcher ends
        deadline = time.monotonic() + 2
        while watcher.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not watcher.running and watcher.readers == 0
    finally:
        watcher.stop()


@linux_only
def test_reader_watcher_start_fails_on_missing_node(tmp_path: Path) -> None:
    pytest.importorskip("inotify_simple")
    watcher = v4l2.ReaderWatcher(tmp_path / "video99", lambda n: None)
    with pytest.raises(OSError):
        watcher.start()


class NodeWriter:
    """A pyvirtualcam backend that holds the device node open for writing, as
    v4l2loopback's does (so inotify sees our own opens and closes), and
    counts what is sent, and when."""

    instances: list[NodeWriter] = []
    fail_sends = False

    def __init__(self, *, width: int, height: int, fps: float, fourcc: int, device: str | None, **kw) -> None:
        assert device is not None
        self._device = device
        self._file = open(device, "r+b")  # noqa: SIM115 - closed in close()
        self.count = 0
        self.times: list[float] = []
        NodeWriter.instances.append(self)

    def send(self, frame: np.ndarray) -> None:
        if NodeWriter.fail_sends:
            raise OSError("device write failed (test)")
        self.count += 1
        self.times.append(time.monotonic())

    def close(self) -> None:
        self._file.close()

    def device(self) -> str:
        return self._device

    def native_fourcc(self) -> int | None:
        return None


class OnDemand:
    """An engine with a fake camera and a virtual camera on a fake device node
    (``node``), reader counting on; ``opened`` logs the camera's opens and closes.
    ``clock``: the engine's clock (a ``FakeClock`` stands still until the test moves it)."""

    def __init__(self, tmp_path: Path, *, on_demand: bool = True, clock=time.monotonic) -> None:
        pytest.importorskip("inotify_simple")
        pyvirtualcam = pytest.importorskip("pyvirtualcam")
        from emojicam import engine, sinks
        from emojicam.config import CameraConfig, Config, SinkConfig
        from emojicam.pipeline import reconfigure
        from tests.factories import make_box, make_fake_pipeline

        pyvirtualcam.register_backend("emojicam-test-node-writer", NodeWriter)
        NodeWriter.instances.clear()
        NodeWriter.fail_sends = False
        dev = tmp_path / "dev"
        dev.mkdir()
        self.node = dev / "video7"
        self.node.touch()  # the fake device node
        sysfs = make_sysfs_tree(tmp_path / "sys", [(7, "EmojiCam", True)])
        self.opened: list[str] = []
        opened = self.opened

        class Cam:
            description = "fake camera"

            def open(self):
                opened.append("open")

            def read(self):
                time.sleep(1 / 60)
                return np.full((120, 160, 3), 90, np.uint8)

            def close(self):
                opened.append("close")

        self.config = Config(camera=CameraConfig(width=160, height=120, retry_initial_s=0.1),
                             sink=SinkConfig(fps=20, on_demand=on_demand))
        deps = engine.EngineDeps(
            make_pipeline=lambda c: make_fake_pipeline([make_box(50, 30, 50, 50)]),
            reconfigure=reconfigure,
            make_sink=lambda c: sinks.VirtualCameraSink(
                c.sink,
                (160, 120),
                system="Linux",
                sysfs_root=sysfs,
                dev_root=dev,
                pyvirtualcam_backend="emojicam-test-node-writer",
            ),
            make_source=lambda c: Cam(),
            watch_readers=lambda device, cb: v4l2.ReaderWatcher(device, cb, proc_root=tmp_path / "noproc"),
            clock=clock,
        )
        self.clock = clock
        self.engine = engine.Engine(self.config, deps, load_config=lambda: self.config)
        self.idle_grace_s = engine.IDLE_GRACE_S

    def wait(self, pred, timeout_s: float = 3.0) -> float:
        t0 = time.monotonic()
        while not pred():
            assert time.monotonic() - t0 < timeout_s, self.engine.status()
            time.sleep(0.02)
        return time.monotonic() - t0

    def set_on_demand(self, on: bool) -> None:
        """Edit ``sink.on_demand`` and reload, as a config file edit would."""
        sink = dataclasses.replace(self.config.sink, on_demand=on)
        self.config = dataclasses.replace(self.config, sink=sink)
        self.engine.reload().result(2)

    def idle(self) -> bool:
        status = self.engine.status()
        return status.state == "idle" and status.camera == "released"


@pytest.fixture
def on_demand(tmp_path: Path):
    made: list[OnDemand] = []

    def make(**kw) -> OnDemand:
        made.append(OnDemand(tmp_path, **kw))
        made[-1].engine.start()
        return made[-1]

    yield make
    for setup in made:
        assert setup.engine.close() < 2.0


@linux_only
def test_engine_on_demand_with_a_fake_device_node(on_demand) -> None:
    """No reader: camera released, idle frames at a low rate; an app opens
    the node: camera on within a second; it closes: released again once the
    grace period is over."""
    from emojicam import sender
    from tests.factories import FakeClock

    setup = on_demand(clock=FakeClock())  # the engine's time moves only when the test says
    eng, wait = setup.engine, setup.wait
    wait(lambda: eng.status().readers == 0 and eng.status().state == "idle")
    cam = NodeWriter.instances[0]
    n = cam.count
    wait(lambda: cam.count >= n + 4, timeout_s=10)  # idle frames keep the device alive...
    assert setup.opened == []  # ...and all the while nobody watches, the webcam light stays off
    gaps = np.diff(cam.times[n:])
    # cheap frames at the idle rate, not at sink.fps (20 fps: 0.05 s apart); load only lengthens them
    assert min(gaps) >= 0.9 / sender.IDLE_FPS, gaps

    reader = open(setup.node, "rb")  # noqa: SIM115 - an app opens EmojiCam
    # README: "resumes within a second when an app opens it". The engine's clock stands
    # still here, so no wait timed by it (a grace period, a debounce) can be on the way;
    # the wall-clock bound is that promise with slack for a loaded machine.
    took = wait(lambda: eng.status().camera == "ok" and eng.status().faces == 1, timeout_s=5)
    assert took < 2.0, f"resumed after {took:.2f} s"
    assert eng.status().readers == 1 and eng.status().state == "running"

    reader.close()  # the app is gone...
    wait(lambda: eng.status().readers == 0)
    processed = eng.status().frames_processed
    wait(lambda: eng.status().frames_processed > processed + 5)
    assert setup.opened == ["open"] and eng.status().state == "running"  # ...within the grace period
    setup.clock.advance(setup.idle_grace_s)  # the grace period is over: the camera is released
    wait(setup.idle)
    assert setup.opened == ["open", "close"]


@linux_only
def test_reopening_the_virtual_camera_is_not_counted_as_a_reader(on_demand) -> None:
    """Writes fail, the sender closes and reopens the device: inotify sees our
    own close and open, which must not look like an app starting to watch."""
    setup = on_demand()
    eng = setup.engine
    setup.wait(lambda: eng.status().readers == 0 and setup.idle())
    NodeWriter.fail_sends = True
    setup.wait(lambda: eng.status().sink == "unavailable")
    NodeWriter.fail_sends = False
    setup.wait(lambda: len(NodeWriter.instances) >= 2 and eng.status().sink == "ok")
    reopened = NodeWriter.instances[-1]
    setup.wait(lambda: reopened.count >= 2)  # idle frames on the reopened device (at 2 fps)...
    assert eng.status().readers == 0 and setup.idle(), eng.status()  # ...and still nobody counted
    assert setup.opened == []

    reader = open(setup.node, "rb")  # noqa: SIM115 - the new watcher still counts apps
    setup.wait(lambda: eng.status().readers == 1 and eng.status().camera == "ok")
    reader.close()


@linux_only
def test_on_demand_turned_on_while_running_releases_the_camera(on_demand) -> None:
    setup = on_demand(on_demand=False)
    eng = setup.engine
    setup.wait(lambda: eng.status().camera == "ok")
    assert eng.status().readers is None  # not counted while on-demand is off
    setup.set_on_demand(True)
    setup.wait(lambda: eng.status().readers == 0 and setup.idle(), timeout_s=setup.idle_grace_s + 3)

    setup.set_on_demand(False)
    setup.wait(lambda: eng.status().readers is None and eng.status().camera == "ok")


def test_a_missing_label_with_the_module_loaded_says_to_reload_it(tmp_path: Path) -> None:
    """With v4l2loopback already loaded (by OBS, or without options), 'sudo modprobe
    v4l2loopback card_label=...' does nothing: the message must say to unload it first."""
    sysfs = make_sysfs_tree(
        tmp_path / "s", [(0, "Integrated Camera", False), (2, "OBS Virtual Camera", True)]
    )
    (sysfs / "module" / "v4l2loopback" / "parameters").mkdir(parents=True)
    message = v4l2.describe_missing("EmojiCam", sysfs)
    assert ("sudo modprobe -r v4l2loopback && sudo modprobe v4l2loopback devices=1 video_nr=10 "
            'card_label="EmojiCam" exclusive_caps=1') in message
    assert "'OBS Virtual Camera'" in message
    not_loaded = make_sysfs_tree(tmp_path / "t", [(0, "Integrated Camera", False)])
    message = v4l2.describe_missing("EmojiCam", not_loaded)
    assert "modprobe -r" not in message and "sudo modprobe v4l2loopback devices=1" in message
