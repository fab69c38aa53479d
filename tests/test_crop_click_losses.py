"""Training terms of the click-aware crop learner: click consistency, weak terms off and the mask
loss weighted up on the previous mask's errors for clicked crops."""

import math

import torch

from box2mask.crop.losses import click_consistency_loss, crop_losses, total_loss
from train.crop_click_sim import clicked_crop_weights
from train.crop_config import CropLossWeights, CropTrainConfig


def _one_click(size=8, positive=True):
    """(1, 2, S, S) click maps with a single-pixel disc at (3, 4)."""
    clicks = torch.zeros(1, 2, size, size)
    clicks[0, 0 if positive else 1, 3, 4] = 1
    return clicks


def test_click_consistency_is_larger_when_the_mask_ignores_the_click():
    clicks = _one_click()
    follows = torch.full((1, 8, 8), -5.0)
    follows[0, 3, 4] = 5.0  # object at the positive click
    ignores = torch.full((1, 8, 8), -5.0)  # background everywhere, the click too
    # softplus(-5) = log(1 + e^-5) = 0.006715; softplus(5) = 5.006715
    assert math.isclose(float(click_consistency_loss(follows, clicks)), 0.006715, abs_tol=1e-5)
    assert math.isclose(float(click_consistency_loss(ignores, clicks)), 5.006715, abs_tol=1e-5)
    negative = _one_click(positive=False)  # a negative click on the object pays the same
    assert math.isclose(float(click_consistency_loss(-ignores, negative)), 5.006715, abs_tol=1e-5)
    assert float(click_consistency_loss(ignores, torch.zeros(1, 2, 8, 8))) == 0.0  # no clicks


def test_click_consistency_gradient_flows_at_the_disc_only():
    logits = torch.zeros(1, 8, 8, requires_grad=True)
    click_consistency_loss(logits, _one_click()).sum().backward()
    grad = logits.grad[0]
    assert math.isclose(float(grad[3, 4]), -0.5, abs_tol=1e-6)  # d softplus(-x)/dx at 0: pushes up
    grad[3, 4] = 0
    assert float(grad.abs().sum()) == 0.0


def _losses(clicks=None, mask_weight=None):
    logits = torch.zeros(2, 8, 8)
    return crop_losses(
        logits=logits,
        features=torch.randn(2, 4, 8, 8),
        image=torch.rand(2, 3, 8, 8),
        grid_boxes=torch.tensor([[1.0, 1.0, 7.0, 7.0]] * 2),
        masks=torch.zeros(2, 8, 8),
        has_mask=torch.tensor([True, True]),
        clicks=clicks,
        mask_weight=mask_weight,
    )


def test_crop_losses_average_the_click_term_over_clicked_crops_and_weight_the_mask_bce():
    clicks = torch.cat([_one_click(), torch.zeros(1, 2, 8, 8)])  # crop 0 clicked, crop 1 not
    losses = _losses(clicks=clicks)
    assert math.isclose(float(losses["loss_click"]), math.log(2), abs_tol=1e-6)  # crop 0 only
    assert float(_losses()["loss_click"]) == 0.0  # no click maps: 0
    # the click term counts only with its weight, which is 0 by default (old configs)
    assert CropLossWeights().click == 0.0
    assert float(total_loss({"loss_click": losses["loss_click"]}, CropLossWeights().as_dict())) == 0
    plain = float(_losses()["loss_mask_bce"])
    assert math.isclose(plain, math.log(2), abs_tol=1e-6)  # BCE of logit 0 to target 0
    weight = torch.ones(2, 8, 8)
    weight[0] = 3.0  # one crop of two at weight 3: mean weight 2
    assert math.isclose(
        float(_losses(mask_weight=weight)["loss_mask_bce"]), 2 * plain, rel_tol=1e-6
    )


def test_clicked_crops_lose_the_weak_terms_and_weight_up_the_previous_errors():
    size = 4
    channels = torch.zeros(3, 3, size, size)
    channels[:, 2] = -1.0  # previous mask: background
    channels[0, 0, 1, 1] = 1.0  # crop 0 has a positive click
    masks = torch.zeros(3, size, size)
    masks[0, :2, :2] = 1.0  # crop 0: the previous mask missed 4 object pixels
    has_mask = torch.tensor([True, True, False])  # crop 1 verified unclicked, crop 2 box-only
    kwargs = {"has_mask": has_mask, "channels": channels, "masks": masks, "weak_on_verified": 0.25}
    weak, mask_weight = clicked_crop_weights(**kwargs)  # the defaults: as before
    assert weak.tolist() == [0.25, 0.25, 1.0] and mask_weight is None
    assert CropTrainConfig().weak_on_clicked < 0 and CropTrainConfig().click_error_weight == 0
    weak, mask_weight = clicked_crop_weights(**kwargs, weak_on_clicked=0.0, click_error_weight=4)
    assert weak.tolist() == [0.0, 0.25, 1.0]
    expected = torch.ones(3, size, size)
    expected[0, :2, :2] = 5.0  # 1 + 4 on the missed pixels of the clicked crop only
    assert torch.equal(mask_weight, expected)
    no_channels = clicked_crop_weights(**{**kwargs, "channels": channels[:, :0]}, weak_on_clicked=0)
    assert no_channels[0].tolist() == [0.25, 0.25, 1.0]  # a learner without click channels
