"""FiftyOne <-> box2mask formats: the FiftyOne adapter's only format conversions.

FiftyOne stores a detection as a relative XYWH `bounding_box` (fractions of the image width and
height) and a `mask` cropped to the box: a bool (h, w) array covering the box's pixel window.
box2mask uses absolute XYXY float pixels and full-size (H, W) masks (COCO RLE on disk).

The pixel window of a relative box is computed exactly as FiftyOne places masks when it renders
or evaluates them (`fiftyone.utils.iou`): x0 = round(x * W), x1 = round(x0 + w * W) (Python's
round, half to even), same for y, then clipped to the image. Box arithmetic itself is delegated to
`box2mask.ops.box_ops`.
"""

import cv2
import numpy as np

from box2mask.io.rle import decode_rle, encode_rle
from box2mask.ops.box_ops import relative_xywh_to_xyxy, xyxy_to_relative_xywh

__all__ = [
    "BOX_DECIMALS",
    "bbox_to_xyxy",
    "xyxy_to_bbox",
    "pixel_window",
    "window_to_bbox",
    "crop_mask",
    "dropped_pixels",
    "paste_mask",
    "rle_to_crop",
    "crop_to_rle",
    "tight_bbox",
]

# Absolute coordinates read back from a relative box are rounded to 1e-6 px: this undoes the
# floating-point noise of x -> x / W -> x (e.g. 10.3 / 640 * 640 = 10.299999999999999).
BOX_DECIMALS = 6


def bbox_to_xyxy(bounding_box, width: int, height: int) -> list[float]:
    """FiftyOne relative [x, y, w, h] -> absolute XYXY pixels [x0, y0, x1, y1]."""
    xyxy = relative_xywh_to_xyxy(bounding_box, width, height)
    return [round(float(v), BOX_DECIMALS) for v in xyxy]


def xyxy_to_bbox(box_xyxy, width: int, height: int) -> list[float]:
    """Absolute XYXY pixels -> FiftyOne relative [x, y, w, h]."""
    return [float(v) for v in xyxy_to_relative_xywh(box_xyxy, width, height)]


def pixel_window(bounding_box, width: int, height: int) -> tuple[int, int, int, int]:
    """The integer pixel window (x0, y0, x1, y1) that a relative box's cropped mask covers.

    Columns x0..x1-1 and rows y0..y1-1 of the image; FiftyOne's rule, clipped to the image, so a
    box touching or crossing the border gets a window that ends at the border. The window may be
    empty (x1 == x0) for a box outside the image or under half a pixel wide.
    """
    x, y, w, h = (float(v) for v in bounding_box)
    x0, y0 = round(x * width), round(y * height)
    x1, y1 = round(x0 + w * width), round(y0 + h * height)
    x0, x1 = min(max(x0, 0), width), min(max(x1, 0), width)
    y0, y1 = min(max(y0, 0), height), min(max(y1, 0), height)
    return x0, y0, max(x1, x0), max(y1, y0)


def window_to_bbox(window, width: int, height: int) -> list[float]:
    """An integer pixel window (x0, y0, x1, y1) -> the relative box whose pixel_window it is."""
    return xyxy_to_bbox(window, width, height)


def crop_mask(mask_full: np.ndarray, bounding_box) -> np.ndarray:
    """Full-size (H, W) mask -> the (h, w) bool crop FiftyOne stores for `bounding_box`.

    Pixels outside the box's pixel window are dropped (FiftyOne cannot represent them); callers
    that must be lossless check `dropped_pixels` first.
    """
    mask_full = np.asarray(mask_full, dtype=bool)
    height, width = mask_full.shape
    x0, y0, x1, y1 = pixel_window(bounding_box, width, height)
    return mask_full[y0:y1, x0:x1].copy()


def dropped_pixels(mask_full: np.ndarray, bounding_box) -> int:
    """How many foreground pixels of a full-size mask lie outside the box's pixel window."""
    mask_full = np.asarray(mask_full, dtype=bool)
    return int(mask_full.sum()) - int(crop_mask(mask_full, bounding_box).sum())


def paste_mask(mask_crop: np.ndarray, bounding_box, width: int, height: int) -> np.ndarray:
    """FiftyOne's (h, w) box-cropped mask -> full-size (H, W) bool mask.

    A crop whose shape differs from the box's pixel window (masks written by other tools, or a box
    clipped by the image border) is resized to the window with nearest-neighbour sampling, as
    FiftyOne does when it renders instances.
    """
    full = np.zeros((height, width), dtype=bool)
    x0, y0, x1, y1 = pixel_window(bounding_box, width, height)
    if x1 <= x0 or y1 <= y0:
        return full
    crop = np.asarray(mask_crop)
    if crop.ndim == 3:  # (h, w, 1) masks read from single-channel image files
        crop = crop[:, :, 0]
    crop = crop.astype(bool)
    if crop.shape != (y1 - y0, x1 - x0):
        if crop.size == 0:
            return full
        crop = cv2.resize(
            crop.astype(np.uint8), (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST
        ).astype(bool)
    full[y0:y1, x0:x1] = crop
    return full


def rle_to_crop(mask_rle: dict, bounding_box) -> np.ndarray:
    """Full-size COCO RLE -> FiftyOne's box-cropped bool mask."""
    return crop_mask(decode_rle(mask_rle), bounding_box)


def crop_to_rle(mask_crop: np.ndarray, bounding_box, width: int, height: int) -> dict:
    """FiftyOne's box-cropped mask -> full-size COCO RLE (counts as str)."""
    return encode_rle(paste_mask(mask_crop, bounding_box, width, height))


def tight_bbox(mask_full: np.ndarray) -> list[float] | None:
    """Full-size (H, W) mask -> FiftyOne relative [x, y, w, h] of its tight box (the smallest
    pixel window holding every foreground pixel); None for an empty mask."""
    mask_full = np.asarray(mask_full, dtype=bool)
    height, width = mask_full.shape
    rows, cols = np.flatnonzero(mask_full.any(1)), np.flatnonzero(mask_full.any(0))
    if rows.size == 0:
        return None
    window = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    return window_to_bbox(window, width, height)
