"""COCO run-length encoding of masks (pycocotools), with `counts` as str for JSON."""

import math

import numpy as np
from pycocotools import mask as mask_utils

__all__ = [
    "check_rle",
    "encode_rle",
    "encode_rle_window",
    "decode_rle",
    "decode_segmentation",
    "rle_area",
    "rle_to_bbox_xywh",
]


def encode_rle(mask: np.ndarray) -> dict:
    """(H, W) bool mask -> COCO RLE {"size": [H, W], "counts": str}."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {m.shape}")
    m = m.view(np.uint8) if m.dtype == bool else m.astype(np.uint8)  # bool: no copy
    rle = mask_utils.encode(np.asfortranarray(m))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode()}


def encode_rle_window(pixels: np.ndarray, top: int, left: int, shape: tuple[int, int]) -> dict:
    """COCO RLE of the (H, W) = `shape` mask that is `pixels` (h, w) bool at image row `top`,
    column `left` and False elsewhere, without making the full mask: equal to
    `encode_rle(full)`, at a cost in the window's size, not the image's."""
    height, width = int(shape[0]), int(shape[1])
    h, w = pixels.shape
    if top < 0 or left < 0 or top + h > height or left + w > width:
        raise ValueError(
            f"window {h} x {w} at ({top}, {left}) is outside a {height} x {width} mask"
        )
    padded = np.zeros((h + 2, w), dtype=np.int8)  # a False row above and below every column
    padded[1:-1] = pixels
    # where the value flips, in column-major order (COCO's): column c, row r of the window
    cols, rows = np.nonzero(np.diff(padded, axis=0).T)
    flips = (left + cols).astype(np.int64) * height + top + rows
    # a run ending at the foot of one column and going on at the top of the next: no flip
    flips, times = np.unique(flips, return_counts=True)
    flips = flips[times % 2 == 1]
    runs = np.diff(np.concatenate([[0], flips, [height * width]]))
    if len(runs) > 1 and runs[-1] == 0:  # the mask ends True: no empty run after it
        runs = runs[:-1]
    rle = mask_utils.frPyObjects({"counts": runs.tolist(), "size": [height, width]}, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode()}


def _as_bytes(rle: dict) -> dict:
    check_rle(rle)
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed RLE
        h, w = rle["size"]
        return mask_utils.frPyObjects(rle, h, w)
    return {
        "size": list(rle["size"]),
        "counts": counts.encode() if isinstance(counts, str) else counts,
    }


MAX_RLE_PIXELS = 1 << 31  # an RLE of a larger mask is refused before anything is allocated


def _whole(value, below: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < below


def check_rle(rle) -> tuple[int, int]:
    """(height, width) of a COCO RLE; ValueError naming the problem for anything pycocotools
    could not decode safely (size not two whole numbers, more than MAX_RLE_PIXELS pixels,
    counts neither a string nor a list of whole numbers)."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError("an RLE must be a dict with 'size' and 'counts'")
    size, counts = rle["size"], rle["counts"]
    if not (
        isinstance(size, list | tuple) and len(size) == 2 and all(_whole(v, 2**31) for v in size)
    ):
        raise ValueError(f"RLE size must be [height, width], two whole numbers, got {size!r}")
    if size[0] * size[1] > MAX_RLE_PIXELS:
        raise ValueError(f"RLE size {list(size)} is over {MAX_RLE_PIXELS} pixels")
    if isinstance(counts, list):
        if not all(_whole(c, 2**32) for c in counts):
            raise ValueError("RLE counts must be whole numbers >= 0")
    elif not isinstance(counts, str | bytes):
        raise ValueError(f"RLE counts must be a string or a list, got {type(counts).__name__}")
    return int(size[0]), int(size[1])


def decode_rle(rle: dict) -> np.ndarray:
    """COCO RLE (compressed str/bytes counts or uncompressed list counts) -> (H, W) bool mask.

    ValueError for a malformed RLE (`check_rle`, or counts that do not fit the size)."""
    return mask_utils.decode(_as_bytes(rle)).astype(bool)


def rle_area(rle: dict) -> int:
    """Number of foreground pixels of an RLE."""
    return int(mask_utils.area(_as_bytes(rle)))


def rle_to_bbox_xywh(rle: dict) -> list[float]:
    """Tight absolute XYWH box of an RLE (zeros when empty)."""
    return [float(v) for v in mask_utils.toBbox(_as_bytes(rle))]


def decode_segmentation(segmentation, height: int, width: int) -> np.ndarray:
    """A COCO `segmentation` (RLE dict, or a list of polygons [x1, y1, x2, y2, ...] in absolute
    pixels) -> (H, W) bool mask, rasterised by pycocotools as every COCO reader does.

    Raises ValueError for anything else, or an RLE whose size is not (height, width).
    """
    if isinstance(segmentation, dict):
        size = check_rle(segmentation)  # before decoding: a huge size is never allocated
        if size != (height, width):
            raise ValueError(f"RLE size {list(size)} is not the image's [{height}, {width}]")
        return decode_rle(segmentation)
    if not isinstance(segmentation, list) or not all(
        isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in segmentation
    ):
        raise ValueError(
            "segmentation must be an RLE dict or a list of polygons [x1, y1, ...] of 3 or more points"
        )
    reach = 4 * max(height, width) + 1000  # pycocotools walks every pixel along each edge
    for polygon in segmentation:
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in polygon):
            raise ValueError("polygon coordinates must be numbers")
        if not all(math.isfinite(v) and abs(v) <= reach for v in polygon):
            raise ValueError(
                f"polygon coordinates must be finite and within {reach} px of the image"
            )
    if not segmentation:
        return np.zeros((height, width), dtype=bool)
    rles = mask_utils.frPyObjects([[float(v) for v in p] for p in segmentation], height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)
