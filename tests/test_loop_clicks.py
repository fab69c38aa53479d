"""The click-counted loop's batch summary (bench/loop_clicks.py): what labelling cost and taught."""

import numpy as np
import pytest

from bench.loop_clicks import batch_summary, format_rows
from train.robot_user import UserLabel


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


def test_format_rows_shows_the_untouched_share_and_the_labels_miou():
    row = {"round": 1, "verified_images": 2, "gate": "0.9 vs 0.8", "promoted": True}
    row.update(batch_summary([_answer(0, 0.95, False), _answer(4, 0.92, False)]))
    row.update(served="v1", miou=0.9, boundary_f=0.8, accept_85=0.5, noc_90=3.0, minutes=1.0)
    line = format_rows([row]).splitlines()[-1]
    assert "| 4 (2, 0) | 2.00 | 0.50 / 0.935 |" in line
