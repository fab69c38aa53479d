"""Mask targets next to box supervision: human masks (mixed supervision) and the level-set teacher.

Hand-computed loss values, weights that switch instances on and off, masks that follow their boxes
through augmentation and prompt sampling, the teacher's masks, and a short training run whose mask
loss goes down.
"""

import json
import math

import numpy as np
import pytest
import torch

from box2mask.io.image_io import load_image
from box2mask.io.rle import decode_rle
from box2mask.model.config import LossConfig
from box2mask.model.losses import Box2MaskCriterion, mask_target_losses, sample_prompts
from tests.test_train_loop import make_shapes_dataset, read_metrics, tiny_config
from train.dataset import CocoBoxDataset, collate_batch
from train.teacher import compute_teacher_masks, load_or_compute_teacher_masks

pytestmark = pytest.mark.usefixtures("one_thread")


def _drop_masks_of_image(data, image_id):
    """The same dataset with the masks of one image removed (those boxes stay box-only)."""
    coco = json.loads((data / "annotations.json").read_text())
    for ann in coco["annotations"]:
        if ann["image_id"] == image_id:
            del ann["segmentation"]
    (data / "annotations.json").write_text(json.dumps(coco))


def test_mask_target_losses_match_hand_computed_values():
    logits = torch.zeros(1, 2, 2)  # p = 0.5 everywhere
    target = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    bce, dice = mask_target_losses(logits, target)
    assert bce.item() == pytest.approx(math.log(2))  # -log(0.5) at every pixel
    # dice = 1 - (2 * sum(p t) + 1) / (sum(p) + sum(t) + 1) = 1 - (2 * 1 + 1) / (2 + 2 + 1)
    assert dice.item() == pytest.approx(1 - 3 / 5)
    perfect = torch.tensor([[[20.0, 20.0], [-20.0, -20.0]]])
    bce, dice = mask_target_losses(perfect, target)
    assert bce.item() < 1e-6 and dice.item() == pytest.approx(0.0, abs=1e-6)


def _criterion():
    cfg = LossConfig(deep_supervision=False)
    return Box2MaskCriterion(num_classes=1, cfg=cfg, num_decoder_layers=1)


def _inputs(weights):
    """Two prompt instances on one 32x32 image: a right-half mask target each."""
    images = torch.rand(1, 3, 32, 32) * 255
    masks = torch.zeros(2, 32, 32)
    masks[:, 8:24, 16:28] = 1
    boxes = torch.tensor([[16.0, 8.0, 28.0, 24.0], [16.0, 8.0, 28.0, 24.0]])
    logits = torch.zeros(1, 2, 8, 8, requires_grad=True)
    outputs = {
        "pred_logits": torch.zeros(1, 3, 2),
        "pred_masks": torch.zeros(1, 3, 8, 8),
        "mask_features": torch.rand(1, 4, 8, 8),
        "prompt_masks": [logits[0]],
    }
    targets = [
        {
            "boxes": boxes,
            "labels": torch.zeros(2, dtype=torch.long),
            "masks": masks,
            "mask_weight": torch.tensor(weights),
        }
    ]
    return outputs, targets, images, logits


def test_only_instances_with_a_mask_weight_get_the_mask_loss_gradient():
    outputs, targets, images, logits = _inputs([1.0, 0.0])
    losses = _criterion()(outputs, targets, images, levelset_on=False)
    assert "loss_prompt_mask_bce" in losses and "loss_mask_dice" in losses
    (losses["loss_prompt_mask_bce"] + losses["loss_prompt_mask_dice"]).backward()
    assert logits.grad[0, 0].abs().sum() > 0  # the human-masked instance learns its mask
    assert logits.grad[0, 1].abs().sum() == 0  # the box-only one gets no mask gradient
    # the target pools to the mask grid: the gradient pushes up inside it, down outside
    assert (logits.grad[0, 0, 2:6, 4:7] < 0).all() and (logits.grad[0, 0, :, :3] > 0).all()


def test_mask_loss_is_a_weighted_mean_over_masked_instances():
    outputs, targets, images, _ = _inputs([1.0, 0.5])
    losses = _criterion()(outputs, targets, images, levelset_on=False)
    # zero logits: bce = log 2 for every pixel whatever the target -> (1 + 0.5) log 2 / 2
    assert losses["loss_prompt_mask_bce"].item() == pytest.approx(1.5 * math.log(2) / 2)


def test_box_only_targets_have_no_mask_terms():
    outputs, targets, images, _ = _inputs([1.0, 1.0])
    for t in targets:
        del t["masks"], t["mask_weight"]
    losses = _criterion()(outputs, targets, images, levelset_on=False)
    assert not any("mask_" in k for k in losses)


def test_dataset_masks_follow_their_boxes_through_augmentation(shapes, tmp_path):
    data = tmp_path / "data"
    make_shapes_dataset(data, n_images=4, size=64, seed=3)
    _drop_masks_of_image(data, image_id=2)
    dataset = CocoBoxDataset(
        data, train=True, image_size=48, min_scale=0.6, max_scale=1.4, with_masks=True
    )
    for epoch in range(3):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            item = dataset[index]
            masks, boxes = item["masks"], item["boxes"]
            assert masks.shape == (len(boxes), *item["image"].shape[1:])
            expected = 0.0 if item["image_id"] == 2 else 1.0
            assert (item["mask_weight"] == expected).all()
            for mask, box in zip(masks, boxes, strict=True):
                if not mask.any():
                    continue
                ys, xs = np.nonzero(mask.numpy())
                # the mask's tight box lies in its (augmented) box, within a pixel of rounding
                assert xs.min() >= box[0] - 1 and xs.max() + 1 <= box[2] + 1
                assert ys.min() >= box[1] - 1 and ys.max() + 1 <= box[3] + 1
    batch = collate_batch([dataset[0], dataset[1]])
    h, w = batch["images"].shape[-2:]
    assert all(t["masks"].shape[-2:] == (h, w) for t in batch["targets"])


def test_box_only_dataset_gives_no_masks(shapes):
    item = CocoBoxDataset(shapes, image_size=64)[0]
    assert "masks" not in item and "mask_weight" not in item


def test_prompt_sampling_keeps_each_mask_with_its_box():
    masks = torch.zeros(3, 20, 20)
    for i in range(3):
        masks[i, i] = 1  # mask i marks row i
    target = {
        "boxes": torch.tensor([[0.0, 0, 5, 5], [1, 1, 6, 6], [2, 2, 7, 7]]),
        "masks": masks,
        "mask_weight": torch.tensor([1.0, 0.0, 0.5]),
    }
    gen = torch.Generator().manual_seed(0)
    _, prompt_targets = sample_prompts(
        [target], (20, 20), jitter=0.0, max_per_image=2, generator=gen
    )
    kept = prompt_targets[0]
    assert len(kept["boxes"]) == 2
    for box, mask, weight in zip(kept["boxes"], kept["masks"], kept["mask_weight"], strict=True):
        i = int(box[0])
        assert mask[i].all() and mask.sum() == 20
        assert weight == target["mask_weight"][i]


def test_teacher_masks_cover_the_shapes_and_skip_human_masked_boxes(tmp_path):
    data = tmp_path / "data"
    make_shapes_dataset(data, n_images=3, size=64, seed=5)
    _drop_masks_of_image(data, image_id=1)
    dataset = CocoBoxDataset(data, image_size=64)
    masks = compute_teacher_masks(dataset, skip_masked=True, progress=False)
    assert masks[2] == [None, None] and masks[3] == [None, None]  # human masks there
    predicted = [decode_rle(m).astype(bool) for m in masks[1]]
    assert len(predicted) == 2 and all(m.any() for m in predicted)
    # compare with the bright pixels of the image: the shapes are bright on dark noise
    bright = load_image(data / "images" / "shape0.png").min(axis=2) >= 150
    for mask, (box, _, _) in zip(predicted, dataset.boxes_by_image[1], strict=True):
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        truth = np.zeros_like(bright)
        truth[y0:y1, x0:x1] = bright[y0:y1, x0:x1]
        iou = (mask & truth).sum() / (mask | truth).sum()
        assert iou > 0.8, iou


def test_teacher_cache_is_reused_and_a_mismatched_one_is_refused(shapes, tmp_path):
    dataset = CocoBoxDataset(shapes, image_size=64)
    path = tmp_path / "teacher_masks.json"
    first = load_or_compute_teacher_masks(dataset, path, skip_masked=False, progress=False)
    assert path.is_file()
    second = load_or_compute_teacher_masks(dataset, path, skip_masked=False, progress=False)
    assert first == second
    stored = json.loads(path.read_text())
    stored[next(iter(stored))] = []
    path.write_text(json.dumps(stored))
    with pytest.raises(ValueError, match="teacher_masks.json.*do not match"):
        load_or_compute_teacher_masks(dataset, path, skip_masked=False, progress=False)


def test_mixed_supervision_training_lowers_the_mask_loss(shapes, tmp_path):
    from train.train_cmd import train

    out = tmp_path / "run"
    torch.manual_seed(0)
    train(tiny_config(shapes, out, iterations=20, mask_supervision=True), progress=False)
    rows = read_metrics(out)
    assert all(np.isfinite(r["loss_prompt_mask_dice"]) for r in rows)
    first = np.mean([r["loss_prompt_mask_dice"] + r["loss_prompt_mask_bce"] for r in rows[:4]])
    last = np.mean([r["loss_prompt_mask_dice"] + r["loss_prompt_mask_bce"] for r in rows[-4:]])
    assert last < 0.8 * first, (first, last)


def test_an_unknown_teacher_is_a_config_error(shapes, tmp_path):
    from train.config import ConfigError
    from train.train_cmd import train

    with pytest.raises(ConfigError, match="teacher 'sam'"):
        train(tiny_config(shapes, tmp_path / "run", iterations=1, teacher="sam"), progress=False)
