import pytest
import torch

from box2mask.model.matcher import HungarianMatcher


def _box_logits(boxes_grid, height, width):
    """Mask logits +8 inside each grid box, -8 outside: (N, H, W)."""
    ys = torch.arange(height)[:, None] + 0.5
    xs = torch.arange(width)[None] + 0.5
    out = []
    for x0, y0, x1, y1 in boxes_grid:
        inside = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
        out.append(torch.where(inside, 8.0, -8.0))
    return torch.stack(out)


def test_recovers_a_permutation_from_masks():
    # queries 0, 1, 2 draw the boxes of GT 2, 0, 1 (mask grid = input / 4)
    gt_grid = [(0, 0, 3, 3), (4, 1, 8, 6), (1, 5, 4, 8)]
    masks = _box_logits([gt_grid[2], gt_grid[0], gt_grid[1]], 8, 8)[None]
    outputs = {"pred_logits": torch.zeros(1, 3, 3), "pred_masks": masks}
    targets = [
        {
            "boxes": torch.tensor(gt_grid, dtype=torch.float32) * 4,
            "labels": torch.tensor([0, 1, 0]),
        }
    ]
    ((rows, cols),) = HungarianMatcher(cost_class=2.0, cost_proj=5.0)(outputs, targets)
    assert dict(zip(rows.tolist(), cols.tolist(), strict=True)) == {0: 2, 1: 0, 2: 1}


def test_class_cost_breaks_ties():
    # identical masks: the query that is confident in the GT label wins
    masks = _box_logits([(0, 0, 4, 4)] * 2, 8, 8)[None]
    logits = torch.tensor([[[5.0, 0.0, 0.0], [0.0, 5.0, 0.0]]])
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 16.0, 16.0]]), "labels": torch.tensor([1])}]
    ((rows, cols),) = HungarianMatcher()({"pred_logits": logits, "pred_masks": masks}, targets)
    assert rows.tolist() == [1] and cols.tolist() == [0]


def test_empty_targets():
    torch.manual_seed(0)
    outputs = {"pred_logits": torch.randn(2, 4, 3), "pred_masks": torch.randn(2, 4, 8, 8)}
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    one = {"boxes": torch.tensor([[0.0, 0.0, 12.0, 20.0]]), "labels": torch.tensor([2])}
    indices = HungarianMatcher()(outputs, [empty, one])
    assert [len(r) for r, _ in indices] == [0, 1]
    assert indices[0][0].dtype == torch.int64
    all_empty = HungarianMatcher()(outputs, [empty, empty])
    assert [len(r) for r, _ in all_empty] == [0, 0]


def test_single_and_batched_give_the_same_matches():
    torch.manual_seed(1)
    outputs = {"pred_logits": torch.randn(3, 6, 4), "pred_masks": torch.randn(3, 6, 10, 12)}
    targets = []
    for n in (3, 0, 5):
        xy = torch.rand(n, 2) * 20
        wh = torch.rand(n, 2) * 20 + 4
        targets.append({"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.randint(0, 3, (n,))})
    matcher = HungarianMatcher()
    batched = matcher(outputs, targets)
    for b in range(3):
        single = {k: v[b : b + 1] for k, v in outputs.items()}
        ((rows, cols),) = matcher(single, [targets[b]])
        assert rows.tolist() == batched[b][0].tolist()
        assert cols.tolist() == batched[b][1].tolist()
    assert len(batched[2][0]) == 5  # more queries than boxes: every box is matched once
    assert len(set(batched[2][1].tolist())) == 5


def test_nonfinite_cost_names_the_image():
    outputs = {"pred_logits": torch.zeros(2, 3, 3), "pred_masks": torch.zeros(2, 3, 8, 8)}
    outputs["pred_masks"][1, 0] = float("nan")
    targets = [
        {"boxes": torch.tensor([[0.0, 0.0, 8.0, 8.0]]), "labels": torch.tensor([0])},
        {"boxes": torch.tensor([[0.0, 0.0, 8.0, 8.0]]), "labels": torch.tensor([0])},
    ]
    with pytest.raises(FloatingPointError, match="image 1 of the batch"):
        HungarianMatcher()(outputs, targets)
