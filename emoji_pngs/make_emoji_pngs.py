"""Render EmojiCam's bundled emoji PNGs from Noto Color Emoji.

Usage (Debian/Ubuntu)::

    apt-get install -y fonts-noto-color-emoji
    python emoji_pngs/make_emoji_pngs.py            # writes emoji_pngs/*.png
    python emoji_pngs/make_emoji_pngs.py --font /path/NotoColorEmoji.ttf --out DIR

Why it works this way:

* Noto Color Emoji is a CBDT bitmap font: FreeType only renders it at its one
  strike, size 109, which gives a 136x128 px bitmap (the face itself is about
  117x112 px). We render there, crop to the glyph, pad to a square with a small
  transparent margin and then scale once, with Lanczos, to ``SIDE_PX``.
* Pillow's ``ImageDraw.text`` pastes the colour glyph onto the transparent
  canvas through its own alpha, so the canvas ends up holding *premultiplied*
  colour (an edge pixel of a yellow face reads (60, 39, 5, a=64)). We keep it
  premultiplied while cropping and scaling (no dark fringe can appear) and
  un-premultiply only at the end.
* Fully transparent pixels get the colour of the nearest visible pixel
  ("edge bleed"), so even a program that scales the PNG without
  premultiplying (tray icons, image viewers) shows no dark halo.
* 256 px: EmojiCam scales the emoji at run time to the face size and caches it.
  Replace-mode emojis on typical webcam faces are ~100-350 px, so from 256 px
  most run-time resizes are downscales (``INTER_AREA``, the best-looking and
  cheapest), and the one upscale of the font bitmap is done here, offline,
  with Lanczos in premultiplied float. Storing 512 px would only add bytes:
  the source has ~117 px of real detail.

Emoji choice (codepoint: why):

* angry    U+1F620 ANGRY FACE - frown and lowered brows; the red U+1F621 is
  louder than most "angry" FER faces.
* disgust  U+1F922 NAUSEATED FACE - green tint makes it recognisable even as a
  small badge; U+1F616 (confounded) reads as pain.
* fear     U+1F628 FEARFUL FACE - blue forehead, raised brows, open mouth.
* happy    U+1F604 GRINNING FACE WITH SMILING EYES.
* sad      U+1F622 CRYING FACE - the tear tells it apart from neutral at a
  glance.
* surprise U+1F632 ASTONISHED FACE - wide eyes and raised brows, clearly
  different from fear (no blue) and from U+1F62E, which reads as "oh".
* neutral  U+1F610 NEUTRAL FACE.
* paused   U+23F8 PAUSE BUTTON - not a FER class; the tray's "paused/off" icon.

The PNGs are derived from the font and are covered by its licenses: see
LICENSE.md in this folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

DEFAULT_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
#: The only size at which FreeType renders the CBDT strike of Noto Color Emoji.
STRIKE_SIZE = 109
#: Side of each output PNG in pixels.
SIDE_PX = 256
#: Transparent margin on each side, as a fraction of SIDE_PX.
MARGIN_FRAC = 0.025

EMOJI: dict[str, int] = {
    "angry": 0x1F620,
    "disgust": 0x1F922,
    "fear": 0x1F628,
    "happy": 0x1F604,
    "sad": 0x1F622,
    "surprise": 0x1F632,
    "neutral": 0x1F610,
    "paused": 0x23F8,
}


def render_premultiplied(font: ImageFont.FreeTypeFont, codepoint: int) -> np.ndarray:
    """The glyph as premultiplied RGBA float32 in [0, 1], cropped to its
    visible pixels."""
    canvas = Image.new("RGBA", (2 * STRIKE_SIZE, 2 * STRIKE_SIZE), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((STRIKE_SIZE // 4, STRIKE_SIZE // 4), chr(codepoint), font=font,
                                embedded_color=True)
    rgba = np.asarray(canvas, dtype=np.float32) / 255.0
    ys, xs = np.nonzero(rgba[:, :, 3] > 0)
    if len(ys) == 0:
        raise SystemExit(f"U+{codepoint:04X} rendered empty: is {font.path} Noto Color Emoji?")
    return rgba[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def to_square(premul: np.ndarray, side_px: int, margin_frac: float) -> np.ndarray:
    """Centre the glyph on a transparent square and scale it (Lanczos, in
    premultiplied space) so its longer side fills all but the margin."""
    h, w = premul.shape[:2]
    inner = side_px - 2 * round(margin_frac * side_px)
    scale = inner / max(w, h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_LANCZOS4 if scale > 1 else cv2.INTER_AREA
    scaled = cv2.resize(premul, (new_w, new_h), interpolation=interp)
    # Lanczos rings: keep alpha in [0, 1] and colour within alpha.
    scaled[:, :, 3] = np.clip(scaled[:, :, 3], 0.0, 1.0)
    scaled[:, :, :3] = np.clip(scaled[:, :, :3], 0.0, scaled[:, :, 3:4])
    out = np.zeros((side_px, side_px, 4), np.float32)
    x0, y0 = (side_px - new_w) // 2, (side_px - new_h) // 2
    out[y0 : y0 + new_h, x0 : x0 + new_w] = scaled
    return out


def to_straight_rgba8(premul: np.ndarray) -> np.ndarray:
    """Un-premultiply to 8-bit straight RGBA and bleed edge colour into the
    fully transparent pixels."""
    alpha = premul[:, :, 3]
    alpha8 = np.round(alpha * 255.0).astype(np.uint8)
    safe = np.maximum(alpha, 1e-6)[:, :, None]
    rgb = np.clip(premul[:, :, :3] / safe, 0.0, 1.0)
    rgb8 = np.round(rgb * 255.0).astype(np.uint8)
    visible = alpha8 > 0
    if visible.any() and not visible.all():
        # Nearest visible pixel for every transparent one: a distance
        # transform whose zero pixels are the visible ones, labelled per pixel.
        _, labels = cv2.distanceTransformWithLabels(
            (~visible).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
        )
        colour_of_label = np.zeros((labels.max() + 1, 3), np.uint8)
        colour_of_label[labels[visible]] = rgb8[visible]
        rgb8[~visible] = colour_of_label[labels[~visible]]
    return np.dstack([rgb8, alpha8])


def make_all(font_path: Path, out_dir: Path, side_px: int = SIDE_PX) -> list[Path]:
    if not font_path.is_file():
        raise SystemExit(
            f"font not found: {font_path}. Install it with "
            "'apt-get install -y fonts-noto-color-emoji' or pass --font PATH"
        )
    font = ImageFont.truetype(str(font_path), STRIKE_SIZE)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, codepoint in EMOJI.items():
        premul = to_square(render_premultiplied(font, codepoint), side_px, MARGIN_FRAC)
        path = out_dir / f"{name}.png"
        Image.fromarray(to_straight_rgba8(premul)).save(path, optimize=True)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--font", type=Path, default=DEFAULT_FONT, help="NotoColorEmoji.ttf")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                        help="output folder (default: this script's folder)")
    parser.add_argument("--side", type=int, default=SIDE_PX, help="PNG side in pixels")
    args = parser.parse_args(argv)
    for path in make_all(args.font, args.out, args.side):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
