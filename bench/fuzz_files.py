"""The files of bench/fuzz.py's checks: good images to point at or mutate, byte edits, and the
snapshots that tell a changed input or a file left behind."""

import functools
import io
from pathlib import Path

import numpy as np
from PIL import Image

from bench.fuzz_inputs import GOOD_IMAGES


@functools.cache
def good_image_bytes(fmt: str) -> bytes:
    """A small valid image file of format `fmt` (JPEG-EXIF: a JPEG with EXIF orientation 6)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(20, 60, (24, 32, 3)).astype(np.uint8)
    pixels[6:18, 8:24] = (210, 50, 40)
    buf = io.BytesIO()
    image = Image.fromarray(pixels)
    if fmt == "JPEG-EXIF":
        exif = Image.Exif()
        exif[0x0112] = 6
        image.save(buf, format="JPEG", exif=exif)
    else:
        image.save(buf, format=fmt)
    return buf.getvalue()


def write_good_images(folder: Path) -> Path:
    """`folder/images` holding GOOD_IMAGES (file name -> (height, width))."""
    images = folder / "images"
    images.mkdir()
    for name, (height, width) in GOOD_IMAGES.items():
        pixels = np.full((height, width, 3), 40, np.uint8)
        pixels[4 : height - 4, 6 : width - 6] = (210, 50, 40)
        Image.fromarray(pixels).save(images / name)
    return images


def snapshot(folder: Path, skip: str = "store/") -> dict:
    """{relative path: bytes} of every file under `folder` but those under `skip` (a store)."""
    files = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
    return {name: p.read_bytes() for name, p in files.items() if not name.startswith(skip)}


def leftovers(before: dict, folder: Path, allowed: set) -> str | None:
    """What is wrong with `folder` after a run: a changed or removed input, or a new file that
    is not in `allowed` (relative paths). None when nothing is."""
    after = snapshot(folder)
    for path, data in before.items():
        if after.get(path) != data:
            return f"input {path} changed or removed"
    extra = sorted(set(after) - set(before) - allowed)
    return f"left behind: {extra[:3]}" if extra else None


def names_path(err: BaseException, path: Path) -> bool:
    return str(path) in str(err)


def mutate_bytes(data: bytes, edits) -> bytes:
    """Apply ("flip", pos, bit), ("cut", pos), ("insert", pos, bytes) edits (positions wrap)."""
    data = bytearray(data)
    for edit in edits:
        pos = edit[1] % max(1, len(data))
        if edit[0] == "flip" and data:
            data[pos] ^= 1 << edit[2]
        elif edit[0] == "cut":
            del data[pos:]
        elif edit[0] == "insert":
            data[pos:pos] = edit[2]
    return bytes(data)
