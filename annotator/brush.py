"""The brush: a disc added to or erased from one label's mask, never outside the label's box."""

import numpy as np

from annotator.mask_patch import MaskPatch

__all__ = ["paint_disc"]


def paint_disc(
    mask: MaskPatch | None,
    *,
    box_xyxy,
    image_shape: tuple,
    x: float,
    y: float,
    radius: float,
    erase: bool,
) -> np.ndarray:
    """The (H, W) bool mask after painting (or erasing) a disc of `radius` px at image pixel
    (x, y) on `mask` (None: empty); only the box's pixel window is computed."""
    h, w = image_shape[:2]
    x0, y0, x1, y1 = box_xyxy
    wy0, wy1, _ = slice(int(y0), int(np.ceil(y1))).indices(h)  # numpy's slice bounds
    wx0, wx1, _ = slice(int(x0), int(np.ceil(x1))).indices(w)
    wy1, wx1 = max(wy1, wy0), max(wx1, wx0)
    window = (
        mask.window(wy0, wy1, wx0, wx1)
        if mask is not None
        else np.zeros((wy1 - wy0, wx1 - wx0), bool)
    )
    yy, xx = np.ogrid[wy0:wy1, wx0:wx1]
    disc = (xx + 0.5 - x) ** 2 + (yy + 0.5 - y) ** 2 <= radius**2
    window = window & ~disc if erase else window | disc
    out = np.zeros((h, w), bool)
    out[wy0:wy1, wx0:wx1] = window
    return out
