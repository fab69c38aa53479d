"""A click-aware crop learner served with `click_walk`: its clicked mask goes on to the default's
walk as the shown mask."""

import numpy as np
import pytest

from box2mask.crop.learner import CropLearnerConfig, CropUNet
from box2mask.crop.predictor import CropLearnerPredictor, _check_config


class LeftHalfOff(CropUNet):
    """delta = -20 on the crop's left half, 0 elsewhere (the base's mask), whatever the clicks: a
    learner that ignores them."""

    def forward(self, x):
        delta = x[:, 0] * 0
        delta[..., : x.shape[-1] // 2] = -20.0
        return delta, x


def _clicked(click_walk: bool) -> np.ndarray:
    cfg = CropLearnerConfig(crop_size=32, click_channels=True, click_walk=click_walk)
    predictor = CropLearnerPredictor(LeftHalfOff(cfg))
    image = np.full((64, 64, 3), 60, dtype=np.uint8)
    image[16:48, 16:48] = 200  # a bright square in the box
    predictor.set_image(image)
    box = np.array([[8.0, 8.0, 56.0, 56.0]])
    masks, _ = predictor.predict(box, points=np.array([[24.5, 32.5]]), point_labels=np.array([1]))
    return masks[0]


def _iou_with_the_square(mask: np.ndarray) -> float:
    square = np.zeros((64, 64), dtype=bool)
    square[16:48, 16:48] = True
    return float((mask & square).sum() / (mask | square).sum())


def test_click_walk_re_segments_the_clicks_the_learner_ignored():
    own = _clicked(click_walk=False)  # the learner's own answer: the left half still missing
    assert not own[32, 24] and _iou_with_the_square(own) < 0.6
    walked = _clicked(click_walk=True)
    assert walked[32, 24] and walked[32, 40]  # the click's pixel added, the right half kept
    assert _iou_with_the_square(walked) > 0.9  # the walk spreads it over the bright square only


def test_click_walk_must_be_a_bool():
    with pytest.raises(ValueError, match="click_walk must be true or false"):
        _check_config(CropLearnerConfig(click_walk="yes"))
