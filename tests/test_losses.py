import math

import pytest
import torch

from box2mask.model.config import LossConfig
from box2mask.model.losses import Box2MaskCriterion, build_weight_dict, sample_prompts
from box2mask.ops.feature_smoothing import bilateral_smooth
from box2mask.ops.lcm import lcm_affinity, lcm_loss, neighbours, propagate
from box2mask.ops.projection import projection_dice_cost, projection_dice_loss
from tests.tiny_model import tiny_model


def test_projection_dice_hand_computed():
    probs = torch.tensor([[[0.5, 1.0, 0.0], [0.0, 0.0, 0.0]]])
    box = torch.tensor([[0.0, 0.0, 2.0, 1.0]])  # columns 0-1, row 0
    # x: max over rows [0.5, 1, 0] vs [1, 1, 0]: 1 - 2 * 1.5 / (1.25 + 2) ; y: [1, 0] vs [1, 0]: 0
    expected = 1 - 3 / 3.25
    assert projection_dice_loss(probs, box).item() == pytest.approx(expected, abs=1e-4)
    exact = torch.zeros(1, 2, 3)
    exact[0, 0, :2] = 1.0
    assert projection_dice_loss(exact, box).item() == pytest.approx(0.0, abs=1e-5)


def test_projection_cost_is_the_pairwise_loss():
    torch.manual_seed(0)
    probs = torch.rand(4, 6, 7)
    boxes = torch.tensor([[0.0, 0.0, 3.0, 4.0], [2.0, 1.0, 7.0, 6.0], [1.5, 2.5, 4.2, 5.0]])
    cost = projection_dice_cost(probs, boxes)
    for q in range(4):
        for g in range(3):
            loss = projection_dice_loss(probs[q : q + 1], boxes[g : g + 1])
            assert cost[q, g].item() == pytest.approx(loss.item(), abs=1e-5)


def test_neighbours_hand_computed():
    x = torch.arange(9.0).view(1, 3, 3)
    nb = neighbours(x, dilation=1)
    assert nb[0, :, 1, 1].tolist() == [0, 1, 2, 3, 5, 6, 7, 8]
    assert nb[0, :, 0, 0].tolist() == [0, 0, 1, 0, 1, 3, 3, 4]  # replicated border


def test_lcm_affinity_hand_computed():
    # a 1 x 3 image [0, 0, 1]: the centre's neighbours (replicated) are 5 zeros and 3 ones;
    # std over the 9 values = 0.5, so a one gets logit -(1 / 0.5 / 0.3)^2 = -44.4, a zero 0.
    image = torch.tensor([[[[0.0, 0.0, 1.0]]]])
    aff = lcm_affinity(image, dilation=1, temperature=0.3)
    assert aff.shape == (1, 8, 1, 3)
    centre = aff[0, :, 0, 1]
    across_edge = torch.tensor([False, False, True, False, True, False, False, True])
    assert centre[~across_edge].tolist() == pytest.approx([0.2] * 5, abs=1e-6)
    assert centre[across_edge].max().item() < 1e-15
    flat = lcm_affinity(torch.ones(1, 3, 4, 4), dilation=2)
    torch.testing.assert_close(flat, torch.full_like(flat, 1 / 8))


def test_lcm_loss_hand_computed():
    # uniform affinity; one step moves the centre's 1 to its 8 neighbours (1/8 each)
    probs = torch.zeros(1, 3, 3)
    probs[0, 1, 1] = 1.0
    aff = torch.full((1, 8, 3, 3), 1 / 8)
    refined = propagate(probs, aff, steps=1, dilation=1)
    expected = torch.full((3, 3), 1 / 8)
    expected[1, 1] = 0.0
    torch.testing.assert_close(refined[0], expected)
    whole = torch.ones(1, 3, 3)
    assert lcm_loss(probs, whole, aff, 1, 1).item() == pytest.approx((8 / 8 + 1) / 9)
    top_row = torch.zeros(1, 3, 3)
    top_row[0, 0] = 1.0
    assert lcm_loss(probs, top_row, aff, 1, 1).item() == pytest.approx(1 / 8)
    # propagation keeps a constant mask constant (affinities sum to 1)
    const = propagate(torch.full((2, 5, 5), 0.3), lcm_affinity(torch.rand(1, 3, 5, 5)), 10, 2)
    torch.testing.assert_close(const, torch.full((2, 5, 5), 0.3))


def test_bilateral_smoothing_keeps_guide_edges():
    torch.manual_seed(0)
    guide = torch.zeros(1, 1, 12, 12)
    guide[..., 6:] = 4.0  # a strong edge between columns 5 and 6
    step = (guide > 0).float()
    noisy = step + 0.3 * torch.randn(1, 1, 12, 12)
    out = bilateral_smooth(noisy, guide, kernel=5, sigma_color=0.5, iters=2)
    assert (out - step).abs().mean() < 0.5 * (noisy - step).abs().mean()  # noise removed
    assert (out[..., 6] - out[..., 5]).mean() > 0.9  # edge kept
    const = torch.full((2, 3, 8, 8), 2.5)
    torch.testing.assert_close(bilateral_smooth(const, torch.rand(2, 3, 8, 8)), const)
    with pytest.raises(ValueError, match="odd"):
        bilateral_smooth(const, const, kernel=4)


def test_sample_prompts():
    targets = [
        {"boxes": torch.tensor([[10.0, 10.0, 30.0, 50.0], [0.0, 0.0, 8.0, 8.0]])},
        {"boxes": torch.zeros(0, 4)},
    ]
    boxes, prompt_targets = sample_prompts(targets, (64, 64), jitter=0.0, max_per_image=5)
    assert len(boxes[1]) == 0
    order = prompt_targets[0]["boxes"]
    torch.testing.assert_close(boxes[0], order)
    assert sorted(order[:, 0].tolist()) == [0.0, 10.0]
    gen = torch.Generator().manual_seed(0)
    boxes, prompt_targets = sample_prompts(
        targets, (64, 64), jitter=0.1, max_per_image=1, generator=gen
    )
    assert len(boxes[0]) == 1
    gt = prompt_targets[0]["boxes"][0]
    size = (gt[2:] - gt[:2]).repeat(2)
    moved = (boxes[0][0] - gt).abs()
    assert (moved <= 0.1 * size + 1e-5).all() and moved.max() > 0
    assert (boxes[0][0] >= 0).all() and (boxes[0][0] <= 64).all()


def _two_query_outputs(mask_logits_q0, cls_q0, cls_q1):
    """Hand-made outputs: 1 image 16 x 16 (mask grid 4 x 4), Q = 2, K = 2."""
    masks = torch.full((1, 2, 4, 4), -10.0)
    masks[0, 0] = mask_logits_q0
    masks[0, 1, 3, 3] = 10.0
    logits = torch.tensor([[cls_q0, cls_q1]])
    return {
        "pred_logits": logits,
        "pred_masks": masks,
        "mask_features": torch.ones(1, 4, 4, 4),
        "aux_outputs": [],
    }


def test_criterion_hand_computed_class_and_projection():
    crit = Box2MaskCriterion(2, LossConfig(), num_decoder_layers=0)
    q0 = torch.full((4, 4), -10.0)
    q0[:2, :2] = 10.0  # exactly the GT box (0, 0, 8, 8) on the stride-4 grid
    outputs = _two_query_outputs(q0, [0.0, 2.0, 0.0], [0.0, 0.0, 1.0])
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 8.0, 8.0]]), "labels": torch.tensor([1])}]
    losses = crit(outputs, targets, torch.zeros(1, 3, 16, 16), levelset_on=False)
    assert set(losses) == {"loss_cls", "loss_proj"}
    assert losses["loss_proj"].item() == pytest.approx(0.0, abs=1e-3)
    l0 = -math.log(math.exp(2) / (math.exp(2) + 2))  # query 0 -> class 1, weight 1
    l1 = -math.log(math.e / (math.e + 2))  # query 1 -> no object, weight 0.1
    assert losses["loss_cls"].item() == pytest.approx((l0 + 0.1 * l1) / 1.1, abs=1e-5)


def test_criterion_levelset_image_hand_computed():
    crit = Box2MaskCriterion(2, LossConfig(), num_decoder_layers=0)
    # left half of the image has colour A, right half B; the box is the whole image; the
    # mask covers all of it, so c_in = mean and E = sum_c ((a_c - b_c) / 2)^2 (normalised units)
    a, b = torch.tensor([200.0, 40.0, 90.0]), torch.tensor([20.0, 140.0, 90.0])
    images = torch.zeros(1, 3, 16, 16)
    images[0, :, :, :8] = a[:, None, None]
    images[0, :, :, 8:] = b[:, None, None]
    outputs = _two_query_outputs(torch.full((4, 4), 20.0), [0.0, 2.0, 0.0], [0.0, 0.0, 1.0])
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 16.0, 16.0]]), "labels": torch.tensor([1])}]
    losses = crit(outputs, targets, images)
    std = torch.tensor([58.395, 57.12, 57.375])
    expected = (((a - b) / std / 2) ** 2).sum().item()
    assert losses["loss_levelset_img"].item() == pytest.approx(expected, rel=1e-4)
    assert losses["loss_lcm"].item() == pytest.approx(0.0, abs=1e-6)  # constant mask
    # the mask that splits the colours has (almost) zero energy
    split = torch.full((4, 4), -20.0)
    split[:, :2] = 20.0
    outputs = _two_query_outputs(split, [0.0, 2.0, 0.0], [0.0, 0.0, 1.0])
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 16.0, 16.0]]), "labels": torch.tensor([1])}]
    assert crit(outputs, targets, images)["loss_levelset_img"].item() < 1e-4


def test_weight_dict_covers_every_loss_and_warmup():
    cfg = LossConfig()
    weights = build_weight_dict(cfg, 3)
    assert weights["loss_levelset_feat_2"] == pytest.approx(5.0)
    assert weights["loss_levelset_img"] == pytest.approx(0.05)
    assert weights["loss_lcm_0"] == pytest.approx(0.2)
    assert weights["loss_prompt_proj_1"] == pytest.approx(5.0)
    no_deep = build_weight_dict(LossConfig(deep_supervision=False), 3)
    assert "loss_cls_0" not in no_deep and "loss_cls" in no_deep


@pytest.fixture(scope="module")
def tiny_setup():
    model = tiny_model(num_queries=5)
    crit = Box2MaskCriterion(2, LossConfig(), num_decoder_layers=2)
    images = torch.rand(2, 3, 64, 64) * 255
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([0])},
        {
            "boxes": torch.tensor([[10.0, 10.0, 30.0, 30.0], [30.0, 20.0, 60.0, 60.0]]),
            "labels": torch.tensor([1, 0]),
        },
    ]
    return model, crit, images, targets


def test_every_term_sends_gradients_to_the_model(tiny_setup):
    model, crit, images, targets = tiny_setup
    prompt_boxes, prompt_targets = sample_prompts(targets, (64, 64), jitter=0.1, max_per_image=5)
    outputs = model(images, prompt_boxes=prompt_boxes)
    losses = crit(outputs, targets, images, prompt_targets=prompt_targets)
    expected = {f"loss_{t}" for t in ("cls", "proj", "levelset_img", "levelset_feat", "lcm")}
    expected |= {f"loss_prompt_{t}" for t in ("proj", "levelset_img", "levelset_feat", "lcm")}
    expected |= {f"{k}_{i}" for k in expected for i in range(2)}
    assert set(losses) == expected
    assert set(losses) <= set(crit.weight_dict)
    for name in ("loss_cls", "loss_proj", "loss_levelset_img", "loss_levelset_feat", "loss_lcm"):
        for key in (name, name.replace("loss_", "loss_prompt_")):
            if key not in losses:
                continue
            assert torch.isfinite(losses[key]), key
            head = model.decoder.class_embed if name == "loss_cls" else model.decoder.mask_embed
            params = list(head.parameters())
            grads = torch.autograd.grad(losses[key], params, retain_graph=True, allow_unused=True)
            assert any(g is not None and g.abs().sum() > 0 for g in grads), key
    # the deep features enter the energy detached (config feat_detach), or not
    features = outputs["mask_features"]
    assert not crit.image_context(images, features)["features"].requires_grad
    attached = Box2MaskCriterion(2, LossConfig(feat_detach=False), num_decoder_layers=2)
    assert attached.image_context(images, features)["features"].requires_grad


def test_nonfinite_cost_raises(tiny_setup):
    _, crit, images, targets = tiny_setup
    outputs = {
        "pred_logits": torch.full((2, 5, 3), float("nan")),
        "pred_masks": torch.zeros(2, 5, 16, 16),
        "mask_features": torch.zeros(2, 8, 16, 16),
    }
    with pytest.raises(FloatingPointError, match="image 0"):
        crit(outputs, targets, images)


def test_empty_targets_give_finite_losses(tiny_setup):
    model, crit, images, _ = tiny_setup
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}] * 2
    outputs = model(images)
    losses = crit(outputs, empty, images)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_proj"].item() == 0.0
    total = sum(crit.weight_dict[k] * v for k, v in losses.items())
    total.backward()  # only the class loss ("no object" everywhere) drives it
    assert model.decoder.class_embed.weight.grad.abs().sum() > 0
    model.zero_grad()


def test_losses_fall_when_optimised(tiny_setup):
    # 12 Adam steps of the decoder on one batch lower the weighted total: the gradients of the
    # whole criterion point downhill (the backbone is encoded once to keep the test fast)
    model, crit, images, targets = tiny_setup
    torch.manual_seed(0)
    with torch.no_grad():
        features = model.encode(images)
    opt = torch.optim.Adam(model.decoder.parameters(), lr=2e-3)
    totals = []
    for _ in range(12):
        losses = crit(model.decode(features), targets, images)
        total = sum(crit.weight_dict[k] * v for k, v in losses.items())
        opt.zero_grad()
        total.backward()
        opt.step()
        totals.append(total.item())
    assert totals[-1] < 0.8 * totals[0]


def test_image_context_shapes():
    crit = Box2MaskCriterion(2, LossConfig())
    ctx = crit.image_context(torch.rand(2, 3, 32, 64) * 255, torch.randn(2, 16, 8, 16))
    assert ctx["image"].shape == (2, 3, 8, 16)
    assert ctx["affinity"].shape == (2, 8, 8, 16)
    norms = ctx["features"].norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_bilateral_smoothing_gradcheck():
    torch.manual_seed(0)
    feats = torch.randn(1, 1, 4, 5, dtype=torch.float64, requires_grad=True)
    guide = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda f, g: bilateral_smooth(f, g, kernel=3, iters=1), (feats, guide)
    )
