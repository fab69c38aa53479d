"""load_image: every common file kind -> (H, W, 3) uint8 RGB; every broken file -> an error naming it."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from box2mask.io.image_io import ImageLoadError, load_image, to_rgb_uint8


def _gradient(h=20, w=30):
    """(h, w) uint8 with distinct values, so a transpose or a channel mix-up is visible."""
    return (np.arange(h * w).reshape(h, w) % 251).astype(np.uint8)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = _gradient()
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    image = load_image(tmp_path / "g.png")
    assert image.shape == (20, 30, 3) and image.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(image[:, :, c], gray)


def test_gray_alpha_drops_alpha(tmp_path):
    gray = _gradient()
    alpha = np.full_like(gray, 7)
    Image.fromarray(np.stack([gray, alpha], -1), mode="LA").save(tmp_path / "la.png")
    image = load_image(tmp_path / "la.png")
    assert image.shape == (20, 30, 3)
    np.testing.assert_array_equal(image[:, :, 1], gray)


def test_rgba_keeps_colours(tmp_path):
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 200, 100, 50, 0  # fully transparent
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert image.shape == (10, 12, 3)
    assert image[0, 0].tolist() == [200, 100, 50]


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (8, 6), 0)
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    img.paste(1, (0, 0, 4, 6))  # left half red
    img.paste(2, (4, 0, 8, 6))  # right half green
    img.info["transparency"] = 0
    img.save(tmp_path / "p.png", transparency=0)
    image = load_image(tmp_path / "p.png")
    assert image.shape == (6, 8, 3)
    assert image[0, 0].tolist() == [255, 0, 0]
    assert image[0, 7].tolist() == [0, 255, 0]


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    cmyk = np.zeros((16, 16, 4), np.uint8)
    cmyk[..., 1] = cmyk[..., 2] = 255  # magenta + yellow = red
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "c.jpg", quality=95)
    image = load_image(tmp_path / "c.jpg")
    assert image.shape == (16, 16, 3)
    r, g, b = image[8, 8].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_sixteen_bit_png_is_scaled(tmp_path):
    values = np.array([[0, 1000, 32768, 65535]], np.uint16).repeat(3, axis=0)
    Image.fromarray(values).save(tmp_path / "d.png")
    assert Image.open(tmp_path / "d.png").mode.startswith("I")
    image = load_image(tmp_path / "d.png")
    assert image.shape == (3, 4, 3) and image.dtype == np.uint8
    assert image[0, :, 0].tolist() == [0, 4, 128, 255]  # v * 255 / 65535, rounded


def test_exif_orientation_6_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (10, 20, 30))
    img.paste((250, 250, 250), (0, 0, 5, 5))  # a white mark top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    img.save(tmp_path / "r.jpg", exif=exif, quality=95)
    image = load_image(tmp_path / "r.jpg")
    assert image.shape == (40, 20, 3)  # transposed: H and W swapped
    assert image[1, 18].mean() > 200  # top-left mark moved to the top-right corner


def test_to_rgb_uint8_rejects_bad_shapes():
    with pytest.raises(ValueError, match="1-4 channels"):
        to_rgb_uint8(np.zeros((4, 4, 5), np.uint8))


def _assert_load_error(path, *words, **kwargs):
    with pytest.raises(ImageLoadError) as info:
        load_image(path, **kwargs)
    message = str(info.value)
    assert str(path) in message, message
    for word in words:
        assert word in message, message


def test_missing_file(tmp_path):
    _assert_load_error(tmp_path / "nope.png", "no such file")


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    _assert_load_error(tmp_path / "empty.jpg", "empty")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_files(tmp_path, fmt):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)  # incompressible
    full = tmp_path / f"full.{fmt.lower()}"
    Image.fromarray(noise).save(full, format=fmt)
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    _assert_load_error(cut, "cannot decode")


def test_text_file_named_jpg(tmp_path):
    (tmp_path / "notes.jpg").write_text("this is not an image\n")
    _assert_load_error(tmp_path / "notes.jpg", "not an image file")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_decompression_bomb_png_is_refused_before_decoding(tmp_path):
    """A 30000 x 30000 PNG header with almost no data: refused from its header, cheaply."""
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)  # 8-bit RGB
    idat = zlib.compress(b"\x00" * 1000)
    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
    (tmp_path / "bomb.png").write_bytes(data + _png_chunk(b"IEND", b""))
    _assert_load_error(tmp_path / "bomb.png", "decompression bomb")


def test_max_pixels_is_configurable(tmp_path):
    Image.new("RGB", (50, 40)).save(tmp_path / "small.png")
    _assert_load_error(tmp_path / "small.png", "2000 pixels", "1999", max_pixels=1999)
    assert load_image(tmp_path / "small.png", max_pixels=2000).shape == (40, 50, 3)
