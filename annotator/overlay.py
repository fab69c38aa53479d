"""Pictures for the annotator: masks tinted over the image, and a zoomed crop for the brush."""

import cv2
import numpy as np

from annotator.mask_patch import MaskPatch

__all__ = ["CLASS_COLORS", "class_color", "render_overlay", "crop_view"]

# One RGB colour per class index (cycled); also used for the boxes in the annotator.
CLASS_COLORS = [
    (255, 64, 64),
    (64, 160, 255),
    (64, 220, 96),
    (255, 176, 32),
    (200, 96, 255),
    (32, 224, 224),
    (255, 96, 192),
    (160, 160, 64),
]
ALPHA = 0.45  # opacity of the mask tint


def class_color(classes: list[str], name: str) -> tuple:
    """The colour of class `name` among `classes` (a name not among them gets the next one)."""
    index = classes.index(name) if name in classes else len(classes)
    return CLASS_COLORS[index % len(CLASS_COLORS)]


def _tint(region: np.ndarray, mask: np.ndarray, color, outline_color, thickness: int) -> None:
    """Tint `mask` pixels of the (h, w, 3) uint8 `region` in place and draw its outline."""
    solid = np.empty_like(region)
    solid[:] = color
    tinted = cv2.addWeighted(region, 1 - ALPHA, solid, ALPHA, 0)
    np.copyto(region, tinted, where=mask[:, :, None])  # (boolean indexing is 10x slower)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(region, contours, -1, tuple(int(c) for c in outline_color), thickness)


def render_overlay(image, masks: list[MaskPatch | None], colors, selected: int | None = None):
    """(H, W, 3) uint8 image with each mask (a MaskPatch) tinted in its colour.

    `masks` may contain None (no mask yet). The `selected` mask gets a thick white outline. Work is
    limited to each mask's bounding rectangle, so the cost grows with object size, not image size.
    """
    out = np.array(image, dtype=np.uint8, copy=True)
    height, width = out.shape[:2]
    for i, (mask, color) in enumerate(zip(masks, colors, strict=True)):
        if mask is None or mask.pixels.size == 0:
            continue
        y0, x0 = max(mask.top - 2, 0), max(mask.left - 2, 0)  # room for the outline
        y1, x1 = min(mask.bottom + 2, height), min(mask.right + 2, width)
        region = out[y0:y1, x0:x1]
        if i == selected:
            _tint(region, mask.window(y0, y1, x0, x1), color, (255, 255, 255), 2)
        else:
            _tint(region, mask.window(y0, y1, x0, x1), color, color, 1)
    return out


def crop_view(image, mask: MaskPatch | None, box_xyxy, min_side: int = 320, max_scale: float = 8.0):
    """Zoomed view of one box (its mask, a MaskPatch or None, tinted) for brush corrections.

    Returns (view (h, w, 3) uint8, scale, x0, y0): view pixel (u, v) shows image pixel
    (x0 + u / scale, y0 + v / scale). The crop is the box plus a 10% (at least 4 px) margin,
    enlarged (nearest neighbour) so its longer side is about `min_side` px, at most `max_scale`x.
    """
    h, w = image.shape[:2]
    bx0, by0, bx1, by1 = box_xyxy
    pad = max(4.0, 0.1 * max(bx1 - bx0, by1 - by0))
    x0, y0 = int(max(0, np.floor(bx0 - pad))), int(max(0, np.floor(by0 - pad)))
    x1, y1 = int(min(w, np.ceil(bx1 + pad))), int(min(h, np.ceil(by1 + pad)))
    crop = np.array(image[y0:y1, x0:x1], dtype=np.uint8, copy=True)
    if mask is not None:
        _tint(crop, mask.window(y0, y1, x0, x1), (255, 64, 64), (255, 255, 255), 1)
    scale = float(np.clip(min_side / max(x1 - x0, y1 - y0), 1.0, max_scale))
    size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
    view = cv2.resize(crop, size, interpolation=cv2.INTER_NEAREST)
    return view, scale, float(x0), float(y0)
