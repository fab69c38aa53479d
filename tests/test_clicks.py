"""Corrective clicks: the robot annotator's click choice (train/robot_clicks.py)."""

import numpy as np

from train.robot_clicks import error_depth, next_click


def _disc(shape, centre, radius):
    ys, xs = np.ogrid[: shape[0], : shape[1]]
    return (xs - centre[0]) ** 2 + (ys - centre[1]) ** 2 <= radius**2


def test_a_missed_blob_gets_a_positive_click_at_its_centre():
    gt = _disc((60, 80), (30, 25), 10)
    x, y, label = next_click(gt, np.zeros_like(gt))
    assert label == 1
    assert (int(x), int(y)) == (30, 25)


def test_a_false_blob_gets_a_negative_click_at_its_centre():
    gt = _disc((60, 80), (20, 20), 8)
    pred = gt | _disc((60, 80), (60, 40), 9)
    x, y, label = next_click(gt, pred)
    assert label == 0
    assert (int(x), int(y)) == (60, 40)


def test_the_largest_error_wins():
    gt = _disc((80, 80), (20, 20), 6) | _disc((80, 80), (55, 55), 14)
    pred = _disc((80, 80), (20, 20), 6) | _disc((80, 80), (60, 15), 9)  # big miss, small false
    x, y, label = next_click(gt, pred)
    assert label == 1 and (int(x), int(y)) == (55, 55)
    # a 12-px false disc beats a missed 3-px disc
    pred = (gt | _disc((80, 80), (60, 15), 12)) & ~_disc((80, 80), (55, 55), 3)
    x, y, label = next_click(gt, pred)
    assert label == 0 and (int(x), int(y)) == (60, 15)


def test_no_error_no_click_and_clicked_pixels_are_not_clicked_again():
    gt = _disc((30, 30), (15, 15), 5)
    assert next_click(gt, gt) is None
    single = np.zeros((30, 30), dtype=bool)
    single[10, 12] = True
    assert next_click(single, np.zeros_like(single))[:2] == (12.5, 10.5)
    assert next_click(single, np.zeros_like(single), clicked=single) is None


def test_the_image_border_counts_as_outside_the_error():
    error = np.ones((5, 9), dtype=bool)
    depth = error_depth(error)
    assert depth[0].max() == 1 and depth[2, 4] == 3
