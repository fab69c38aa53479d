import pytest
import torch

from box2mask.ops.levelset import (
    box_masks_from_boxes,
    chan_vese_energy,
    evolve,
    inscribed_ellipses,
    length_energy,
    region_energy,
)


def test_box_masks_cover_pixel_centres():
    boxes = torch.tensor([[1.0, 0.0, 3.0, 2.0], [0.2, 0.6, 1.4, 1.6]])
    masks = box_masks_from_boxes(boxes, 3, 4)
    assert masks[0].tolist() == [[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    # box 2 contains centre (0.5, 1.5) only
    assert masks[1].tolist() == [[0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]


def test_inscribed_ellipse_hand_computed():
    probs = inscribed_ellipses(torch.tensor([[0.0, 0.0, 4.0, 2.0]]), 2, 5, inside=1.0, outside=0.5)
    # centre (2, 1), radii (2, 1): pixel centres (0.5, 0.5) -> u = .5625, v = .25 -> inside
    assert probs[0].tolist() == [[1.0, 1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0, 0.0]]


def test_region_energy_hand_computed():
    # 1 x 4 grid, one channel F = [0, 1, 2, 3]; m = [1, 1, 0, 0]; box covers the first 3 pixels.
    features = torch.tensor([[[0.0, 1.0, 2.0, 3.0]]])
    probs = torch.tensor([[[1.0, 1.0, 0.0, 0.0]]])
    box = torch.tensor([[[1.0, 1.0, 1.0, 0.0]]])
    # c_in = (0 + 1) / 2 = 0.5, c_out = 2 / 1 = 2 (pixel 3 is outside the box)
    # E = [(0 - .5)^2 + (1 - .5)^2 + (2 - 2)^2] / |B| = 0.5 / 3
    energy = region_energy(probs, features, box, eps=0.0)
    assert energy.item() == pytest.approx(0.5 / 3, abs=1e-6)
    # soft mask m = 0.5 everywhere in the box: c_in = c_out = 1, E = (1 + 0 + 1) * (0.5 + 0.5) / 3
    half = torch.full_like(probs, 0.5)
    assert region_energy(half, features, box, eps=0.0).item() == pytest.approx(2 / 3, abs=1e-6)


def test_length_energy_hand_computed():
    # a vertical step edge: m = [[0, 1], [0, 1]]; forward differences give |dx| = 1 at column 0.
    probs = torch.tensor([[[0.0, 1.0], [0.0, 1.0]]])
    box = torch.ones_like(probs)
    assert length_energy(probs, box, eps=0.0).item() == pytest.approx(2 / 4)
    total = chan_vese_energy(probs, probs[None, 0].expand(1, 2, 2), box, gamma=2.0, eps=0.0)
    assert total.item() == pytest.approx(0.0 + 2.0 * 0.5)


def test_energy_gradcheck_float64():
    torch.manual_seed(0)
    probs = torch.rand(3, 5, 6, dtype=torch.float64, requires_grad=True)
    features = torch.rand(2, 5, 6, dtype=torch.float64, requires_grad=True)
    boxes = torch.tensor([[0, 0, 6, 5], [1, 1, 4, 4], [2, 0, 5, 3]], dtype=torch.float64)
    box_masks = box_masks_from_boxes(boxes, 5, 6)

    def fn(p, f):
        return chan_vese_energy(p, f, box_masks, gamma=0.3)

    assert torch.autograd.gradcheck(fn, (probs, features))


def test_vectorized_equals_per_box_loop():
    torch.manual_seed(1)
    height, width, n = 20, 30, 7
    features = torch.rand(3, height, width, dtype=torch.float64)
    probs = torch.rand(n, height, width, dtype=torch.float64)
    xy0 = torch.rand(n, 2) * 15
    wh = torch.rand(n, 2) * 12 + 2
    boxes = torch.cat([xy0, xy0 + wh], dim=1).to(torch.float64)
    box_masks = box_masks_from_boxes(boxes, height, width)
    batched = chan_vese_energy(probs, features, box_masks, gamma=0.5)
    # per-box reference written directly from the definition, on the box's own crop
    for i in range(n):
        b = box_masks[i] > 0
        f = features[:, b]  # (C, P)
        m = probs[i][b]
        c_in = (f * m).sum(1) / m.sum()
        c_out = (f * (1 - m)).sum(1) / (1 - m).sum()
        e = ((f - c_in[:, None]) ** 2).sum(0) * m + ((f - c_out[:, None]) ** 2).sum(0) * (1 - m)
        e = e.sum() / b.sum() + 0.5 * length_energy(probs[i : i + 1], box_masks[i : i + 1])[0]
        assert batched[i].item() == pytest.approx(e.item(), rel=1e-5)
    # per-box feature maps give the same result as a shared map
    per_box = chan_vese_energy(probs, features.expand(n, -1, -1, -1), box_masks, gamma=0.5)
    torch.testing.assert_close(per_box, batched)


def test_evolution_recovers_synthetic_object_from_loose_box():
    torch.manual_seed(2)
    height, width = 64, 64
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    disk = ((yy - 40) ** 2 + (xx - 40) ** 2 < 14**2).float()
    ellipse = (((yy - 14) / 8.0) ** 2 + ((xx - 16) / 12.0) ** 2 < 1).float()
    image = 0.3 + 0.4 * disk - 0.2 * ellipse + 0.05 * torch.randn(height, width)
    features = image[None]
    truth = torch.stack([disk, ellipse]) > 0
    boxes = torch.tensor([[22.0, 22.0, 60.0, 60.0], [0.0, 0.0, 32.0, 28.0]])  # loose boxes
    box_masks = box_masks_from_boxes(boxes, height, width)
    init = inscribed_ellipses(boxes, height, width)
    # the length term removes the noise speckle that pixelwise region competition leaves
    out = evolve(init, features, box_masks, steps=60, step_size=1.0, gamma=0.01)
    pred = out > 0.5
    iou = (pred & truth).sum((1, 2)).float() / (pred | truth).sum((1, 2)).float()
    assert (iou > 0.95).all(), iou
    # nothing outside a box
    assert not (pred & (box_masks == 0)).any()


@pytest.mark.parametrize("noise", [0.0, 1e-7, 1e-6])
def test_a_flat_crop_does_not_move_on_rounding_noise(noise):
    """On a uniform image the energy is flat: the evolution must leave the start as it is, even
    when the features carry rounding-level noise (what another thread count or SIMD path gives).
    Normalising each step by the largest gradient would otherwise turn that noise into full
    steps (325 pixels flipped at 1e-7 before the floor)."""
    torch.manual_seed(0)
    size = 64
    boxes = torch.tensor([[4.0, 4.0, 60.0, 60.0]])
    box_masks = box_masks_from_boxes(boxes, size, size)
    start = 0.25 + 0.5 * inscribed_ellipses(boxes, size, size)  # 0.25 / 0.75, margin 0.25
    features = torch.full((3, size, size), 0.5) + noise * torch.randn(3, size, size)
    out = evolve(start, features, box_masks, steps=5, step_size=0.5)
    assert torch.equal(out > 0.5, (start * box_masks) > 0.5)


def test_a_real_contrast_still_moves_the_level_set():
    """The noise floor does not stop a faint but real contrast (2.5 of 255 levels)."""
    size = 64
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    square = ((yy >= 16) & (yy < 48) & (xx >= 16) & (xx < 48)).float()
    features = (0.5 + 0.01 * square)[None]
    boxes = torch.tensor([[8.0, 8.0, 56.0, 56.0]])
    box_masks = box_masks_from_boxes(boxes, size, size)
    start = inscribed_ellipses(boxes, size, size)
    out = evolve(start, features, box_masks, steps=40, step_size=1.0)
    pred = out > 0.5
    iou = (pred & (square > 0)).sum() / (pred | (square > 0)).sum()
    assert iou > 0.9, iou
