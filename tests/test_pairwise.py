"""The crop learner's pairwise term: Lab colours, colour edges, and the loss on hand-made crops."""

import cv2
import numpy as np
import torch

from box2mask.crop.losses import colour_edges, crop_losses, pairwise_loss
from box2mask.ops.lab import rgb_to_lab


def test_lab_matches_opencv_8bit_units():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    expected = cv2.cvtColor(pixels, cv2.COLOR_RGB2LAB).astype(np.float32)
    rgb = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
    got = rgb_to_lab(rgb)[0].permute(1, 2, 0).numpy()
    assert np.abs(got - expected).max() < 1.0  # OpenCV rounds to integers


def _two_halves(size=8):
    """A crop whose left half is black and right half white, the box covering all of it."""
    rgb = torch.zeros(1, 3, size, size)
    rgb[..., size // 2 :] = 1.0
    return rgb, torch.ones(1, size, size)


def test_edges_join_only_similar_neighbours_inside_the_box():
    rgb, box = _two_halves()
    edges = colour_edges(rgb, box)
    # neighbour 4 is (dy, dx) = (0, +2): a pixel in column 2 or 3 looks across the colour change
    assert edges[0, 4, :, 2:4].sum() == 0
    assert edges[0, 4, :, :2].min() == 1 and edges[0, 4, :, 4:6].min() == 1
    box[:, :, 5:] = 0  # pixels outside the box have no edges
    assert colour_edges(rgb, box)[0, :, :, 5:].sum() == 0


def test_pairwise_loss_by_hand():
    """One edge, p(x) = sigmoid(0) = 0.5 and p(y) = sigmoid(log 3) = 0.75:
    P(same) = 0.5 * 0.75 + 0.5 * 0.25 = 0.5, loss = log 2."""
    logits = torch.zeros(1, 5, 5)
    logits[0, 2, 4] = np.log(3.0)  # the neighbour (0, +2) of pixel (2, 2)
    edges = torch.zeros(1, 8, 5, 5)
    edges[0, 4, 2, 2] = 1.0
    torch.testing.assert_close(pairwise_loss(logits, edges), torch.tensor([float(np.log(2.0))]))


def test_a_mask_split_along_the_colour_edge_costs_nothing_and_others_do():
    rgb, box = _two_halves()
    edges = colour_edges(rgb, box)
    right = torch.full((1, 8, 8), -12.0)
    right[..., 4:] = 12.0
    shifted = torch.full((1, 8, 8), -12.0)
    shifted[..., 2:] = 12.0
    assert pairwise_loss(right, edges) < 1e-4
    assert pairwise_loss(shifted, edges) > 1.0
    logits = shifted.clone().requires_grad_()
    losses = crop_losses(
        logits=logits,
        features=torch.randn(1, 4, 8, 8),
        image=rgb,
        grid_boxes=torch.tensor([[0.0, 0.0, 8.0, 8.0]]),
        rgb=rgb,
    )
    losses["loss_pairwise"].backward()
    assert logits.grad[0, :, 2:4].abs().sum() > 0  # the wrongly labelled columns are pushed
    no_rgb = crop_losses(
        logits=shifted,
        features=torch.randn(1, 4, 8, 8),
        image=rgb,
        grid_boxes=torch.tensor([[0.0, 0.0, 8.0, 8.0]]),
    )
    assert no_rgb["loss_pairwise"] == 0
