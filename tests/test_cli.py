"""End-to-end tests of the ``emojicam`` command, run as a subprocess from a
temporary working directory (so an installed package must find its model,
emoji and config without the source tree)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from emojicam.config import DetectorConfig
from emojicam.detect import create_detector

REPO = Path(__file__).resolve().parents[1]


def emojicam_cmd() -> list[str]:
    script = Path(sys.executable).with_name("emojicam")
    return [str(script)] if script.exists() else [sys.executable, "-m", "emojicam"]


def run_cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if not Path(sys.executable).with_name("emojicam").exists():  # source tree run
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["XDG_CONFIG_HOME"] = str(cwd / "xdg-config")  # no user config leaks in
    return subprocess.run([*emojicam_cmd(), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_version_and_help(tmp_path):
    out = run_cli("--version", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.startswith("emojicam ")
    for sub in ("process", "classify"):
        helped = run_cli(sub, "--help", cwd=tmp_path)
        assert helped.returncode == 0 and "usage: emojicam" in helped.stdout


@pytest.mark.parametrize(
    ("make_input", "message"),
    [
        (lambda d: d / "missing.mp4", "missing.mp4: no such file"),
        (lambda d: (d / "bad.mp4").write_text("not a video") and d / "bad.mp4", "not a readable video"),
        (lambda d: (d / "bad.png").write_text("not an image") and d / "bad.png", "not a readable image"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, make_input, message):
    src = make_input(tmp_path)
    out_name = "o.png" if str(src).endswith(".png") else "o.mp4"
    out = run_cli("process", str(src), "-o", str(tmp_path / out_name), cwd=tmp_path)
    assert out.returncode != 0
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0, out.stderr


def test_bad_config_is_one_clear_line_and_debug_shows_traceback(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("smoothing:\n  min_hold_s: soon\n")
    img = tmp_path / "in.png"
    cv2.imwrite(str(img), np.zeros((64, 64, 3), np.uint8))
    out = run_cli("--config", str(cfg), "process", str(img), "-o", str(tmp_path / "o.png"), cwd=tmp_path)
    assert out.returncode == 2
    assert "c.yaml: smoothing.min_hold_s: expected a number from 0 to 10, got 'soon'" in out.stderr
    assert "Traceback" not in out.stderr
    debug = run_cli("--debug", "--config", str(cfg), "process", str(img), "-o", str(tmp_path / "o.png"),
                    cwd=tmp_path)
    assert "Traceback" in debug.stderr


@pytest.fixture(scope="module")
def processed_selfie(tmp_path_factory, selfie_mp4):
    work = tmp_path_factory.mktemp("e2e")
    out = run_cli("process", str(selfie_mp4), "-o", str(work / "out.mp4"), "--mode", "replace",
                  "--no-progress", cwd=work)
    assert out.returncode == 0, out.stderr
    return work / "out.mp4"


def read_all(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return frames


@pytest.mark.shared_data
@pytest.mark.slow
def test_process_selfie_clip_replace(processed_selfie, selfie_mp4):
    src = cv2.VideoCapture(str(selfie_mp4))
    out = cv2.VideoCapture(str(processed_selfie))
    assert out.get(cv2.CAP_PROP_FRAME_COUNT) == src.get(cv2.CAP_PROP_FRAME_COUNT) == 511
    assert out.get(cv2.CAP_PROP_FPS) == pytest.approx(src.get(cv2.CAP_PROP_FPS), abs=0.01)
    src.release(), out.release()
    inputs, outputs = read_all(selfie_mp4), read_all(processed_selfie)
    assert len(outputs) == 511 and outputs[0].shape == (480, 640, 3)
    # Wherever a face is detected in the input, the output shows emoji there:
    # the box region changed a lot and holds saturated emoji yellow.
    detector = create_detector(DetectorConfig())
    checked = 0
    for i in range(0, 511, 25):
        for box in detector.detect(inputs[i]):
            x, y, w, h = box.xywh
            a = inputs[i][y : y + h, x : x + w].astype(np.int16)
            b = outputs[i][y : y + h, x : x + w]
            assert np.abs(a - b).mean() > 30, f"frame {i}: face region barely changed"
            hsv = cv2.cvtColor(b, cv2.COLOR_BGR2HSV)
            yellow = ((hsv[..., 0] > 15) & (hsv[..., 0] < 35) & (hsv[..., 1] > 150)).mean()
            assert yellow > 0.3, f"frame {i}: only {yellow:.0%} emoji-yellow in the face box"
            checked += 1
    assert checked >= 10


@pytest.mark.shared_data
def test_process_and_classify_image(tmp_path, selfie_mp4):
    cap = cv2.VideoCapture(str(selfie_mp4))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 100)
    ok, frame = cap.read()
    cap.release()
    img = tmp_path / "face.png"
    cv2.imwrite(str(img), frame)
    out = run_cli("classify", str(img), "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout.strip().splitlines()[0])
    assert record["path"] == str(img)
    (face,) = record["faces"]
    assert len(face["box"]) == 4 and face["emotion"] in face["scores"]
    assert list(face["scores"]) == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert sum(face["scores"].values()) == pytest.approx(1.0, abs=0.01)
    for mode in ("replace", "decorate", "label", "off"):
        res = run_cli("process", str(img), "-o", str(tmp_path / f"{mode}.png"), "--mode", mode, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        result = cv2.imread(str(tmp_path / f"{mode}.png"))
        assert result.shape == frame.shape
        changed = np.abs(result.astype(np.int16) - cv2.imread(str(img))).mean()
        assert (changed == 0) == (mode == "off")


def test_classify_reports_a_bad_image_and_goes_on_with_the_rest(tmp_path):
    """It stopped at the first unreadable file: the images after it were never classified."""
    for name in ("a.png", "c.png"):
        cv2.imwrite(str(tmp_path / name), np.full((60, 80, 3), 128, np.uint8))
    (tmp_path / "b.png").write_bytes(b"")
    out = run_cli("classify", "a.png", "b.png", "c.png", "--json", cwd=tmp_path)
    assert out.returncode == 2
    records = [json.loads(line) for line in out.stdout.strip().splitlines()]
    assert [r["path"] for r in records] == ["a.png", "b.png", "c.png"]
    assert "not a readable image" in records[1]["error"] and records[2]["faces"] == []
    out = run_cli("classify", "a.png", "b.png", "c.png", cwd=tmp_path)
    assert out.returncode == 2 and "c.png: 0 face(s)" in out.stdout and "b.png" in out.stderr


def test_a_cut_jpeg_or_a_folder_is_refused_not_processed(tmp_path):
    """OpenCV decodes a cut JPEG as far as it goes and fills the rest with grey:
    'process' wrote a mostly grey photo and 'classify' said 0 faces, both exit 0."""
    from emojicam import files
    from emojicam.errors import InputError
    from tests.factories import make_image

    whole = tmp_path / "whole.jpg"
    cv2.imwrite(str(whole), make_image((320, 240)))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole.read_bytes()[:3000])
    assert files.read_image(whole).shape == (240, 320, 3)
    with pytest.raises(InputError, match="cut short or damaged"):
        files.read_image(cut)
    with pytest.raises(InputError, match="is a folder"):
        files.read_image(tmp_path)
    assert files.is_image(Path("photo.jfif")) and files.is_image(Path("scan.PGM"))


def test_sigterm_during_process_keeps_the_old_output_and_leaves_no_part_file(tmp_path, selfie_mp4):
    import signal
    import time

    dst = tmp_path / "out.mp4"
    dst.write_bytes(b"last week's result")
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "xdg-config"))
    if not Path(sys.executable).with_name("emojicam").exists():  # source tree run
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen([*emojicam_cmd(), "process", str(selfie_mp4), "-o", str(dst), "--no-progress"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    part = tmp_path / ".out.emojicam-part.mp4"
    deadline = time.monotonic() + 60
    while not part.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert part.exists(), proc.communicate()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM
    assert dst.read_bytes() == b"last week's result"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("xdg")) == ["out.mp4"]


def test_process_works_from_another_directory_with_image(tmp_path):
    elsewhere = tmp_path / "somewhere"
    elsewhere.mkdir()
    img = elsewhere / "blank.jpg"
    cv2.imwrite(str(img), np.full((120, 160, 3), 128, np.uint8))
    out = run_cli("process", "blank.jpg", "-o", "blank_out.jpg", cwd=elsewhere)
    assert out.returncode == 0, out.stderr
    assert "0 face(s)" in out.stdout
    assert (elsewhere / "blank_out.jpg").exists()
    shutil.rmtree(elsewhere)


def test_process_in_replace_mode_says_when_the_haar_fallback_ran(tmp_path):
    """A damaged or missing BlazeFace install falls back to Haar, which misses
    turned faces: the written file may show faces, so the result line says so."""
    cv2.imwrite(str(tmp_path / "blank.jpg"), np.full((120, 160, 3), 128, np.uint8))
    (tmp_path / "haar.yaml").write_text("detector: {backend: haar}\n")
    out = run_cli("--config", "haar.yaml", "process", "blank.jpg", "-o", "out.jpg", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Haar face detector: turned faces may show" in out.stderr
    out = run_cli("--config", "haar.yaml", "process", "blank.jpg", "-o", "out.jpg", "--mode", "decorate",
                  cwd=tmp_path)
    assert "turned faces may show" not in out.stderr


def test_process_refuses_to_write_over_its_input_video(tmp_path):
    from tests.factories import write_test_video

    src = write_test_video(tmp_path / "clip.avi", n_frames=10)
    before = src.read_bytes()
    out = run_cli("process", str(src), "-o", str(tmp_path / "." / "clip.avi"), "--mode", "off", cwd=tmp_path)
    assert out.returncode != 0 and "this is the input" in out.stderr, out.stderr
    assert src.read_bytes() == before  # untouched


def test_process_refuses_a_second_name_for_its_input_video(tmp_path):
    """A hard link (or, on a case-insensitive disk, another letter case) got past
    the path comparison, and the writer emptied the input before reading it."""
    from emojicam import files
    from emojicam.errors import InputError
    from tests.factories import make_fake_pipeline, write_test_video

    src = write_test_video(tmp_path / "clip.avi", n_frames=10)
    before = src.read_bytes()
    other = tmp_path / "same.avi"
    os.link(src, other)
    with pytest.raises(InputError, match="this is the input"):
        files.process_video(make_fake_pipeline(), src, other, progress=False)
    assert src.read_bytes() == before


def test_a_failed_video_run_leaves_the_old_output_as_it_was(tmp_path, monkeypatch):
    """The video is written beside the output and moved onto it when complete."""
    from emojicam import files
    from tests.factories import make_fake_pipeline, write_test_video

    src = write_test_video(tmp_path / "clip.avi", n_frames=10)
    dst = tmp_path / "out.avi"
    dst.write_bytes(b"last week's result")

    class Interrupted(Exception):
        pass

    real_frames = files.video_frames

    def frames_then_interrupt(cap, fps):
        yield from list(real_frames(cap, fps))[:3]
        raise Interrupted  # Ctrl+C, a full disk, a crash

    monkeypatch.setattr(files, "video_frames", frames_then_interrupt)
    with pytest.raises(Interrupted):
        files.process_video(make_fake_pipeline(), src, dst, progress=False)
    assert dst.read_bytes() == b"last week's result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi", "out.avi"]  # no part file left
    monkeypatch.undo()
    assert files.process_video(make_fake_pipeline(), src, dst, progress=False) == 10
    cap, info = files.open_video(dst)
    cap.release()
    assert info.frame_count == 10


def test_process_of_a_video_that_yields_no_frame_is_an_error(tmp_path, monkeypatch):
    """Zero frames written is a failure, not "done": nothing is left behind."""
    from emojicam import files
    from emojicam.errors import InputError
    from tests.factories import make_fake_pipeline, write_test_video

    src = write_test_video(tmp_path / "clip.avi", n_frames=10)
    dst = tmp_path / "out.avi"
    monkeypatch.setattr(files, "video_frames", lambda cap, fps: iter(()))  # decoding stops at once
    with pytest.raises(InputError, match="no frame could be read"):
        files.process_video(make_fake_pipeline(), src, dst, progress=False)
    assert not dst.exists()


def test_process_never_writes_an_image_over_its_input_or_into_a_folder(tmp_path):
    """An image given as its own output was overwritten with the emoji version;
    a folder as the output of a video failed only after the whole video, with a
    traceback and a part file left behind."""
    import cv2

    from emojicam import files
    from emojicam.errors import InputError
    from tests.factories import make_fake_pipeline, make_image, write_test_video

    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), make_image((64, 48)))
    before = photo.read_bytes()
    with pytest.raises(InputError, match="this is the input"):
        files.process_image(make_fake_pipeline(), photo, tmp_path / "." / "photo.png")
    assert photo.read_bytes() == before
    folder = tmp_path / "out.avi"
    folder.mkdir()
    with pytest.raises(InputError, match="is a folder"):
        files.process_video(make_fake_pipeline(), write_test_video(tmp_path / "c.avi", n_frames=5), folder,
                            progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.avi", "out.avi", "photo.png"]


def test_a_video_that_could_not_be_written_whole_keeps_the_old_output(tmp_path, monkeypatch):
    """VideoWriter does not report a failed write (a full disk): the unplayable
    file once replaced the old output, and the command said it had succeeded."""
    import cv2

    from emojicam import files
    from emojicam.errors import InputError
    from tests.factories import make_fake_pipeline, write_test_video

    src = write_test_video(tmp_path / "clip.avi", n_frames=10)
    dst = tmp_path / "out.avi"
    dst.write_bytes(b"last week's result")

    class FullDisk:  # what a writer on a full disk amounts to: a file that is cut short
        def __init__(self, path, *args) -> None:
            self.path = path

        def isOpened(self) -> bool:
            return True

        def write(self, image) -> None:
            pass

        def release(self) -> None:
            with open(self.path, "wb") as f:
                f.write(b"RIFF\x00\x10\x00\x00AVI LIST")

    monkeypatch.setattr(cv2, "VideoWriter", type("W", (FullDisk,), {"fourcc": staticmethod(lambda *c: 0)}))
    with pytest.raises(InputError, match="could not be written whole"):
        files.process_video(make_fake_pipeline(), src, dst, progress=False)
    assert dst.read_bytes() == b"last week's result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi", "out.avi"]


def test_a_cut_video_is_processed_and_the_missing_frames_are_reported(tmp_path, monkeypatch, caplog):
    from emojicam import files
    from tests.factories import make_fake_pipeline, write_test_video

    src = write_test_video(tmp_path / "clip.avi", n_frames=10)
    real_frames = files.video_frames
    monkeypatch.setattr(files, "video_frames", lambda cap, fps: iter(list(real_frames(cap, fps))[:6]))
    with caplog.at_level("WARNING", logger="emojicam.files"):
        assert files.process_video(make_fake_pipeline(), src, tmp_path / "out.avi", progress=False) == 6
    assert any("only 6 of its 10 frames" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "c.yaml", "--debug", "doctor"],
        ["doctor", "--config", "c.yaml", "--debug"],
        ["--debug", "models", "status", "--config", "c.yaml"],
        ["run", "--no-tray", "--debug", "--config", "c.yaml"],
        ["ctl", "mode", "label", "--debug", "--config", "c.yaml"],
        ["process", "in.mp4", "-o", "out.mp4", "--config", "c.yaml", "--debug"],
        ["autostart", "enable", "--config", "c.yaml", "--debug"],
    ],
)
def test_config_and_debug_go_before_or_after_the_command(argv):
    """The README: every command accepts --config PATH and --debug."""
    from emojicam.cli import build_parser

    args = build_parser().parse_args(argv)
    assert args.config == Path("c.yaml") and args.debug is True
    assert build_parser().parse_args([a for a in argv if a != "--debug"]).debug is False

def test_images_under_a_non_ascii_folder_are_read_and_written(tmp_path: Path, monkeypatch) -> None:
    """OpenCV on Windows opens files by their ANSI name: cv2.imread returns None
    and cv2.imwrite False for a path such as C:\\Users\\José\\photo.jpg (the
    user's own folder), so 'emojicam process' called a good photo unreadable."""
    from emojicam import files
    from tests.factories import make_fake_pipeline

    real_imread, real_imwrite = cv2.imread, cv2.imwrite

    def ansi_only(real, failed):
        def call(path, *args):
            return failed if not str(path).isascii() else real(path, *args)
        return call

    monkeypatch.setattr(cv2, "imread", ansi_only(real_imread, None))
    monkeypatch.setattr(cv2, "imwrite", ansi_only(real_imwrite, False))
    folder = tmp_path / "José"
    folder.mkdir()
    src = folder / "photo.png"
    assert real_imwrite(str(src), np.full((48, 64, 3), 90, np.uint8))
    assert files.read_image(src).shape == (48, 64, 3)
    files.process_image(make_fake_pipeline(), src, folder / "out.JPG")
    assert real_imread(str(folder / "out.JPG")).shape == (48, 64, 3)
    assert sorted(p.name for p in folder.iterdir()) == ["out.JPG", "photo.png"]
    (folder / "empty.png").write_bytes(b"")
    with pytest.raises(files.InputError, match="not a readable image"):
        files.read_image(folder / "empty.png")


@pytest.mark.parametrize("claimed_fps", [1000.0, 0.5])
def test_a_video_claiming_an_implausible_frame_rate_is_taken_at_30_fps(
        tmp_path: Path, caplog, claimed_fps) -> None:
    """OpenCV reports 1000 fps for a variable-rate WebM (a browser's recording):
    taken as is, 'process' froze the smoothing and the hold of a lost face (a
    second of video was 1 ms) and wrote an output that played 33 times too fast."""
    from emojicam import files
    from tests.factories import make_fake_pipeline, write_test_video

    src = write_test_video(tmp_path / "in.avi", n_frames=4, fps=claimed_fps)
    cap, info = files.open_video(src)
    stamps = [f.timestamp_s for f in files.video_frames(cap, info.fps)]
    cap.release()
    assert info.fps == 30.0 and stamps == pytest.approx([0, 1 / 30, 2 / 30, 3 / 30])
    assert "implausible; taking 30 fps" in caplog.text
    dst = tmp_path / "out.avi"
    assert files.process_video(make_fake_pipeline(), src, dst, progress=False) == 4
    out = cv2.VideoCapture(str(dst))
    assert out.get(cv2.CAP_PROP_FPS) == pytest.approx(30.0)
    out.release()


def test_a_photo_over_pillows_size_limit_is_read_not_a_traceback(tmp_path, monkeypatch):
    """Pillow's decompression-bomb guard (about 179 megapixels: a 200 MP phone
    photo) raised out of the cut-file check, a traceback for a photo OpenCV had read."""
    from PIL import Image

    from emojicam.files import read_image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the limit, scaled down to a small file
    path = tmp_path / "big.png"
    cv2.imwrite(str(path), np.full((100, 120, 3), 7, np.uint8))
    image = read_image(path)
    assert image.shape == (100, 120, 3) and int(image[0, 0, 0]) == 7
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # over the warning line only (89 MP)
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_image(path)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_a_video_run_says_once_that_the_output_has_no_sound_and_how_to_add_it(tmp_path):
    """VideoWriter writes the picture only: the input's sound was dropped without a word."""
    import shlex

    from tests.factories import write_test_video

    src = write_test_video(tmp_path / "my clip.avi", n_frames=5)
    dst = tmp_path / "it's out.avi"
    out = run_cli("process", src.name, "-o", dst.name, "--mode", "off", "--no-progress", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("has no sound") == 1, out.stderr
    assert "EmojiCam writes the picture only, and any sound in my clip.avi is not copied" in out.stderr
    command = out.stderr.split("run: ", 1)[1].splitlines()[0]
    assert shlex.split(command) == ["ffmpeg", "-i", "it's out.avi", "-i", "my clip.avi", "-map", "0:v",
                                    "-map", "1:a?", "-c:v", "copy", "it's out-with-sound.avi"]
    cv2.imwrite(str(tmp_path / "photo.png"), np.full((48, 64, 3), 90, np.uint8))
    out = run_cli("process", "photo.png", "-o", "out.png", "--mode", "off", cwd=tmp_path)
    assert out.returncode == 0 and "sound" not in out.stderr, out.stderr  # an image has none to lose


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])  # alpha, grey and alpha, a transparent palette colour
def test_a_transparent_png_is_flattened_onto_white_and_the_user_is_told(tmp_path, caplog, mode):
    """OpenCV's colour reading drops the alpha channel and keeps whatever colour
    the transparent pixels hold (black here): a sticker came out on black, unannounced."""
    from PIL import Image

    from emojicam import files
    from tests.factories import make_fake_pipeline, make_rgba_art, write_png

    src = write_png(tmp_path / "sticker.png", make_rgba_art(64, hidden_rgb=(0, 0, 0)), mode)
    with Image.open(src) as im:  # Pillow's own compositing onto white, as the reference
        white = Image.new("RGBA", im.size, "white")
        expected_rgb = np.asarray(Image.alpha_composite(white, im.convert("RGBA")).convert("RGB"))
    with caplog.at_level("WARNING", logger="emojicam.files"):
        files.process_image(make_fake_pipeline(boxes=[]), src, tmp_path / "out.png")
    out_rgb = cv2.imread(str(tmp_path / "out.png"))[..., ::-1]
    assert int(np.abs(out_rgb.astype(int) - expected_rgb).max()) <= 1
    assert (out_rgb[0, 0] == 255).all()  # a transparent corner
    assert [r.getMessage() for r in caplog.records] == [
        f"{src}: has transparent parts; EmojiCam keeps no transparency, so they are made white"]


def test_16_bit_pngs_are_scaled_to_8_bits_with_or_without_alpha(tmp_path, caplog):
    """A 16-bit level v is v / 257 in 8 bits (65535 is 255, not clipped; 257 is 1,
    not 0), for an opaque picture (OpenCV's reading) and a transparent one alike."""
    from emojicam.files import read_image

    levels = np.array([0, 257, 128 * 257, 200 * 257, 65535], np.uint16)
    bgr16 = np.stack([levels, levels[::-1], levels], axis=-1)[None].repeat(3, axis=0)
    cv2.imwrite(str(tmp_path / "rgb16.png"), bgr16)
    expected = np.rint(bgr16 / 257).astype(np.uint8)
    assert np.array_equal(read_image(tmp_path / "rgb16.png"), expected)
    alpha = np.full(bgr16.shape[:2] + (1,), 65535, np.uint16)
    alpha[0, 0] = 0  # one transparent pixel: made white, the rest as in the opaque picture
    cv2.imwrite(str(tmp_path / "rgba16.png"), np.concatenate([bgr16, alpha], axis=-1))
    expected[0, 0] = 255
    assert np.array_equal(read_image(tmp_path / "rgba16.png"), expected)
    assert "made white" in caplog.text


def test_a_transparent_photo_keeps_its_exif_rotation(tmp_path):
    """The flattening read the alpha channel without the EXIF orientation that
    OpenCV's colour reading applies: a turned phone picture came out unturned
    (found by the second read)."""
    from PIL import Image

    from emojicam.files import read_image

    rgba = np.zeros((100, 200, 4), np.uint8)  # 200 wide, 100 high
    rgba[..., :3], rgba[..., 3] = (0, 0, 255), 255  # opaque blue...
    rgba[:20, :40, 3] = 0  # ...but the top-left corner is transparent
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to show"
    Image.fromarray(rgba, "RGBA").save(tmp_path / "turned.png", exif=exif)
    image = read_image(tmp_path / "turned.png")
    assert image.shape == (200, 100, 3)  # turned, as OpenCV turns the opaque picture
    assert (image[:40, -20:] == 255).all()  # the transparent corner, now top right: white
    assert (image[100, 50] == (255, 0, 0)).all()  # blue (BGR) elsewhere
