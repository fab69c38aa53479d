"""Masks <-> COCO polygons that keep holes and separate parts.

COCO polygons are read with pycocotools (`frPyObjects` + `merge`), which fills each polygon by
the even-odd rule on pixel edges (pixel (x, y) covers [x, x+1) x [y, y+1)) and takes the union
of the polygons of an annotation. So:

- each part (8-connected component) of the mask is one polygon;
- each hole is cut into its part's polygon by a zero-width bridge: the path runs from the part's
  outline to the hole, around it, and back the same way; the even-odd rule leaves the hole empty
  and the bridge (traversed twice) adds nothing.

Outlines are traced by OpenCV (`findContours`, RETR_CCOMP: outlines and their holes) on the mask
upsampled x2, then mapped back as (x + 0.5) / 2: every vertex lies 1/4 px inside the pixel edge
it follows, which pycocotools rasterises to exactly the same pixels.

Tolerance: with `tolerance_px=0` (the default) the round trip mask -> polygons -> pycocotools is
exact, to the pixel (tests/test_masks_survive.py). With `tolerance_px > 0` the outlines are
simplified by Douglas-Peucker: no vertex of the simplified outline is farther than
`tolerance_px` from the exact one, so only pixels within about that distance of the mask's
boundary can change.
"""

import cv2
import numpy as np

from box2mask.io.rle import decode_segmentation

__all__ = ["mask_to_polygons", "polygons_to_mask"]

UPSAMPLE = 2  # outlines are traced on the mask upsampled by this factor


def _bridge(path: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Join `hole` (Q, 2) into the closed `path` (P, 2) through their nearest vertices."""
    d = ((path[:, None, :] - hole[None, :, :]) ** 2).sum(-1)  # (P, Q)
    i, j = np.unravel_index(np.argmin(d), d.shape)
    loop = np.roll(hole, -j, axis=0)
    return np.concatenate([path[: i + 1], loop, loop[:1], path[i:]])


def mask_to_polygons(mask: np.ndarray, tolerance_px: float = 0.0) -> list[list[float]]:
    """(H, W) bool mask -> COCO polygons: one flat [x1, y1, x2, y2, ...] list per part.

    Holes are kept (bridged into their part, see the module docstring); an empty mask gives [].
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {mask.shape}")
    if not mask.any():
        return []
    up = np.kron(mask.astype(np.uint8), np.ones((UPSAMPLE, UPSAMPLE), dtype=np.uint8))
    contours, hierarchy = cv2.findContours(up, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    hierarchy = hierarchy[0]  # (K, 4): next, previous, first child, parent

    def outline(k):
        c = contours[k]
        if tolerance_px > 0:
            c = cv2.approxPolyDP(c, tolerance_px * UPSAMPLE, closed=True)
        return (c.reshape(-1, 2).astype(np.float64) + 0.5) / UPSAMPLE

    polygons = []
    for k in range(len(contours)):
        if hierarchy[k][3] != -1:  # a hole: bridged into its part below
            continue
        path = outline(k)
        child = hierarchy[k][2]
        while child != -1:
            hole = outline(child)
            if len(hole) >= 3:
                path = _bridge(path, hole)
            child = hierarchy[child][0]
        if len(path) >= 3:
            polygons.append([round(float(v), 4) for v in path.reshape(-1)])
    return polygons


def polygons_to_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """COCO polygons -> (H, W) bool mask, rasterised by pycocotools (as every COCO reader does)."""
    return decode_segmentation([list(p) for p in polygons if len(p) >= 6], height, width)
