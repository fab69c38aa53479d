"""What to label next: unlabeled images ranked by the served model's uncertainty.

The uncertainty of an image is how much two models disagree on its boxes: the base (the embedded
default) and the learner trained on the labels so far (a crop-learner checkpoint). Where they
agree, a person would most likely accept the proposal; where they disagree, at least one is wrong
and a correction teaches the next round the most.

    order = label_order(images, base=build_predictor(None), learner=build_predictor("last.pt"))

`images` is a list of (key, (H, W, 3) uint8 image, (N, 4) XYXY boxes); the result is the keys,
most disagreement first, ties in the order given (a stable sort: the same models give the same
order).
"""

import numpy as np

__all__ = ["mask_disagreement", "image_uncertainty", "label_order"]


def mask_disagreement(masks_a: np.ndarray, masks_b: np.ndarray) -> np.ndarray:
    """1 - IoU of two predictions for the same boxes, (N,) in [0, 1].

    masks_a, masks_b: (N, H, W) bool. Two empty masks agree (0)."""
    a = np.asarray(masks_a, bool).reshape(len(masks_a), -1)
    b = np.asarray(masks_b, bool).reshape(len(masks_b), -1)
    inter = (a & b).sum(1)
    union = (a | b).sum(1)
    return np.where(union > 0, 1.0 - inter / np.maximum(union, 1), 0.0)


def image_uncertainty(image: np.ndarray, boxes: np.ndarray, *, base, learner) -> float:
    """Mean mask disagreement of `base` and `learner` (box2mask predictors) over the boxes (N, 4)
    of one image; 0 for an image without boxes."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if len(boxes) == 0:
        return 0.0
    base.set_image(image)
    base_masks, _ = base.predict(boxes)
    learner.set_image(image)
    learner_masks, _ = learner.predict(boxes)
    return float(mask_disagreement(base_masks, learner_masks).mean())


def label_order(images, *, base, learner) -> list:
    """The keys of `images` [(key, image, boxes)], most uncertain first (`image_uncertainty`);
    equal scores keep their given order."""
    scores = [
        image_uncertainty(image, boxes, base=base, learner=learner) for _, image, boxes in images
    ]
    ranked = sorted(range(len(images)), key=lambda i: (-round(scores[i], 9), i))
    return [images[i][0] for i in ranked]
