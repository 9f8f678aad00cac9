"""IoU tracking: faces keep an identity from frame to frame.

Greedy matching by IoU is enough here: a webcam shows few faces, and they
move little between frames. When a face moves further than IoU can follow (a
quick camera swing), a second pass matches the remaining tracks and boxes by
centre distance, for boxes of similar size, so the face keeps its identity
instead of leaving a "ghost" box behind for ``hold_s``. A track that the detector misses is kept at its
last position for ``hold_s`` seconds, so a face that the detector drops for a
frame or two stays covered in replace mode.

In replace mode with privacy on (``set_privacy``) there is no second pass: a
face the detector misses on the frame another face appears near it would
otherwise hand its held box to the newcomer and show. A quick swing then
leaves a held box behind for ``hold_s`` instead, which only covers background.
There a missed face is also held for at least ``PRIVACY_MIN_HOLD_FRAMES``
frames when frames come slowly (within ``PRIVACY_MAX_HOLD_S``).

When the frame timestamps go back (a looping video restarting at 0, a camera
clock reset) the step back counts as no time: a missed face is held for what
was left of its hold, neither for the size of the jump nor less.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from emojicam.config import TrackerConfig
from emojicam.pipeline import Track
from emojicam.types import FaceBox

# Second-pass matching: a box whose centre moved at most this many face sizes,
# and whose size changed by at most this factor, is the same face.
MAX_CENTRE_JUMP = 1.5
MIN_SIZE_RATIO = 0.6
# Replace mode with privacy on: a missed face is held for at least this many
# frames, however short ``hold_s`` or however slowly frames arrive. On the edge
# clip of benchmarks/face_leak.py a face leaving the picture is covered by its
# held box alone for 4 frames; at 5 fps the 0.5 s hold once covered 2 of them.
PRIVACY_MIN_HOLD_FRAMES = 4
# ...but never longer than this: after a pause (mode off, nobody watching, paused)
# the faces of minutes ago are gone, not missed.
PRIVACY_MAX_HOLD_S = 3.0


# A change of frame size that keeps the aspect ratio within this is a plain scaling.
SAME_ASPECT_TOLERANCE = 0.01


def resized_box(box: FaceBox, old_wh: tuple[int, int], new_wh: tuple[int, int],
                cover_all: bool = True) -> FaceBox:
    """Where ``box`` of an ``old_wh`` frame lies in the ``new_wh`` frames that
    replaced it. At the same aspect ratio the picture was scaled. At another
    one there is no knowing how the camera made it: it may stretch the
    picture, crop the middle of it (a 4:3 sensor giving 16:9), or show more at
    the sides (a 16:9 sensor whose 4:3 modes are cropped). With ``cover_all``
    the box is then where the face would be in any of the three (their
    union), so a face the detector misses on the first new frame stays
    covered whichever it was; without, the picture is taken as stretched."""
    (w0, h0), (w1, h1) = old_wh, new_wh
    sx, sy = w1 / w0, h1 / h0
    stretched = box.scaled(sx, sy)
    if not cover_all or abs(sx / sy - 1.0) <= SAME_ASPECT_TOLERANCE:
        return stretched
    x0, y0 = stretched.x, stretched.y
    x1, y1 = stretched.x + stretched.w, stretched.y + stretched.h
    for s in (max(sx, sy), min(sx, sy)):  # cropped, widened: scaled alike, centred
        dx, dy = (w1 - s * w0) / 2.0, (h1 - s * h0) / 2.0
        x0, y0 = min(x0, math.floor(box.x * s + dx)), min(y0, math.floor(box.y * s + dy))
        x1 = max(x1, math.ceil((box.x + box.w) * s + dx))
        y1 = max(y1, math.ceil((box.y + box.h) * s + dy))
    return replace(stretched, x=x0, y=y0, w=x1 - x0, h=y1 - y0)


@dataclass
class _State:
    track: Track
    last_seen_s: float


@dataclass
class IoUTracker:
    cfg: TrackerConfig = field(default_factory=TrackerConfig)
    _tracks: list[_State] = field(default_factory=list)
    _next_id: int = 1
    _follow_jumps: bool = True  # the second pass, by centre distance (off: set_privacy)
    _min_hold_frames: int = 0  # PRIVACY_MIN_HOLD_FRAMES when strict
    _last_timestamp_s: float | None = None  # of the previous update

    def set_privacy(self, strict: bool) -> None:
        """Strict: a missed face's box stays where it was (no second pass), for
        ``hold_s`` and at least ``PRIVACY_MIN_HOLD_FRAMES`` frames."""
        self._follow_jumps = not strict
        self._min_hold_frames = PRIVACY_MIN_HOLD_FRAMES if strict else 0

    def update(self, boxes: Sequence[FaceBox] | None, timestamp_s: float) -> list[Track]:
        self._rebase_clock(timestamp_s)
        if boxes is None:  # detector skipped this frame: carry tracks forward
            return [s.track for s in self._tracks]
        pairs = sorted(
            ((s.track.box.iou(b), i, j) for i, s in enumerate(self._tracks) for j, b in enumerate(boxes)),
            reverse=True,
        )
        used_t: set[int] = set()
        used_b: set[int] = set()
        for iou, i, j in pairs:
            if iou <= 0.0 or iou < self.cfg.iou_threshold:  # boxes that do not touch are never the same face
                break
            if i in used_t or j in used_b:
                continue
            self._assign(i, j, boxes, used_t, used_b, timestamp_s)
        if self._follow_jumps:
            self._match_by_distance(boxes, used_t, used_b, timestamp_s)
        survivors = []
        for i, s in enumerate(self._tracks):
            if i not in used_t:
                gap_s = timestamp_s - s.last_seen_s
                held_by_frames = s.track.missed_frames < self._min_hold_frames and gap_s <= PRIVACY_MAX_HOLD_S
                if gap_s > self.cfg.hold_s and not held_by_frames:
                    continue
                s.track = replace(s.track, missed_frames=s.track.missed_frames + 1)
            survivors.append(s)
        for j, b in enumerate(boxes):
            if j not in used_b:
                survivors.append(_State(Track(self._next_id, b), timestamp_s))
                self._next_id += 1
        self._tracks = survivors
        return [s.track for s in self._tracks]

    def _rebase_clock(self, timestamp_s: float) -> None:
        """When the clock went back, move every track's last sighting back by
        as much, so the step from the previous frame counts as no time."""
        last, self._last_timestamp_s = self._last_timestamp_s, timestamp_s
        if last is not None and timestamp_s < last:
            for s in self._tracks:
                s.last_seen_s += timestamp_s - last

    def _match_by_distance(self, boxes: Sequence[FaceBox], used_t: set[int], used_b: set[int],
                           timestamp_s: float) -> None:
        pairs = []
        for i, s in enumerate(self._tracks):
            if i in used_t:
                continue
            tb = s.track.box
            (tx, ty), t_side = tb.center_xy, max(tb.w, tb.h, 1)
            for j, b in enumerate(boxes):
                if j in used_b:
                    continue
                (bx, by), b_side = b.center_xy, max(b.w, b.h, 1)
                ratio = b_side / t_side
                dist = ((bx - tx) ** 2 + (by - ty) ** 2) ** 0.5 / t_side
                if MIN_SIZE_RATIO <= ratio <= 1 / MIN_SIZE_RATIO and dist <= MAX_CENTRE_JUMP:
                    pairs.append((dist, i, j))
        for _, i, j in sorted(pairs):
            if i in used_t or j in used_b:
                continue
            self._assign(i, j, boxes, used_t, used_b, timestamp_s)

    def _assign(self, i: int, j: int, boxes: Sequence[FaceBox], used_t: set[int], used_b: set[int],
                timestamp_s: float) -> None:
        used_t.add(i)
        used_b.add(j)
        s = self._tracks[i]
        s.track = Track(s.track.track_id, boxes[j], 0)
        s.last_seen_s = timestamp_s

    def adopt(self, other: object) -> None:
        """Take over ``other``'s tracks and ids (``pipeline.carry_faces``);
        anything but an ``IoUTracker`` is ignored."""
        if isinstance(other, IoUTracker):
            self._tracks = [_State(s.track, s.last_seen_s) for s in other._tracks]
            self._next_id = other._next_id
            self._last_timestamp_s = other._last_timestamp_s

    def resize(self, old_wh: tuple[int, int], new_wh: tuple[int, int]) -> None:
        """The frames changed size (the camera's resolution changed): move
        every track's box with the picture (``resized_box``; when strict,
        wherever the face may now be), so a held box still covers its face."""
        strict = not self._follow_jumps
        for s in self._tracks:
            s.track = replace(s.track, box=resized_box(s.track.box, old_wh, new_wh, cover_all=strict))

    def mirror(self, width: int) -> None:
        """The picture is now flipped left to right (``camera.mirror`` changed):
        flip every track's box too, so a held box still covers its face."""
        for s in self._tracks:
            s.track = replace(s.track, box=s.track.box.mirrored(width))

    def reset(self) -> None:
        self._tracks.clear()
