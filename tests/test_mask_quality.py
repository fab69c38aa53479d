"""Mask quality signals against hand-computed values, and the combined score's formula."""

import math

import numpy as np
import pytest
import torch

from box2mask.ops.mask_quality import (
    QUALITY_WEIGHTS,
    box_grid,
    disagreement,
    edge_coverage,
    fill_ratio,
    hole_fraction,
    quality_features,
    quality_score,
    stray_fraction,
)


def _grids():
    """Three 8 x 8 masks whose box is the whole 8 x 8 image (grid = mask when S = 8)."""
    two_parts = np.zeros((8, 8), bool)
    two_parts[0:4, 0:4] = True  # 16 px
    two_parts[6:8, 6:8] = True  # 4 px, not touching the first (8-connectivity)
    holed = np.zeros((8, 8), bool)
    holed[1:7, 1:7] = True  # 36 px with a 2 x 2 hole -> 32 px
    holed[3:5, 3:5] = False
    notched = np.ones((8, 8), bool)
    notched[0:3, 3:5] = False  # a notch open to the top side: not a hole
    return np.stack([two_parts, holed, notched])


def test_box_grid_reads_the_box_pixels():
    masks = torch.zeros(2, 20, 30, dtype=torch.bool)
    masks[0, 5:9, 10:14] = True
    masks[1, 0:2, 0:2] = True
    boxes = np.array([[10, 5, 14, 9], [0, 0, 4, 4]], dtype=np.float64)
    grid = box_grid(masks, boxes, size=8)  # each 4 px box upsampled x2
    assert grid.shape == (2, 8, 8)
    assert grid[0].all()
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[0:4, 0:4] = True
    assert torch.equal(grid[1], expected)


def test_shape_signals_match_hand_counts():
    grid = torch.from_numpy(_grids())
    np.testing.assert_allclose(stray_fraction(grid), [4 / 20, 0.0, 0.0])
    np.testing.assert_allclose(hole_fraction(grid), [0.0, 4 / 36, 0.0])
    np.testing.assert_allclose(fill_ratio(grid), [20 / 64, 32 / 64, 58 / 64])
    # two_parts touches top, left (first square) and bottom, right (second); holed touches none
    np.testing.assert_allclose(edge_coverage(grid), [1.0, 0.0, 1.0])
    empty = torch.zeros(1, 8, 8, dtype=torch.bool)
    for fn in (stray_fraction, hole_fraction, fill_ratio, edge_coverage):
        assert fn(empty).item() == 0.0


def test_edge_coverage_counts_sides():
    grid = torch.zeros(1, 6, 6, dtype=torch.bool)
    grid[0, 0:3, 0:3] = True  # touches top and left
    assert edge_coverage(grid).item() == 0.5


def test_disagreement_is_one_minus_iou():
    a = torch.zeros(2, 10, 10, dtype=torch.bool)
    b = torch.zeros(2, 10, 10, dtype=torch.bool)
    a[0, 0:4, 0:4] = True  # 16 px
    b[0, 0:4, 2:6] = True  # 16 px, overlap 8 -> IoU 8 / 24
    np.testing.assert_allclose(disagreement(a, b), [1 - 8 / 24, 0.0])  # both empty: agree
    with pytest.raises(ValueError, match="differ in shape"):
        disagreement(a, b[:1])


def test_features_are_per_mask_numpy_or_torch():
    masks = _grids()
    boxes = np.tile([0.0, 0.0, 8.0, 8.0], (3, 1))
    together = quality_features(masks, boxes, other_masks=masks, size=8)
    for i in range(3):
        alone = quality_features(torch.from_numpy(masks[i : i + 1]), boxes[i : i + 1], size=8)
        for key in ("stray", "holes", "fill", "edges"):
            assert together[key][i].item() == pytest.approx(alone[key][0].item())
    assert together["disagreement"].tolist() == [0.0, 0.0, 0.0]


def test_quality_score_formula_and_order():
    feats = {
        "stray": torch.tensor([0.0, 0.2]),
        "holes": torch.tensor([0.0, 0.1]),
        "fill": torch.tensor([math.pi / 4, 0.3]),
        "edges": torch.tensor([1.0, 0.5]),
        "disagreement": torch.tensor([0.0, 0.4]),
    }
    w = QUALITY_WEIGHTS
    penalty = (
        w["stray"] * 0.2
        + w["holes"] * 0.1
        + w["missed_sides"] * 0.5
        + w["fill"] * (math.pi / 4 - 0.3)
        + w["disagreement"] * 0.4
    )
    q = quality_score(feats, scores=np.array([0.9, 0.8]))
    np.testing.assert_allclose(q, [0.9, 0.8 * math.exp(-penalty)], rtol=1e-6)
    assert quality_score(feats)[0].item() == pytest.approx(1.0)
    zero = quality_score(feats, weights=dict.fromkeys(w, 0.0))
    np.testing.assert_allclose(zero, [1.0, 1.0])


def test_stray_parts_and_holes_lower_the_score_of_a_real_shape():
    yy, xx = np.mgrid[0:64, 0:64]
    ellipse = ((xx - 31.5) / 32) ** 2 + ((yy - 31.5) / 32) ** 2 < 1
    with_speck = ellipse.copy()
    with_speck[0:6, 0:6] = True  # a blob in the corner, apart from the ellipse
    with_hole = ellipse & ~(((xx - 32) ** 2 + (yy - 32) ** 2) < 100)
    masks = np.stack([ellipse, with_speck, with_hole])
    boxes = np.tile([0.0, 0.0, 64.0, 64.0], (3, 1))
    q = quality_score(quality_features(masks, boxes), scores=np.ones(3))
    assert q[0] > 0.95
    assert q[1] < q[0] and q[2] < q[0]
