"""EmojiSet: loading, validation and fallbacks, premultiplied storage, sprites."""

from __future__ import annotations

import importlib.util
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emojicam import assets
from emojicam.emoji import (
    ANGLE_STEP_DEG,
    MAX_SOURCE_SIDE_PX,
    OPAQUE_ALPHA,
    EmojiArt,
    EmojiSet,
    emoji_file_name,
    placeholder_art,
    quantise_angle,
    rotated_side_px,
)
from emojicam.errors import SetupError
from emojicam.types import Emotion
from tests.factories import make_rgba_art, write_png

BUNDLED = assets.emoji_dir()
SCRIPT = BUNDLED / "make_emoji_pngs.py"
FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "emojicam.emoji" and r.levelno == logging.WARNING]


def _user_folder(tmp_path: Path, skip: tuple[Emotion, ...] = ()) -> Path:
    """A complete custom set of red disks, minus ``skip``."""
    folder = tmp_path / "mine"
    for e in Emotion:
        if e not in skip:
            write_png(folder / emoji_file_name(e), make_rgba_art(48, rgb=(240, 20, 20)))
    folder.mkdir(exist_ok=True)
    return folder


def _is_bundled(art: EmojiArt) -> bool:
    return art.source is not None and art.source.parent == BUNDLED


@pytest.fixture(scope="module")
def bundled_set() -> EmojiSet:
    return EmojiSet.load(None)


# ---------------------------------------------------------------- bundled files


def test_bundled_set_has_every_class_as_square_rgba_png():
    for e in Emotion:
        with Image.open(BUNDLED / emoji_file_name(e)) as im:
            assert im.mode == "RGBA", e
            assert im.size[0] == im.size[1] >= 128, e


def test_bundled_license_file_names_both_licenses():
    text = " ".join((BUNDLED / "LICENSE.md").read_text(encoding="utf-8").split())
    assert "Open Font License" in text and "Apache License" in text


def test_bundled_pngs_have_no_dark_fringe():
    # Every transparent pixel next to a visible one carries a colour close to
    # its visible neighbours (edge bleed), never black; partly transparent
    # edge pixels are as bright as the opaque rim.
    for e in Emotion:
        rgba = np.asarray(Image.open(BUNDLED / emoji_file_name(e))).astype(np.float32)
        alpha, luma = rgba[:, :, 3], rgba[:, :, :3].mean(axis=2)
        visible = alpha > 0
        grown = np.zeros_like(visible)
        grown[1:-1, 1:-1] = visible[:-2, 1:-1] | visible[2:, 1:-1] | visible[1:-1, :-2] | visible[1:-1, 2:]
        halo = grown & ~visible
        rim = (alpha > 0) & (alpha < 255)
        assert halo.any() and rim.any()
        assert luma[halo].mean() > 0.8 * luma[rim].mean(), e
        assert luma[rim].mean() > 100, e


def test_bundled_set_loads_without_warnings(caplog):
    with caplog.at_level(logging.WARNING):
        es = EmojiSet.load(None)
    assert not _warnings(caplog)
    assert es.folder == BUNDLED
    for e in Emotion:
        art = es.art(e)
        assert _is_bundled(art)
        assert art.premul_bgra.dtype == np.float32 and art.premul_bgra.shape[2] == 4
        # round faces: an opaque disk of ~0.44 of the side
        assert 0.40 < art.opaque_radius_frac < 0.5, e
        b, g, r = art.fill_bgr
        assert r > 150 and g > 150  # yellowish (green for disgust): not black


# ---------------------------------------------------------------- user folders and fallbacks


def test_missing_folder_is_a_setup_error_naming_folder_and_fix(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(SetupError) as info:
        EmojiSet.load(missing)
    assert str(missing) in str(info.value)
    assert "emoji.folder" in str(info.value) and "angry.png" in str(info.value)


def test_folder_that_is_a_file_is_a_setup_error(tmp_path):
    f = tmp_path / "file.png"
    f.write_bytes(b"x")
    with pytest.raises(SetupError):
        EmojiSet.load(f)


def test_missing_bundled_folder_is_a_setup_error(monkeypatch):
    def gone() -> Path:
        raise FileNotFoundError("no emoji_pngs")

    monkeypatch.setattr(assets, "emoji_dir", gone)
    with pytest.raises(SetupError, match="emoji_pngs"):
        EmojiSet.load(None)


def test_complete_user_folder_is_used(tmp_path, caplog):
    folder = _user_folder(tmp_path)
    with caplog.at_level(logging.WARNING):
        es = EmojiSet.load(folder)
    assert not _warnings(caplog)
    for e in Emotion:
        assert es.art(e).source == folder / emoji_file_name(e)
        assert es.art(e).fill_bgr == (20, 20, 240)  # BGR of the red disk


def test_missing_class_file_falls_back_to_bundled_with_one_warning(tmp_path, caplog):
    folder = _user_folder(tmp_path, skip=(Emotion.SAD,))
    with caplog.at_level(logging.WARNING):
        es = EmojiSet.load(folder)
    records = _warnings(caplog)
    assert len(records) == 1
    assert "sad.png is missing" in records[0].getMessage()
    assert _is_bundled(es.art(Emotion.SAD))
    assert es.art(Emotion.HAPPY).source == folder / "happy.png"


@pytest.mark.parametrize("content", [b"", b"not a png at all", None], ids=["empty", "garbage", "truncated"])
def test_corrupt_png_falls_back(tmp_path, caplog, content):
    folder = _user_folder(tmp_path)
    target = folder / "angry.png"
    if content is None:  # a real PNG cut in half
        content = target.read_bytes()[: target.stat().st_size // 2]
    target.write_bytes(content)
    with caplog.at_level(logging.WARNING):
        es = EmojiSet.load(folder)
    records = _warnings(caplog)
    assert len(records) == 1 and "angry.png cannot be decoded" in records[0].getMessage()
    assert _is_bundled(es.art(Emotion.ANGRY))


def test_many_problems_give_exactly_one_warning(tmp_path, caplog):
    folder = _user_folder(tmp_path, skip=(Emotion.FEAR, Emotion.DISGUST))
    (folder / "happy.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    write_png(folder / "neutral.png", np.zeros((8, 8, 4), np.uint8))  # fully transparent
    with caplog.at_level(logging.WARNING):
        es = EmojiSet.load(folder)
    records = _warnings(caplog)
    assert len(records) == 1
    msg = records[0].getMessage()
    for name in ("fear.png", "disgust.png", "happy.png", "neutral.png"):
        assert name in msg
    assert "fully transparent" in msg
    for e in (Emotion.FEAR, Emotion.DISGUST, Emotion.HAPPY, Emotion.NEUTRAL):
        assert _is_bundled(es.art(e))


def test_broken_user_and_bundled_file_gives_placeholder(tmp_path, caplog, monkeypatch):
    user = _user_folder(tmp_path, skip=(Emotion.SURPRISE,))
    fake_bundled = _user_folder(tmp_path / "b", skip=(Emotion.SURPRISE,))
    monkeypatch.setattr(assets, "emoji_dir", lambda: fake_bundled)
    with caplog.at_level(logging.WARNING):
        es = EmojiSet.load(user)
    records = _warnings(caplog)
    assert len(records) == 1 and "placeholder" in records[0].getMessage()
    art = es.art(Emotion.SURPRISE)
    assert art.source is None and art.opaque_radius_frac > 0.4


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_png_without_alpha_is_used_as_opaque_square_with_warning(tmp_path, caplog, mode):
    folder = _user_folder(tmp_path)
    img = np.full((40, 60, 3), (10, 200, 30), np.uint8)
    write_png(folder / "fear.png", img if mode == "RGB" else img[:, :, 1])
    with caplog.at_level(logging.WARNING):
        es = EmojiSet.load(folder)
    records = _warnings(caplog)
    assert len(records) == 1 and "fear.png has no alpha channel" in records[0].getMessage()
    art = es.art(Emotion.FEAR)
    assert art.source == folder / "fear.png"
    # 60x40 centred on a 60x60 square: opaque band in the middle, clear above and below
    a = art.premul_bgra[:, :, 3]
    assert a.shape == (60, 60)
    assert np.all(a[10:50] == 1.0) and np.all(a[:10] == 0) and np.all(a[50:] == 0)


@pytest.mark.parametrize("side_px", [1, 4])
def test_tiny_png_is_drawn_as_a_flat_square_not_a_blur(tmp_path, side_px):
    """A 1x1 or 4x4 PNG without alpha (a flat colour swatch) is used as an
    opaque square at any size; before, enlarging it blended it with the
    transparent border into a blurred, see-through tent."""
    folder = _user_folder(tmp_path)
    write_png(folder / "happy.png", np.full((side_px, side_px, 3), (10, 200, 30), np.uint8))
    es = EmojiSet.load(folder)
    for mask in (False, True):
        s = es.sprite(Emotion.HAPPY, 120, mask=mask)
        inner = (slice(2, -2), slice(2, -2))
        assert s.alpha[inner].min() == 255, (side_px, mask)
        assert np.array_equal(np.unique(s.premul_bgr[inner].reshape(-1, 3), axis=0), [[30, 200, 10]])


def test_16_bit_grayscale_png_keeps_its_grey(tmp_path):
    """A 16-bit grayscale PNG (Pillow mode I;16) is scaled to 8 bits; before,
    Pillow's conversion clipped every value above 255 and the art came out white."""
    import cv2

    folder = _user_folder(tmp_path)
    grey16 = np.full((32, 32), 20000, np.uint16)  # 20000 / 257 = 78 in 8 bits
    grey16[:, :8] = 65535
    assert cv2.imwrite(str(folder / "sad.png"), grey16)
    art = EmojiSet.load(folder).art(Emotion.SAD)
    assert art.source == folder / "sad.png"
    assert np.allclose(art.premul_bgra[16, 20], [78 / 255, 78 / 255, 78 / 255, 1.0], atol=1 / 255)
    assert np.allclose(art.premul_bgra[16, 2], 1.0)


def test_palette_png_with_transparency_counts_as_having_alpha(tmp_path, caplog):
    folder = _user_folder(tmp_path)
    write_png(folder / "sad.png", make_rgba_art(32, rgb=(0, 0, 255)), mode="P")
    with Image.open(folder / "sad.png") as im:
        assert im.mode == "P" and "transparency" in im.info
    with caplog.at_level(logging.WARNING):
        es = EmojiSet.load(folder)
    assert not _warnings(caplog)
    assert es.art(Emotion.SAD).premul_bgra[0, 0, 3] == 0


def test_huge_art_is_reduced_and_made_square(tmp_path):
    folder = _user_folder(tmp_path)
    write_png(folder / "happy.png", np.full((700, 1400, 4), 200, np.uint8))
    art = EmojiSet.load(folder).art(Emotion.HAPPY)
    assert art.premul_bgra.shape == (MAX_SOURCE_SIDE_PX, MAX_SOURCE_SIDE_PX, 4)


def test_art_is_stored_premultiplied_bgra():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[...] = (255, 0, 0, 128)  # half-transparent red
    art = EmojiArt.from_rgba8(rgba)
    b, g, r, a = art.premul_bgra[0, 0]
    assert a == pytest.approx(128 / 255) and r == pytest.approx(128 / 255) and b == g == 0


def test_colour_hidden_under_transparent_pixels_never_shows():
    # Same art, black vs white stored under alpha=0: sprites at every scale are
    # identical (no dark or light fringe from hidden colour).
    dark = EmojiSet.from_rgba8({e: make_rgba_art(64, hidden_rgb=(0, 0, 0)) for e in Emotion})
    light = EmojiSet.from_rgba8({e: make_rgba_art(64, hidden_rgb=(255, 255, 255)) for e in Emotion})
    for side, angle in [(20, 0.0), (64, 0.0), (150, 0.0), (90, 30.0)]:
        a, b = dark.sprite(Emotion.HAPPY, side, angle), light.sprite(Emotion.HAPPY, side, angle)
        assert np.array_equal(a.premul_bgr, b.premul_bgr) and np.array_equal(a.alpha, b.alpha)


def test_emoji_set_needs_every_emotion():
    with pytest.raises(ValueError, match="surprise"):
        EmojiSet.from_rgba8({e: make_rgba_art() for e in Emotion if e is not Emotion.SURPRISE})


# ---------------------------------------------------------------- sprites


def test_sprite_sizes_and_premultiplied_invariants(bundled_set):
    for side in (1, 7, 64, 256, 400):
        s = bundled_set.sprite(Emotion.HAPPY, side)
        assert s.size_wh == (side, side)
        assert s.premul_bgr.dtype == np.uint8 and s.inv_alpha.dtype == np.uint8
        assert np.all(s.premul_bgr <= s.alpha[:, :, None])  # colour never exceeds alpha
        assert np.array_equal(s.inv_alpha[:, :, 0], 255 - s.alpha)


def test_one_pixel_sprites_keep_their_colour(bundled_set):
    # (OpenCV reads 1x1x4 arrays as scalars; the emoji code must not.)
    s = bundled_set.sprite(Emotion.HAPPY, 1)
    b, g, r = (int(v) for v in s.premul_bgr[0, 0])
    assert s.size_wh == (1, 1) and b < g < r <= s.alpha[0, 0]
    region = bundled_set.render_region(Emotion.HAPPY, 2000, 0.0, (0.0, 0.0), (0, 0, 1, 1))
    b, g, r = (int(v) for v in region.premul_bgr[0, 0])
    assert region.alpha[0, 0] == 255 and b < g < r


def test_sprite_centre_disk_is_opaque(bundled_set):
    # The disk that hides a face is sealed at load: the font's fear face has 43
    # pixels of 253/255 around its brows, which let the camera through by 1/255.
    for emotion in Emotion:
        for side in (40, 200, 600):
            for angle in (0.0, 10.0):
                s = bundled_set.sprite(emotion, side, angle)
                n = s.alpha.shape[0]
                # less a pixel, and one of the art's pixels (256 px) that scaling smooths
                art = bundled_set.art(emotion)
                r = art.opaque_radius_frac * side - 1.5 - side / art.side_px
                yy, xx = np.mgrid[0:n, 0:n] + 0.5
                inside = np.hypot(xx - n / 2, yy - n / 2) <= r
                assert s.alpha[inside].min() == 255, (emotion, side, angle)


def test_art_with_see_through_pixels_inside_its_disk_is_sealed_without_changing_colour():
    rgba = make_rgba_art(64)
    rgba[30:34, 30:34, 3] = 245  # a see-through patch inside the face (alpha >= OPAQUE_ALPHA)
    assert OPAQUE_ALPHA <= 245 / 255
    art = EmojiArt.from_rgba8(rgba)
    np.testing.assert_array_equal(art.premul_bgra[30:34, 30:34, 3], 1.0)
    expected_bgr = rgba[30:34, 30:34, 2::-1].astype(np.float32) / 255.0
    np.testing.assert_allclose(art.premul_bgra[30:34, 30:34, :3], expected_bgr, atol=1e-6)
    assert art.premul_bgra[0, 0, 3] == 0  # outside the disk: untouched


def test_sprite_cache_hits_and_angle_rounding(bundled_set):
    a = bundled_set.sprite(Emotion.SAD, 120, 3.6)
    assert bundled_set.sprite(Emotion.SAD, 120, 6.4) is a  # both round to 5 degrees
    assert bundled_set.sprite(Emotion.SAD, 120, 0.0) is not a
    assert bundled_set.sprite(Emotion.SAD, 121, 3.6) is not a


def test_sprite_cache_respects_its_budget():
    es = EmojiSet.from_rgba8({e: make_rgba_art(64) for e in Emotion})
    es._cache_budget_bytes = 200_000
    for side in range(50, 150, 5):
        es.sprite(Emotion.FEAR, side)
    entries, used = es.cache_info()
    assert 1 <= entries < 20 and used <= 200_000


def test_rotation_is_clockwise():
    # A bar pointing up; rotated 90 degrees clockwise it points right.
    art = make_rgba_art(101, radius_frac=0.2)
    art[5:50, 46:55] = (0, 0, 255, 255)
    es = EmojiSet.from_rgba8({e: art for e in Emotion})
    s = es.sprite(Emotion.HAPPY, 101, 90.0)
    assert s.size_wh == (101, 101)
    ys, xs = np.nonzero((s.premul_bgr[:, :, 0] > 200) & (s.alpha > 200))
    assert xs.mean() > 60 and abs(ys.mean() - 50) < 3


@pytest.mark.parametrize("angle", [0.0, 30.0, -45.0, 90.0])
def test_rotation_keeps_the_centre(angle):
    es = EmojiSet.from_rgba8({e: make_rgba_art(64, radius_frac=0.3) for e in Emotion})
    s = es.sprite(Emotion.HAPPY, 80, angle)
    n = s.size_wh[0]
    yy, xx = np.mgrid[0:n, 0:n]
    w = s.alpha.astype(np.float64)
    assert (xx * w).sum() / w.sum() == pytest.approx((n - 1) / 2, abs=0.05)
    assert (yy * w).sum() / w.sum() == pytest.approx((n - 1) / 2, abs=0.05)


def test_rotated_sprite_holds_the_whole_rotated_square(bundled_set):
    for angle in (10.0, 30.0, 45.0, -70.0, 180.0):
        s = bundled_set.sprite(Emotion.NEUTRAL, 100, angle)
        n = rotated_side_px(100, angle)
        q = math.radians(quantise_angle(angle))
        assert s.size_wh == (n, n) and n % 2 == 0
        assert n >= 100 * (abs(math.cos(q)) + abs(math.sin(q))) - 1e-6
        # nothing touches the border: the rotated emoji was not cut
        assert s.alpha[0].max() == s.alpha[-1].max() == s.alpha[:, 0].max() == s.alpha[:, -1].max() == 0


@pytest.mark.parametrize(
    ("angle", "expected"),
    [(2.4, 0.0), (-2.4, 0.0), (2.6, 5.0), (179.5, 180.0), (-179.5, 180.0), (370.0, 10.0),
     (float("nan"), 0.0), (float("inf"), 0.0)],
)
def test_quantise_angle(angle, expected):
    assert quantise_angle(angle) == expected
    assert quantise_angle(angle) % ANGLE_STEP_DEG == 0


def test_render_region_matches_the_cached_sprite(bundled_set):
    side, cx, cy = 300, 200.0, 180.0
    s = bundled_set.sprite(Emotion.HAPPY, side, 20.0)
    n = s.size_wh[0]
    x0, y0 = round(cx - n / 2), round(cy - n / 2)
    r = bundled_set.render_region(Emotion.HAPPY, side, 20.0, (cx, cy), (x0, y0, n, n))
    diff = np.abs(r.alpha.astype(int) - s.alpha.astype(int))
    assert diff.mean() < 2.0 and np.mean(diff > 16) < 0.01


def test_rgba8_round_trip(bundled_set):
    rgba = bundled_set.rgba8(Emotion.HAPPY, 256)
    orig = np.asarray(Image.open(BUNDLED / "happy.png"))
    opaque = orig[:, :, 3] == 255
    assert rgba.shape == (256, 256, 4)
    assert np.abs(rgba[opaque].astype(int) - orig[opaque].astype(int)).max() <= 1


def test_placeholder_is_an_opaque_disk():
    art = placeholder_art(Emotion.FEAR, 128)
    assert art.premul_bgra.shape == (128, 128, 4) and art.source is None
    assert 0.42 < art.opaque_radius_frac <= 0.47
    assert art.premul_bgra[0, 0, 3] == 0


# ---------------------------------------------------------------- the generator script


def _load_script():
    spec = importlib.util.spec_from_file_location("make_emoji_pngs", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_edge_bleed_gives_transparent_pixels_the_nearest_colour():
    script = _load_script()
    premul = np.zeros((9, 9, 4), np.float32)
    premul[4, 2] = (0.5, 0.25, 0.0, 0.5)  # half-transparent orange on the left
    premul[4, 6] = (0.0, 0.0, 1.0, 1.0)  # opaque blue on the right
    out = script.to_straight_rgba8(premul)
    assert tuple(out[4, 2]) == (255, 128, 0, 128)  # un-premultiplied
    assert tuple(out[4, 0, :3]) == (255, 128, 0) and out[4, 0, 3] == 0
    assert tuple(out[4, 8, :3]) == (0, 0, 255) and out[4, 8, 3] == 0


@pytest.mark.skipif(not FONT.is_file(), reason=f"{FONT} missing: apt-get install fonts-noto-color-emoji")
def test_script_reproduces_the_committed_pngs(tmp_path):
    written = _load_script().make_all(FONT, tmp_path)
    assert {p.name for p in written} >= {emoji_file_name(e) for e in Emotion} | {"paused.png"}
    for p in written:
        new = np.asarray(Image.open(p)).astype(int)
        old = np.asarray(Image.open(BUNDLED / p.name)).astype(int)
        assert new.shape == old.shape
        visible = old[:, :, 3] > 0
        assert np.abs(new[:, :, 3] - old[:, :, 3]).max() <= 2, p.name
        assert np.abs(new[visible] - old[visible]).mean() < 1.0, p.name
