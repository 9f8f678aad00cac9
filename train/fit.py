"""Resumable training loop.

Everything a run needs to continue lives in its run folder (outside the
repository by default): Keras' BackupAndRestore keeps the last finished
epoch with optimizer state, ``best.weights.h5`` the best PublicTest epoch,
``log.csv`` one row per epoch and ``run.json`` the recipe. Re-running the
same command resumes an interrupted run where it stopped; a finished run
(``DONE``) refuses, as Keras has dropped its backup.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from train.data import file_sha256, load_fer, split_digest

log = logging.getLogger("train")


@dataclass(frozen=True)
class Recipe:
    arch: str = "base"
    epochs: int = 20
    batch_size: int = 128
    lr: float = 0.05
    warmup_epochs: float = 1.0
    weight_decay: float = 5e-4
    momentum: float = 0.9
    label_smoothing: float = 0.1
    ferplus_mix: float = 0.0  # weight of FER+ vote distribution in the target
    teacher_mix: float = 0.0  # weight of the teacher's distribution (--teacher, train/distill.py)
    dropout: float = 0.4
    erase_prob: float = 0.5
    mixup: float = 0.0  # Beta(alpha, alpha) of mixup (Zhang et al. 2018); 0 turns it off
    rotate_deg: float = 10.0
    zoom: float = 0.1
    # Pixels times a gain from U(1 - b, 1 + b) (webcam faces are darker than FER-2013's); 0: off
    brightness: float = 0.0
    seed: int = 1337
    bf16: bool = True


PRESETS = {
    # Fits one working session on 2 CPU cores (~200 s/epoch alone, ~350 s shared).
    "cpu": Recipe(),
    # For a long CPU run (about 7 to 10 hours on 2 cores, resumable) or a GPU.
    "long": Recipe(arch="deep", epochs=120, lr=0.05),
}


def resumed_epoch(run_dir: Path) -> int:
    """How many epochs a run being resumed has finished (0 for a new run), as
    Keras' ``BackupAndRestore`` recorded them in the run's backup."""
    try:
        return int(json.loads((run_dir / "backup" / "training_metadata.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def stream_seed(seed: int, first_epoch: int) -> int:
    """The seed of the data stream (order, augmentation, mixup, dropout) of a
    run starting at ``first_epoch``: the run's own seed from the start, another
    one after a resume. Keras restores the weights, the optimizer and the epoch
    count, not the random state: re-seeded alike, the epochs after a resume
    replayed epoch 0's order and augmentations."""
    return seed if first_epoch == 0 else seed + 1_000_003 * first_epoch


def _augmenter(recipe: Recipe, seed: int):
    import keras
    import tensorflow as tf

    rotate = keras.layers.RandomRotation(
        recipe.rotate_deg / 360.0, fill_mode="reflect", seed=seed, dtype="float32"
    )
    zoom = keras.layers.RandomZoom(
        (-recipe.zoom, recipe.zoom), fill_mode="reflect", seed=seed + 1, dtype="float32"
    )

    def erase(x: tf.Tensor) -> tf.Tensor:
        # Random erasing (Zhong et al. 2017), batched: one rectangle per image,
        # applied with probability erase_prob, filled with noise.
        n = tf.shape(x)[0]
        side = tf.cast(48, tf.float32)
        area = tf.random.uniform([n], 0.02, 0.25) * side * side
        ratio = tf.exp(tf.random.uniform([n], np.log(0.3), np.log(3.3)))
        h = tf.clip_by_value(tf.sqrt(area * ratio), 1.0, side)
        w = tf.clip_by_value(tf.sqrt(area / ratio), 1.0, side)
        y0 = tf.random.uniform([n]) * (side - h)
        x0 = tf.random.uniform([n]) * (side - w)
        grid = tf.range(48, dtype=tf.float32)
        in_y = (grid[None, :] >= y0[:, None]) & (grid[None, :] < (y0 + h)[:, None])
        in_x = (grid[None, :] >= x0[:, None]) & (grid[None, :] < (x0 + w)[:, None])
        apply = tf.random.uniform([n]) < recipe.erase_prob
        mask = in_y[:, :, None] & in_x[:, None, :] & apply[:, None, None]
        noise = tf.random.uniform(tf.shape(x), 0.0, 255.0)
        return tf.where(mask[..., None], noise, x)

    def augment(x: tf.Tensor, y: tf.Tensor):
        x = random_crop(x)
        x = tf.image.random_flip_left_right(x)
        x = rotate(x, training=True)
        x = tf.cast(zoom(x, training=True), tf.float32)
        if recipe.brightness > 0:
            b = recipe.brightness
            gain = tf.random.uniform([tf.shape(x)[0], 1, 1, 1], 1.0 - b, 1.0 + b)
            x = tf.clip_by_value(x * gain, 0.0, 255.0)
        x = erase(x)
        if recipe.mixup > 0:
            x, y = mixup(x, y, recipe.mixup)
        return x, y

    return augment


def random_crop(x, pad: int = 4):
    """Pad a batch by reflection and cut a 48x48 window at a random place in
    each image. (``tf.image.random_crop`` on the batch would cut every image of
    the batch at the same place, as runs made before session 6 did.)"""
    import tensorflow as tf

    n = tf.shape(x)[0]
    x = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    offsets = tf.random.uniform([n, 2], 0, 2 * pad + 1, dtype=tf.int32)
    window = tf.range(48)[None, :]
    x = tf.gather(x, offsets[:, :1] + window, axis=1, batch_dims=1)  # rows
    return tf.gather(x, offsets[:, 1:] + window, axis=2, batch_dims=1)  # columns


def mixup(x, y, alpha: float):
    """Mixup within a batch: each image and its target are blended with those of
    another image of the batch, by a weight drawn from Beta(alpha, alpha) (drawn
    as a ratio of two Gamma variables, since TensorFlow has no Beta sampler)."""
    import tensorflow as tf

    n = tf.shape(x)[0]
    a = tf.random.gamma([n], alpha)
    b = tf.random.gamma([n], alpha)
    lam = a / tf.maximum(a + b, 1e-12)
    partner = tf.random.shuffle(tf.range(n))
    lam_x = tf.cast(tf.reshape(lam, [-1, 1, 1, 1]), x.dtype)
    lam_y = tf.cast(tf.reshape(lam, [-1, 1]), y.dtype)
    return (lam_x * x + (1 - lam_x) * tf.gather(x, partner),
            lam_y * y + (1 - lam_y) * tf.gather(y, partner))


def _targets(labels: np.ndarray, soft: np.ndarray | None, mix: float) -> np.ndarray:
    onehot = np.eye(7, dtype=np.float32)[labels]
    if soft is None or mix <= 0:
        return onehot
    has_votes = soft.sum(axis=1, keepdims=True) > 0
    blended = (1 - mix) * onehot + mix * soft
    return np.where(has_votes, blended, onehot).astype(np.float32)


def fit(
    data: Path,
    run_dir: Path,
    recipe: Recipe,
    *,
    ferplus_votes: Path | None = None,
    teacher: Path | None = None,
    progress: str = "auto",
    init_from: Path | None = None,
) -> Path:
    """Train (or resume) a run. Returns the path of the best weights."""
    refuse_finished(run_dir)
    if init_from is not None and not init_from.is_file():
        raise SystemExit(f"--init-from: {init_from} not found"
                         + ("" if init_from.suffix == ".tflite" else
                            f" (has run {init_from.parent.name!r} finished an epoch?)"))
    if recipe.teacher_mix > 0 and teacher is None:
        raise SystemExit("--teacher-mix needs --teacher FILE (made by 'python -m train teach')")
    if recipe.ferplus_mix > 0 and ferplus_votes is None:
        raise SystemExit("--ferplus-mix needs --ferplus ferplus_votes.npz (without it the targets "
                         "would silently stay one-hot)")
    import keras

    from train.distill import blend_teacher, load_teacher

    if teacher is not None and recipe.teacher_mix <= 0:
        log.warning("--teacher %s is ignored: --teacher-mix is 0 (pass e.g. --teacher-mix 0.5)", teacher)
        teacher = None
    train = load_fer(data, "train", ferplus_votes=ferplus_votes)
    val = load_fer(data, "public", ferplus_votes=ferplus_votes)
    y_train = _targets(train.labels, train.soft, recipe.ferplus_mix)
    teacher_sha = None
    if teacher is not None:
        probs, teacher_sha = load_teacher(teacher, len(train.labels))
        y_train = blend_teacher(y_train, probs, recipe.teacher_mix)

    ferplus_sha = file_sha256(ferplus_votes) if ferplus_votes is not None and recipe.ferplus_mix > 0 else None
    data_digest = split_digest(train, val)
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = run_dir / "run.json"
    if manifest.exists():
        saved_manifest = read_manifest(run_dir)
        saved = Recipe(**saved_manifest["recipe"])
        if saved != recipe:
            raise SystemExit(
                f"{manifest}: this run was started with a different recipe:\n"
                f"  saved: {saved}\n  asked: {recipe}\n"
                "Use the same options to resume, or a new --run name."
            )
        # Runs started before session 14 recorded no digest.
        if saved_manifest.get("data_digest", data_digest) != data_digest:
            raise SystemExit(
                f"{manifest}: this run was started on other images or labels (--data "
                f"{saved_manifest.get('data')}, now {data}); pass the same data to resume, or a new "
                "--run name."
            )
        if "ferplus_sha256" in saved_manifest and saved_manifest["ferplus_sha256"] != ferplus_sha:
            raise SystemExit(
                f"{manifest}: this run was started with another --ferplus file "
                f"(sha256 {saved_manifest['ferplus_sha256']}, now {ferplus_sha}); "
                "pass the same file to resume, or a new --run name."
            )
        if saved_manifest.get("teacher_sha256") != teacher_sha:
            raise SystemExit(
                f"{manifest}: this run was started with another --teacher file "
                f"(sha256 {saved_manifest.get('teacher_sha256')}, now {teacher_sha}); "
                "pass the same file to resume, or a new --run name."
            )
    else:
        record = {"recipe": asdict(recipe), "data": str(data), "data_digest": data_digest}
        if ferplus_sha is not None:
            record.update(ferplus=str(ferplus_votes), ferplus_sha256=ferplus_sha)
        if teacher_sha is not None:
            record.update(teacher=str(teacher), teacher_sha256=teacher_sha)
        manifest.write_text(json.dumps(record, indent=2))

    first_epoch = resumed_epoch(run_dir)
    keras.utils.set_random_seed(stream_seed(recipe.seed, first_epoch))
    if recipe.bf16:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")

    y_val = np.eye(7, dtype=np.float32)[val.labels]
    x_train = train.images[..., None].astype(np.float32)
    x_val = val.images[..., None].astype(np.float32)
    log.info("train %d images, val %d images", len(x_train), len(x_val))

    ds, val_ds = datasets(x_train, y_train, x_val, y_val, recipe, first_epoch)

    warmup, decay = schedule_steps(len(x_train), recipe)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=recipe.lr * 0.1,
        decay_steps=decay,
        warmup_target=recipe.lr,
        warmup_steps=warmup,
        alpha=0.001,
    )
    optimizer = keras.optimizers.SGD(
        learning_rate=schedule,
        momentum=recipe.momentum,
        nesterov=True,
        weight_decay=recipe.weight_decay,
    )
    from train.model import build_model

    model = build_model(recipe.arch, recipe.dropout)
    if init_from is not None:
        # Warm start (a new cosine cycle from another run's weights, or from an
        # exported file's); a resumed run restores its own backup afterwards,
        # so this only matters at epoch 0.
        if init_from.suffix == ".tflite":
            from train.unfold import STATISTICS_IMAGES, load_into, read_folded_layers

            pick = np.random.default_rng(recipe.seed).choice(
                len(x_train), min(STATISTICS_IMAGES, len(x_train)), replace=False)
            load_into(model, read_folded_layers(init_from), x_train[np.sort(pick)])
        else:
            model.load_weights(str(init_from))
        log.info("initialised from %s", init_from)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(
            label_smoothing=recipe.label_smoothing
        ),
        metrics=["accuracy"],
    )
    log.info("model %s: %d parameters", model.name, model.count_params())

    callbacks = run_callbacks(run_dir) + [
        keras.callbacks.ModelCheckpoint(str(run_dir / "last.weights.h5"), save_weights_only=True)
    ]
    model.fit(
        ds,
        epochs=recipe.epochs,
        validation_data=val_ds,
        callbacks=callbacks,
        verbose=verbosity(progress),
    )
    (run_dir / "DONE").write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))
    return run_dir / "best.weights.h5"


def refuse_finished(run_dir: Path) -> None:
    """Stop when ``run_dir`` holds a finished run: Keras deletes its backup at the
    end, so running it again would start the whole cycle over and append a second
    set of epochs to its log (and maybe replace its best weights)."""
    if (run_dir / "DONE").exists():
        raise SystemExit(
            f"{run_dir} is a finished run (its DONE file is there). Give a new --run name; "
            f"to continue from its weights, add --init-from {run_dir.name}."
        )


def read_manifest(run_dir: Path) -> dict:
    """A run folder's ``run.json`` (its recipe, data, and for a QAT run its ranges)."""
    path = run_dir / "run.json"
    if not path.is_file():
        raise SystemExit(
            f"{path} not found: is {run_dir.name!r} the name of a run made by 'python -m train fit'?"
        )
    return json.loads(path.read_text())


def warm_start_arch(init_dir: Path, asked: str | None) -> str | None:
    """The architecture a warm restart from ``init_dir`` (a run folder or an
    exported ``.tflite``) must build.

    The weights only load into the net they were trained in, so an unset
    ``--arch`` follows the source, and a different one is refused here
    rather than as Keras' shape mismatch deep inside ``load_weights``."""
    if init_dir.suffix == ".tflite":
        from train.unfold import arch_of, read_folded_layers

        if not init_dir.is_file():
            raise SystemExit(f"--init-from {init_dir}: no such file")
        try:
            source = arch_of(read_folded_layers(init_dir))
        except (ValueError, RuntimeError) as exc:  # not a model, or not one of ours
            raise SystemExit(f"--init-from {init_dir}: {exc}") from exc
    else:
        source = read_manifest(init_dir).get("recipe", {}).get("arch")
    if asked is not None and source is not None and asked != source:
        raise SystemExit(
            f"--init-from {init_dir.name}: that {'file' if init_dir.suffix == '.tflite' else 'run'} "
            f"holds --arch {source}, its weights "
            f"do not fit --arch {asked}; drop --arch or pass --arch {source}."
        )
    return asked if asked is not None else source


def schedule_steps(num_images: int, recipe: Recipe) -> tuple[int, int]:
    """(warm-up steps, cosine decay steps) for ``num_images`` training images.

    Batches are whole (``drop_remainder``), so fewer images than one batch
    cannot train; a warm-up as long as the run is cut short so that the
    cosine still has a step to decay over."""
    steps_per_epoch = num_images // recipe.batch_size
    if steps_per_epoch == 0:
        raise SystemExit(
            f"{num_images} training images do not fill one batch of {recipe.batch_size}; "
            "pass a smaller --batch-size or more data"
        )
    total = recipe.epochs * steps_per_epoch
    warmup = min(int(recipe.warmup_epochs * steps_per_epoch), total - 1)
    return warmup, total - warmup


def datasets(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
             recipe: Recipe, first_epoch: int = 0):
    """Shuffled, augmented training batches and plain validation batches: a
    ``tf.data`` pipeline on the TensorFlow backend, else (JAX or PyTorch, as
    on a GPU machine without TensorFlow) batches from ``train.augment``.
    ``first_epoch``: the epoch a resumed run starts at (see ``stream_seed``)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return _numpy_batches(x_train, y_train, recipe, first_epoch), _numpy_batches(x_val, y_val, None)
    import tensorflow as tf

    seed = stream_seed(recipe.seed, first_epoch)
    ds = (
        tf.data.Dataset.from_tensor_slices((x_train, y_train))
        .shuffle(len(x_train), seed=seed, reshuffle_each_iteration=True)
        .batch(recipe.batch_size, drop_remainder=True)
        .map(_augmenter(recipe, seed), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    return ds, tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(512)


def _numpy_batches(x: np.ndarray, y: np.ndarray, recipe: Recipe | None, first_epoch: int = 0):
    """A Keras ``PyDataset``: with a recipe, shuffled and augmented batches of
    ``recipe.batch_size`` (a new order every epoch, reproducible from the seed
    and the epoch, so a resumed run goes on as if never stopped); without,
    plain batches of 512 in order (validation)."""
    import keras

    from train.augment import augment_batch, batch_order

    class Batches(keras.utils.PyDataset):
        def __init__(self) -> None:
            # Threads: OpenCV releases the GIL, so augmentation runs in parallel.
            super().__init__(workers=max(1, min(8, (os.cpu_count() or 1) - 1)), use_multiprocessing=False)
            self.epoch = first_epoch
            self.order = self._order()

        def _order(self) -> list[np.ndarray] | np.ndarray:
            if recipe is None:
                return np.array_split(np.arange(len(x)), -(-len(x) // 512))
            return batch_order(len(x), recipe.batch_size, recipe.seed, self.epoch)

        def __len__(self) -> int:
            return len(self.order)

        def __getitem__(self, index: int):
            ids = self.order[index]
            if recipe is None:
                return x[ids], y[ids]
            rng = np.random.default_rng([recipe.seed, self.epoch, index])
            return augment_batch(x[ids], y[ids], recipe, rng)

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self.order = self._order()

    return Batches()


def run_callbacks(run_dir: Path) -> list:
    """What every run folder gets: a resumable backup, the best PublicTest
    weights (never overwritten by a worse epoch after a resume), the log and
    the epoch times."""
    import keras

    return [
        keras.callbacks.BackupAndRestore(str(run_dir / "backup")),
        keras.callbacks.ModelCheckpoint(
            str(run_dir / "best.weights.h5"),
            monitor="val_accuracy",
            mode="max",
            save_best_only=True,
            save_weights_only=True,
            initial_value_threshold=_best_so_far(run_dir / "log.csv"),
        ),
        keras.callbacks.CSVLogger(str(run_dir / "log.csv"), append=True),
        _EpochTimer(run_dir / "epoch_times.csv"),
    ]


def verbosity(progress: str) -> int:
    """Keras verbose level: a live bar on a terminal, one line per epoch otherwise."""
    return {"bar": 1, "line": 2}.get(progress, 1 if sys.stdout.isatty() else 2)


def _best_so_far(log_csv: Path) -> float | None:
    """Best val_accuracy already logged, so a resumed run never overwrites
    ``best.weights.h5`` with a worse epoch."""
    if not log_csv.exists():
        return None
    import csv

    with log_csv.open() as f:
        values = [float(r["val_accuracy"]) for r in csv.DictReader(f) if r.get("val_accuracy")]
    return max(values) if values else None


class _EpochTimer:
    """Keras callback writing wall-clock seconds per epoch (for the model card)."""

    def __new__(cls, path: Path):
        import keras

        class Timer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.t0 = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                new = not path.exists()
                with path.open("a") as f:
                    if new:
                        f.write("epoch,seconds,cpus\n")
                    f.write(f"{epoch},{time.perf_counter() - self.t0:.1f},{os.cpu_count()}\n")

        return Timer()
