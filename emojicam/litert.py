"""The TFLite interpreter, from ai-edge-litert or (fallback) tflite-runtime.

One place that opens ``.tflite`` files, so every model (the emotion
classifier, the face detector) gets the same runtime choice, thread setting
and quiet start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from emojicam.errors import SetupError

log = logging.getLogger(__name__)


def load_interpreter_class() -> Any:
    """``Interpreter`` from ai-edge-litert, else from tflite-runtime."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError as exc:
            raise SetupError(
                "no TFLite interpreter found; install it with 'pip install ai-edge-litert'"
            ) from exc
    return Interpreter


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence C++ log lines (LiteRT prints "INFO: Created TensorFlow Lite
    XNNPACK delegate" straight to file descriptor 2, which Python logging
    cannot filter) unless debug logging is on."""
    if logging.getLogger("emojicam").isEnabledFor(logging.DEBUG):
        yield
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (pytest capture, pythonw)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def open_interpreter(path: Path, threads: int) -> Any:
    """An allocated interpreter for ``path``. Raises ``ValueError`` or
    ``RuntimeError`` from the runtime for a file that is not a valid model,
    ``SetupError`` for one that cannot be read.

    The runtime gets the file's bytes, not its name: on Windows it would open
    the name with the ANSI C library, which cannot open a path such as
    ``C:\\Users\\José\\AppData\\...`` (where the detector models live)."""
    Interpreter = load_interpreter_class()
    try:
        content = Path(path).read_bytes()
    except OSError as exc:
        raise SetupError(f"{path}: cannot read it ({exc.strerror or exc}); check the file and its "
                         "permissions") from exc
    with quiet_native_stderr():
        interpreter = Interpreter(model_content=content, num_threads=threads)
        interpreter.allocate_tensors()
    return interpreter
