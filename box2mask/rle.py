"""COCO run-length encoding of masks (pycocotools), with `counts` as str for JSON."""

import numpy as np
from pycocotools import mask as mask_utils

__all__ = ["encode_rle", "decode_rle", "decode_segmentation", "rle_area", "rle_to_bbox_xywh"]


def encode_rle(mask: np.ndarray) -> dict:
    """(H, W) bool mask -> COCO RLE {"size": [H, W], "counts": str}."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {m.shape}")
    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode()}


def _as_bytes(rle: dict) -> dict:
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed RLE
        h, w = rle["size"]
        return mask_utils.frPyObjects(rle, h, w)
    return {
        "size": list(rle["size"]),
        "counts": counts.encode() if isinstance(counts, str) else counts,
    }


def decode_rle(rle: dict) -> np.ndarray:
    """COCO RLE (compressed str/bytes counts or uncompressed list counts) -> (H, W) bool mask."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError("an RLE must be a dict with 'size' and 'counts'")
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
        mask = decode_rle(segmentation)
        if mask.shape != (height, width):
            raise ValueError(f"RLE size {list(mask.shape)} is not the image's [{height}, {width}]")
        return mask
    if not isinstance(segmentation, list) or not all(
        isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in segmentation
    ):
        raise ValueError("segmentation must be an RLE dict or a list of polygons [x1, y1, ...]")
    if not segmentation:
        return np.zeros((height, width), dtype=bool)
    rles = mask_utils.frPyObjects([[float(v) for v in p] for p in segmentation], height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)
