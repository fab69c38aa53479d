"""Mask quality metrics: IoU, boundary F-measure, COCO size buckets, and an accumulator.

All masks are (H, W) bool arrays in the same image frame (NumPy; torch tensors are converted).

Boundary F-measure (as in the DAVIS benchmark): the boundary of a mask is the set of its pixels
with a 4-neighbour outside it (pixels beyond the image border count as outside). A predicted
boundary pixel is correct when a ground-truth boundary pixel lies within `tolerance_px`
(Euclidean distance); precision is the fraction of correct predicted boundary pixels, recall the
same with the roles swapped, and F = 2 P R / (P + R).
"""

from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = [
    "SMALL_MAX_AREA",
    "MEDIUM_MAX_AREA",
    "mask_iou",
    "mask_boundary",
    "boundary_f",
    "size_bucket",
    "MaskQualityEvaluator",
]

SMALL_MAX_AREA = 32**2  # COCO: area < 32^2 is "small"
MEDIUM_MAX_AREA = 96**2  # COCO: 32^2 <= area < 96^2 is "medium", the rest "large"
ACCEPT_IOU = 0.85  # a mask with at least this IoU is counted as accepted as is (accept@0.85)


def _as_bool(mask) -> np.ndarray:
    if hasattr(mask, "detach"):  # torch tensor
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {mask.shape}")
    return mask.astype(bool, copy=False)


def _check_same_shape(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")


def mask_iou(pred, gt) -> float:
    """Intersection over union of two (H, W) masks; 1.0 when both are empty."""
    pred, gt = _as_bool(pred), _as_bool(gt)
    _check_same_shape(pred, gt)
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return np.count_nonzero(pred & gt) / union


def mask_boundary(mask) -> np.ndarray:
    """(H, W) bool: pixels of `mask` with at least one 4-neighbour outside it (or off the image)."""
    mask = _as_bool(mask)
    padded = np.pad(mask, 1, constant_values=False)
    interior = (
        padded[1:-1, 1:-1]
        & padded[:-2, 1:-1]
        & padded[2:, 1:-1]
        & padded[1:-1, :-2]
        & padded[1:-1, 2:]
    )
    return mask & ~interior


def _distance_to(boundary: np.ndarray) -> np.ndarray:
    """Euclidean distance of every pixel to the nearest True pixel of `boundary` (inf if none)."""
    if not boundary.any():
        return np.full(boundary.shape, np.inf, dtype=np.float32)
    return cv2.distanceTransform((~boundary).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def _union_crop(pred: np.ndarray, gt: np.ndarray, margin: int) -> tuple[slice, slice]:
    """Rows/cols slices covering both masks plus `margin` px (cropping changes no metric)."""
    rows = np.flatnonzero((pred | gt).any(axis=1))
    cols = np.flatnonzero((pred | gt).any(axis=0))
    if rows.size == 0:
        return slice(0, 0), slice(0, 0)
    h, w = pred.shape
    return (
        slice(max(rows[0] - margin, 0), min(rows[-1] + margin + 1, h)),
        slice(max(cols[0] - margin, 0), min(cols[-1] + margin + 1, w)),
    )


def boundary_f(pred, gt, tolerance_px: float = 2.0) -> float:
    """Boundary F-measure of two (H, W) masks (see the module docstring).

    Returns 1.0 when both masks are empty and 0.0 when exactly one is.
    """
    pred, gt = _as_bool(pred), _as_bool(gt)
    _check_same_shape(pred, gt)
    rows, cols = _union_crop(pred, gt, margin=int(np.ceil(tolerance_px)) + 2)
    pred, gt = pred[rows, cols], gt[rows, cols]
    pred_edge, gt_edge = mask_boundary(pred), mask_boundary(gt)
    n_pred, n_gt = np.count_nonzero(pred_edge), np.count_nonzero(gt_edge)
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0
    precision = np.count_nonzero(_distance_to(gt_edge)[pred_edge] <= tolerance_px) / n_pred
    recall = np.count_nonzero(_distance_to(pred_edge)[gt_edge] <= tolerance_px) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def size_bucket(area: float) -> str:
    """COCO size bucket of an object by its ground-truth mask area in pixels."""
    if area < SMALL_MAX_AREA:
        return "small"
    if area < MEDIUM_MAX_AREA:
        return "medium"
    return "large"


@dataclass
class MaskQualityEvaluator:
    """Accumulate per-instance mask quality (detectron2-style reset / process / summarize).

    `summarize()` returns a dict: "miou", "boundary_f", "accept_85" (share of instances with IoU
    >= 0.85), "miou_small/medium/large" and "boundary_f_small/medium/large" (NaN for an empty
    bucket), "count", "count_small/medium/large".
    """

    tolerance_px: float = 2.0  # boundary F tolerance in pixels
    ious: list = field(default_factory=list)
    boundary_fs: list = field(default_factory=list)
    buckets: list = field(default_factory=list)

    def reset(self) -> None:
        self.ious, self.boundary_fs, self.buckets = [], [], []

    def process(self, pred_mask, gt_mask) -> tuple[float, float]:
        """Add one instance; returns its (IoU, boundary F)."""
        pred, gt = _as_bool(pred_mask), _as_bool(gt_mask)
        iou = mask_iou(pred, gt)
        bf = boundary_f(pred, gt, tolerance_px=self.tolerance_px)
        self.ious.append(iou)
        self.boundary_fs.append(bf)
        self.buckets.append(size_bucket(np.count_nonzero(gt)))
        return iou, bf

    def summarize(self) -> dict:
        ious = np.asarray(self.ious, dtype=np.float64)
        buckets = np.asarray(self.buckets)
        result = {
            "miou": float(ious.mean()) if ious.size else float("nan"),
            "boundary_f": float(np.mean(self.boundary_fs)) if ious.size else float("nan"),
            "accept_85": float(np.mean(ious >= ACCEPT_IOU)) if ious.size else float("nan"),
            "count": int(ious.size),
        }
        boundary_fs = np.asarray(self.boundary_fs, dtype=np.float64)
        for name in ("small", "medium", "large"):
            chosen = ious[buckets == name] if ious.size else ious
            chosen_f = boundary_fs[buckets == name] if ious.size else boundary_fs
            result[f"miou_{name}"] = float(chosen.mean()) if chosen.size else float("nan")
            result[f"boundary_f_{name}"] = float(chosen_f.mean()) if chosen.size else float("nan")
            result[f"count_{name}"] = int(chosen.size)
        return result
