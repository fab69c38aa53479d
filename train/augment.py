"""Training augmentation that keeps boxes consistent with the image: resize, flip, crop.

Every function takes an (H, W, 3) uint8 image, (N, 4) float XYXY absolute-pixel boxes in that
image's frame, and optionally (N, H, W) bool masks (only used by tests to check that each box stays
the tight box of its object), and returns them transformed into the new frame. Randomness comes
from an explicit `numpy.random.Generator`, so a sample's augmentation is reproducible.
"""

import cv2
import numpy as np

__all__ = ["resize", "hflip", "crop", "random_scale_crop_flip", "resize_long_side"]


def resize(image: np.ndarray, boxes: np.ndarray, new_hw: tuple[int, int], masks=None):
    """Resize to `new_hw` = (height, width); boxes scale per axis by the exact size ratio."""
    height, width = image.shape[:2]
    new_h, new_w = int(new_hw[0]), int(new_hw[1])
    interp = cv2.INTER_AREA if new_h * new_w < height * width else cv2.INTER_LINEAR
    image = cv2.resize(image, (new_w, new_h), interpolation=interp)
    scale = np.array([new_w / width, new_h / height, new_w / width, new_h / height], np.float32)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4) * scale
    if masks is not None:
        masks = (
            np.stack(
                [
                    cv2.resize(m.astype(np.uint8), (new_w, new_h), interpolation=cv2.INTER_NEAREST)
                    for m in masks
                ]
            ).astype(bool)
            if len(masks)
            else np.zeros((0, new_h, new_w), bool)
        )
    return image, boxes, masks


def resize_long_side(image: np.ndarray, boxes: np.ndarray, long_side: int, masks=None):
    """Resize so that max(H, W) == long_side, keeping the aspect ratio."""
    height, width = image.shape[:2]
    scale = long_side / max(height, width)
    new_hw = (max(1, round(height * scale)), max(1, round(width * scale)))
    return resize(image, boxes, new_hw, masks)


def hflip(image: np.ndarray, boxes: np.ndarray, masks=None):
    """Mirror left-right: x -> W - x (so x0 and x1 swap roles)."""
    width = image.shape[1]
    image = np.ascontiguousarray(image[:, ::-1])
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    boxes = np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)
    if masks is not None:
        masks = np.ascontiguousarray(masks[:, :, ::-1])
    return image, boxes, masks


def crop(
    image: np.ndarray, boxes: np.ndarray, top: int, left: int, height: int, width: int, masks=None
):
    """Cut the window [top, top+height) x [left, left+width); boxes are shifted and clipped to it.

    A clipped box is the tight box of the object's visible part along the cut axis; along the other
    axis it can be slightly loose (an object narrows toward its cut edge). Callers drop boxes that
    became too small.
    """
    image = image[top : top + height, left : left + width]
    height, width = image.shape[:2]
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4) - np.array(
        [left, top, left, top], np.float32
    )
    boxes = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
    if masks is not None:
        masks = masks[:, top : top + height, left : left + width]
    return np.ascontiguousarray(image), boxes, masks


def random_scale_crop_flip(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    *,
    rng: np.random.Generator,
    size: int,
    min_scale: float,
    max_scale: float,
    flip_prob: float,
    min_box_size: float,
    masks=None,
):
    """Scale jitter (long side -> size * U(min_scale, max_scale)), random crop to at most
    size x size, horizontal flip with `flip_prob`; drops boxes under `min_box_size` px on a side.

    Returns (image, boxes, labels, masks); the image is at most (size, size) (the collate pads it).
    """
    scale = rng.uniform(min_scale, max_scale)
    image, boxes, masks = resize_long_side(image, boxes, max(8, round(size * scale)), masks)
    height, width = image.shape[:2]
    crop_h, crop_w = min(size, height), min(size, width)
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    image, boxes, masks = crop(image, boxes, top, left, crop_h, crop_w, masks)
    if rng.random() < flip_prob:
        image, boxes, masks = hflip(image, boxes, masks)
    keep = ((boxes[:, 2] - boxes[:, 0]) >= min_box_size) & (
        (boxes[:, 3] - boxes[:, 1]) >= min_box_size
    )
    labels = np.asarray(labels)[keep]
    return image, boxes[keep], labels, (masks[keep] if masks is not None else None)
