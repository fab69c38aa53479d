"""The click-counted loop's batch summary (train/robot_user.py): what labelling cost and taught."""

import numpy as np
import pytest

from train.robot_user import UserLabel, batch_summary


def _answer(clicks, iou, brushed):
    return UserLabel(mask=np.zeros((2, 2), bool), clicks=clicks, iou=iou, brushed=brushed)


def test_batch_summary_counts_untouched_boxes_and_the_labels_iou_with_the_gt():
    answers = [_answer(0, 0.95, False), _answer(3, 0.91, False), _answer(20, 0.5, True)]
    summary = batch_summary(answers)
    assert {k: summary[k] for k in ("clicks", "objects", "brushed", "untouched")} == {
        "clicks": 23,
        "objects": 3,
        "brushed": 1,
        "untouched": 1,
    }
    # the brushed box hands in the GT mask: IoU 1, not its clicked 0.5
    assert summary["verified_miou"] == pytest.approx((0.95 + 0.91 + 1.0) / 3)
