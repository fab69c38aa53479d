"""FiftyOne format conversions, to the pixel: relative XYWH + box-cropped mask <-> XYXY + full mask.

Pure NumPy: no FiftyOne database needed.
"""

import numpy as np
import pytest

from annotator.fiftyone.convert import (
    bbox_to_xyxy,
    crop_mask,
    crop_to_rle,
    dropped_pixels,
    paste_mask,
    pixel_window,
    rle_to_crop,
    window_to_bbox,
    xyxy_to_bbox,
)
from box2mask.io.rle import decode_rle, encode_rle

W, H = 10, 8


def test_pixel_window_hand_computed():
    # x0 = round(0.15 * 10) = round(1.5) = 2 (half to even), x1 = round(2 + 5) = 7
    assert pixel_window([0.15, 0.25, 0.5, 0.5], W, H) == (2, 2, 7, 6)
    # touching the right and bottom border
    assert pixel_window([0.5, 0.5, 0.5, 0.5], W, H) == (5, 4, 10, 8)
    # the whole image
    assert pixel_window([0.0, 0.0, 1.0, 1.0], W, H) == (0, 0, 10, 8)
    # crossing the right/bottom border: clipped to the image
    assert pixel_window([0.8, 0.9, 0.5, 0.5], W, H) == (8, 7, 10, 8)
    # crossing the left/top border: clipped at 0
    assert pixel_window([-0.2, -0.25, 0.5, 0.5], W, H) == (0, 0, 3, 2)
    # entirely outside: an empty window
    x0, y0, x1, y1 = pixel_window([1.2, 0.1, 0.3, 0.3], W, H)
    assert x1 == x0 and (x0, y1 - y0) == (10, 2)


def test_box_round_trip_is_exact_for_fractional_and_border_boxes():
    for box in ([10.3, 0.0, 640.0, 479.7], [0.0, 0.0, 640.0, 480.0], [1.0, 2.5, 3.25, 4.0]):
        bbox = xyxy_to_bbox(box, 640, 480)
        assert bbox_to_xyxy(bbox, 640, 480) == box
    assert xyxy_to_bbox([2, 2, 7, 6], W, H) == pytest.approx([0.2, 0.25, 0.5, 0.5])


def _mask_with_hole():
    """(8, 10) mask: a 6x7 block touching the right border with a 2x2 hole."""
    m = np.zeros((H, W), dtype=bool)
    m[1:7, 3:10] = True
    m[3:5, 5:7] = False
    return m


@pytest.mark.parametrize(
    "box_xyxy",
    [
        [3, 1, 10, 7],  # tight box, touching the right border
        [0, 0, 10, 8],  # the whole image: touches all four borders
        [2.6, 0.7, 10.0, 7.2],  # fractional box -> window (3, 1, 10, 7)
    ],
)
def test_full_crop_full_round_trip_to_the_pixel(box_xyxy):
    mask = _mask_with_hole()
    bbox = xyxy_to_bbox(box_xyxy, W, H)
    x0, y0, x1, y1 = pixel_window(bbox, W, H)
    crop = crop_mask(mask, bbox)
    assert crop.shape == (y1 - y0, x1 - x0)
    assert dropped_pixels(mask, bbox) == 0
    back = paste_mask(crop, bbox, W, H)
    assert back.dtype == bool and np.array_equal(back, mask)
    assert not back[3:5, 5:7].any()  # the hole survives
    # the same through full-size COCO RLE
    rle = encode_rle(mask)
    assert np.array_equal(rle_to_crop(rle, bbox), crop)
    assert np.array_equal(decode_rle(crop_to_rle(crop, bbox, W, H)), mask)


def test_crop_full_crop_round_trip_at_the_corners():
    rng = np.random.default_rng(0)
    for window in [(0, 0, 4, 3), (6, 5, 10, 8), (0, 5, 10, 8), (9, 0, 10, 1)]:
        bbox = window_to_bbox(window, W, H)
        assert pixel_window(bbox, W, H) == window
        crop = rng.random((window[3] - window[1], window[2] - window[0])) > 0.5
        full = paste_mask(crop, bbox, W, H)
        assert full.sum() == crop.sum()
        assert np.array_equal(full[window[1] : window[3], window[0] : window[2]], crop)
        assert np.array_equal(crop_mask(full, bbox), crop)


def test_pixels_outside_the_box_are_counted_as_dropped():
    mask = _mask_with_hole()
    bbox = xyxy_to_bbox([3, 1, 8, 7], W, H)  # cuts off columns 8 and 9 (6 rows each)
    assert dropped_pixels(mask, bbox) == 12
    assert crop_mask(mask, bbox).sum() == mask.sum() - 12


def test_paste_resizes_a_mismatched_crop_with_nearest_neighbour():
    crop = np.array([[1, 0], [0, 1]], dtype=bool)  # 2x2 written by another tool for a 4x4 box
    full = paste_mask(crop, xyxy_to_bbox([2, 2, 6, 6], W, H), W, H)
    expected = np.zeros((H, W), dtype=bool)
    expected[2:4, 2:4] = True
    expected[4:6, 4:6] = True
    assert np.array_equal(full, expected)
    # (h, w, 1) masks (read from image files) and empty windows
    assert np.array_equal(
        paste_mask(crop[:, :, None], xyxy_to_bbox([2, 2, 6, 6], W, H), W, H), full
    )
    assert not paste_mask(crop, [1.5, 0.0, 0.2, 0.2], W, H).any()


def test_tight_bbox_is_the_masks_pixel_window():
    from annotator.fiftyone.convert import tight_bbox

    mask = np.zeros((40, 50), dtype=bool)
    mask[5:9, 7:20] = True
    mask[30, 3] = True  # a stray pixel widens it
    assert pixel_window(tight_bbox(mask), 50, 40) == (3, 5, 20, 31)
    assert tight_bbox(np.zeros((4, 4), dtype=bool)) is None
