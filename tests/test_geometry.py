"""box2mask.ops.geometry by hand: windows, sampling, paste-back, click discs, tight boxes."""

import numpy as np
import torch
import torch.nn.functional as F

from box2mask.ops.geometry import (
    box_windows,
    click_discs,
    gather_grid,
    grow_boxes,
    nearest_pixels,
    paste_windows,
    tight_boxes,
    window_grid,
)


def test_box_windows_are_the_pixels_whose_centres_lie_in_the_box():
    boxes = torch.tensor([[2.0, 3.0, 6.0, 5.0], [1.4, 0.6, 3.5, 2.5], [8.0, 1.0, 12.0, 4.0]])
    lo, extent = box_windows(boxes, height=6, width=10)
    assert lo.tolist() == [[2, 3], [1, 1], [8, 1]]
    assert extent.tolist() == [[4, 2], [2, 1], [2, 3]]  # centre 2.5 is not in [0.6, 2.5); x <= 10


def test_sampling_a_mask_on_its_box_grid_and_pasting_it_back_is_exact():
    """S = the box's size in pixels: grid pixel (i, j) is image pixel (y0 + i, x0 + j)."""
    rng = np.random.default_rng(0)
    masks = torch.from_numpy(rng.random((2, 12, 16)) > 0.5)
    boxes = torch.tensor([[3.0, 2.0, 11.0, 10.0], [0.0, 4.0, 8.0, 12.0]])
    rows, cols, on_image = nearest_pixels(boxes, 8, height=12, width=16)
    assert on_image.all() and rows[0].tolist() == list(range(2, 10))
    crops = gather_grid(masks, rows, cols).float()  # (2, 8, 8)
    lo, extent = box_windows(boxes, 12, 16)
    grid, _, _ = window_grid(boxes, lo, 8, 8)
    back = F.grid_sample(crops[:, None], grid, mode="bilinear", align_corners=False)[:, 0] > 0.5
    pasted = paste_windows(back.numpy(), lo, extent, 12, 16)
    out = np.zeros((3, 12, 16), bool)  # into rows 2 and 0 of an existing output, in place
    assert paste_windows(back.numpy(), lo, extent, 12, 16, out=out, rows=[2, 0]) is out
    assert np.array_equal(out[[2, 0]], pasted) and not out[1].any()
    for i, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
        expected = np.zeros((12, 16), bool)
        expected[y0:y1, x0:x1] = masks[i, y0:y1, x0:x1].numpy()
        assert np.array_equal(pasted[i], expected)


def test_grow_boxes_puts_the_box_inside_its_crop_grid():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    crops, grid_boxes = grow_boxes(boxes, margin_frac=0.25, margin_px=5.0, size=40)
    assert crops.tolist() == [[0.0, 5.0, 40.0, 75.0]]  # margins 10 and 15 px
    assert torch.allclose(grid_boxes, torch.tensor([[10.0, 40 * 15 / 70, 30.0, 40 * 55 / 70]]))


def test_click_discs_mark_a_disc_of_the_radius_on_each_crop_grid():
    crops = torch.tensor([[0.0, 0.0, 20.0, 20.0], [0.0, 0.0, 40.0, 40.0]])  # 1 and 2 px per cell
    discs = click_discs(np.array([[10.0, 10.0]]), np.array([1]), crops, size=20, radius=2.0)
    assert discs.shape == (2, 20, 20) and set(discs.unique().tolist()) == {0.0, 1.0}
    ys, xs = np.mgrid[:20, :20] + 0.5
    assert np.array_equal(discs[0].numpy() > 0, (xs - 10) ** 2 + (ys - 10) ** 2 <= 4)
    assert np.array_equal(discs[1].numpy() > 0, (xs - 5) ** 2 + (ys - 5) ** 2 <= 4)
    both = click_discs([[10.0, 10.0], [30.0, 30.0]], [1, 0], crops[1:], size=20, radius=1.0)
    assert both[0, 5, 5] == 1 and both[0, 15, 15] == -1
    assert click_discs(None, None, crops, size=20, radius=2.0) is None


def test_tight_boxes():
    masks = torch.zeros(2, 5, 7, dtype=torch.bool)
    masks[0, 1:3, 2:6] = True
    masks[1, 4, 0] = True
    assert tight_boxes(masks).tolist() == [[2, 1, 6, 3], [0, 4, 1, 5]]
