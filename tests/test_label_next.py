"""What to label next: the order is a permutation of the unlabeled images, most disagreement
first, and the same for the same models."""

import numpy as np
import torch

from box2mask.crop.learner import CropLearnerConfig, CropUNet
from box2mask.crop.predictor import CropLearnerPredictor
from tests.disc_scenes import disc_scene
from train.label_next import label_order, mask_disagreement


class _Filled:
    """The filled box; with `empty_for` images (by their first pixel) it returns empty masks."""

    def __init__(self, empty_for=()):
        self.empty_for = set(empty_for)

    def set_image(self, image):
        self._image = image

    def predict(self, boxes):
        height, width = self._image.shape[:2]
        masks = np.zeros((len(boxes), height, width), bool)
        if int(self._image[0, 0, 0]) not in self.empty_for:
            for i, (x0, y0, x1, y1) in enumerate(np.round(boxes).astype(int)):
                masks[i, y0:y1, x0:x1] = True
        return masks, np.ones(len(boxes), np.float32)


def _images(n=6):
    out = []
    for i in range(n):
        image, boxes, _ = disc_scene(48, 64, seed=i, n_discs=2)
        image[0, 0, 0] = i  # the stub's tag
        out.append((f"img{i}", image, boxes))
    return out


def test_disagreement_is_one_minus_iou():
    a = np.zeros((3, 4, 4), bool)
    b = np.zeros((3, 4, 4), bool)
    a[0, :2], b[0, :1] = True, True  # IoU 0.5
    a[1], b[1] = True, True  # same
    np.testing.assert_allclose(mask_disagreement(a, b), [0.5, 0.0, 0.0])  # 2 empties agree


def test_images_the_models_disagree_on_come_first():
    images = _images()
    order = label_order(images, base=_Filled(), learner=_Filled(empty_for={4, 1}))
    assert sorted(order) == sorted(key for key, _, _ in images)  # a permutation
    assert order[:2] == ["img1", "img4"]  # full disagreement first, ties in the given order
    assert order[2:] == ["img0", "img2", "img3", "img5"]


def test_the_order_is_stable_for_a_model():
    """A real crop learner (random weights, a nonzero correction) against the ellipse base:
    the same models give the same permutation every time."""
    torch.manual_seed(0)
    model = CropUNet(CropLearnerConfig(crop_size=16, base="ellipse"))
    torch.nn.init.normal_(model.head.weight, std=300.0)
    learner = CropLearnerPredictor(model)
    base = CropLearnerPredictor(CropUNet(CropLearnerConfig(crop_size=16, base="ellipse")))
    images = _images()
    first = label_order(images, base=base, learner=learner)
    assert sorted(first) == sorted(key for key, _, _ in images)
    assert label_order(images, base=base, learner=learner) == first
