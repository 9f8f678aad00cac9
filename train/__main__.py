"""``python -m train``: fit, export, eval and plot the expression model.

Examples::

    python -m train fit --data ../shared/data/fer2013.npz --run base-cpu
    python -m train fit --data ../shared/data/fer2013.npz --run deep-next --preset long
        --init-from models/emotion.tflite --epochs 16 --lr 0.004   (one line: a warm restart
        from the shipped file)
    python -m train export --run base-cpu --data ../shared/data/fer2013.npz
    python -m train eval --model models/emotion.tflite --data ../shared/data/fer2013.npz
    python -m train curves --run base-cpu -o docs/model/training_curves.png
    python -m train qat --from-run base-cpu --run base-cpu-qat --epochs 1 --lr 3e-4
        --data ../shared/data/fer2013.npz   (one line)
    python -m train teach --runs deep-a deep-b -o teacher.npz --data ../shared/data/fer2013.npz
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from pathlib import Path

from emojicam.errors import EmojiCamError
from train.data import FerDataError

# What ``pip install '.[train]'`` adds (and Keras and h5py, which TensorFlow brings).
_TRAIN_EXTRA = {"tensorflow", "keras", "h5py", "matplotlib", "tqdm"}

DEFAULT_RUNS = Path(os.environ.get("EMOJICAM_TRAIN_DIR", Path.home() / ".cache" / "emojicam-train"))


def _at_least_one(text: str) -> int:
    """argparse type: a whole number from 1 (the int8 converter needs an image to calibrate on)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: at least 1 image is needed")
    return value


def _run_dir(name: str) -> Path:
    p = Path(name)
    return p if p.is_absolute() or "/" in name else DEFAULT_RUNS / name


def _init_source(name: str) -> Path:
    """``--init-from``: an exported ``.tflite`` as given, else a run folder."""
    return Path(name) if name.endswith(".tflite") else _run_dir(name)


def _init_weights(name: str) -> Path:
    source = _init_source(name)
    return source if source.suffix == ".tflite" else source / "best.weights.h5"


def main(argv: list[str] | None = None) -> int:
    from train.fit import PRESETS, Recipe

    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("fit", help="train or resume a run")
    p.add_argument("--data", type=Path, required=True, help="fer2013.npz or fer2013.csv")
    p.add_argument("--ferplus", type=Path, help="ferplus_votes.npz (for --ferplus-mix)")
    p.add_argument("--teacher", type=Path, help="teacher targets from 'teach' (for --teacher-mix)")
    p.add_argument("--run", required=True, help=f"run name (folder under {DEFAULT_RUNS}) or path")
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--progress", choices=["auto", "bar", "line"], default="auto")
    p.add_argument("--init-from", metavar="RUN|FILE.tflite",
                   help="start from another run's best weights, or from an exported model such as "
                   "models/emotion.tflite (warm restart)")
    for field in dataclasses.fields(Recipe):
        p.add_argument("--" + field.name.replace("_", "-"), type=type(field.default)
                       if field.type != "bool" else lambda s: s.lower() in ("1", "true", "yes"))

    p = sub.add_parser("export", help="export a run's best weights to int8 .tflite")
    p.add_argument("--run", required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path("models"))
    p.add_argument("--weights", default="best.weights.h5")
    p.add_argument("--representative-images", type=_at_least_one, default=1000,
                   help="training images used to calibrate int8 ranges")
    p.add_argument("--min-agreement", type=float, default=0.99,
                   help="parity gate: int8/float top-1 agreement on PrivateTest needed to write the "
                   "model (default 0.99; lower only with a reason recorded in the model card)")

    p = sub.add_parser("eval", help="accuracy, per-class recall, confusion matrix of a .tflite")
    p.add_argument("--model", type=Path, default=Path("models/emotion.tflite"))
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", choices=["public", "private"], default="private")
    p.add_argument("--confusion-png", type=Path)
    p.add_argument("--json", type=Path, help="also write the figures as JSON")

    p = sub.add_parser("qat", help="quantisation-aware fine-tuning of a run (for int8 parity)")
    p.add_argument("--from-run", required=True, help="the trained run to fine-tune")
    p.add_argument("--run", required=True, help="name of the new (QAT) run")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--progress", choices=["auto", "bar", "line"], default="auto")

    p = sub.add_parser("teach", help="an ensemble's predictions on Training, for distillation")
    p.add_argument("--runs", nargs="+", required=True, help="finished runs to average")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("-o", "--output", type=Path, required=True, help="teacher file (.npz) to write")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="soften the averaged distribution (above 1: flatter; default 1)")

    p = sub.add_parser("curves", help="plot a run's training curves")
    p.add_argument("--run", required=True)
    p.add_argument("-o", "--output", type=Path, required=True)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        _dispatch(args)
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in _TRAIN_EXTRA:
            raise
        raise SystemExit(f"python -m train {args.cmd}: {exc.name} is not installed; install the "
                         "training extra with: pip install '.[train]'") from None
    except (FileNotFoundError, FerDataError, EmojiCamError) as exc:
        # A wrong path or file: the message names it and the fix; a traceback adds nothing.
        raise SystemExit(f"python -m train {args.cmd}: {exc}") from None
    return 0


def _dispatch(args: argparse.Namespace) -> None:
    from train.fit import PRESETS, Recipe

    if args.cmd == "fit":
        from train.fit import fit, warm_start_arch

        if args.init_from:
            args.arch = warm_start_arch(_init_source(args.init_from), args.arch)
        overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(Recipe)
                     if getattr(args, f.name) is not None}
        recipe = dataclasses.replace(PRESETS[args.preset], **overrides)
        run_dir = _run_dir(args.run)
        run_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(run_dir / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
        logging.getLogger("train").addHandler(handler)
        init = _init_weights(args.init_from) if args.init_from else None
        fit(args.data, run_dir, recipe, ferplus_votes=args.ferplus, teacher=args.teacher,
            progress=args.progress, init_from=init)
    elif args.cmd == "export":
        from train.export import export

        export(_run_dir(args.run), args.data, args.out, weights=args.weights,
               representative_images=args.representative_images, min_agreement=args.min_agreement)
    elif args.cmd == "eval":
        from train.evaluate import evaluate

        evaluate(args.model, args.data, args.split, args.confusion_png, args.json)
    elif args.cmd == "qat":
        from train.qat import qat_run

        qat_run(_run_dir(args.from_run), args.data, _run_dir(args.run), epochs=args.epochs, lr=args.lr,
                progress=args.progress)
    elif args.cmd == "teach":
        from train.distill import teach

        teach([_run_dir(r) for r in args.runs], args.data, args.output, args.temperature)
    elif args.cmd == "curves":
        from train.evaluate import plot_curves

        plot_curves(_run_dir(args.run), args.output)


if __name__ == "__main__":
    raise SystemExit(main())
