"""What to label next: unlabeled images ranked by the served model's uncertainty.

The uncertainty of an image is how much two models disagree on its boxes: the base (the embedded
default) and the learner trained on the labels so far (a crop-learner checkpoint). Where they
agree, a person would most likely accept the proposal; where they disagree, at least one is wrong
and a correction teaches the next round the most.

    order = label_order(images, base=build_predictor(None), learner=build_predictor("last.pt"))

`images` is a list of (key, (H, W, 3) uint8 image, (N, 4) XYXY boxes); the result is the keys,
most disagreement first, ties in the order given (a stable sort: the same models give the same
order), images without boxes last (in the order given). `uncertainty_order` is that order for
scores computed elsewhere: the annotator's "label next" queue (annotator/label_next_queue.py) and
`box2mask fiftyone rank` (annotator/fiftyone/rank.py) use it.
"""

import numpy as np

__all__ = ["mask_disagreement", "image_uncertainty", "uncertainty_order", "label_order"]


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


def uncertainty_order(keys: list, scores: list) -> list:
    """`keys` sorted by `scores` (one float or None per key), highest first; equal scores keep
    their given order; None (no boxes to score) comes after every score, in the given order.
    Scores are compared to 9 decimals, so float noise between runs does not reorder ties."""
    if len(keys) != len(scores):
        raise ValueError(f"{len(keys)} keys but {len(scores)} scores")
    scored = [i for i, s in enumerate(scores) if s is not None]
    scored.sort(key=lambda i: (-round(float(scores[i]), 9), i))
    return [keys[i] for i in scored] + [k for k, s in zip(keys, scores, strict=True) if s is None]


def label_order(images, *, base, learner) -> list:
    """The keys of `images` [(key, image, boxes)], most uncertain first (`image_uncertainty`);
    equal scores keep their given order; images without boxes last."""
    scores = [
        image_uncertainty(image, boxes, base=base, learner=learner) if len(boxes) else None
        for _, image, boxes in images
    ]
    return uncertainty_order([key for key, _, _ in images], scores)
