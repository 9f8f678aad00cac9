"""IoU tracking: faces keep an identity from frame to frame.

Greedy matching by IoU is enough here: a webcam shows few faces, and they
move little between frames. A track that the detector misses is kept at its
last position for ``hold_s`` seconds, so a face that the detector drops for a
frame or two stays covered in replace mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from emojicam.config import TrackerConfig
from emojicam.pipeline import Track
from emojicam.types import FaceBox


@dataclass
class _State:
    track: Track
    last_seen_s: float
    velocity_xy: tuple[float, float] = (0.0, 0.0)


@dataclass
class IoUTracker:
    cfg: TrackerConfig = field(default_factory=TrackerConfig)
    _tracks: list[_State] = field(default_factory=list)
    _next_id: int = 1

    def update(self, boxes: Sequence[FaceBox] | None, timestamp_s: float) -> list[Track]:
        if boxes is None:  # detector skipped this frame: carry tracks forward
            return [s.track for s in self._tracks]
        pairs = sorted(
            ((s.track.box.iou(b), i, j) for i, s in enumerate(self._tracks) for j, b in enumerate(boxes)),
            reverse=True,
        )
        used_t: set[int] = set()
        used_b: set[int] = set()
        for iou, i, j in pairs:
            if iou < self.cfg.iou_threshold:
                break
            if i in used_t or j in used_b:
                continue
            used_t.add(i)
            used_b.add(j)
            s = self._tracks[i]
            s.track = Track(s.track.track_id, boxes[j], 0, s.track.age_frames + 1)
            s.last_seen_s = timestamp_s
        survivors = []
        for i, s in enumerate(self._tracks):
            if i not in used_t:
                if timestamp_s - s.last_seen_s > self.cfg.hold_s:
                    continue
                s.track = replace(s.track, missed_frames=s.track.missed_frames + 1,
                                  age_frames=s.track.age_frames + 1)
            survivors.append(s)
        for j, b in enumerate(boxes):
            if j not in used_b:
                survivors.append(_State(Track(self._next_id, b), timestamp_s))
                self._next_id += 1
        self._tracks = survivors
        return [s.track for s in self._tracks]

    def reset(self) -> None:
        self._tracks.clear()
