"""Robustness cases: bad and odd image files (issue 8), fed to `load_image` here and to
`box2mask segment` by bench/robustness_segment.py."""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from box2mask.io.image_io import ImageLoadError, load_image

H, W = 40, 56  # every test image


def good_image(path: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    img = rng.integers(20, 60, (H, W, 3)).astype(np.uint8)
    img[8:28, 10:36] = (210, 50, 40)
    Image.fromarray(img).save(path)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bomb_png(path: Path, side: int = 30000) -> None:
    """A PNG declaring side x side pixels with 1 kB of data."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)
    header = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
    path.write_bytes(header + _png_chunk(b"IEND", b""))


def _truncated(path: Path, fmt: str) -> None:
    noise = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format=fmt)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


BAD_FILES = {
    "0-byte .jpg": ("empty.jpg", lambda p: p.write_bytes(b"")),
    "truncated JPEG": ("cut.jpg", lambda p: _truncated(p, "JPEG")),
    "truncated PNG": ("cut.png", lambda p: _truncated(p, "PNG")),
    "text file named .jpg": ("notes.jpg", lambda p: p.write_text("not an image\n")),
    "HTML page named .png": ("page.png", lambda p: p.write_text("<html><body>404</body></html>")),
    "missing file": ("gone.png", lambda p: None),
    "30000x30000 PNG (bomb)": ("bomb.png", _bomb_png),
}


def _scene() -> Image.Image:
    """The test scene: a red rectangle (rows 8:28, columns 10:36) on noisy dark ground."""
    rng = np.random.default_rng(0)
    img = rng.integers(20, 60, (H, W, 3)).astype(np.uint8)
    img[8:28, 10:36] = (210, 50, 40)
    return Image.fromarray(img)


def _exif_rotated(path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: W x H on screen
    _scene().save(path, exif=exif, quality=95)


def _sixteen_bit(path: Path) -> None:
    gray = np.asarray(_scene().convert("L")).astype(np.uint16) * 257
    Image.fromarray(gray).save(path)


def _palette(path: Path) -> None:
    _scene().convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(path, transparency=0)


ODD_FILES = {  # name -> (file name, writer, expected (H, W), a box XYWH around the rectangle)
    "CMYK JPEG": ("cmyk.jpg", lambda p: _scene().convert("CMYK").save(p, quality=95), (H, W)),
    "16-bit PNG": ("deep.png", _sixteen_bit, (H, W)),
    "palette PNG + transparency": ("pal.png", _palette, (H, W)),
    "grayscale + alpha PNG": ("la.png", lambda p: _scene().convert("LA").save(p), (H, W)),
    "grayscale PNG": ("gray.png", lambda p: _scene().convert("L").save(p), (H, W)),
    "EXIF-rotated JPEG (orientation 6)": ("rot.jpg", _exif_rotated, (W, H)),
    "flat one-colour image": (
        "flat.png",
        lambda p: Image.new("RGB", (W, H), (90, 90, 90)).save(p),
        (H, W),
    ),
}


ODD_BOXES = {"EXIF-rotated JPEG (orientation 6)": [10, 8, 24, 30]}  # others: [8, 6, 30, 24]


def load_case(folder: Path, name: str) -> tuple[str, str, int]:
    """load_image on one file: bad files must raise ImageLoadError naming the file."""
    if name in BAD_FILES:
        file_name, write = BAD_FILES[name]
        path = folder / file_name
        write(path)
        try:
            load_image(path)
        except ImageLoadError as err:
            ok = str(path) in str(err)
            return ("handled" if ok else "crash"), str(err).replace(str(folder) + "/", ""), 0
        return "wrong", "loaded without an error", 0
    file_name, write, shape = ODD_FILES[name]
    path = folder / file_name
    write(path)
    image = load_image(path)
    ok = image.shape == (*shape, 3) and image.dtype == np.uint8
    return ("handled" if ok else "wrong"), f"loaded as {image.shape} {image.dtype}", 0
