"""Synthetic test scenes: coloured discs on a textured background, their boxes and masks."""

import json
from pathlib import Path

import numpy as np
from PIL import Image


def disc_scene(height: int, width: int, seed: int, n_discs: int = 3):
    """An (H, W, 3) uint8 image with `n_discs` non-overlapping discs of random colour and radius.

    Returns image, boxes (n, 4) float64 absolute XYXY (the discs' boxes plus a 2 px margin,
    clipped to the image) and masks (n, H, W) bool.
    """
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[:height, :width] + 0.5
    image = rng.normal(rng.uniform(60, 200, 3), 12, (height, width, 3))
    discs = []  # (cx, cy, radius)
    for _ in range(10000):
        if len(discs) == n_discs:
            break
        radius = rng.uniform(0.12, 0.22) * min(height, width)
        cx, cy = rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)
        if all(np.hypot(cx - x, cy - y) > radius + r + 2 for x, y, r in discs):
            discs.append((cx, cy, radius))
    if len(discs) < n_discs:
        raise ValueError(f"cannot place {n_discs} discs apart on {height} x {width}")
    masks, boxes = [], []
    for cx, cy, radius in discs:
        disc = (xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2
        image[disc] = rng.normal(rng.uniform(0, 255, 3), 8, (int(disc.sum()), 3))
        masks.append(disc)
        box = [cx - radius - 2, cy - radius - 2, cx + radius + 2, cy + radius + 2]
        boxes.append(np.clip(box, 0, [width, height, width, height]))
    image = np.clip(image, 0, 255).astype(np.uint8)
    return image, np.array(boxes, dtype=np.float64), np.stack(masks)


def write_coco(folder: Path, scenes: list) -> Path:
    """Save the scenes' images as PNGs in folder/images and their boxes as a COCO file."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i, (image, boxes, _) in enumerate(scenes):
        name = f"scene{i:03d}.png"
        Image.fromarray(image).save(folder / "images" / name)
        h, w = image.shape[:2]
        images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
        for x0, y0, x1, y1 in boxes:
            bbox = [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "bbox": bbox})
    coco = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "disc"}]}
    path = folder / "boxes.json"
    path.write_text(json.dumps(coco))
    return path


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool arrays (summed over all their elements)."""
    return float((a & b).sum() / max((a | b).sum(), 1))
