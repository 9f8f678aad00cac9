"""``emojicam bench``: how fast is the real pipeline on this machine?

Runs the configured pipeline (the same stages the daemon builds) over frames
from a video, or over synthetic frames with N faces, and reports per-stage
wall times (decode, detect, track, classify, smooth, compose, output
conversion), the pipeline's milliseconds per frame (median and p90), the
frames per second it sustains, the CPU milliseconds it spends per frame
(``time.process_time``, so other processes on the machine do not count), the
faces per frame and the peak resident memory.

"Pipeline" is everything after capture: detect through output conversion.
The daemon hands its BGR frame to pyvirtualcam, which converts it to the
device's pixel format in native code before writing; the "output" stage is a
full-frame colour conversion (BGR -> RGB) standing in for that one.
``decode`` (reading and decoding the source) is shown but not counted, as the
camera does it.

Synthetic frames: face crops found in a source video are pasted in a grid on
a face-free frame of it, moving a little from frame to frame, and stored as
JPEG, so decoding them costs what an MJPG webcam frame costs.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from emojicam.config import Config
from emojicam.errors import InputError
from emojicam.files import open_video
from emojicam.pipeline import Detector, Pipeline
from emojicam.types import Frame

log = logging.getLogger(__name__)

STAGES = ("decode", "detect", "track", "classify", "smooth", "compose", "output")
PIPELINE_STAGES = STAGES[1:]
JPEG_QUALITY = 90


@dataclass(frozen=True)
class BenchOptions:
    source: Path | None = None  # a video or image; None: the selfie clip beside a checkout
    size_wh: tuple[int, int] = (1280, 720)
    faces: int | None = None  # synthetic frames with this many faces
    threads: int = 1
    frames: int = 300
    warmup_frames: int = 10


@dataclass
class BenchResult:
    options: BenchOptions
    stage_ms_median: dict[str, float]
    stage_ms_mean: dict[str, float]
    pipeline_ms_median: float
    pipeline_ms_p90: float
    pipeline_ms_mean: float
    fps: float  # 1000 / mean pipeline wall ms
    fps_cpu_bound: float  # 1000 / CPU ms per frame: the rate if nothing else competed for the core
    cpu_ms_per_frame: float
    faces_per_frame: float
    rss_mb: float | None  # peak resident set size of the process (None on Windows)
    rss_start_mb: float | None  # current RSS after warm-up (Linux)
    rss_end_mb: float | None  # current RSS at the end (Linux)
    frames: int
    failed_frames: int
    detector: str
    machine: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        opts = out.pop("options")
        opts["source"] = str(opts["source"]) if opts["source"] else None
        opts["size_wh"] = list(opts["size_wh"])
        out["options"] = opts
        return out


# ---------------------------------------------------------------- frames


def default_source() -> Path | None:
    """``../shared/data/video/selfie_outdoor.mp4`` beside a source checkout, if there."""
    p = Path(__file__).resolve().parents[2] / "shared" / "data" / "video" / "selfie_outdoor.mp4"
    return p if p.is_file() else None


def fit_frame(image: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Scale to cover ``size_wh`` keeping the aspect ratio and crop the centre,
    as a webcam of that size would frame the scene (no artificial borders)."""
    w, h = size_wh
    if image.shape[1] == w and image.shape[0] == h:
        return image
    scale = max(w / image.shape[1], h / image.shape[0])
    rw, rh = max(w, round(image.shape[1] * scale)), max(h, round(image.shape[0] * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (rw, rh), interpolation=interp)
    x0, y0 = (rw - w) // 2, (rh - h) // 2
    return np.ascontiguousarray(resized[y0 : y0 + h, x0 : x0 + w])


def looped_video_frames(path: Path, size_wh: tuple[int, int]) -> Iterator[tuple[np.ndarray, float]]:
    """``(frame, decode_s)`` forever, looping the video. ``decode_s`` covers the
    read and the scaling to ``size_wh``."""
    cap, _ = open_video(path)
    got_any = False
    try:
        while True:
            t0 = time.perf_counter()
            ok, image = cap.read()
            if not ok:
                if not got_any:
                    raise InputError(f"{path}: no frames could be decoded")
                cap.release()
                cap, _ = open_video(path)
                continue
            got_any = True
            image = fit_frame(image, size_wh)
            yield image, time.perf_counter() - t0
    finally:
        cap.release()


def jpeg_frames(encoded: list[bytes]) -> Iterator[tuple[np.ndarray, float]]:
    """Decode JPEG frames in a loop, like an MJPG webcam delivers them."""
    for data in itertools.cycle(encoded):
        t0 = time.perf_counter()
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise InputError("a synthetic JPEG frame could not be decoded")
        yield image, time.perf_counter() - t0


# ---------------------------------------------------------------- synthetic faces


def collect_faces(
    path: Path,
    detector: Detector,
    size_wh: tuple[int, int],
    want: int = 8,
    step: int = 15,
    min_side_px: int = 64,
    min_score: float = 0.8,
) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Square face crops (1.6x the detector box, each from a different frame,
    confidently detected and wholly inside it) and a frame with no face at all
    when scaled to ``size_wh`` (the detector is asked three times, so a
    detector that runs its models on a schedule has run them all), to use as
    background."""
    cap, _ = open_video(path)
    crops: list[np.ndarray] = []
    background = None
    index = 0
    try:
        while len(crops) < want or background is None:
            ok, image = cap.read()
            if not ok:
                break
            index += 1
            if (index - 1) % step:
                continue
            boxes = detector.detect(image)
            if background is None and not boxes:
                fitted = fit_frame(image, size_wh)
                if not any(detector.detect(fitted) for _ in range(3)):
                    background = fitted
            for box in boxes[:1]:
                cx, cy = box.center_xy
                side = int(max(box.w, box.h) * 1.6)
                x0, y0 = int(cx - side / 2), int(cy - side / 2)
                inside = x0 >= 0 and y0 >= 0 and x0 + side <= image.shape[1] and y0 + side <= image.shape[0]
                if inside and side >= min_side_px and box.score >= min_score and len(crops) < want:
                    crops.append(image[y0 : y0 + side, x0 : x0 + side].copy())
    finally:
        cap.release()
    return crops, background


def grid_cells(n: int, size_wh: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """``n`` equal cells ``(x, y, w, h)`` filling the frame, as square as possible."""
    w, h = size_wh
    cols = max(1, math.ceil(math.sqrt(n * w / h)))
    rows = math.ceil(n / cols)
    cols = math.ceil(n / rows)
    cw, ch = w // cols, h // rows
    return [((i % cols) * cw, (i // cols) * ch, cw, ch) for i in range(n)]


def synthetic_frames(
    crops: list[np.ndarray],
    background: np.ndarray,
    size_wh: tuple[int, int],
    n_faces: int,
    count: int = 30,
    fill: float = 0.8,
) -> Iterator[np.ndarray]:
    """``count`` frames with ``n_faces`` faces each, drifting a few pixels per
    frame; one at a time, so that a caller that encodes each frame as it comes
    never holds them all decoded (30 frames
    at 1280x720 are 80 MB, which would be the bench's peak RSS, not the
    pipeline's)."""
    if not crops:
        raise InputError("no faces found in the source video to build synthetic frames from")
    base = fit_frame(background, size_wh)
    cells = grid_cells(n_faces, size_wh)
    for k in range(count):
        image = base.copy()
        for i, (x, y, cw, ch) in enumerate(cells):
            side = int(min(cw, ch) * fill)
            face = cv2.resize(crops[i % len(crops)], (side, side), interpolation=cv2.INTER_AREA)
            slack_x, slack_y = cw - side, ch - side
            phase = 2 * math.pi * (k / count + i / max(1, n_faces))
            fx = x + int(slack_x / 2 * (1 + 0.8 * math.sin(phase)))
            fy = y + int(slack_y / 2 * (1 + 0.8 * math.cos(phase)))
            image[fy : fy + side, fx : fx + side] = face
        yield image


def encode_jpeg(frames: Iterable[np.ndarray]) -> list[bytes]:
    out = []
    for image in frames:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise InputError("could not JPEG-encode a synthetic frame")
        out.append(buf.tobytes())
    return out


# ---------------------------------------------------------------- measuring


def current_rss_mb() -> float | None:
    """Resident memory now (Linux ``/proc``), else None."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process (Unix), else None."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def machine_info(threads: int) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "load_avg_1min_at_start": load,
        "python": platform.python_version(),
        "opencv": cv2.__version__,
    }


def measure(
    pipeline: Pipeline,
    frames: Iterator[tuple[np.ndarray, float]],
    options: BenchOptions,
    detector_name: str,
    fps_timestamps: float = 30.0,
    progress: Callable[[int], None] | None = None,
) -> BenchResult:
    """Run ``options.warmup_frames`` + ``options.frames`` frames and summarise."""
    stage_s: dict[str, list[float]] = {s: [] for s in STAGES}
    total_s: list[float] = []
    cpu_s = 0.0
    faces = 0
    rss_start = None
    failed_before = pipeline.failed_frames
    for i in range(options.warmup_frames + options.frames):
        image, decode_s = next(frames)
        if i == options.warmup_frames:
            rss_start = current_rss_mb()
            failed_before = pipeline.failed_frames  # warm-up failures are not of the measured frames
        frame = Frame(image, i, i / fps_timestamps)
        c0, t0 = time.process_time(), time.perf_counter()
        out, results = pipeline.process(frame)
        t1 = time.perf_counter()
        rgb = cv2.cvtColor(out, cv2.COLOR_BGR2RGB)
        t2, c2 = time.perf_counter(), time.process_time()
        del rgb
        if i < options.warmup_frames:
            continue
        times = pipeline.times
        for name, value in (
            ("decode", decode_s),
            ("detect", times.detect),
            ("track", times.track),
            ("classify", times.classify),
            ("smooth", times.smooth),
            ("compose", times.compose),
            ("output", t2 - t1),
        ):
            stage_s[name].append(value)
        total_s.append(t2 - t0)
        cpu_s += c2 - c0
        faces += len(results)
        if progress:
            progress(i - options.warmup_frames + 1)
    n = max(1, options.frames)
    total_ms = np.array(total_s) * 1000.0
    return BenchResult(
        options=options,
        stage_ms_median={s: round(float(np.median(v)) * 1000, 3) for s, v in stage_s.items()},
        stage_ms_mean={s: round(float(np.mean(v)) * 1000, 3) for s, v in stage_s.items()},
        pipeline_ms_median=round(float(np.median(total_ms)), 3),
        pipeline_ms_p90=round(float(np.percentile(total_ms, 90)), 3),
        pipeline_ms_mean=round(float(np.mean(total_ms)), 3),
        fps=round(1000.0 / float(np.mean(total_ms)), 1),
        fps_cpu_bound=round(1000.0 / max(cpu_s * 1000.0 / n, 1e-6), 1),
        cpu_ms_per_frame=round(cpu_s * 1000.0 / n, 3),
        faces_per_frame=round(faces / n, 3),
        rss_mb=None if (peak := peak_rss_mb()) is None else round(peak, 1),
        rss_start_mb=None if rss_start is None else round(rss_start, 1),
        rss_end_mb=None if (end := current_rss_mb()) is None else round(end, 1),
        frames=options.frames,
        failed_frames=pipeline.failed_frames - failed_before,
        detector=detector_name,
        machine=machine_info(options.threads),
    )


# ---------------------------------------------------------------- wiring


def configure_threads(threads: int) -> None:
    """Hold OpenCV to ``threads`` worker threads (its default is all cores)."""
    cv2.setNumThreads(threads)


def build_bench_pipeline(config: Config, threads: int) -> tuple[Pipeline, str]:
    """The daemon's pipeline, with every model on ``threads`` threads."""
    from emojicam.pipeline import build_pipeline

    config = dataclasses.replace(config, classifier=dataclasses.replace(config.classifier, threads=threads),
                                 detector=dataclasses.replace(config.detector, threads=threads))
    pipeline = build_pipeline(config)
    return pipeline, type(pipeline.detector).__name__


def frame_stream(options: BenchOptions, detector: Detector) -> Iterator[tuple[np.ndarray, float]]:
    source = options.source or default_source()
    if source is None:
        raise InputError(
            "no source video: pass --source PATH (the default, "
            "../shared/data/video/selfie_outdoor.mp4, exists only beside a checkout)"
        )
    if options.faces is None:
        return looped_video_frames(Path(source), options.size_wh)
    crops, background = collect_faces(Path(source), detector, options.size_wh, want=max(1, options.faces))
    if background is None:
        background = np.full((options.size_wh[1], options.size_wh[0], 3), 120, np.uint8)
    # Encoded as they are made: only the JPEGs stay (see synthetic_frames).
    encoded = encode_jpeg(synthetic_frames(crops, background, options.size_wh, options.faces))
    return jpeg_frames(encoded)


def run(config: Config, options: BenchOptions) -> BenchResult:
    configure_threads(options.threads)
    pipeline, name = build_bench_pipeline(config, options.threads)
    frames = frame_stream(options, pipeline.detector)
    result = measure(pipeline, frames, options, name)
    if result.failed_frames:
        log.warning("%d frames failed in the pipeline; the timings are not trustworthy", result.failed_frames)
    return result


# ---------------------------------------------------------------- reporting


def format_text(result: BenchResult) -> str:
    o = result.options
    what = f"{o.faces} synthetic face(s)" if o.faces is not None else str(o.source or default_source())
    lines = [
        f"emojicam bench: {what} at {o.size_wh[0]}x{o.size_wh[1]}, {o.threads} thread(s), "
        f"{result.frames} frames, detector {result.detector}",
        f"cpu: {result.machine.get('cpu')} ({result.machine.get('logical_cpus')} logical), "
        f"load {result.machine.get('load_avg_1min_at_start')}",
        "",
        f"{'stage':10s} {'median ms':>10s} {'mean ms':>9s}",
    ]
    for s in STAGES:
        note = "  (not in pipeline)" if s == "decode" else ""
        lines.append(f"{s:10s} {result.stage_ms_median[s]:10.3f} {result.stage_ms_mean[s]:9.3f}{note}")
    lines += [
        "",
        f"pipeline ms/frame: median {result.pipeline_ms_median:.2f}, p90 {result.pipeline_ms_p90:.2f}, "
        f"mean {result.pipeline_ms_mean:.2f}  ->  {result.fps:.1f} fps",
        f"CPU ms/frame: {result.cpu_ms_per_frame:.2f}  ->  {result.fps_cpu_bound:.1f} fps on an idle core",
        f"faces/frame: {result.faces_per_frame:.2f}",
        ("peak RSS: unknown" if result.rss_mb is None else f"peak RSS: {result.rss_mb:.0f} MB")
        + (
            f" (current {result.rss_start_mb:.0f} -> {result.rss_end_mb:.0f} MB over the run)"
            if result.rss_start_mb is not None and result.rss_end_mb is not None
            else ""
        ),
    ]
    if result.failed_frames:
        lines.append(f"WARNING: {result.failed_frames} frames failed in the pipeline")
    return "\n".join(lines)


def format_json(result: BenchResult) -> str:
    return json.dumps(result.to_dict())


def write_chart(result: BenchResult, path: Path) -> None:
    """A small horizontal bar chart of the median stage times (PNG).

    Drawn with OpenCV, which EmojiCam already needs; matplotlib would be a
    large dependency for one bar chart.
    """
    width, bar_h, left, top = 640, 26, 110, 44
    height = top + bar_h * len(STAGES) + 40
    image = np.full((height, width, 3), 255, np.uint8)
    longest = max(max(result.stage_ms_median.values()), 1e-6)
    scale = (width - left - 90) / longest
    font = cv2.FONT_HERSHEY_SIMPLEX
    o = result.options
    title = (
        f"{o.size_wh[0]}x{o.size_wh[1]}, {'video' if o.faces is None else f'{o.faces} synthetic faces'}, "
        f"{o.threads} thread(s): {result.pipeline_ms_median:.2f} ms/frame, {result.fps:.0f} fps"
    )
    cv2.putText(image, title, (10, 26), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    for i, stage in enumerate(STAGES):
        y = top + i * bar_h
        ms = result.stage_ms_median[stage]
        colour = (170, 170, 170) if stage == "decode" else (200, 120, 40)
        cv2.rectangle(image, (left, y + 4), (left + max(1, int(ms * scale)), y + bar_h - 4), colour, -1)
        cv2.putText(image, stage, (10, y + 18), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(
            image, f"{ms:.2f} ms", (left + int(ms * scale) + 6, y + 18), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA
        )
    cv2.putText(
        image,
        "median per frame; decode (grey) is not part of the pipeline",
        (10, height - 14),
        font,
        0.42,
        (90, 90, 90),
        1,
        cv2.LINE_AA,
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        written = cv2.imwrite(str(path), image)
    except (OSError, cv2.error) as exc:
        raise InputError(f"{path}: could not write the chart ({exc})") from exc
    if not written:
        raise InputError(f"{path}: could not write the chart (is it a .png path in a writable folder?)")
