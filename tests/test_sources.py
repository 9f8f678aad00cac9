"""Sources: parsing, colour normalisation, pacing, the latest-frame slot and
the capture thread's retry behaviour."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from emojicam.config import CameraConfig
from emojicam.sources import (
    CameraState,
    CaptureThread,
    LatestSlot,
    OpenCVSource,
    Pacer,
    SourceError,
    is_camera,
    parse_source,
    placeholder_image,
    to_bgr,
)
from emojicam.types import Frame
from tests.factories import FakeClock, write_test_video


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", 0), (" 2 ", 2), (3, 3), ("/dev/video0", "/dev/video0"), ("clip.mp4", "clip.mp4")],
)
def test_parse_source(value, expected) -> None:
    assert parse_source(value) == expected


def test_is_camera(tmp_path: Path) -> None:
    assert is_camera(0) and is_camera("/dev/video4")
    assert not is_camera(str(tmp_path / "clip.mp4"))


#: A frame whose every pixel and channel differs: a swapped channel order, a
#: transposed or shifted picture, or a wrong scale shows in the exact pixels.
BGR = (np.arange(4 * 6 * 3).reshape(4, 6, 3) * 3).astype(np.uint8)
GRAY = BGR[..., 1]
GRAY_AS_BGR = np.repeat(GRAY[..., None], 3, axis=2)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (GRAY, GRAY_AS_BGR),
        (GRAY[..., None], GRAY_AS_BGR),
        (np.dstack([BGR, 255 - GRAY]), BGR),  # BGRA: alpha dropped, B, G, R kept in place
        (BGR, BGR),
        (BGR.astype(np.float32) / 255, BGR),  # a float frame of 0..1
        (BGR.astype(np.float64), BGR),  # a float frame of 0..255
        (BGR.astype(np.uint16) * 256 + 0xFF, BGR),  # 16-bit: the high byte, as pipeline.as_bgr
        (BGR[None], BGR),  # a batch of one
    ],
    ids=["gray", "gray1", "bgra", "bgr", "float01", "float255", "uint16", "batch1"],
)
def test_to_bgr_normalises(image: np.ndarray, expected: np.ndarray) -> None:
    out = to_bgr(image)
    assert out is not None and out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)
    if image is BGR:
        assert out is image  # already BGR: not copied


def test_to_bgr_reads_a_frame_as_the_pipeline_does() -> None:
    """A float frame of 0.8 came out [1 1 1] from the capture thread, where
    the pipeline reads it as 0..1, [204 204 204]."""
    from emojicam.pipeline import as_bgr

    light = np.full((4, 6, 3), 0.8, np.float32)
    np.testing.assert_array_equal(to_bgr(light), np.full((4, 6, 3), 204, np.uint8))
    nan_one = BGR.astype(np.float32) / 255
    nan_one[0, 0, 0] = np.nan
    for image in (light, light * 255, nan_one, BGR.astype(np.uint16) * 257 + 0x80):
        np.testing.assert_array_equal(to_bgr(image), as_bgr(image))


@pytest.mark.parametrize(
    "image",
    [
        None,
        np.zeros((0, 0, 3), np.uint8),
        np.zeros((4, 6, 2), np.uint8),
        np.zeros((4, 6, 3), np.int32),  # no scale known: the pipeline refuses it too
        np.zeros((4, 6, 3), bool),
    ],
    ids=["none", "empty", "2-channel", "int32", "bool"],
)
def test_to_bgr_rejects_unusable(image) -> None:
    assert to_bgr(image) is None


def test_pacer_keeps_the_period_and_never_bursts() -> None:
    clock = FakeClock()
    pacer = Pacer(25, clock, clock.sleep)
    pacer.wait()  # first call starts the schedule
    for _ in range(5):
        clock.advance(0.01)  # 10 ms of work
        pacer.wait()
    assert clock.slept == pytest.approx([0.03] * 5)
    clock.advance(0.5)  # a long stall: no burst of catch-up frames afterwards
    assert pacer.wait() == 0.0
    clock.advance(0.01)
    pacer.wait()
    assert clock.slept[-1] == pytest.approx(0.03)
    with pytest.raises(ValueError):
        Pacer(0)


def test_latest_slot_keeps_only_the_newest() -> None:
    slot: LatestSlot[int] = LatestSlot()
    assert slot.wait_newer(0, 0.01) is None
    for i in range(5):
        slot.put(i)
    seq, item = slot.wait_newer(0, 0.01)
    assert (seq, item) == (5, 4)
    assert slot.wait_newer(seq, 0.01) is None
    threading.Timer(0.05, slot.put, args=(9,)).start()
    assert slot.wait_newer(seq, 2.0) == (6, 9)
    slot.clear()
    assert slot.latest() == (6, None)


def test_placeholder_image_has_text_and_size() -> None:
    image = placeholder_image((320, 180), ["camera unavailable — retrying", "detail"])
    assert image.shape == (180, 320, 3) and image.dtype == np.uint8
    assert tuple(image[0, 0]) == (48, 40, 40)  # background BGR
    assert (image > 200).any()  # light text drawn


def test_opencv_source_errors_say_why(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such video file"):
        OpenCVSource(str(tmp_path / "missing.mp4")).open()
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    with pytest.raises(SourceError, match="cannot be decoded"):
        OpenCVSource(str(junk)).open()


def test_opencv_source_reads_a_file_with_the_injected_clock(tmp_path: Path) -> None:
    video = write_test_video(tmp_path / "v.avi", 5, (64, 48), fps=10)
    clock = FakeClock()
    src = OpenCVSource(str(video), CameraConfig(), clock=clock, sleep=clock.sleep)
    assert src.is_file and "video file" in src.description
    src.open()
    try:
        frames = [src.read() for _ in range(12)]  # loops past the end twice
    finally:
        src.close()
    assert all(f is not None and f.shape == (48, 64, 3) for f in frames)
    assert clock.slept == pytest.approx([0.1] * 11)
    assert src.read() is None  # closed


class ScriptedSource:
    """Fails to open ``fail_opens`` times, then gives ``frames`` frames and stops."""

    def __init__(self, state: dict) -> None:
        self.state = state
        self.description = "scripted"

    def open(self) -> None:
        self.state["attempts"].append(time.monotonic())
        if len(self.state["attempts"]) <= self.state["fail_opens"]:
            raise SourceError("camera busy (test)")

    def read(self):
        if self.state["left"] <= 0:
            return None
        self.state["left"] -= 1
        time.sleep(0.005)
        return np.zeros((8, 8, 3), np.uint8)

    def close(self) -> None:
        self.state["closes"] += 1


def retry_delays(caplog: pytest.LogCaptureFixture) -> list[float]:
    """The waits the capture thread chose before each reopen, in order (from its
    debug log: deterministic, where the wall-clock gaps depend on the machine's load)."""
    return [r.args[0] for r in caplog.records if r.getMessage().startswith("retrying the camera in")]


def test_capture_thread_retries_with_backoff_and_recovers(caplog: pytest.LogCaptureFixture) -> None:
    state = {"attempts": [], "fail_opens": 4, "left": 10, "closes": 0}
    slot: LatestSlot[Frame] = LatestSlot()
    changes: list[tuple[CameraState, str]] = []
    cap = CaptureThread(
        lambda: ScriptedSource(state),
        slot,
        retry_initial_s=0.05,
        retry_max_s=0.15,
        on_state=lambda s, d: changes.append((s, d)),
    )
    caplog.set_level(logging.DEBUG, logger="emojicam.sources")
    cap.start()
    try:
        deadline = time.monotonic() + 5
        while cap.frames_read < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        assert cap.stop()
    # The backoff the thread chose (deterministic): doubling, then capped at retry_max_s.
    delays = retry_delays(caplog)
    assert delays[:4] == pytest.approx([0.05, 0.1, 0.15, 0.15])
    # ... and really waited (a wait never ends early, so these cannot flake under load).
    gaps = np.diff(state["attempts"][:5])
    assert all(gap >= delay - 0.01 for gap, delay in zip(gaps, delays, strict=False))
    states = [s for s, _ in changes]
    assert states[:3] == [CameraState.OPENING, CameraState.UNAVAILABLE, CameraState.OK]
    assert "busy" in changes[1][1]
    assert cap.frames_read == 10
    assert slot.latest()[1].index == 9  # Frame numbering
    assert states[-1] is CameraState.RELEASED
    assert state["closes"] >= 1


def test_a_camera_that_dies_after_each_frame_is_retried_ever_more_slowly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A flaky camera (one frame per open) was reopened every retry_initial_s for
    good, flickering between picture and placeholder and logging each time."""
    state = {"attempts": [], "fail_opens": 0, "left": 0, "closes": 0}

    class OneFrameEachOpen(ScriptedSource):
        def open(self) -> None:
            super().open()
            self.state["left"] = 1

    slot: LatestSlot[Frame] = LatestSlot()
    cap = CaptureThread(lambda: OneFrameEachOpen(state), slot, retry_initial_s=0.05, retry_max_s=0.4)
    caplog.set_level(logging.DEBUG, logger="emojicam.sources")
    cap.start()
    try:
        deadline = time.monotonic() + 5
        while len(retry_delays(caplog)) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        assert cap.stop()
    # Not 0.05 every time: doubling up to retry_max_s, as for a camera that never opens.
    assert retry_delays(caplog)[:5] == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.4])
    assert cap.frames_read >= 5  # each open gave its frame


def test_capture_thread_retries_when_building_the_source_fails() -> None:
    state = {"attempts": [], "fail_opens": 0, "left": 3, "closes": 0}
    builds: list[int] = []

    def build() -> ScriptedSource:
        builds.append(1)
        if len(builds) <= 2:
            raise RuntimeError("backend not loaded yet (test)")
        return ScriptedSource(state)

    slot: LatestSlot[Frame] = LatestSlot()
    changes: list[tuple[CameraState, str]] = []
    cap = CaptureThread(build, slot, retry_initial_s=0.02, retry_max_s=0.05,
                        on_state=lambda s, d: changes.append((s, d)))
    cap.start()
    try:
        deadline = time.monotonic() + 5
        while cap.frames_read < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cap.frames_read == 3 and len(builds) >= 3
        assert any(s is CameraState.UNAVAILABLE and "backend not loaded" in d for s, d in changes)
    finally:
        assert cap.stop()


def test_capture_thread_survives_a_driver_that_raises_on_close() -> None:
    state = {"attempts": [], "fail_opens": 0, "left": 3, "closes": 0}

    class Dying(ScriptedSource):
        def close(self) -> None:
            super().close()
            if self.state["closes"] == 1:
                self.state["left"] = 3  # the camera comes back after the failed release
                raise OSError(19, "No such device")

    slot: LatestSlot[Frame] = LatestSlot()
    cap = CaptureThread(lambda: Dying(state), slot, retry_initial_s=0.05, retry_max_s=0.1)
    cap.start()
    try:
        deadline = time.monotonic() + 5
        while cap.frames_read < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cap.running and cap.frames_read >= 6 and len(state["attempts"]) >= 2
    finally:
        assert cap.stop()


# ---------------------------------------------------------------- what real cameras and files deliver


def test_to_bgr_scales_16_bit_frames_instead_of_saturating_them() -> None:
    """A 16-bit camera frame (IR / depth / Y16 cameras) came out pure white:
    every value above 255 was clipped rather than scaled."""
    mid_grey = np.full((4, 6), 0x8000, np.uint16)
    out = to_bgr(mid_grey)
    assert out is not None and out.shape == (4, 6, 3) and out.dtype == np.uint8
    assert 120 <= int(out[0, 0, 0]) <= 135
    dark_bgr = np.full((4, 6, 3), 0x1000, np.uint16)
    assert int(to_bgr(dark_bgr)[0, 0, 0]) == 16


def test_a_photo_as_the_source_keeps_showing(tmp_path: Path) -> None:
    """``--source photo.png``: FFmpeg opens a photo as a one-frame video that
    cannot be rewound, so the source gave one frame and then nothing (the
    daemon flickered between the photo and "camera unavailable")."""
    import cv2

    photo = tmp_path / "photo.png"
    image = np.zeros((48, 64, 3), np.uint8)
    image[:, :32] = (20, 120, 220)
    cv2.imwrite(str(photo), image)
    clock = FakeClock()
    src = OpenCVSource(str(photo), CameraConfig(), clock=clock, sleep=clock.sleep)
    src.open()
    try:
        frames = [src.read() for _ in range(6)]
    finally:
        src.close()
    assert all(f is not None and np.array_equal(f, image) for f in frames)


def test_a_video_file_with_no_decodable_frame_is_refused_at_open(tmp_path: Path) -> None:
    """A file whose header is fine but whose frames are damaged opened without
    complaint, then was reported as "stopped delivering frames (unplugged?)"."""
    video = write_test_video(tmp_path / "v.avi", 5, (64, 48), fps=10)
    data = bytearray(video.read_bytes())
    start = data.find(b"movi") + 4
    data[start:] = bytes(len(data) - start)  # keep the header, zero every frame
    damaged = tmp_path / "damaged.avi"
    damaged.write_bytes(bytes(data))
    with pytest.raises(SourceError, match=r"damaged\.avi cannot be decoded"):
        OpenCVSource(str(damaged)).open()


def test_a_camera_that_opens_but_sends_no_picture_may_be_busy() -> None:
    """Some drivers (Windows MSMF) open a camera another app holds and then fail
    every read; the user was told it "stopped delivering frames (unplugged?)"."""

    class NoPicture:
        description = "camera 1"

        def open(self) -> None:
            pass

        def read(self) -> None:
            return None

        def close(self) -> None:
            pass

    changes: list[tuple[CameraState, str]] = []
    cap = CaptureThread(NoPicture, LatestSlot(), retry_initial_s=0.05, retry_max_s=0.1,
                        on_state=lambda s, d: changes.append((s, d)))
    cap.start()
    try:
        deadline = time.monotonic() + 5
        while not any(s is CameraState.UNAVAILABLE for s, _ in changes) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        assert cap.stop()
    detail = next(d for s, d in changes if s is CameraState.UNAVAILABLE)
    assert "camera 1" in detail and "another app" in detail and "unplugged" not in detail
    assert len(detail) <= 80  # the placeholder shows this much of it


def test_a_video_file_under_the_home_folder_can_be_written_with_a_tilde(tmp_path: Path, monkeypatch) -> None:
    """``camera.source: ~/Videos/clip.avi`` in config.yaml (YAML does not expand
    ``~`` as a shell does) was refused as "no such video file"."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USERPROFILE", str(tmp_path))  # what expanduser reads on Windows
    write_test_video(tmp_path / "clip.avi", 3, (64, 48), fps=10)
    clock = FakeClock()
    src = OpenCVSource("~/clip.avi", CameraConfig(), clock=clock, sleep=clock.sleep)
    src.open()
    try:
        image = src.read()
    finally:
        src.close()
    assert image is not None and image.shape == (48, 64, 3)
    assert str(tmp_path) in src.description


def test_a_folder_as_the_source_is_named_as_a_folder(tmp_path: Path) -> None:
    """A folder was refused as "no such video file", though it is right there."""
    with pytest.raises(SourceError, match="is a folder, not a video file"):
        OpenCVSource(str(tmp_path)).open()
