"""Draw results onto frames: the ``Compositor`` of the pipeline.

Modes:

* ``replace`` - a privacy mask. The emoji is centred on the face box (a little
  higher, to cover the forehead) and made large enough that its fully opaque
  central disk encloses the whole box: at least ``replace_scale`` times the
  box's longer side, more when needed (about 1.7x for the bundled round
  faces). It tilts with the head when the detector gives eyes (a disk
  is the same at any angle, so coverage does not depend on the tilt). Before
  blending, the face box itself is filled with the emoji's own colour, so
  every pixel of every box ends up a pure function of the emoji, whatever the
  frame held; and art that is not opaque out to ``MASK_OPAQUE_RADIUS_FRAC``
  of its side (a ring, see-through eyes) is drawn over that colour there
  (``EmojiArt.mask_bgra``), so no face shows through it beyond the box either.
  With privacy on, a box at the frame's edge is first grown along that edge
  (``grown_at_edges``): the detector frames a face cut by the edge short.
* ``decorate`` - the face stays visible; an emoji badge sits above the head,
  or beside it when there is no room above.
* ``label`` - box, emotion name, confidence and a bar chart of all seven
  smoothed probabilities, kept inside the frame.
* ``off`` - a copy of the frame.

In decorate and label modes a face's badge, tag and chart keep their spot while
it nearly fits (``KEEP_SPOT_FRAC``), so a face at the frame's edge does not make
them jump.

``compose`` accepts only HxWx3 uint8 BGR images and raises ``ValueError``
otherwise: the pipeline converts grayscale and BGRA frames before this
stage. ``privacy_cover`` (the whole-frame fallback) accepts any image.

Blending is ``out = premul_bgr + roi * (255 - alpha) / 255`` on the region of
interest only, with OpenCV's saturating SIMD ops on uint8 sprites from the
``EmojiSet`` cache (well under a millisecond per face at 1280x720).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from emojicam.config import MODES, EmojiConfig, PrivacyConfig
from emojicam.emoji import (
    ANGLE_STEP_DEG,
    MAX_CACHED_SIDE_PX,
    EmojiSet,
    Sprite,
    quantise_angle,
    rotated_side_px,
)
from emojicam.types import Emotion, FaceBox, FaceResult

#: Replace mode: the emoji centre sits this fraction of the box height above the box centre.
REPLACE_SHIFT_UP_FRAC = 0.06
#: Replace mode with privacy on: a box that touches a side of the frame (or its
#: top or bottom) belongs to a face cut by that edge, and BlazeFace frames such
#: a face short along the edge: 68% to 83% of the face's height on the edge clip
#: of ``benchmarks/face_leak.py``, against 85% nearly in full view. Such a box is grown
#: by this much along the edge, about its centre (RELIABILITY.md, finding 13).
EDGE_GROWTH = 1.3
#: Smallest sprite drawn, in pixels.
MIN_SPRITE_SIDE_PX = 8
#: Sprite sides are rounded up onto a geometric grid with this ratio, so a
#: face that jitters by a pixel reuses cached sprites (never smaller: coverage).
SIDE_GRID_RATIO = 1.06
#: A face's emoji keeps its size while that still covers the face and is at
#: most this much too large, and keeps its angle while the head's roll stays
#: within one angle step of it: a box that jitters by a pixel or a roll that
#: jitters by a degree neither re-renders the sprite nor makes the emoji wobble.
STEADY_SIDE_RATIO = SIDE_GRID_RATIO**2
#: Decorate and label modes: a face's badge (or tag, or chart) stays where it
#: was (above the head, right or left of it) while it would stick out of the
#: frame there by at most this fraction of its size (it is pushed back in), and
#: moves back to a better spot only when that has this much room to spare: a
#: face near an edge whose box jitters by a pixel does not make what is drawn
#: for it jump round the head every frame.
KEEP_SPOT_FRAC = 0.25
#: Privacy blur: the frame is reduced to this many cells along its longer side.
PRIVACY_BLUR_CELLS = 16
#: Privacy blank: the grey level of a blanked frame.
PRIVACY_BLANK_LEVEL = 40

#: Label mode colours (BGR) per emotion.
EMOTION_BGR: dict[Emotion, tuple[int, int, int]] = {
    Emotion.ANGRY: (40, 40, 230),
    Emotion.DISGUST: (60, 160, 60),
    Emotion.FEAR: (200, 90, 150),
    Emotion.HAPPY: (30, 200, 250),
    Emotion.SAD: (220, 130, 40),
    Emotion.SURPRISE: (30, 140, 255),
    Emotion.NEUTRAL: (190, 190, 190),
}


@dataclass
class EmojiCompositor:
    """Implements ``pipeline.Compositor``. Build with ``create``."""

    emoji: EmojiSet
    emoji_cfg: EmojiConfig
    privacy_cfg: PrivacyConfig
    _steady: dict[int, tuple[int, float]] = field(default_factory=dict)  # track id -> (side, angle)
    _badge_spot: dict[int, str] = field(default_factory=dict)  # track id -> BADGE_SPOTS entry
    _label_spots: dict[int, tuple[str, str]] = field(default_factory=dict)  # track id -> (tag, chart)

    @classmethod
    def create(cls, emoji_cfg: EmojiConfig, privacy_cfg: PrivacyConfig,
               emoji_set: EmojiSet | None = None) -> EmojiCompositor:
        """Loads the emoji set named by ``emoji_cfg.folder`` (may raise
        ``SetupError``) unless one is given."""
        if emoji_set is None:
            emoji_set = EmojiSet.load(Path(emoji_cfg.folder) if emoji_cfg.folder else None)
        return cls(emoji_set, emoji_cfg, privacy_cfg)

    def compose(self, image_bgr: np.ndarray, results: Sequence[FaceResult], mode: str) -> np.ndarray:
        """A new image with ``results`` drawn for ``mode``; ``image_bgr`` is
        not modified. Raises ``ValueError`` for an unknown mode or an image
        that is not HxWx3 uint8."""
        check_bgr(image_bgr)
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        out = image_bgr.copy()
        self._steady = {r.track_id: self._steady[r.track_id] for r in results if r.track_id in self._steady}
        self._badge_spot = {r.track_id: self._badge_spot[r.track_id] for r in results
                            if r.track_id in self._badge_spot}
        self._label_spots = {r.track_id: self._label_spots[r.track_id] for r in results
                             if r.track_id in self._label_spots}
        if mode == "off" or not results or out.size == 0:
            return out
        if mode == "replace":
            for r in results:
                self._replace(out, r)
        elif mode == "decorate":
            for r in results:
                self._decorate(out, r)
        else:
            layouts = [self._label_layout(r, (out.shape[1], out.shape[0])) for r in results]
            for r, lay in zip(results, layouts, strict=True):
                draw_label(out, r, tag=False, layout=lay)
            # Tags last: another face's chart never hides them.
            for r, lay in zip(results, layouts, strict=True):
                draw_label(out, r, chart=False, layout=lay)
        return out

    # ------------------------------------------------------------ modes

    def _replace(self, out: np.ndarray, result: FaceResult) -> None:
        box = result.box
        if box.w <= 0 or box.h <= 0:
            return
        if self.privacy_cfg.enabled:
            box = grown_at_edges(box, (out.shape[1], out.shape[0]))
        art = self.emoji.art(result.emotion)
        cx, cy, side = replace_placement(box, art.mask_radius_frac, self.emoji_cfg.replace_scale)
        roll = box.roll_deg if self.emoji_cfg.rotate_with_head else 0.0
        side, angle = self._steady_placement(result.track_id, side, roll)
        # Fill under the emoji, on the box only: exact coverage whatever the art.
        clipped = box.clipped((out.shape[1], out.shape[0]))
        if clipped is None:
            return
        # (cv2.rectangle fills ~20x faster than numpy broadcasting a colour.)
        x1, y1 = clipped.x + clipped.w - 1, clipped.y + clipped.h - 1
        cv2.rectangle(out, (clipped.x, clipped.y), (x1, y1), art.fill_bgr, thickness=-1)
        self._place(out, result.emotion, side, angle, cx, cy, mask=True)

    def _decorate(self, out: np.ndarray, result: FaceResult) -> None:
        box = result.box
        if box.w <= 0 or box.h <= 0:
            return
        side = grid_side(max(MIN_SPRITE_SIDE_PX, self.emoji_cfg.badge_scale * max(box.w, box.h)))
        side, _ = self._steady_placement(result.track_id, side, 0.0)
        size_wh = (out.shape[1], out.shape[0])
        spot = badge_spot(box, side, size_wh, keep=self._badge_spot.get(result.track_id))
        self._badge_spot[result.track_id] = spot
        x0, y0 = badge_position(box, side, size_wh, spot)
        # Through _place: a huge badge is rendered only where it is visible.
        self._place(out, result.emotion, side, 0.0, x0 + side / 2.0, y0 + side / 2.0)

    def _label_layout(self, result: FaceResult, size_wh: tuple[int, int]) -> LabelLayout:
        """``label_layout`` for a face, keeping its tag's and chart's spots of the last frame."""
        keep = self._label_spots.get(result.track_id)
        lay = label_layout(result.box, label_text(result), size_wh, keep)
        self._label_spots[result.track_id] = lay.spots
        return lay

    def _steady_placement(self, track_id: int, side: int, roll_deg: float) -> tuple[int, float]:
        """(side, angle) for a face's sprite: ``side`` (the smallest that
        covers) and ``roll_deg`` quantised, unless the face's previous sprite
        still fits (see ``STEADY_SIDE_RATIO``); never smaller than ``side``."""
        new_side, new_angle = side, quantise_angle(roll_deg)
        last = self._steady.get(track_id)
        if last is not None:
            last_side, last_angle = last
            if side <= last_side <= side * STEADY_SIDE_RATIO:
                new_side = last_side
            if abs((roll_deg - last_angle + 180.0) % 360.0 - 180.0) <= ANGLE_STEP_DEG:
                new_angle = last_angle
        self._steady[track_id] = (new_side, new_angle)
        return new_side, new_angle

    def _place(self, out: np.ndarray, emotion: Emotion, side: int, angle: float,
               cx: float, cy: float, mask: bool = False) -> None:
        n = rotated_side_px(side, angle)
        if n <= MAX_CACHED_SIDE_PX:
            blend_sprite(out, self.emoji.sprite(emotion, side, angle, mask),
                         round(cx - n / 2.0), round(cy - n / 2.0))
            return
        # Huge (face filling the frame): render just the visible part.
        h_img, w_img = out.shape[:2]
        x0, y0 = max(0, math.floor(cx - n / 2.0)), max(0, math.floor(cy - n / 2.0))
        x1, y1 = min(w_img, math.ceil(cx + n / 2.0)), min(h_img, math.ceil(cy + n / 2.0))
        if x1 > x0 and y1 > y0:
            region = (x0, y0, x1 - x0, y1 - y0)
            blend_sprite(out, self.emoji.render_region(emotion, side, angle, (cx, cy), region, mask), x0, y0)


# ---------------------------------------------------------------- geometry


def replace_placement(box: FaceBox, opaque_radius_frac: float,
                      replace_scale: float) -> tuple[float, float, int]:
    """Centre (x, y) and side in pixels of the emoji that masks ``box``.

    The side is at least ``replace_scale`` times the longer box side and big
    enough that the art's opaque disk (``opaque_radius_frac`` of the side, as
    ``EmojiArt.mask_radius_frac`` gives it)
    reaches the farthest box corner, with a pixel of slack for the disk's
    anti-aliased rim, rounding of the position and rotation resampling.
    """
    shift = REPLACE_SHIFT_UP_FRAC * box.h
    cx, cy = box.x + box.w / 2.0, box.y + box.h / 2.0 - shift
    reach_px = math.hypot(box.w / 2.0, box.h / 2.0 + shift) + 1.5
    side = max(replace_scale * max(box.w, box.h), reach_px / opaque_radius_frac, MIN_SPRITE_SIDE_PX)
    return cx, cy, grid_side(side)


def grown_at_edges(box: FaceBox, size_wh: tuple[int, int], growth: float = EDGE_GROWTH) -> FaceBox:
    """``box`` made ``growth`` times taller if it touches the left or right
    edge of a ``size_wh`` image, and wider if it touches the top or bottom,
    about its centre (see ``EDGE_GROWTH``)."""
    w_img, h_img = size_wh
    w, h = box.w, box.h
    if box.x <= 0 or box.x + box.w >= w_img:
        h = max(h, round(h * growth))
    if box.y <= 0 or box.y + box.h >= h_img:
        w = max(w, round(w * growth))
    if (w, h) == (box.w, box.h):
        return box
    return dataclasses.replace(box, x=box.x - (w - box.w) // 2, y=box.y - (h - box.h) // 2, w=w, h=h)


def grid_side(side: float) -> int:
    """``side`` rounded up onto a geometric grid (few distinct sizes: cache hits)."""
    if side <= 16:
        return max(1, math.ceil(side))
    k = math.ceil(math.log(side / 16.0) / math.log(SIDE_GRID_RATIO) - 1e-9)
    return max(math.ceil(side), math.ceil(16.0 * SIDE_GRID_RATIO**k - 1e-6))


#: Where a decorate badge can sit, best first.
BADGE_SPOTS = ("above", "right", "left")


def _badge_xy(box: FaceBox, side: int, spot: str) -> tuple[int, int]:
    """Top-left of a badge at ``spot``, before it is kept in frame."""
    gap = max(2, round(0.06 * box.h))
    if spot == "right":
        return box.x + box.w + gap, box.y
    if spot == "left":
        return box.x - gap - side, box.y
    return round(box.x + box.w / 2.0 - side / 2.0), box.y - gap - side


def badge_spot(box: FaceBox, side: int, size_wh: tuple[int, int], keep: str | None = None) -> str:
    """The first of ``BADGE_SPOTS`` with room for the badge, else "above"
    (pushed into the frame); ``keep``, the face's spot on the last frame,
    within ``KEEP_SPOT_FRAC`` of that (see ``pick_spot``)."""
    w_img, _ = size_wh
    xy = {spot: _badge_xy(box, side, spot) for spot in BADGE_SPOTS}
    overhang = {"above": -xy["above"][1], "right": xy["right"][0] + side - w_img, "left": -xy["left"][0]}
    return pick_spot(overhang, keep, KEEP_SPOT_FRAC * side, "above")


def pick_spot(overhang: Mapping[str, float], keep: str | None, slack: float, fallback: str) -> str:
    """The first spot (in ``overhang``'s order) that fits, that is sticks out
    of the frame by ``overhang[spot] <= 0`` pixels, else ``fallback``. With
    hysteresis: ``keep`` (the last frame's spot) stays while it sticks out by
    at most ``slack`` and no better spot has ``slack`` to spare."""
    spots = list(overhang)
    need = dict.fromkeys(spots, 0.0)
    if keep is not None and keep in overhang and overhang[keep] <= slack:
        for better in spots[: spots.index(keep)]:
            need[better] = -slack
        need[keep] = slack
    return next((s for s in spots if overhang[s] <= need[s]), fallback)


def badge_position(box: FaceBox, side: int, size_wh: tuple[int, int],
                   spot: str | None = None) -> tuple[int, int]:
    """Top-left of a decorate badge at ``spot`` (by default ``badge_spot``),
    kept in frame."""
    w_img, h_img = size_wh
    x0, y0 = _badge_xy(box, side, spot or badge_spot(box, side, size_wh))
    return _clamp(x0, 0, w_img - side), _clamp(y0, 0, h_img - side)


def _clamp(v: int, lo: int, hi: int) -> int:
    return lo if hi < lo else min(max(v, lo), hi)


# ---------------------------------------------------------------- drawing


def check_bgr(image_bgr: np.ndarray) -> None:
    if not isinstance(image_bgr, np.ndarray) or image_bgr.dtype != np.uint8 \
            or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        shape = getattr(image_bgr, "shape", None)
        dtype = getattr(image_bgr, "dtype", type(image_bgr).__name__)
        raise ValueError(
            f"compose needs an HxWx3 uint8 BGR image, got shape {shape} dtype {dtype}; "
            "convert grayscale or BGRA frames with cv2.cvtColor first"
        )


def blend_sprite(out: np.ndarray, sprite: Sprite, x0: int, y0: int) -> None:
    """Alpha-blend a premultiplied sprite onto ``out`` (in place) with its
    top-left at (x0, y0); parts outside the image are clipped."""
    h_img, w_img = out.shape[:2]
    w, h = sprite.size_wh
    ox0, oy0, ox1, oy1 = max(x0, 0), max(y0, 0), min(x0 + w, w_img), min(y0 + h, h_img)
    if ox1 <= ox0 or oy1 <= oy0:
        return
    sy, sx = slice(oy0 - y0, oy1 - y0), slice(ox0 - x0, ox1 - x0)
    roi = out[oy0:oy1, ox0:ox1]
    kept = cv2.multiply(roi, sprite.inv_alpha[sy, sx], scale=1.0 / 255.0)
    roi[...] = cv2.add(sprite.premul_bgr[sy, sx], kept)


@dataclass(frozen=True)
class LabelLayout:
    """Where ``draw_label`` puts things; rectangles are (x, y, w, h)."""

    scale: float  # font scale of the tag; the chart uses 0.8 of it
    thick: int
    tag_xywh: tuple[int, int, int, int]
    panel_xywh: tuple[int, int, int, int]
    row_h: int
    bar_w: int
    label_w: int  # chart row name width
    text_h: int  # chart row name height
    tag_text_h: int
    pad: int
    spots: tuple[str, str] = ("above", "right")  # the tag's and the chart's (see label_layout)


_FONT = cv2.FONT_HERSHEY_SIMPLEX


def label_layout(box: FaceBox, tag: str, size_wh: tuple[int, int],
                 keep: tuple[str, str] | None = None) -> LabelLayout:
    """Tag above the box (inside its top when there is no room above); chart
    right of the box, else left, else inside it, moved below or above the tag
    if they would overlap; both kept inside the frame (when it is big enough).
    ``keep``: the face's ``spots`` on the last frame, kept while they nearly
    fit (``KEEP_SPOT_FRAC``, ``pick_spot``)."""
    keep_tag, keep_chart = keep or (None, None)
    w_img, h_img = size_wh
    scale = float(np.clip(min(w_img, h_img) / 900.0, 0.3, 1.2))
    thick = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(tag, _FONT, scale, thick)
    pad = max(2, th // 4)
    tag_w, tag_h = tw + 2 * pad, th + base + 2 * pad
    tx = _clamp(box.x, 0, w_img - tag_w)
    tag_spot = pick_spot({"above": tag_h - box.y, "inside": 0}, keep_tag, KEEP_SPOT_FRAC * tag_h, "inside")
    ty = _clamp(box.y - tag_h if tag_spot == "above" else box.y, 0, h_img - tag_h)

    (lw, lh), lbase = cv2.getTextSize("sur", _FONT, scale * 0.8, 1)
    row_h, bar_w = lh + lbase + 3, max(30, round(90 * scale))
    panel_w, panel_h = pad * 3 + lw + bar_w, pad * 2 + row_h * len(Emotion)
    xs = {"right": box.x + box.w + 4, "left": box.x - 4 - panel_w, "inside": box.x + 4}
    overhang = {"right": xs["right"] + panel_w - w_img, "left": -xs["left"], "inside": 0}
    chart_spot = pick_spot(overhang, keep_chart, KEEP_SPOT_FRAC * panel_w, "inside")
    px = _clamp(xs[chart_spot], 0, w_img - panel_w)

    def hits_tag(y: int) -> bool:
        return px < tx + tag_w and tx < px + panel_w and y < ty + tag_h and ty < y + panel_h

    # Level with the box top; else below the tag; else above it.
    tries = [_clamp(y, 0, h_img - panel_h) for y in (box.y, ty + tag_h + 2, ty - 2 - panel_h)]
    py = next((y for y in tries if not hits_tag(y)), tries[0])  # tiny frame: the tag draws on top
    return LabelLayout(scale, thick, (tx, ty, tag_w, tag_h), (px, py, panel_w, panel_h),
                       row_h, bar_w, lw, lh, th, pad, (tag_spot, chart_spot))


def label_text(result: FaceResult) -> str:
    """The tag of a face in label mode: "emotion NN%"."""
    return f"{result.emotion.value} {result.smoothed[result.emotion]:.0%}"


def draw_label(out: np.ndarray, result: FaceResult, chart: bool = True, tag: bool = True,
               layout: LabelLayout | None = None) -> None:
    """Box and 7-bar chart of the smoothed scores (``chart``), "emotion NN%"
    tag (``tag``); in place. ``layout``: by default ``label_layout``'s."""
    box, emotion = result.box, result.emotion
    colour = EMOTION_BGR[emotion]
    text = label_text(result)
    lay = layout or label_layout(box, text, (out.shape[1], out.shape[0]))
    if chart:
        _draw_chart(out, result, lay)
    if tag:
        tx, ty, tw, th = lay.tag_xywh
        cv2.rectangle(out, (tx, ty), (tx + tw - 1, ty + th - 1), colour, -1)
        ink = (0, 0, 0) if sum(colour) > 400 else (255, 255, 255)
        cv2.putText(out, text, (tx + lay.pad, ty + lay.pad + lay.tag_text_h), _FONT, lay.scale, ink,
                    lay.thick, cv2.LINE_AA)


def _draw_chart(out: np.ndarray, result: FaceResult, lay: LabelLayout) -> None:
    box, scores, emotion = result.box, result.smoothed, result.emotion
    colour = EMOTION_BGR[emotion]
    cv2.rectangle(out, (box.x, box.y), (box.x + box.w - 1, box.y + box.h - 1), colour, lay.thick)

    px, py, pw, ph = lay.panel_xywh
    panel = out[max(py, 0) : py + ph, max(px, 0) : px + pw]
    panel[...] = cv2.convertScaleAbs(panel, alpha=0.35)  # darken for contrast
    bx = px + 2 * lay.pad + lay.label_w
    for i, e in enumerate(Emotion):
        y = py + lay.pad + i * lay.row_h
        ink = (255, 255, 255) if e is emotion else (200, 200, 200)
        cv2.putText(out, e.value[:3], (px + lay.pad, y + lay.text_h + 1), _FONT, lay.scale * 0.8, ink, 1,
                    cv2.LINE_AA)
        length = round(lay.bar_w * float(np.clip(scores[e], 0.0, 1.0)))
        cv2.rectangle(out, (bx, y + 2), (bx + lay.bar_w - 1, y + lay.row_h - 2), (70, 70, 70), -1)
        if length > 0:
            cv2.rectangle(out, (bx, y + 2), (bx + length - 1, y + lay.row_h - 2), EMOTION_BGR[e], -1)


# ---------------------------------------------------------------- privacy


def privacy_cover(image_bgr: np.ndarray, action: str = "blur") -> np.ndarray:
    """The whole frame made unrecognisable, for when coverage cannot be
    vouched for. ``blur``: the frame is reduced to ``PRIVACY_BLUR_CELLS``
    cells along its longer side (a face of a third of the frame height spans
    three or four cells) and smoothly enlarged back; ``blank``: a flat grey
    frame. Accepts any image shape and dtype (gray, BGR, BGRA); returns a new
    array of the same shape and dtype; never raises for bad pixels."""
    image = np.asarray(image_bgr)
    if action not in ("blur", "blank"):
        raise ValueError(f"privacy action must be 'blur' or 'blank', got {action!r}")
    if image.ndim < 2 or image.size == 0:
        return image.copy()
    h, w = image.shape[:2]
    blurrable = image.dtype in (np.uint8, np.uint16, np.float32) and (
        image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4)))
    if action == "blank" or not blurrable:
        return np.full_like(image, PRIVACY_BLANK_LEVEL)
    f = PRIVACY_BLUR_CELLS / max(w, h)
    small_wh = (max(1, round(w * f)), max(1, round(h * f)))
    small = cv2.resize(image, small_wh, interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigmaX=0.7)  # soften the cell grid
    out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return out.reshape(image.shape)
