"""Robust image loading: any common file -> HWC uint8 RGB, or an error that names the file."""

import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageLoadError", "DEFAULT_MAX_PIXELS", "image_size", "load_image", "to_rgb_uint8"]

_EXIF_ORIENTATION = 0x0112
_QUARTER_TURNS = (5, 6, 7, 8)  # EXIF orientations that swap width and height on load

DEFAULT_MAX_PIXELS = 100_000_000  # 10k x 10k; larger files are refused as decompression bombs


class ImageLoadError(RuntimeError):
    """An image file that cannot be used; the message names the file and the reason."""


def _sixteen_bit_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale a 16/32-bit or float array to uint8: by its own maximum when that exceeds 255."""
    arr = np.nan_to_num(arr.astype(np.float64))
    top = arr.max() if arr.size else 0.0
    scale = 255.0 / top if top > 255 else 1.0
    return np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8)


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Any (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array -> (H, W, 3) uint8 RGB.

    Alpha is dropped (composited on black would hide dark objects, so we drop it plainly);
    non-uint8 data is scaled to 0..255.
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"expected an (H, W[, C]) image with 1-4 channels, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = _sixteen_bit_to_uint8(arr)
    if arr.shape[2] in (1, 2):  # gray or gray + alpha
        arr = np.repeat(arr[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3])


def load_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB.

    Handles grayscale, gray+alpha, RGBA, palette (with transparency), CMYK, 16-bit and EXIF-rotated
    files. Raises ImageLoadError naming the file for missing, empty, truncated or non-image files
    and for images with more than `max_pixels` pixels (decompression bombs).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ImageLoadError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise ImageLoadError(f"{path}: file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageLoadError(
                        f"{path}: {width}x{height} = {width * height} pixels exceeds the limit of "
                        f"{max_pixels} (possible decompression bomb; raise max_pixels to allow it)"
                    )
                img.load()
                ImageOps.exif_transpose(img, in_place=True)  # no copy of an upright picture
                return _pil_to_rgb(img)
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageLoadError(f"{path}: refused as a decompression bomb ({err})") from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"{path}: not an image file (unrecognised format)") from None
    except OSError as err:  # truncated or corrupt data
        raise ImageLoadError(f"{path}: cannot decode image ({err})") from None
    except (ValueError, SyntaxError) as err:
        raise ImageLoadError(f"{path}: corrupt image ({err})") from None


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of the image as `load_image` returns it (EXIF rotation applied), read from
    the file's header without decoding the pixels. Raises ImageLoadError naming the file."""
    path = os.fspath(path)
    try:
        with Image.open(path) as img:
            width, height = img.size
            if img.getexif().get(_EXIF_ORIENTATION, 1) in _QUARTER_TURNS:
                width, height = height, width
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise ImageLoadError(f"{path}: cannot read the image size ({err})") from None
    except Image.DecompressionBombError as err:  # refused by PIL at open: 2x its pixel limit
        raise ImageLoadError(f"{path}: refused as a decompression bomb ({err})") from None
    return int(height), int(width)


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "1", "RGBX", "RGBa", "LA", "La", "PA"):
        img = img.convert("RGB")
    elif mode.startswith("I;16") or mode in ("I", "F"):
        return to_rgb_uint8(np.asarray(img))
    elif mode not in ("L", "RGB", "RGBA"):
        img = img.convert("RGB")
    return to_rgb_uint8(np.asarray(img))
