import math

import numpy as np
import pytest
import torch

from box2mask.ops.metrics import (
    MaskQualityEvaluator,
    boundary_f,
    mask_boundary,
    mask_iou,
    size_bucket,
)


def _rect(h, w, y0, y1, x0, x1):
    """(h, w) bool mask with rows y0..y1-1 and columns x0..x1-1 set."""
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def test_mask_iou_hand_computed():
    pred = _rect(4, 4, 0, 2, 0, 2)  # 4 px
    gt = _rect(4, 4, 0, 2, 0, 3)  # 6 px, contains pred
    assert mask_iou(pred, gt) == pytest.approx(4 / 6)
    assert mask_iou(pred, ~pred) == 0.0
    assert mask_iou(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) == 1.0
    assert mask_iou(torch.from_numpy(pred), torch.from_numpy(gt)) == pytest.approx(4 / 6)


def test_mask_iou_shape_mismatch_is_named():
    with pytest.raises(ValueError, match="differ in shape"):
        mask_iou(np.zeros((3, 3), bool), np.zeros((3, 4), bool))


def test_boundary_counts_image_border_as_outside():
    b = mask_boundary(np.ones((3, 3), bool))
    assert b.tolist() == [[True, True, True], [True, False, True], [True, True, True]]


def test_boundary_f_hand_computed():
    # GT: 10 x 10 square (boundary 36 px); prediction: 10 x 15 rectangle sharing its left side
    # (boundary 46 px). Within 2 px: 32 predicted pixels (the 3 rightmost of top and bottom rows
    # and the right column are off) and 32 GT pixels (4 middle pixels of the GT right column
    # are 3-4 px from any predicted boundary pixel). F = 2 * 32 / (46 + 36).
    gt = _rect(20, 20, 5, 15, 5, 15)
    pred = _rect(20, 20, 5, 15, 5, 20)
    assert boundary_f(pred, gt, tolerance_px=2) == pytest.approx(64 / 82)
    # symmetric in its arguments
    assert boundary_f(gt, pred, tolerance_px=2) == pytest.approx(64 / 82)


def test_boundary_f_tolerance_and_edge_cases():
    gt = _rect(30, 30, 5, 20, 5, 20)
    assert boundary_f(gt, gt) == 1.0
    shifted = np.roll(gt, 2, axis=1)  # every boundary pixel within 2 px of the other boundary
    assert boundary_f(shifted, gt, tolerance_px=2) == 1.0
    assert boundary_f(shifted, gt, tolerance_px=1) < 1.0
    far = _rect(30, 30, 24, 28, 24, 28)
    assert boundary_f(far, gt) == 0.0
    empty = np.zeros_like(gt)
    assert boundary_f(empty, gt) == 0.0
    assert boundary_f(empty, empty) == 1.0


def test_size_bucket_coco_thresholds():
    assert size_bucket(0) == "small"
    assert size_bucket(32**2 - 1) == "small"
    assert size_bucket(32**2) == "medium"
    assert size_bucket(96**2 - 1) == "medium"
    assert size_bucket(96**2) == "large"


def test_evaluator_accumulates_and_resets():
    ev = MaskQualityEvaluator()
    gt_small = _rect(40, 40, 0, 2, 0, 3)  # area 6 -> small
    iou, bf = ev.process(_rect(40, 40, 0, 2, 0, 2), gt_small)
    assert iou == pytest.approx(4 / 6) and 0 < bf <= 1
    gt_medium = _rect(40, 40, 0, 40, 0, 40)  # area 1600 -> medium
    ev.process(gt_medium, gt_medium)
    s = ev.summarize()
    assert s["count"] == 2 and s["count_small"] == 1 and s["count_medium"] == 1
    assert s["count_large"] == 0 and math.isnan(s["miou_large"])
    assert s["miou"] == pytest.approx((4 / 6 + 1) / 2)
    assert s["miou_small"] == pytest.approx(4 / 6)
    assert s["miou_medium"] == 1.0
    assert s["boundary_f"] == pytest.approx((bf + 1) / 2)
    ev.reset()
    assert ev.summarize()["count"] == 0
