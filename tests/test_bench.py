"""``emojicam bench``: frame sources, synthetic faces, the measuring loop and
its report. Timings themselves are never asserted (they belong to the bench,
not to unit tests); the structure and bookkeeping are."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from emojicam import bench, commands_bench
from tests.factories import FakeDetector, make_box, make_fake_pipeline, make_image, write_test_video

REQUIRED_JSON_KEYS = {
    "pipeline_ms_median",
    "pipeline_ms_p90",
    "cpu_ms_per_frame",
    "fps",
    "faces_per_frame",
    "rss_mb",
}


def test_fit_frame_scales_to_cover_and_crops_the_centre() -> None:
    image = np.zeros((480, 640, 3), np.uint8)
    image[:, 320:] = 255  # right half white
    image[:50] = 128  # a top stripe that the crop must remove
    out = bench.fit_frame(image, (1280, 720))
    assert out.shape == (720, 1280, 3)
    assert out.flags["C_CONTIGUOUS"]
    # scaled 2x to 1280x960, then rows 120..840 kept: the 100-row grey stripe is gone
    assert out[0, 100, 0] == 0 and out[0, 1200, 0] == 255
    assert bench.fit_frame(out, (1280, 720)) is out


@pytest.mark.parametrize("n", [1, 2, 4, 8, 9])
def test_grid_cells_fill_the_frame_without_overlap(n: int) -> None:
    cells = bench.grid_cells(n, (1280, 720))
    assert len(cells) == n
    mask = np.zeros((720, 1280), np.int32)
    for x, y, w, h in cells:
        assert w > 0 and h > 0 and x + w <= 1280 and y + h <= 720
        mask[y : y + h, x : x + w] += 1
    assert mask.max() == 1
    if n == 8:
        assert {(w, h) for _, _, w, h in cells} == {(320, 360)}


def test_synthetic_frames_hold_one_face_crop_per_cell_and_move() -> None:
    crops = [np.full((100, 100, 3), v, np.uint8) for v in (40, 200)]
    background = make_image((640, 480), value=120, seed=None)
    frames = list(bench.synthetic_frames(crops, background, (1280, 720), n_faces=4, count=5))
    assert len(frames) == 5 and all(f.shape == (720, 1280, 3) for f in frames)
    for frame in frames:
        for i, (x, y, w, h) in enumerate(bench.grid_cells(4, (1280, 720))):
            cell = frame[y : y + h, x : x + w]
            value = 40 if i % 2 == 0 else 200
            side = int(min(w, h) * 0.8)
            assert (cell == value).all(axis=2).sum() == side * side
    assert not np.array_equal(frames[0], frames[1]), "faces should drift between frames"


def test_synthetic_frames_need_faces() -> None:
    with pytest.raises(bench.InputError, match="no faces found"):
        list(bench.synthetic_frames([], make_image(), (320, 240), 2))


def test_jpeg_frames_decode_in_a_loop() -> None:
    images = [make_image((64, 48), value=v) for v in (30, 220)]
    stream = bench.jpeg_frames(bench.encode_jpeg(images))
    decoded = [next(stream) for _ in range(5)]
    assert [int(img.mean()) // 100 for img, _ in decoded] == [0, 2, 0, 2, 0]
    assert all(seconds >= 0 for _, seconds in decoded)


def test_video_frames_loop_and_scale(tmp_path: Path) -> None:
    video = write_test_video(tmp_path / "clip.avi", n_frames=4, size_wh=(160, 120))
    stream = bench.looped_video_frames(video, (320, 180))
    frames = [next(stream) for _ in range(9)]  # more than the clip holds
    assert all(img.shape == (180, 320, 3) for img, _ in frames)


def test_unreadable_video_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(bench.InputError, match="no such file"):
        next(bench.looped_video_frames(tmp_path / "missing.mp4", (320, 240)))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video")
    with pytest.raises(bench.InputError):
        next(bench.looped_video_frames(junk, (320, 240)))


def test_collect_faces_cuts_square_crops_and_finds_a_background(tmp_path: Path) -> None:
    video = write_test_video(tmp_path / "clip.avi", n_frames=40, size_wh=(320, 240))

    class FacesInFirstCalls(FakeDetector):
        """A face in the first three calls (frames), then none."""

        def detect(self, image_bgr):
            self.calls += 1
            return [make_box(100, 60, 80, 80)] if self.calls <= 3 else []

    detector = FacesInFirstCalls()
    crops, background = bench.collect_faces(video, detector, (640, 360), want=2, step=1)
    assert len(crops) == 2 and all(c.shape == (128, 128, 3) for c in crops)
    assert background is not None and background.shape == (360, 640, 3), "fitted to the bench size"
    assert detector.calls == 7, "the background frame is checked three times after the first empty call"


def synthetic_stream(n_faces: int = 1):
    crops = [make_image((120, 120), value=60)]
    frames = list(bench.synthetic_frames(crops, make_image((320, 240)), (320, 240), n_faces, count=3))
    return bench.jpeg_frames(bench.encode_jpeg(frames))


def test_measure_reports_every_stage_and_the_required_json_keys() -> None:
    pipeline = make_fake_pipeline(boxes=[make_box(10, 10, 60, 60), make_box(150, 80, 60, 60)])
    options = bench.BenchOptions(size_wh=(320, 240), faces=1, frames=12, warmup_frames=3)
    result = bench.measure(pipeline, synthetic_stream(), options, "FakeDetector")
    assert result.frames == 12 and result.failed_frames == 0
    assert result.faces_per_frame == pytest.approx(2.0)  # the fake detector's two boxes
    assert set(result.stage_ms_median) == set(bench.STAGES)
    assert result.pipeline_ms_median <= result.pipeline_ms_p90
    assert result.fps == pytest.approx(1000 / result.pipeline_ms_mean, rel=0.01)
    # the pipeline total covers its stages but not decoding
    assert result.pipeline_ms_mean >= sum(result.stage_ms_mean[s] for s in bench.PIPELINE_STAGES) * 0.99
    assert result.rss_mb > 10 and result.cpu_ms_per_frame > 0
    data = json.loads(bench.format_json(result))
    assert set(data) >= REQUIRED_JSON_KEYS
    assert data["options"]["size_wh"] == [320, 240] and data["machine"]["threads"] == 1
    text = bench.format_text(result)
    assert "pipeline ms/frame" in text and "(not in pipeline)" in text


@pytest.mark.parametrize("warmup", [0, 3])
def test_failed_frames_are_counted_over_the_measured_frames_only(warmup) -> None:
    """(With a warm-up, 4 measured frames after 3 failing warm-up ones once
    reported 7 failures.)"""
    pipeline = make_fake_pipeline()

    class Broken(FakeDetector):
        def detect(self, image_bgr):
            raise RuntimeError("boom")

    pipeline.detector = Broken()
    result = bench.measure(
        pipeline, synthetic_stream(), bench.BenchOptions(frames=4, warmup_frames=warmup), "Broken"
    )
    assert result.failed_frames == 4 == result.frames
    assert "4 frames failed" in bench.format_text(result)


def test_chart_is_a_png_of_the_stage_times(tmp_path: Path) -> None:
    pipeline = make_fake_pipeline()
    result = bench.measure(
        pipeline, synthetic_stream(), bench.BenchOptions(frames=3, warmup_frames=0), "Fake"
    )
    path = tmp_path / "out" / "chart.png"
    bench.write_chart(result, path)
    image = cv2.imread(str(path))
    assert image is not None and image.shape[1] == 640
    assert (image < 250).any(), "the chart should not be blank"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    commands_bench.register(parser.add_subparsers())
    return parser.parse_args(argv)


def test_bench_arguments_parse() -> None:
    args = parse(
        [
            "bench",
            "--json",
            "--size",
            "1920x1080",
            "--faces",
            "8",
            "--threads",
            "2",
            "--frames",
            "50",
            "--chart",
            "c.png",
        ]
    )
    assert args.size == (1920, 1080) and args.faces == 8 and args.threads == 2 and args.json
    assert args.handler is commands_bench.cmd_bench
    assert parse(["models", "status"]).handler is commands_bench.cmd_models_status


@pytest.mark.parametrize(
    "argv", [["bench", "--size", "1280"], ["bench", "--size", "4x4"], ["bench", "--threads", "0"], ["models"]]
)
def test_bad_bench_arguments_are_usage_errors(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as info:
        parse(argv)
    assert info.value.code == 2


def test_bench_command_end_to_end_on_the_selfie_clip(selfie_mp4, capsys) -> None:
    """The real pipeline (whatever detector is installed) for a few frames."""
    args = parse(
        [
            "bench",
            "--json",
            "--source",
            str(selfie_mp4),
            "--frames",
            "4",
            "--warmup",
            "1",
            "--size",
            "640x360",
        ]
    )
    assert commands_bench.cmd_bench(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) >= REQUIRED_JSON_KEYS
    assert data["frames"] == 4 and data["failed_frames"] == 0


def test_bench_command_with_synthetic_faces(selfie_mp4, capsys) -> None:
    from emojicam.blazeface import find_blazeface_model

    if find_blazeface_model() is None:
        pytest.skip("BlazeFace model not installed (run 'emojicam models install')")
    args = parse(
        [
            "bench",
            "--json",
            "--source",
            str(selfie_mp4),
            "--faces",
            "4",
            "--frames",
            "3",
            "--warmup",
            "3",
            "--detector",
            "blazeface",
        ]
    )
    assert commands_bench.cmd_bench(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["faces_per_frame"] >= 3, "most pasted faces should be found"


def test_faces_too_small_to_find_are_said_to_be(selfie_mp4, capsys, caplog) -> None:
    """64 faces in a 64x36 frame are 1 px each: the run measured no faces at all
    and said nothing about it."""
    from emojicam.blazeface import find_blazeface_model

    if find_blazeface_model() is None:
        pytest.skip("BlazeFace model not installed (run 'emojicam models install')")
    args = parse(["bench", "--json", "--source", str(selfie_mp4), "--faces", "64", "--size", "64x36",
                  "--frames", "2", "--warmup", "0", "--detector", "blazeface"])
    with caplog.at_level("WARNING", logger="emojicam.commands_bench"):
        commands_bench.cmd_bench(args)
    assert json.loads(capsys.readouterr().out)["faces_per_frame"] < 32
    assert any("too small for the detector" in r.getMessage() for r in caplog.records)


def test_commands_plug_into_the_cli(tmp_path, monkeypatch, capsys) -> None:
    from emojicam import cli, models_install

    modules = tuple(dict.fromkeys((*cli.COMMAND_MODULES, "emojicam.commands_bench")))
    monkeypatch.setattr(cli, "COMMAND_MODULES", modules)
    monkeypatch.setattr(models_install, "user_models_dir", lambda: tmp_path)
    assert cli.main(["models", "status"]) == 1
    assert "missing" in capsys.readouterr().out
    assert cli.main(["bench", "--source", str(tmp_path / "none.mp4"), "--frames", "1"]) == 2
    assert "none.mp4: no such file" in capsys.readouterr().err


@pytest.mark.parametrize("threads", [1, 2])
def test_bench_pipeline_honours_full_range_at_any_thread_count(threads: int) -> None:
    import dataclasses

    from emojicam.blazeface import find_blazeface_model
    from emojicam.config import Config, DetectorConfig

    if find_blazeface_model() is None:
        pytest.skip("BlazeFace model not installed (run 'emojicam models install')")
    config = dataclasses.replace(Config(), detector=DetectorConfig(full_range=False))
    pipeline, name = bench.build_bench_pipeline(config, threads)
    assert name == "BlazeFaceDetector" and pipeline.detector.full_range is None


def test_a_chart_path_that_cannot_work_is_refused_before_the_run(tmp_path, monkeypatch) -> None:
    """--chart x.txt once failed with a traceback after the whole benchmark had run."""
    from emojicam.cli import build_parser
    from emojicam.errors import EmojiCamError

    monkeypatch.setattr(bench, "run", lambda *a: pytest.fail("the benchmark ran"))
    for chart, message in ((tmp_path / "chart.txt", "give a .png"), (tmp_path, "is a folder")):
        args = build_parser().parse_args(["bench", "--frames", "1", "--chart", str(chart)])
        with pytest.raises(EmojiCamError, match=message):
            args.handler(args)


def test_an_image_is_a_bench_source_too(tmp_path) -> None:
    """open_video rewound after its check by seeking, which an image cannot do:
    'bench --source face.jpg' said no frames could be decoded."""
    import cv2
    import numpy as np

    image = tmp_path / "face.jpg"
    cv2.imwrite(str(image), np.full((90, 160, 3), 100, np.uint8))
    frames = bench.looped_video_frames(image, (320, 180))
    assert [next(frames)[0].shape for _ in range(3)] == [(180, 320, 3)] * 3


def test_synthetic_frames_are_not_all_held_raw_at_once(tmp_path: Path) -> None:
    """``rss_mb`` is the process's peak, which the daemon's figures are read
    from. Building the 30 synthetic frames used to hold all of them decoded
    (30 x 2.6 MB at 1280x720) before encoding any, so the peak of a
    ``--faces 1`` run was the bench's own scaffolding: 216 MB against a
    current RSS of 165 to 180 MB while the pipeline ran."""
    import tracemalloc

    video = write_test_video(tmp_path / "clip.avi", n_frames=40, size_wh=(320, 240))

    class FacesInFirstCalls(FakeDetector):
        def detect(self, image_bgr):
            self.calls += 1
            return [make_box(100, 60, 80, 80)] if self.calls <= 3 else []

    raw_mb = 1280 * 720 * 3 / 2**20
    options = bench.BenchOptions(source=video, size_wh=(1280, 720), faces=1)
    tracemalloc.start()
    try:
        stream = bench.frame_stream(options, FacesInFirstCalls())
        peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    assert next(stream)[0].shape == (720, 1280, 3)
    assert peak_mb < 8 * raw_mb, f"building the synthetic frames peaked at {peak_mb:.0f} MB"
