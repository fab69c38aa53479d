"""The loop's simulated user (train/robot_user.py): clicks until IoU 0.90, then brushes."""

import numpy as np
import pytest

from tests.disc_scenes import disc_scene
from train.robot_user import batch_order, label_image, robot_label


class Oracle:
    """Answers every box with the GT mask it was given."""

    def __init__(self, gt):
        self.gt, self.calls = gt, 0

    def predict(self, boxes, **options):
        self.calls += 1
        return self.gt[None], np.ones(1)


class Stubborn:
    """Answers every box and click with an empty mask; records what each call got."""

    def __init__(self, shape):
        self.shape, self.calls = shape, []

    def predict(self, boxes, **options):
        self.calls.append(options)
        return np.zeros((1, *self.shape), bool), np.ones(1)


class GrowsAtClicks:
    """Starts from the GT's left half; each positive click adds the GT pixels within 6 px of it
    to the previous mask (`init_masks`), each negative click removes them."""

    def __init__(self, gt):
        self.gt = gt
        ys, xs = np.mgrid[: gt.shape[0], : gt.shape[1]] + 0.5
        self.grid = xs, ys

    def set_image(self, image):
        pass

    def predict(self, boxes, points=None, point_labels=None, init_masks=None):
        if points is None:
            cols = np.nonzero(self.gt.any(0))[0]
            half = self.gt.copy()
            half[:, (cols.min() + cols.max()) // 2 :] = False
            return half[None], np.ones(1)
        mask = init_masks[0].copy()
        (x, y), label = points[-1], point_labels[-1]
        near = (self.grid[0] - x) ** 2 + (self.grid[1] - y) ** 2 <= 36
        mask[near] = self.gt[near] if label else False
        return mask[None], np.ones(1)


def test_a_correct_first_mask_costs_no_click():
    _, boxes, masks = disc_scene(64, 64, seed=1, n_discs=1)
    oracle = Oracle(masks[0])
    answer = robot_label(oracle, masks[0], boxes[0])
    assert (answer.clicks, answer.brushed, answer.iou, oracle.calls) == (0, False, 1.0, 1)
    assert np.array_equal(answer.mask, masks[0])


def test_a_model_that_ignores_clicks_gets_max_clicks_then_the_gt_brushed():
    _, boxes, masks = disc_scene(64, 64, seed=2, n_discs=1)
    model = Stubborn(masks[0].shape)
    answer = robot_label(model, masks[0], boxes[0], max_clicks=5)
    assert (answer.clicks, answer.brushed, answer.iou) == (5, True, 0.0)
    assert np.array_equal(answer.mask, masks[0])  # brushed: the GT mask itself
    # every click went with all clicks so far, positive (the empty mask misses the disc), and
    # with the previous mask; five different pixels
    assert [len(c["points"]) for c in model.calls[1:]] == [1, 2, 3, 4, 5]
    assert model.calls[-1]["point_labels"].tolist() == [1] * 5
    assert all(c["init_masks"].shape == (1, 64, 64) for c in model.calls[1:])
    assert len({tuple(p) for p in model.calls[-1]["points"]}) == 5
    no_previous = Stubborn(masks[0].shape)
    robot_label(no_previous, masks[0], boxes[0], max_clicks=2, previous=False)
    assert all("init_masks" not in c for c in no_previous.calls)


def test_clicks_stop_once_the_target_iou_is_reached_and_the_clicked_mask_is_kept():
    image, boxes, masks = disc_scene(96, 96, seed=3, n_discs=2)
    model = GrowsAtClicks(masks[0])
    first = label_image(model, image, masks[:1], boxes[:1])[0]
    assert not first.brushed and 1 <= first.clicks < 20 and first.iou >= 0.90
    assert 0 < (first.mask != masks[0]).sum()  # the clicked mask, not the GT
    # one click fewer is below the target: the user stopped at the first click that reached it
    fewer = robot_label(model, masks[0], boxes[0], max_clicks=first.clicks - 1)
    assert fewer.brushed and fewer.iou < 0.90
    assert robot_label(model, masks[0], boxes[0], target=0.999).clicks > first.clicks


def test_the_simulated_user_is_deterministic_with_the_default():
    from box2mask import build_predictor

    image, boxes, masks = disc_scene(80, 80, seed=4, n_discs=2)
    runs = [
        label_image(build_predictor(None), image, masks, boxes, max_clicks=4, target=0.99)
        for _ in range(2)
    ]
    for a, b in zip(*runs, strict=True):
        assert (a.clicks, a.brushed, a.iou) == (b.clicks, b.brushed, b.iou)
        assert np.array_equal(a.mask, b.mask)
    assert sum(a.clicks for a in runs[0]) > 0  # the 0.99 target needed clicks


def test_batch_order_is_a_seeded_permutation():
    keys = [f"im{i}.png" for i in range(20)]
    assert batch_order(keys, order="index", seed=0) == keys
    drawn = batch_order(keys, order="random", seed=7)
    assert sorted(drawn) == sorted(keys) and drawn != keys
    assert batch_order(keys, order="random", seed=7) == drawn
    assert batch_order(keys, order="random", seed=8) != drawn
    with pytest.raises(ValueError, match="order must be index or random"):
        batch_order(keys, order="uncertain", seed=0)
