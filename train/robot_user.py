"""The simulated user of the learning loop: labels boxes by the robot's clicks, then brushes.

For each box the robot annotator (train/robot_clicks.py, the protocol of bench/clicks.py) clicks
the served model's mask (every click so far with the box; the previous mask as `init_masks` where
the model takes it) until its IoU with the GT mask reaches `target`: that mask is what the user
verifies. After `max_clicks` clicks without reaching it the user brushes the GT mask in. No
randomness: the same model and image give the same clicks and masks; the order of a round's
images is `batch_order`, a permutation fixed by a seed.

    answers = label_image(predictor, image, gt_masks, boxes)   # [UserLabel] per box
"""

from dataclasses import dataclass

import numpy as np

from box2mask.ops.metrics import mask_iou
from box2mask.segment.image import takes_init_masks
from train.robot_clicks import next_click

__all__ = ["UserLabel", "robot_label", "label_image", "batch_order", "batch_summary"]


@dataclass
class UserLabel:
    """What the simulated user hands in for one box."""

    mask: np.ndarray  # (H, W) bool, the verified mask (the clicked one, or the GT if brushed)
    clicks: int  # clicks spent on this box
    iou: float  # IoU of the clicked mask with the GT before any brushing
    brushed: bool  # True when `max_clicks` clicks did not reach the target: the GT mask


def robot_label(predictor, gt, box, *, max_clicks=20, target=0.90, previous=True) -> UserLabel:
    """The robot's clicks on one box of the image `predictor` holds until IoU >= `target` or
    `max_clicks` clicks (then the GT mask, brushed). gt: (H, W) bool; box: (4,) XYXY pixels;
    previous: send each click with the previous mask as `init_masks`."""
    boxes = np.asarray(box, dtype=np.float64)[None]
    pred = predictor.predict(boxes)[0][0]
    iou = mask_iou(pred, gt)
    points, labels = [], []
    clicked = np.zeros_like(gt)
    while iou < target and len(points) < max_clicks:
        click = next_click(gt, pred, clicked)
        if click is None:
            break
        clicked[int(click[1]), int(click[0])] = True
        points.append(click[:2])
        labels.append(click[2])
        options = {"points": np.array(points), "point_labels": np.array(labels, dtype=np.int64)}
        if previous:
            options["init_masks"] = pred[None]
        pred = predictor.predict(boxes, **options)[0][0]
        iou = mask_iou(pred, gt)
    if iou >= target:
        return UserLabel(mask=pred, clicks=len(points), iou=iou, brushed=False)
    return UserLabel(mask=np.asarray(gt, bool), clicks=len(points), iou=iou, brushed=True)


def label_image(predictor, image, gts, boxes, *, max_clicks=20, target=0.90) -> list[UserLabel]:
    """`robot_label` for every box (N, 4) of one (H, W, 3) uint8 image with GT masks (N, H, W)."""
    predictor.set_image(image)
    previous = takes_init_masks(predictor)
    return [
        robot_label(predictor, gt, box, max_clicks=max_clicks, target=target, previous=previous)
        for gt, box in zip(gts, boxes, strict=True)
    ]


def batch_order(keys: list, *, order: str, seed: int) -> list:
    """The unlabeled `keys` in the order a round takes them: "index" as given, "random" a
    permutation drawn from `seed` (the same for a seed)."""
    if order == "index":
        return list(keys)
    if order == "random":
        rng = np.random.default_rng(seed)
        return [keys[i] for i in rng.permutation(len(keys))]
    raise ValueError(f"order must be index or random here, got {order!r}")


def batch_summary(answers: list) -> dict:
    """What a batch of `UserLabel`s cost and taught: clicks, objects, brushed boxes, `untouched`
    (boxes verified with 0 clicks: the served model's own mask becomes the label) and
    `verified_miou`, the mean IoU of the verified masks with the GT (1 where brushed)."""
    n = len(answers)
    return {
        "clicks": sum(a.clicks for a in answers),
        "objects": n,
        "brushed": sum(bool(a.brushed) for a in answers),
        "untouched": sum(a.clicks == 0 for a in answers),
        "verified_miou": sum(1.0 if a.brushed else a.iou for a in answers) / max(n, 1),
    }
