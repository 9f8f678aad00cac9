"""Expression classifier: our int8 ``emotion.tflite`` in the LiteRT interpreter.

The interpreter comes from ``ai-edge-litert`` (the maintained TFLite runtime)
or, when it is missing, ``tflite-runtime`` (see ``emojicam.litert``). The model's class order is
read from ``<model>.labels.txt`` beside it and must equal ``Emotion``'s
order, so a retrained model with another order cannot silently mislabel.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emojicam import assets
from emojicam.config import ClassifierConfig
from emojicam.errors import SetupError
from emojicam.litert import open_interpreter
from emojicam.preprocess import (
    HAAR_CROP_MARGINS,
    MODEL_INPUT_SIDE,
    CropMargins,
    batch_to_model_input,
    fer_crop,
)
from emojicam.types import Emotion, EmotionScores, FaceBox

log = logging.getLogger(__name__)


def default_model_path() -> Path:
    return assets.models_dir() / "emotion.tflite"


def labels_path_for(model_path: Path) -> Path:
    return model_path.with_suffix(".labels.txt")


def read_labels(path: Path) -> list[str]:
    try:
        return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SetupError(
            f"{path}: labels file missing or unreadable ({why}); it must sit beside "
            "the model and list the classes in output order, one per line"
        ) from exc


@dataclass
class TFLiteClassifier:
    """Batched classification of face crops. Build with ``create``."""

    interpreter: Any
    model_path: Path
    _in: dict[str, Any] = field(default_factory=dict)
    _out: dict[str, Any] = field(default_factory=dict)
    crop_margins: CropMargins = HAAR_CROP_MARGINS  # set to the detector's (see preprocess.py)
    _batch: int = 1
    _dynamic_batch: bool = False

    @classmethod
    def create(
        cls,
        cfg: ClassifierConfig | None = None,
        model_path: Path | None = None,
        crop_margins: CropMargins | None = None,
    ) -> TFLiteClassifier:
        """Load and check the model. ``crop_margins``: how to frame a face box
        of the detector in use like FER-2013 (``detect.crop_margins_for``)."""
        cfg = cfg or ClassifierConfig()
        path = Path(model_path or cfg.model or default_model_path()).expanduser()
        if not path.is_file():
            raise SetupError(
                f"{path}: emotion model not found; set classifier.model in config.yaml to a "
                "valid .tflite file, or reinstall EmojiCam to restore the bundled one"
            )
        labels = read_labels(labels_path_for(path))
        expected = [e.value for e in Emotion]
        if labels != expected:
            raise SetupError(
                f"{labels_path_for(path)}: class order {labels} does not match EmojiCam's "
                f"{expected}; re-export the model with 'python -m train export'"
            )
        try:
            interp = open_interpreter(path, cfg.threads)
        except (ValueError, RuntimeError) as exc:
            raise SetupError(
                f"{path}: not a valid TFLite model ({exc}); restore the bundled "
                "models/emotion.tflite or re-export it"
            ) from exc
        self = cls(interp, path)
        if crop_margins is not None:
            self.crop_margins = crop_margins
        self._in = interp.get_input_details()[0]
        self._out = interp.get_output_details()[0]
        in_shape = tuple(int(d) for d in self._in["shape"][1:])
        out_shape = tuple(int(d) for d in self._out["shape"][1:])
        if in_shape != (MODEL_INPUT_SIDE, MODEL_INPUT_SIDE, 1) or out_shape != (len(Emotion),):
            raise SetupError(
                f"{path}: model takes {in_shape} and gives {out_shape}; EmojiCam needs "
                f"(48, 48, 1) grayscale in and {len(Emotion)} scores out"
            )
        sig = self._in.get("shape_signature")
        self._dynamic_batch = sig is not None and len(sig) > 0 and int(sig[0]) == -1
        self._batch = int(self._in["shape"][0])
        return self

    def classify(self, image_bgr: np.ndarray, boxes: Sequence[FaceBox]) -> list[EmotionScores]:
        crops = [fer_crop(image_bgr, box.classifier_xywh, self.crop_margins) for box in boxes]
        valid = [c for c in crops if c is not None and c.size > 0]
        probs = iter(self.predict(batch_to_model_input(valid)) if valid else [])
        return [
            EmotionScores(next(probs)) if c is not None and c.size > 0 else EmotionScores.uniform()
            for c in crops
        ]

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(N, 48, 48, 1) float32 pixel values 0..255 -> (N, 7) probabilities."""
        n = len(batch)
        if n == 0:
            return np.zeros((0, len(Emotion)), np.float32)
        if self._dynamic_batch:
            if n != self._batch:
                self.interpreter.resize_tensor_input(self._in["index"], [n, 48, 48, 1])
                self.interpreter.allocate_tensors()
                self._in = self.interpreter.get_input_details()[0]
                self._out = self.interpreter.get_output_details()[0]
                self._batch = n
            return self._run(batch)
        return np.concatenate([self._run(batch[i : i + 1]) for i in range(n)])

    def _run(self, x: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self._in["index"], _quantize(x, self._in))
        self.interpreter.invoke()
        out = _dequantize(self.interpreter.get_tensor(self._out["index"]), self._out)
        # In float64, so huge float32 scores cannot overflow their sum; a row
        # that still sums to NaN, inf or 0 (a float model's inf) says nothing:
        # uniform, where dividing would give NaN and fail the frame.
        out = np.clip(out.astype(np.float64), 0.0, None)
        total = out.sum(axis=1, keepdims=True)
        usable = np.isfinite(total) & (total > 0)
        probs = np.divide(out, total, out=np.full_like(out, 1 / out.shape[1]), where=usable)
        return probs.astype(np.float32)


def _quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = detail["dtype"]
    if dtype == np.float32:
        return x.astype(np.float32)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    q = np.round(x / scale + zero)
    return np.clip(q, info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return y.astype(np.float32)
    scale, zero = detail["quantization"]
    return (y.astype(np.float32) - zero) * scale
