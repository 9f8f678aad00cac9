"""Soak: thousands of frames through the full engine, watching for leaks.

The real ``engine.Engine`` with the real pipeline (``build_pipeline``: the
configured detector, tracker, classifier, smoother, compositor) reads a
synthetic camera in which a real face (the selfie clip's frame 100) comes and
goes and moves about, and writes to a sink that records when each frame
left. Every ``--switch-every`` processed frames the mode changes through the
real control socket (replace -> decorate -> label -> off -> replace); every
``--pause-every`` frames the daemon is paused (the camera is released) and
resumed (it is reopened).

Reported: resident memory (RSS), thread count and open file descriptors at
start (before the engine), after warm-up, every ``--report-every`` frames and
at the end (after ``close()``); pacing of the sink (intervals between frames
sent: mean, median, 99th percentile, longest, share late by more than half a
period) and processing rate.

    python benchmarks/soak.py [--frames 10000] [--size 640x480] [--source-fps 30] [--sink-fps 30] [--json]

Without ../shared (no face picture) the detector is wrapped to report a box
that comes and goes, and the rest of the pipeline runs for real.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emojicam import control, engine  # noqa: E402
from emojicam.config import MODES, CameraConfig, Config, SinkConfig, load_config  # noqa: E402
from emojicam.pipeline import Pipeline, build_pipeline, reconfigure  # noqa: E402
from emojicam.types import FaceBox  # noqa: E402
from tests.factories import SELFIE_MP4, make_scene, open_fd_count, paste_face, rss_bytes  # noqa: E402

FACE_PERIOD = 150  # frames: a face is in view for 90, then gone for 60


class FrameMaker:
    """Camera frames made fresh on every read (a real camera hands over a new
    buffer each time): a face comes and goes and moves about. ``real_face``
    is False without ../shared (no face picture: the detector gets help)."""

    def __init__(self, size_wh: tuple[int, int], seed: int = 0, loop_frames: int = 300) -> None:
        self.size_wh, self.loop_frames = size_wh, loop_frames
        self.background = make_scene(size_wh, seed=seed)
        self.face = None
        if SELFIE_MP4.exists():
            from tests.factories import selfie_face_patch

            self.face = selfie_face_patch(SELFIE_MP4)
        self.real_face = self.face is not None

    def __call__(self, i: int) -> np.ndarray:
        w, h = self.size_wh
        if self.face is None or i % FACE_PERIOD >= 90:
            return self.background.copy()
        t = (i % self.loop_frames) / self.loop_frames * 2 * np.pi
        centre = (w * (0.5 + 0.25 * np.sin(t)), h * (0.5 + 0.15 * np.cos(2 * t)))
        image, _ = paste_face(self.background, self.face[0], self.face[1], centre,
                              min(w, h) * (0.3 + 0.1 * np.sin(3 * t)))
        return image


class SyntheticCamera:
    """A ``sources.Source`` delivering ``make_frame(i)`` at ``fps``."""

    description = "synthetic camera"

    def __init__(self, make_frame: FrameMaker, fps: float, counter: list[int]) -> None:
        self.make_frame, self.period_s, self.counter = make_frame, 1.0 / fps, counter
        self._next = 0.0

    def open(self) -> None:
        self._next = time.monotonic()

    def read(self) -> np.ndarray:
        self._next += self.period_s
        delay = self._next - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            self._next = time.monotonic()
        self.counter[0] += 1
        return self.make_frame(self.counter[0])

    def close(self) -> None:
        pass


class TimingSink:
    """Discards frames, paced at ``fps`` like a virtual camera; keeps send times."""

    kind = "null"
    device = None

    def __init__(self, fps: float) -> None:
        self.period_s = 1.0 / fps
        self.times: list[float] = []
        self.shapes: set[tuple[int, ...]] = set()
        self._next = time.monotonic()

    def open(self) -> None:
        self._next = time.monotonic()

    def send(self, image_bgr: np.ndarray) -> None:
        self.times.append(time.monotonic())
        if len(self.shapes) < 8:
            self.shapes.add(image_bgr.shape)

    def pace(self) -> None:
        self._next = max(self._next + self.period_s, time.monotonic() - self.period_s)
        delay = self._next - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def close(self) -> None:
        pass


class ComingAndGoing:
    """Wraps a detector: also reports a box for 90 of every 150 calls (used
    when there is no real face picture, so tracking, classification and
    drawing still see faces come and go)."""

    def __init__(self, real, size_wh: tuple[int, int]) -> None:
        self.real, self.calls = real, 0
        w, h = size_wh
        self.box = FaceBox(w // 3, h // 4, min(w, h) // 3, min(w, h) // 3)

    def detect(self, image_bgr: np.ndarray) -> list[FaceBox]:
        self.calls += 1
        found = list(self.real.detect(image_bgr))
        return found + [self.box] if self.calls % FACE_PERIOD < 90 else found


@dataclass
class Sample:
    frames: int
    seconds: float
    rss_mb: float
    threads: int
    fds: int


@dataclass
class SoakReport:
    frames: int
    seconds: float
    size_wh: tuple[int, int]
    real_face: bool
    start: Sample  # before the engine existed
    warm: Sample  # after the warm-up
    running_end: Sample  # last sample with the engine running
    end: Sample  # after close()
    samples: list[Sample] = field(default_factory=list)
    processed_fps: float = 0.0
    sent: int = 0
    interval_ms: dict[str, float] = field(default_factory=dict)
    late_share: float = 0.0  # sends later than 1.5 periods after the previous one
    mode_switches: int = 0
    pauses: int = 0
    failed_frames: int = 0
    max_faces: int = 0
    close_s: float = 0.0
    leftover_threads: list[str] = field(default_factory=list)

    @property
    def rss_growth_mb(self) -> float:
        return self.running_end.rss_mb - self.warm.rss_mb

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["rss_growth_mb"] = round(self.rss_growth_mb, 1)
        return d


def sample(frames: int, t0: float) -> Sample:
    gc.collect()
    return Sample(
        frames,
        round(time.monotonic() - t0, 1),
        round(rss_bytes() / 2**20, 1),
        threading.active_count(),
        open_fd_count(),
    )


def soak(
    n_frames: int = 10_000,
    size_wh: tuple[int, int] = (640, 480),
    source_fps: float = 30.0,
    sink_fps: float = 30.0,
    warmup_frames: int = 300,
    switch_every: int = 500,
    pause_every: int = 2000,
    report_every: int = 1000,
    config: Config | None = None,
    progress: bool = False,
    timeout_s: float | None = None,
) -> SoakReport:
    """Run the engine until it has processed ``n_frames``; see the module docstring."""
    t0 = time.monotonic()
    start = sample(0, t0)
    frames = FrameMaker(size_wh)
    real_face = frames.real_face
    cfg = config or load_config(use_user_file=False)
    cfg = dataclasses.replace(
        cfg,
        mode="replace",
        camera=CameraConfig(source=0, width=size_wh[0], height=size_wh[1], fps=source_fps),
        sink=SinkConfig(kind="null", fps=sink_fps, on_demand=False),
    )
    counter = [0]
    sink = TimingSink(sink_fps)
    pipelines: list[Pipeline] = []

    def make_pipeline(c: Config) -> Pipeline:
        p = build_pipeline(c)
        if not real_face:
            p.detector = ComingAndGoing(p.detector, size_wh)
        pipelines.append(p)
        return p

    def reconf(p: Pipeline, old: Config, new: Config) -> Pipeline:
        q = reconfigure(p, old, new)
        if q is not p:
            pipelines.append(q)
        return q

    deps = engine.EngineDeps(
        make_pipeline=make_pipeline,
        reconfigure=reconf,
        make_sink=lambda c: sink,
        make_source=lambda c: SyntheticCamera(frames, source_fps, counter),
        watch_readers=None,
    )
    eng = engine.Engine(cfg, deps)
    with tempfile.TemporaryDirectory(prefix="emojicam-soak-") as folder:
        sock = Path(folder) / "control.sock"
        server = control.ControlServer(control.engine_handler(eng), sock)
        eng.start()
        server.start()
        modes = [m for m in MODES if m != "replace"] + ["replace"]
        switches = pauses = max_faces = 0
        next_switch, next_pause, next_report = switch_every, pause_every, report_every
        warm = None
        samples: list[Sample] = []
        processed_t0 = None
        try:
            while True:
                status = eng.status()
                done = status.frames_processed
                max_faces = max(max_faces, status.faces)
                if warm is None and done >= warmup_frames:
                    warm = sample(done, t0)
                    samples.append(warm)
                    processed_t0 = (time.monotonic(), done)
                if done >= n_frames:
                    break
                if timeout_s is not None and time.monotonic() - t0 > timeout_s:
                    break
                if done >= next_switch:
                    control.send_request({"cmd": "mode", "mode": modes[switches % len(modes)]}, sock)
                    switches += 1
                    next_switch += switch_every
                if done >= next_pause:
                    control.send_request({"cmd": "pause"}, sock)
                    time.sleep(0.3)
                    control.send_request({"cmd": "resume"}, sock)
                    pauses += 1
                    next_pause += pause_every
                if done >= next_report:
                    samples.append(sample(done, t0))
                    if progress:
                        s = samples[-1]
                        print(
                            f"  {s.frames:6d} frames {s.seconds:7.1f} s  RSS {s.rss_mb:7.1f} MB  "
                            f"threads {s.threads:3d}  fds {s.fds:4d}",
                            flush=True,
                        )
                    next_report += report_every
                time.sleep(0.02)
            running_end = sample(eng.status().frames_processed, t0)
            samples.append(running_end)
            processed = eng.status().frames_processed
        finally:
            server.stop()
            close_s = eng.close(timeout_s=2.0)
    pt, pdone = processed_t0 or (t0, 0)
    elapsed = max(1e-9, running_end.seconds + t0 - pt)
    gaps = np.diff(np.array(sink.times)) * 1000.0 if len(sink.times) > 2 else np.zeros(1)
    period_ms = 1000.0 / sink_fps
    end = sample(processed, t0)
    leftover = [t.name for t in threading.enumerate() if t.name.startswith("emojicam-") and t.is_alive()]
    return SoakReport(
        frames=processed,
        seconds=round(time.monotonic() - t0, 1),
        size_wh=size_wh,
        real_face=real_face,
        start=start,
        warm=warm or running_end,
        running_end=running_end,
        end=end,
        samples=samples,
        processed_fps=round((processed - pdone) / elapsed, 1),
        sent=len(sink.times),
        interval_ms={
            "mean": round(float(gaps.mean()), 2),
            "median": round(float(np.median(gaps)), 2),
            "p99": round(float(np.percentile(gaps, 99)), 2),
            "max": round(float(gaps.max()), 2),
            "stdev": round(float(statistics.pstdev(gaps.tolist())), 2),
        },
        late_share=round(float(np.mean(gaps > 1.5 * period_ms)), 4),
        mode_switches=switches,
        pauses=pauses,
        failed_frames=sum(p.failed_frames for p in pipelines),
        max_faces=max_faces,
        close_s=round(close_s, 3),
        leftover_threads=leftover,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--size", default="640x480", help="camera frame size WxH")
    parser.add_argument("--source-fps", type=float, default=30.0)
    parser.add_argument("--sink-fps", type=float, default=30.0)
    parser.add_argument("--switch-every", type=int, default=500)
    parser.add_argument("--pause-every", type=int, default=2000)
    parser.add_argument("--report-every", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    w, h = (int(v) for v in args.size.lower().split("x"))
    report = soak(
        args.frames,
        (w, h),
        args.source_fps,
        args.sink_fps,
        switch_every=args.switch_every,
        pause_every=args.pause_every,
        report_every=args.report_every,
        progress=not args.json,
    )
    if args.json:
        print(json.dumps(report.as_dict(), indent=1))
        return 0
    r = report
    print(
        f"{r.frames} frames at {r.size_wh[0]}x{r.size_wh[1]} in {r.seconds} s "
        f"({'real face' if r.real_face else 'injected boxes'}); processed {r.processed_fps} fps; "
        f"{r.sent} sent; {r.mode_switches} mode switches, {r.pauses} pause/resume; "
        f"failed frames {r.failed_frames}; most faces at once {r.max_faces}"
    )
    for name, s in (
        ("start", r.start),
        ("warm", r.warm),
        ("running end", r.running_end),
        ("after close", r.end),
    ):
        print(
            f"  {name:12} RSS {s.rss_mb:7.1f} MB  threads {s.threads:3d}  fds {s.fds:4d}  (frame {s.frames})"
        )
    print(f"  RSS growth warm -> end: {r.rss_growth_mb:+.1f} MB")
    print(
        f"  sink intervals (ms, period {1000 / args.sink_fps:.1f}): {r.interval_ms}; "
        f"late share {r.late_share:.2%}"
    )
    print(f"  close: {r.close_s} s; engine threads left: {r.leftover_threads or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
