"""The robot annotator of interactive segmentation: where the next corrective click goes.

The standard protocol (RITM, SimpleClick, SAM): the prompt is the ground-truth mask's tight box;
each next click goes to the pixel deepest inside the error (the largest distance to the nearest
correct pixel, so the middle of the biggest missed or false region), positive on a missed object
pixel, negative on a false one; every click so far goes with the box. `bench/clicks.py` measures
predictors with it, and a learning loop can simulate corrections with the same function.
"""

import cv2
import numpy as np

__all__ = ["next_click", "error_depth"]


def error_depth(error: np.ndarray) -> np.ndarray:
    """(H, W) float32 distance of every pixel of the bool (H, W) `error` region to the nearest
    pixel outside it (Euclidean, in pixels); 0 outside the region. The image border counts as
    outside (the mask is padded by one pixel of zeros, as RITM does)."""
    padded = np.pad(error.astype(np.uint8), 1)
    depth = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return depth[1:-1, 1:-1]


def next_click(
    gt: np.ndarray, pred: np.ndarray, clicked: np.ndarray | None = None
) -> tuple[float, float, int] | None:
    """The robot's next click for prediction `pred` of ground truth `gt`.

    Args:
        gt, pred: (H, W) bool masks at image size.
        clicked: optional (H, W) bool, pixels clicked before (never clicked again).
    Returns:
        (x, y, label): the clicked pixel's centre in image pixels (x right, y down) and 1 for a
        missed object pixel (positive click) or 0 for a false one (negative); None when the
        prediction has no error left to click.
    """
    gt, pred = np.asarray(gt, dtype=bool), np.asarray(pred, dtype=bool)
    rows, cols = np.nonzero(gt | pred)
    if len(rows) == 0:
        return None
    # the window holding every error pixel: outside it all is correct, so the same click
    r0, c0 = int(rows.min()), int(cols.min())
    window = np.s_[r0 : int(rows.max()) + 1, c0 : int(cols.max()) + 1]
    gt, pred = gt[window], pred[window]
    missed = gt & ~pred
    false = pred & ~gt
    if clicked is not None:
        clicked = np.asarray(clicked, dtype=bool)[window]
        missed &= ~clicked
        false &= ~clicked
    depth_missed, depth_false = error_depth(missed), error_depth(false)
    best_missed, best_false = float(depth_missed.max()), float(depth_false.max())
    if max(best_missed, best_false) <= 0:
        return None
    positive = best_missed >= best_false
    depth = depth_missed if positive else depth_false
    y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return float(x + c0) + 0.5, float(y + r0) + 0.5, int(positive)
