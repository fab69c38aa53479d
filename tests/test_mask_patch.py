"""MaskPatch: a mask kept as its bounding rectangle, losslessly; the overlay drawn from patches."""

import numpy as np
import pytest

from annotator.mask_patch import MaskPatch
from annotator.overlay import crop_view, render_overlay


def _blob(h, w, y0, y1, x0, x1, seed=0):
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = np.random.default_rng(seed).random((y1 - y0, x1 - x0)) < 0.6
    mask[y0, x0] = mask[y1 - 1, x1 - 1] = True  # the rectangle is exactly y0:y1, x0:x1
    return mask


def test_patch_keeps_the_bounding_rectangle_and_round_trips():
    mask = _blob(60, 80, 10, 25, 30, 70)
    patch = MaskPatch.from_mask(mask)
    assert (patch.top, patch.left, patch.bottom, patch.right) == (10, 30, 25, 70)
    assert patch.pixels.shape == (15, 40) and patch.nbytes == 600 and patch.shape == (60, 80)
    assert np.array_equal(patch.full(), mask)
    mask[:] = False  # the patch owns its pixels
    assert patch.pixels.any()
    for corner in [(0, 0), (59, 79), (0, 79)]:  # masks touching the image border
        edge = np.zeros((60, 80), bool)
        edge[corner] = True
        assert np.array_equal(MaskPatch.from_mask(edge).full(), edge)


def test_window_matches_slicing_the_full_mask_even_past_the_image_border():
    mask = _blob(60, 80, 10, 25, 30, 70, seed=1)
    patch = MaskPatch.from_mask(mask)
    for y0, y1, x0, x1 in [(0, 60, 0, 80), (12, 20, 35, 50), (0, 5, 0, 5), (20, 40, 60, 80)]:
        assert np.array_equal(patch.window(y0, y1, x0, x1), mask[y0:y1, x0:x1])
    assert np.array_equal(patch.window(-5, 30, 70, 99), mask[0:30, 70:80])  # clipped


def test_empty_mask_and_bad_shapes():
    empty = MaskPatch.from_mask(np.zeros((30, 40), bool))
    assert empty.nbytes == 0 and not empty.full().any() and empty.full().shape == (30, 40)
    with pytest.raises(ValueError, match="2-D"):
        MaskPatch.from_mask(np.zeros((3, 30, 40), bool))


def test_overlay_and_crop_tint_exactly_the_mask_from_its_patch():
    image = np.full((60, 80, 3), 100, np.uint8)
    mask = _blob(60, 80, 10, 25, 30, 70, seed=2)
    out = render_overlay(image, [None, MaskPatch.from_mask(mask)], [(0, 0, 0), (255, 0, 0)])
    changed = (out != image).any(2)
    assert changed[mask].all()  # every mask pixel tinted
    assert not changed[:8].any() and not changed[27:].any()  # nothing beyond the 2 px outline
    assert not changed[:, :28].any() and not changed[:, 72:].any()
    view, scale, x0, y0 = crop_view(image, MaskPatch.from_mask(mask), [30, 10, 70, 25], 80)
    assert (x0, y0, scale) == (26.0, 6.0, 80 / 48)  # the box with a 4 px margin
    assert view.shape[:2] == (round(23 * scale), 80)
