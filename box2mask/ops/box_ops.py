"""Box formats and validation. The only place (with the FiftyOne adapter) that converts formats.

Inside the code boxes are absolute XYXY float pixels (x0, y0, x1, y1), x1 > x0, y1 > y0, where pixel
column i covers [i, i + 1). COCO files use absolute XYWH; FiftyOne uses relative XYWH in [0, 1].
"""

import math

import numpy as np

__all__ = [
    "BoxError",
    "xywh_to_xyxy",
    "xyxy_to_xywh",
    "xyxy_to_relative_xywh",
    "relative_xywh_to_xyxy",
    "validate_box",
    "validate_boxes",
]


class BoxError(ValueError):
    """A box that cannot be used (not finite, inverted, empty, or entirely outside the image)."""


def xywh_to_xyxy(bbox_xywh) -> np.ndarray:
    """(..., 4) absolute XYWH -> (..., 4) absolute XYXY, float64."""
    b = np.asarray(bbox_xywh, dtype=np.float64)
    return np.concatenate([b[..., :2], b[..., :2] + b[..., 2:4]], axis=-1)


def xyxy_to_xywh(box_xyxy) -> np.ndarray:
    """(..., 4) absolute XYXY -> (..., 4) absolute XYWH, float64."""
    b = np.asarray(box_xyxy, dtype=np.float64)
    return np.concatenate([b[..., :2], b[..., 2:4] - b[..., :2]], axis=-1)


def xyxy_to_relative_xywh(box_xyxy, width: int, height: int) -> np.ndarray:
    """(..., 4) absolute XYXY -> (..., 4) FiftyOne relative XYWH (fractions of width/height)."""
    b = xyxy_to_xywh(box_xyxy)
    return b / np.array([width, height, width, height], dtype=np.float64)


def relative_xywh_to_xyxy(bbox_rel_xywh, width: int, height: int) -> np.ndarray:
    """(..., 4) FiftyOne relative XYWH -> (..., 4) absolute XYXY pixels."""
    b = np.asarray(bbox_rel_xywh, dtype=np.float64) * np.array([width, height, width, height])
    return xywh_to_xyxy(b)


def validate_box(box_xyxy, width: int, height: int, min_size: float = 1.0) -> np.ndarray:
    """Check one XYXY box against an image of `width` x `height` and clip it to the image.

    Raises BoxError naming the problem for: wrong length, NaN/inf, inverted or zero-area boxes,
    boxes entirely outside the image, and boxes whose clipped side is under `min_size` pixels.
    Returns the clipped box as float64 (4,).
    """
    b = np.asarray(box_xyxy, dtype=np.float64).reshape(-1)
    if b.shape != (4,):
        raise BoxError(f"box must have 4 numbers, got {b.size}")
    if not all(math.isfinite(v) for v in b):
        raise BoxError(f"box has a non-finite coordinate: {b.tolist()}")
    x0, y0, x1, y1 = b
    if x1 <= x0 or y1 <= y0:
        raise BoxError(f"box is inverted or has zero area (x0={x0}, y0={y0}, x1={x1}, y1={y1})")
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        raise BoxError(f"box {b.tolist()} lies entirely outside the {width}x{height} image")
    clipped = np.array([max(x0, 0.0), max(y0, 0.0), min(x1, width), min(y1, height)])
    if clipped[2] - clipped[0] < min_size or clipped[3] - clipped[1] < min_size:
        raise BoxError(f"box {b.tolist()} is under {min_size} px after clipping to the image")
    return clipped


def validate_boxes(boxes_xyxy, width: int, height: int, min_size: float = 1.0) -> np.ndarray:
    """Validate and clip (N, 4) XYXY boxes; raises BoxError naming the first bad box's index."""
    b = np.asarray(boxes_xyxy, dtype=np.float64)
    if b.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise BoxError(f"boxes must have shape (N, 4), got {b.shape}")
    out = np.empty_like(b)
    for i, box in enumerate(b):
        try:
            out[i] = validate_box(box, width, height, min_size=min_size)
        except BoxError as err:
            raise BoxError(f"box {i}: {err}") from None
    return out
