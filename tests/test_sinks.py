"""Sinks: letterboxing, the null sink, and the virtual camera through the real
``pyvirtualcam.Camera`` over a recording backend."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pyvirtualcam = pytest.importorskip("pyvirtualcam")

from emojicam import sinks  # noqa: E402
from emojicam.config import SinkConfig  # noqa: E402
from tests.factories import RECORDER_BACKEND, FakeClock, make_sysfs_tree  # noqa: E402

BACKEND = RECORDER_BACKEND


@pytest.fixture(autouse=True)
def _recording_backend(recorder):
    return recorder


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    return make_sysfs_tree(
        tmp_path / "sys", [(0, "Integrated Camera", False), (2, "OBS Cam", True), (10, "EmojiCam", True)]
    )


def test_fit_to_letterboxes_keeping_aspect() -> None:
    image = np.full((100, 100, 3), 200, np.uint8)
    out = sinks.fit_to(image, (200, 100))
    assert out.shape == (100, 200, 3)
    assert out[:, :50].max() == 0 and out[:, 150:].max() == 0  # black bars
    assert out[:, 60:140].min() == 200
    same = np.zeros((10, 20, 3), np.uint8)
    assert sinks.fit_to(same, (20, 10)) is same


def test_null_sink_counts_and_paces() -> None:
    clock = FakeClock()
    sink = sinks.NullSink(fps=10, clock=clock, sleep=clock.sleep)
    sink.open()
    for _ in range(4):
        sink.send(np.zeros((12, 16, 3), np.uint8))
        sink.pace()
    sink.close()
    assert sink.frames_sent == 4 and sink.last_size_wh == (16, 12)
    assert clock.slept == pytest.approx([0.1] * 3)


def test_virtual_sink_finds_device_by_label(sysfs: Path, tmp_path: Path, recorder) -> None:
    sink = sinks.VirtualCameraSink(
        SinkConfig(fps=25),
        (64, 48),
        system="Linux",
        sysfs_root=sysfs,
        dev_root=tmp_path / "dev",
        pyvirtualcam_backend=BACKEND,
    )
    sink.open()
    try:
        assert sink.device == str(tmp_path / "dev" / "video10")
        sink.send(np.full((96, 128, 3), 7, np.uint8))  # another size: scaled to fit
        sink.pace()
        sink.send(np.full((48, 64, 3), 9, np.uint8))
    finally:
        sink.close()
    cam = recorder.instances[0]
    assert (cam.width, cam.height, cam.fps) == (64, 48, 25)
    assert cam.fourcc == pyvirtualcam.camera.encode_fourcc(pyvirtualcam.PixelFormat.BGR.value)
    assert [f.shape for f in cam.frames] == [(48, 64, 3)] * 2
    assert cam.frames[0].min() == 7 and cam.frames[1].max() == 9
    assert cam.closed


def test_explicit_device_wins(sysfs: Path, recorder) -> None:
    sink = sinks.VirtualCameraSink(
        SinkConfig(device="/dev/video42"),
        (32, 32),
        system="Linux",
        sysfs_root=sysfs,
        pyvirtualcam_backend=BACKEND,
    )
    sink.open()
    sink.close()
    assert recorder.instances[0].device() == "/dev/video42"


def test_missing_label_says_how_to_fix(sysfs: Path) -> None:
    sink = sinks.VirtualCameraSink(
        SinkConfig(name="NoSuchCam"), (32, 32), system="Linux", sysfs_root=sysfs, pyvirtualcam_backend=BACKEND
    )
    with pytest.raises(sinks.SinkError) as err:
        sink.open()
    message = str(err.value)
    assert "NoSuchCam" in message and 'card_label="NoSuchCam"' in message and "exclusive_caps=1" in message
    assert "OBS Cam" in message  # lists what exists


def test_a_real_camera_with_the_label_is_refused(tmp_path: Path) -> None:
    sysfs = make_sysfs_tree(tmp_path / "s", [(0, "EmojiCam", False)])
    sink = sinks.VirtualCameraSink(
        SinkConfig(), (32, 32), system="Linux", sysfs_root=sysfs, pyvirtualcam_backend=BACKEND
    )
    with pytest.raises(sinks.SinkError, match="not a v4l2loopback device"):
        sink.open()


@pytest.mark.parametrize(("device", "example"), [("video10", "/dev/video10"), ("EmojiCam", "/dev/video10")])
def test_a_device_that_is_not_a_path_is_refused_on_linux_with_the_fix(device: str, example: str) -> None:
    sink = sinks.VirtualCameraSink(
        SinkConfig(device=device), (32, 32), system="Linux", pyvirtualcam_backend=BACKEND
    )
    with pytest.raises(sinks.SinkError) as err:
        sink.open()
    assert f"sink.device: {device!r} is not a device path" in str(err.value)
    assert f"such as {example}" in str(err.value) and "labelled 'EmojiCam'" in str(err.value)


def test_every_failing_backend_is_listed(monkeypatch) -> None:
    class Broken:
        def __init__(self, **kw):
            raise RuntimeError(f"no device {kw['device']}")

    pyvirtualcam.register_backend("unitycapture", Broken)
    pyvirtualcam.register_backend("obs", Broken)
    try:
        sink = sinks.VirtualCameraSink(SinkConfig(name="EmojiCam"), (32, 32), system="Windows")
        with pytest.raises(sinks.SinkError) as err:
            sink.open()
    finally:
        pyvirtualcam.camera.BACKENDS.pop("unitycapture", None)
        pyvirtualcam.camera.BACKENDS.pop("obs", None)
    message = str(err.value)
    assert "'unitycapture' backend: no device EmojiCam (device: EmojiCam)" in message
    assert "'obs' backend: no device None (device: default)" in message and "Unity Capture" in message


class Denied:
    """A pyvirtualcam backend whose device refuses to open."""

    def __init__(self, **kw):
        raise RuntimeError(f"{kw['device']} could not be opened due to missing permissions")


def open_failing(sysfs: Path, dev: Path, backend: type, cfg: SinkConfig | None = None) -> str:
    """The message of the SinkError that opening the device through ``backend`` gives."""
    pyvirtualcam.register_backend("emojicam-test-failing", backend)
    try:
        sink = sinks.VirtualCameraSink(cfg or SinkConfig(), (32, 32), system="Linux", sysfs_root=sysfs,
                                       dev_root=dev, pyvirtualcam_backend="emojicam-test-failing")
        with pytest.raises(sinks.SinkError) as err:
            sink.open()
    finally:
        pyvirtualcam.camera.BACKENDS.pop("emojicam-test-failing", None)
    return str(err.value)


def open_denied(sysfs: Path, dev: Path) -> str:
    return open_failing(sysfs, dev, Denied)


def open_explicit(sysfs: Path, dev: Path, device: str) -> str:
    """``sink.device: device``, opened through ``NoSuchDevice``."""
    return open_failing(sysfs, dev, NoSuchDevice, SinkConfig(device=device))


@pytest.mark.skipif(not Path("/dev/null").is_char_device(), reason="needs /dev/null, a character device")
def test_a_found_device_that_will_not_open_is_not_blamed_on_the_module(sysfs: Path, tmp_path: Path) -> None:
    """The device exists (so v4l2loopback is loaded): the fix is access to it,
    not the modprobe line."""
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "video10").symlink_to("/dev/null")  # a character device node
    message = open_denied(sysfs, dev)
    assert f"{dev / 'video10'} could not be opened due to missing permissions" in message
    assert "'video' group" in message and "emojicam doctor" in message
    assert "modprobe" not in message


def test_a_device_node_that_is_a_plain_file_is_named_not_the_video_group(sysfs: Path, tmp_path: Path) -> None:
    """What writing to /dev/video10 before the module was loaded leaves behind."""
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "video10").write_bytes(b"\0" * 4096)
    message = open_denied(sysfs, dev)
    assert "is a regular file, not the loopback device" in message
    assert f"sudo rm {dev / 'video10'}" in message and "'video' group" not in message


@pytest.mark.parametrize(
    ("system", "backend", "expected"),
    [
        ("Linux", "v4l2loopback", [("v4l2loopback", "/dev/video10")]),
        ("Windows", "auto", [("unitycapture", "EmojiCam"), ("obs", None)]),
        ("Windows", "unitycapture", [("unitycapture", "EmojiCam")]),
        ("Darwin", "auto", [("obs", None)]),
        ("Windows", "obs", [("obs", None)]),
    ],
)
def test_backend_choice_per_platform(system, backend, expected, sysfs: Path) -> None:
    assert sinks._candidates(SinkConfig(backend=backend), system, sysfs, Path("/dev")) == expected


def test_create_sink_by_kind() -> None:
    assert isinstance(sinks.create_sink(SinkConfig(kind="null"), (8, 8)), sinks.NullSink)
    assert isinstance(sinks.create_sink(SinkConfig(kind="preview"), (8, 8)), sinks.PreviewSink)
    assert isinstance(sinks.create_sink(SinkConfig(kind="virtual"), (8, 8)), sinks.VirtualCameraSink)


def test_send_before_open_is_an_error() -> None:
    with pytest.raises(sinks.SinkError):
        sinks.VirtualCameraSink(SinkConfig(), (8, 8)).send(np.zeros((8, 8, 3), np.uint8))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the X display check is Linux's")
def test_a_preview_window_without_a_display_is_a_sink_error_not_an_abort(monkeypatch) -> None:
    """OpenCV's Qt build aborts the process when it cannot reach a display:
    'ctl preview on' over SSH once killed the daemon, leaving its socket behind."""
    monkeypatch.delenv("DISPLAY", raising=False)
    opened: list[str] = []
    monkeypatch.setattr(sinks.cv2, "namedWindow", lambda *a: opened.append("window"))
    with pytest.raises(sinks.SinkError, match="DISPLAY is not set"):
        sinks.PreviewSink(30).open()
    assert opened == []


class NoSuchDevice:
    """A pyvirtualcam backend whose device cannot be opened (as for a missing node)."""

    def __init__(self, **kw):
        raise RuntimeError(f"Device {kw['device']} could not be opened: No such file or directory")


def test_an_explicit_device_the_kernel_does_not_list_is_not_said_to_be_listed(
    sysfs: Path, tmp_path: Path
) -> None:
    """sink.device: /dev/video42 with no such device: the message claimed the kernel
    listed it and told the user to reload the module, not to fix sink.device."""
    dev = tmp_path / "dev"
    dev.mkdir()
    message = open_explicit(sysfs, dev, str(dev / "video42"))
    assert "although the kernel lists" not in message
    assert f"sink.device {dev / 'video42'} does not exist" in message
    assert f"set sink.device: null to use {dev / 'video10'} (labelled 'EmojiCam')" in message
    if Path("/dev/null").is_char_device():  # a node the kernel does not list (/sys hidden): no verdict
        (dev / "video43").symlink_to("/dev/null")
        message = open_explicit(sysfs, dev, str(dev / "video43"))
        assert "'video' group" in message and "sink.device" not in message


def test_an_explicit_device_that_is_a_real_camera_is_named(sysfs: Path, tmp_path: Path) -> None:
    """sink.device pointing at the webcam was blamed on the 'video' group."""
    dev = tmp_path / "dev"
    dev.mkdir()
    message = open_explicit(sysfs, dev, str(dev / "video0"))
    assert "'Integrated Camera'" in message and "not a v4l2loopback device" in message
    assert "'video' group" not in message


@pytest.mark.parametrize(("system", "backend"), [("Linux", "obs"), ("Linux", "unitycapture"),
                                                 ("Windows", "v4l2loopback"), ("Darwin", "unitycapture")])
def test_a_backend_this_system_lacks_is_named_with_the_fix(system: str, backend: str, sysfs: Path) -> None:
    """sink.backend: obs on Linux failed with "'obs' (device: default)" and the 'video' group advice."""
    sink = sinks.VirtualCameraSink(SinkConfig(backend=backend), (32, 32), system=system, sysfs_root=sysfs)
    with pytest.raises(sinks.SinkError) as err:
        sink.open()
    message = str(err.value)
    assert f"sink.backend: {backend!r} is not available on" in message and "sink.backend: auto" in message
    assert "'video' group" not in message and "modprobe" not in message


def test_the_virtual_camera_does_not_burst_after_an_idle_spell(sysfs: Path, tmp_path: Path, recorder) -> None:
    """While paused (or nobody watches an on-demand camera) the sender writes 2
    frames a second; pyvirtualcam's adaptive ``sleep_until_next_frame`` then
    stopped sleeping until its average frame rate caught up: 75 frames in the
    first second of a resume at 30 fps, a core spinning on every resume."""
    import time

    sink = sinks.VirtualCameraSink(SinkConfig(fps=30), (32, 24), system="Linux", sysfs_root=sysfs,
                                   dev_root=tmp_path / "dev", pyvirtualcam_backend=BACKEND)
    frame = np.zeros((24, 32, 3), np.uint8)
    sink.open()
    try:
        for _ in range(10):  # running at 30 fps
            sink.send(frame)
            sink.pace()
        for _ in range(4):  # paused: the sender's idle rate
            sink.send(frame)
            time.sleep(0.5)
        start = time.monotonic()
        for _ in range(16):  # resumed
            sink.send(frame)
            sink.pace()
        took = time.monotonic() - start
    finally:
        sink.close()
    # 16 paced frames at 30 fps take about 0.5 s (a slow machine only makes it longer);
    # the catch-up burst took a few milliseconds.
    assert took >= 0.4, f"16 frames went out in {took:.3f} s"
