"""Box conversions round trip; every kind of bad box raises BoxError naming the problem."""

import math

import numpy as np
import pytest

from box2mask.ops.box_ops import (
    BoxError,
    relative_xywh_to_xyxy,
    validate_box,
    validate_boxes,
    xywh_to_xyxy,
    xyxy_to_relative_xywh,
    xyxy_to_xywh,
)


def test_xywh_xyxy_by_hand_and_round_trip():
    xywh = np.array([[10.0, 20.0, 30.0, 5.5], [0.0, 0.0, 1.0, 1.0]])
    xyxy = xywh_to_xyxy(xywh)
    np.testing.assert_array_equal(xyxy, [[10, 20, 40, 25.5], [0, 0, 1, 1]])
    np.testing.assert_array_equal(xyxy_to_xywh(xyxy), xywh)


def test_relative_round_trip():
    xyxy = np.array([[64.0, 48.0, 320.0, 240.0]])
    rel = xyxy_to_relative_xywh(xyxy, width=640, height=480)
    np.testing.assert_allclose(rel, [[0.1, 0.1, 0.4, 0.4]])
    np.testing.assert_allclose(relative_xywh_to_xyxy(rel, width=640, height=480), xyxy)


def test_validate_clips_to_the_image():
    np.testing.assert_array_equal(validate_box([-5, -5, 20, 300], 100, 50), [0, 0, 20, 50])


def test_one_pixel_box_is_valid():
    np.testing.assert_array_equal(validate_box([3, 4, 4, 5], 10, 10), [3, 4, 4, 5])


@pytest.mark.parametrize(
    "box, words",
    [
        ([math.nan, 0, 5, 5], "non-finite"),
        ([0, 0, math.inf, 5], "non-finite"),
        ([5, 0, 2, 5], "inverted"),  # negative width
        ([0, 0, 0, 5], "zero area"),
        ([200, 10, 300, 20], "entirely outside"),
        ([-20, -20, -1, -1], "entirely outside"),
        ([0, 0, 5], "4 numbers"),
        ([99.5, 0, 120, 10], "under 1.0 px"),  # clipped to 0.5 px wide
    ],
)
def test_each_bad_box_names_its_problem(box, words):
    with pytest.raises(BoxError, match=words):
        validate_box(box, width=100, height=50)


def test_validate_boxes_names_the_index():
    boxes = [[0, 0, 5, 5], [1, 1, 2, 2], [4, 4, 1, 9]]
    with pytest.raises(BoxError, match=r"box 2: .*inverted"):
        validate_boxes(boxes, 10, 10)
    assert validate_boxes(np.zeros((0, 4)), 10, 10).shape == (0, 4)
