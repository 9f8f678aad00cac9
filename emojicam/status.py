"""What the engine reports: its state and a status snapshot.

Kept apart from ``emojicam.engine`` so that the tray, ``emojicam ctl`` and
their tests read the status without importing the pipeline (OpenCV, LiteRT).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any


class EngineState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    IDLE = "idle"  # on-demand: no app is reading the virtual camera
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True)
class EngineStatus:
    state: str
    mode: str
    fps: float  # frames processed per second, recent
    faces: int
    camera: str  # a CameraState value
    camera_detail: str
    sink: str  # "ok", "opening", "unavailable", "closed"
    sink_detail: str
    sink_kind: str
    device: str | None
    readers: int | None  # None: not watched
    dominant: str | None  # emotion of the largest face
    mirror: bool
    preview: bool
    config_error: str | None
    frames_processed: int
    frames_sent: int
    detector_warning: str | None = None  # e.g. the Haar fallback, which misses turned faces

    @property
    def paused(self) -> bool:
        return self.state == EngineState.PAUSED.value

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

