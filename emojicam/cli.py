"""Command line: ``emojicam [--config PATH] [--debug] COMMAND ...``.

Wiring and logging setup only; the work happens in the modules it calls.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
from pathlib import Path

from emojicam import __version__
from emojicam.config import MODES, load_config
from emojicam.errors import EmojiCamError, InputError

log = logging.getLogger("emojicam")

# Modules that add their own subcommands with ``register(subparsers)``.
COMMAND_MODULES: tuple[str, ...] = ("emojicam.commands_daemon", "emojicam.commands_bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emojicam",
        description="Replace or decorate faces with the emoji of their expression, "
        "live as a virtual camera or file to file.",
        epilog="Run 'emojicam COMMAND --help' for each command's options.",
    )
    parser.add_argument("--version", action="version", version=f"emojicam {__version__}")
    parser.add_argument("--config", type=Path, metavar="PATH",
                        help="settings file; overrides the user's and the default config.yaml")
    parser.add_argument("--debug", action="store_true", help="verbose logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("process", help="turn a video or photo into one with emoji faces",
                       description="Process a video or an image file. The output keeps the "
                       "input's frame count, size and frame rate; a video's sound is not copied "
                       "(the command to add it back is printed at the end).")
    p.add_argument("input", type=Path, help="video (mp4, avi, ...) or image (png, jpg, ...)")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="output file of the same kind as INPUT (.mp4/.avi or .png/.jpg)")
    p.add_argument("--mode", choices=MODES, help="override the configured mode")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_process)

    p = sub.add_parser("classify", help="print each face's expression in images",
                       description="Detect faces in images and print box, top emotion and all "
                       "7 probabilities for each.")
    p.add_argument("images", type=Path, nargs="+", metavar="IMAGE")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(handler=cmd_classify)

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    _accept_common_options(sub)
    return parser


def _accept_common_options(sub: argparse._SubParsersAction) -> None:
    """Let ``--config`` and ``--debug`` follow the command as well
    (``emojicam doctor --config x.yaml``, ``emojicam models status --debug``),
    at every level of subcommands. ``SUPPRESS``: given before the command,
    the value is not overwritten by the subcommand's default. (argparse has no
    public way to walk its subparsers, hence ``_actions``.)"""
    for p in sub.choices.values():
        known = {option for action in p._actions for option in action.option_strings}
        if "--config" not in known:
            p.add_argument("--config", type=Path, metavar="PATH", default=argparse.SUPPRESS,
                           help="settings file; overrides the user's and the default config.yaml")
        if "--debug" not in known:
            p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                           help="verbose logging and full tracebacks")
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                _accept_common_options(action)


def setup_logging(debug: bool) -> None:
    if not debug:  # FFmpeg's own messages ("moov atom not found") duplicate ours
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def cmd_process(args: argparse.Namespace) -> int:
    from emojicam.detect import privacy_warning
    from emojicam.files import is_image, no_sound_note, process_image, process_video
    from emojicam.pipeline import build_pipeline

    config = load_config(args.config)
    if args.mode:
        config = config.with_mode(args.mode)
    if not args.input.exists():
        raise EmojiCamError(f"{args.input}: no such file")
    if is_image(args.input) != is_image(args.output):
        raise EmojiCamError(f"{args.output}: output must be the same kind (image or video) as {args.input}")
    pipeline = build_pipeline(config)
    # SIGTERM ends the run like Ctrl-C does: the part file is removed, the old output kept.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if is_image(args.input):
        results = process_image(pipeline, args.input, args.output)
        print(f"{args.output}: {len(results)} face(s), mode {config.mode}")
    else:
        n = process_video(pipeline, args.input, args.output, progress=not args.no_progress)
        print(f"{args.output}: {n} frames, mode {config.mode}")
        print(f"emojicam: {no_sound_note(args.input, args.output)}", file=sys.stderr)
    warning = privacy_warning(pipeline.detector)
    if warning and config.mode == "replace":  # the output may show faces: say so in the result, too
        print(f"emojicam: {warning}", file=sys.stderr)
    return 0


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def cmd_classify(args: argparse.Namespace) -> int:
    from emojicam.classify import TFLiteClassifier
    from emojicam.detect import create_detector, crop_margins_for
    from emojicam.files import read_image

    config = load_config(args.config)
    detector = create_detector(config.detector)
    classifier = TFLiteClassifier.create(config.classifier, crop_margins=crop_margins_for(detector))
    failed = 0
    for path in args.images:
        try:
            image = read_image(path)
        except InputError as exc:  # reported, and the other images are still classified
            failed += 1
            if args.json:
                print(json.dumps({"path": str(path), "error": str(exc)}))
            else:
                print(f"emojicam: error: {exc}", file=sys.stderr)
            continue
        boxes = detector.detect(image)
        scores = classifier.classify(image, boxes)
        if args.json:
            faces = [{"box": list(b.xywh), "emotion": s.top.value, "scores": s.as_dict()}
                     for b, s in zip(boxes, scores, strict=True)]
            print(json.dumps({"path": str(path), "faces": faces}))
            continue
        print(f"{path}: {len(boxes)} face(s)")
        for b, s in zip(boxes, scores, strict=True):
            probs = "  ".join(f"{k} {v:.2f}" for k, v in s.as_dict().items())
            print(f"  box {list(b.xywh)}: {s.top.value}  ({probs})")
    return 2 if failed else 0  # as for any other input error (main)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.debug)
    handler = getattr(args, "handler", None)
    if handler is None:
        default = _default_command()
        if default is None:
            parser.print_help()
            return 0
        handler = default
    try:
        return int(handler(args))
    except EmojiCamError as exc:
        if args.debug:
            raise
        print(f"emojicam: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _default_command():  # the daemon, once its module is registered
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        if hasattr(module, "default_command"):
            return module.default_command
    return None
