"""COCO RLE: encode/decode round trips on masks with holes and several parts."""

import json

import numpy as np
import pytest

from box2mask.io.rle import decode_rle, encode_rle, encode_rle_window, rle_area, rle_to_bbox_xywh


def _ring_and_blob():
    mask = np.zeros((30, 40), bool)
    mask[2:20, 3:23] = True
    mask[7:12, 8:15] = False  # a hole
    mask[24:28, 30:39] = True  # a second part
    return mask


def test_round_trip_with_holes_and_parts():
    mask = _ring_and_blob()
    rle = encode_rle(mask)
    assert rle["size"] == [30, 40] and isinstance(rle["counts"], str)
    rle = json.loads(json.dumps(rle))  # survives JSON
    np.testing.assert_array_equal(decode_rle(rle), mask)
    assert rle_area(rle) == 18 * 20 - 5 * 7 + 4 * 9
    assert rle_to_bbox_xywh(rle) == [3.0, 2.0, 36.0, 26.0]


def test_empty_and_full_masks():
    for mask in (np.zeros((5, 7), bool), np.ones((5, 7), bool)):
        np.testing.assert_array_equal(decode_rle(encode_rle(mask)), mask)
    assert rle_to_bbox_xywh(encode_rle(np.zeros((5, 7), bool))) == [0.0, 0.0, 0.0, 0.0]


def test_uncompressed_list_counts():
    # column-major runs: 3 background, 2 foreground, 1 background on a 3x2 grid
    mask = decode_rle({"size": [3, 2], "counts": [3, 2, 1]})
    np.testing.assert_array_equal(mask, [[False, True], [False, True], [False, False]])


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="2-D"):
        encode_rle(np.zeros((2, 3, 4), bool))
    with pytest.raises(ValueError, match="'size' and 'counts'"):
        decode_rle({"counts": "abc"})


def test_window_encoding_equals_the_full_masks():
    """encode_rle_window gives the very string encode_rle gives for the full mask: windows at
    the corners, spanning whole columns (runs that go on into the next column), empty, full."""
    rng = np.random.default_rng(0)
    cases = [((9, 7), 0, 0, np.ones((9, 7), bool)), ((9, 7), 2, 3, np.zeros((0, 0), bool))]
    cases += [((9, 7), 0, 2, np.ones((9, 3), bool)), ((9, 7), 4, 6, np.ones((5, 1), bool))]
    for _ in range(40):
        h, w = int(rng.integers(1, 12)), int(rng.integers(1, 12))
        ph, pw = int(rng.integers(1, h + 1)), int(rng.integers(1, w + 1))
        top, left = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        cases.append(((h, w), top, left, rng.random((ph, pw)) < 0.6))
    for shape, top, left, pixels in cases:
        full = np.zeros(shape, bool)
        full[top : top + pixels.shape[0], left : left + pixels.shape[1]] = pixels
        assert encode_rle_window(pixels, top, left, shape) == encode_rle(full), (shape, top, left)
    with pytest.raises(ValueError, match="outside a 9 x 7 mask"):
        encode_rle_window(np.ones((3, 3), bool), 7, 0, (9, 7))
