"""Clicks that go with a box in a file: `[[x, y, label], ...]` -> the `predict` point arrays.

`segment` reads them from an annotation's `box2mask_points` (image pixels, label 1 = object,
0 = background), FiftyOne from a prompt detection's `box2mask_points` (the same, in [0, 1]
coordinates of the image, FiftyOne's convention). Both end in one `predict(box, points=,
point_labels=)` call per clicked box: the same path the annotator's clicks take.
"""

import math

import numpy as np

__all__ = ["POINTS_FIELD", "MAX_POINTS", "PointsError", "parse_points", "predict_with_points"]

POINTS_FIELD = "box2mask_points"  # the annotation / detection attribute holding the clicks
MAX_POINTS = 100  # clicks per box accepted from a file (the robot annotator stops at 20)


class PointsError(ValueError):
    """Malformed clicks; the message names the problem."""


def parse_points(value, *, width: int, height: int, normalized: bool = False):
    """Validate clicks and convert them to `predict`'s arrays.

    Args:
        value: a list of [x, y, label] triples; x, y in image pixels (or in [0, 1] of the image's
            width and height with `normalized`), label 1 (object) or 0 (background).
        width, height: the image's size in pixels.
        normalized: coordinates are fractions of the image (FiftyOne) instead of pixels.
    Returns:
        points (P, 2) float64 XY pixels, labels (P,) int64; P >= 1.
    Raises:
        PointsError naming the first bad click and why.
    """
    if not isinstance(value, (list, tuple)) or not value:
        raise PointsError(
            f"{POINTS_FIELD} must be a non-empty list of [x, y, label], got {value!r}"
        )
    if len(value) > MAX_POINTS:
        raise PointsError(f"{POINTS_FIELD} has {len(value)} clicks, at most {MAX_POINTS}")
    points, labels = [], []
    scale = (width, height) if normalized else (1, 1)
    for i, click in enumerate(value):
        if not isinstance(click, (list, tuple)) or len(click) != 3:
            raise PointsError(f"{POINTS_FIELD}[{i}] must be [x, y, label], got {click!r}")
        x, y, label = click
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y)):
            raise PointsError(f"{POINTS_FIELD}[{i}]: x and y must be numbers, got {click!r}")
        if not (math.isfinite(x) and math.isfinite(y)):
            raise PointsError(f"{POINTS_FIELD}[{i}]: x and y must be finite, got {click!r}")
        if isinstance(label, bool) or label not in (0, 1):
            raise PointsError(f"{POINTS_FIELD}[{i}]: label must be 1 (object) or 0, got {label!r}")
        px, py = x * scale[0], y * scale[1]
        if not (0 <= px <= width and 0 <= py <= height):
            frame = "[0, 1] image" if normalized else f"{width}x{height} pixel image"
            raise PointsError(f"{POINTS_FIELD}[{i}]: ({x}, {y}) lies outside the {frame}")
        points.append((min(px, width - 0.5), min(py, height - 0.5)))
        labels.append(int(label))
    return np.asarray(points, dtype=np.float64), np.asarray(labels, dtype=np.int64)


def predict_with_points(predictor, box_xyxy, points, labels, **options):
    """One box with its clicks through `predictor.predict` (clicks act on every box of a call,
    so a clicked box is predicted alone).

    Args:
        predictor: has `predict(boxes, points=, point_labels=, ...)` and its image set.
        box_xyxy: (4,) absolute XYXY pixels.
        points, labels: from `parse_points`.
        **options: more `predict` options, e.g. `init_masks` (1, H, W) (the mask the clicks
            correct).
    Returns:
        mask (H, W) bool, score float.
    """
    masks, scores = predictor.predict(
        np.asarray(box_xyxy, dtype=np.float64)[None],
        points=points,
        point_labels=labels,
        **options,
    )
    return masks[0], float(scores[0])
