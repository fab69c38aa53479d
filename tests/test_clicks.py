"""Corrective clicks: the robot annotator's click choice (train/robot_clicks.py)."""

import numpy as np

from box2mask.ops.metrics import mask_iou as iou
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


# ---------------------------------------------------------------- clicks in the embedded default

H, W = 80, 100
BOX = np.array([[20.0, 20.0, 80.0, 60.0]])  # two 30 x 40 halves: red x < 50, blue x >= 50


def _two_regions():
    """A grey image with a red and a blue rectangle side by side inside BOX (a strong edge at
    x = 50), and the masks of the halves."""
    image = np.full((H, W, 3), 128, dtype=np.uint8)
    image[20:60, 20:50] = (220, 30, 30)
    image[20:60, 50:80] = (30, 40, 220)
    red = np.zeros((H, W), dtype=bool)
    red[20:60, 20:50] = True
    blue = np.zeros((H, W), dtype=bool)
    blue[20:60, 50:80] = True
    return image, red, blue


def _segmenter(image, **config):
    from box2mask.levelset.segmenter import LevelSetConfig, LevelSetSegmenter

    seg = LevelSetSegmenter(LevelSetConfig(**config))
    seg.set_image(image)
    return seg


def _click(seg, x, y, label, previous):
    masks, _ = seg.predict(
        BOX, points=np.array([[x, y]]), point_labels=np.array([label]), init_masks=previous[None]
    )
    return masks[0]


def test_a_positive_click_fills_the_uniform_region_it_lands_in():
    image, red, blue = _two_regions()
    seg = _segmenter(image)
    mask = _click(seg, 65.5, 40.5, 1, red)  # the mask had the red half only
    assert iou(mask, red | blue) > 0.95  # the whole blue half, not a disc
    disc = _click(_segmenter(image, click_mode="disc"), 65.5, 40.5, 1, red)
    assert (disc & blue).sum() < 0.5 * blue.sum()  # what a pinned disc did before


def test_a_negative_click_removes_a_false_region():
    image, red, blue = _two_regions()
    seg = _segmenter(image)
    mask = _click(seg, 65.5, 40.5, 0, red | blue)  # the mask wrongly holds the blue half
    assert iou(mask, red) > 0.95


def test_a_click_never_changes_pixels_beyond_a_strong_edge():
    image, red, blue = _two_regions()
    seg = _segmenter(image)
    # a previous mask that is wrong on both sides: part of red, part of blue
    previous = np.zeros((H, W), dtype=bool)
    previous[25:45, 25:45] = True
    previous[30:50, 55:70] = True
    for x, label in ((35.5, 1), (32.5, 0), (75.5, 1), (62.5, 0)):
        y = 52.5 if label else 35.5
        mask = _click(seg, x, y, label, previous)
        far = blue if x < 50 else red  # the other side of the edge at x = 50
        assert (mask[far] == previous[far]).all(), (x, label)
        assert (mask != previous).any()  # and the click did something on its own side


def test_clicks_need_no_previous_mask_and_correct_the_box_own_mask():
    image, red, _ = _two_regions()
    seg = _segmenter(image)
    box_mask = seg.predict(BOX)[0][0]
    clicks = {"points": np.array([[65.5, 40.5]]), "point_labels": np.array([0])}
    alone, _ = seg.predict(BOX, **clicks)
    from_box, _ = seg.predict(BOX, init_masks=box_mask[None], **clicks)
    assert (alone == from_box).all()


def test_a_crop_learner_returns_its_default_base_clicked_mask_untouched():
    import torch

    from box2mask.crop.learner import CropLearnerConfig, CropUNet
    from box2mask.crop.predictor import CropLearnerPredictor

    image, red, blue = _two_regions()
    model = CropUNet(CropLearnerConfig(base="default", crop_size=32))
    with torch.no_grad():
        model.head.bias.fill_(-30.0)  # a residual that would erase everything
    learner = CropLearnerPredictor(model)
    learner.set_image(image)
    clicks = {"points": np.array([[65.5, 40.5]]), "point_labels": np.array([1])}
    masks, _ = learner.predict(BOX, init_masks=red[None], **clicks)
    direct = _click(_segmenter(image), 65.5, 40.5, 1, red)
    assert (masks[0] == direct).all() and iou(masks[0], red | blue) > 0.95


def test_a_session_click_corrects_the_shown_mask_like_predict_directly(tmp_path):
    from PIL import Image

    from annotator.predictor_service import PredictorService
    from annotator.session import AnnotationSession
    from annotator.store import SQLiteStore
    from box2mask.io.rle import decode_rle

    image, red, blue = _two_regions()
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(image).save(images / "a.png")
    store = SQLiteStore(tmp_path / "labels.sqlite", images)
    seg = _segmenter(image)
    service = PredictorService(seg)
    session = AnnotationSession(store, images, service, classes=["thing"])
    session.open_image("a.png")
    session.on_boxes_changed([{"xmin": 20, "ymin": 20, "xmax": 80, "ymax": 60, "label": "thing"}])
    shown = decode_rle(store.labels("a.png")[0].mask_rle)
    session.click(65.5, 40.5, inside=False)
    after = decode_rle(store.labels("a.png")[0].mask_rle)
    assert service.last_predict_kind == "click" and service.last_predict_ms > 0
    from annotator.slots import DEFAULT_SMOOTHING, SMOOTHING_LEVELS

    direct, _ = seg.predict(
        BOX,
        points=np.array([[65.5, 40.5]]),
        point_labels=np.array([0]),
        init_masks=shown[None],
        smoothing=SMOOTHING_LEVELS[DEFAULT_SMOOTHING],
    )
    assert (after == direct[0]).all() and (after != shown).any()
    store.close()


def test_the_walk_takes_as_many_steps_as_the_grid_side_at_least_the_floor():
    from box2mask.levelset.clicks import walk_iterations
    from box2mask.levelset.segmenter import LevelSetConfig

    cfg = LevelSetConfig()  # 30 steps at grid_size 96, at least 15
    assert [walk_iterations(s, cfg) for s in (96, 64, 48, 24)] == [30, 20, 15, 15]
    assert walk_iterations(24, LevelSetConfig(min_walk_iterations=30)) == 30  # the old behaviour
    assert walk_iterations(24, LevelSetConfig(walk_iterations=10)) == 10  # floor <= the maximum
