from dataclasses import replace

import numpy as np
import pytest
import torch

from box2mask import build_predictor
from box2mask.levelset.guided_filter import guided_filter
from box2mask.levelset.segmenter import LevelSetConfig, LevelSetSegmenter
from box2mask.ops.box_ops import BoxError
from box2mask.ops.mask_morphology import fill_holes, largest_component, open_close
from box2mask.ops.metrics import mask_iou

# a small grid keeps every test fast
FAST = LevelSetConfig(grid_size=48, steps=12)


def _scene(height=96, width=128, seed=0):
    """Noisy two-tone background (left/right halves) with a red ellipse; returns image, mask."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), dtype=np.float64)
    image[:, : width // 2] = (40, 90, 40)
    image[:, width // 2 :] = (70, 70, 120)
    yy, xx = np.mgrid[:height, :width]
    obj = ((yy - 48) / 26) ** 2 + ((xx - 60) / 34) ** 2 <= 1
    image[obj] = (210, 60, 50)
    image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
    return image, obj


def _tight_box(mask):
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)


def _filled(box, height, width):
    out = np.zeros((height, width), dtype=bool)
    x0, y0, x1, y1 = np.round(box).astype(int)
    out[max(y0, 0) : y1, max(x0, 0) : x1] = True
    return out


def test_build_predictor_without_checkpoint_is_the_default():
    predictor = build_predictor(None)
    assert isinstance(predictor, LevelSetSegmenter)
    assert isinstance(predictor.model_version, str) and predictor.model_version


def test_shapes_dtypes_and_empty_input():
    image, _ = _scene()
    seg = LevelSetSegmenter(FAST)
    seg.set_image(image)
    masks, scores = seg.predict(np.array([[10, 10, 60, 50], [30.5, 20.2, 100.7, 90.1]]))
    assert masks.shape == (2, 96, 128) and masks.dtype == bool
    assert scores.shape == (2,) and scores.dtype == np.float32
    assert np.all((scores >= 0) & (scores <= 1))
    masks, scores = seg.predict(np.zeros((0, 4)))
    assert masks.shape == (0, 96, 128) and scores.shape == (0,)


def test_masks_never_leave_their_box():
    image, _ = _scene()
    seg = LevelSetSegmenter(FAST)
    seg.set_image(image)
    # loose, tight, partly outside the image (clipped), fractional, tiny
    boxes = np.array(
        [
            [5, 5, 120, 90],
            [26, 22, 95, 75],
            [-20, -10, 40, 30],
            [100.3, 60.6, 140, 120],
            [3, 3, 7, 6],
        ]
    )
    masks, _ = seg.predict(boxes)
    for mask, box in zip(masks, boxes, strict=True):
        assert mask.any()
        assert not (mask & ~_filled(np.clip(box, 0, [128, 96, 128, 96]), 96, 128)).any()


def test_recovers_a_synthetic_object_from_tight_and_loose_boxes():
    image, obj = _scene()
    seg = LevelSetSegmenter(FAST)
    seg.set_image(image)
    tight = _tight_box(obj)
    loose = tight + np.array([-8, -6, 8, 6])
    masks, scores = seg.predict(np.stack([tight, loose]))
    assert mask_iou(masks[0], obj) > 0.95
    assert mask_iou(masks[1], obj) > 0.93
    assert mask_iou(_filled(tight, 96, 128), obj) < 0.8  # the box alone is far worse


def test_small_object_is_segmented_on_an_upsampled_crop():
    rng = np.random.default_rng(1)
    image = np.clip(rng.normal(60, 10, (64, 64, 3)), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:64, :64]
    obj = (yy - 30) ** 2 + (xx - 30) ** 2 <= 5**2  # 11 px disc
    image[obj] = (230, 230, 90)
    # the 96 px grid, evolution kept (the floor distrusts this box and keeps its ellipse, 0.84)
    seg = LevelSetSegmenter(LevelSetConfig(steps=12, adaptive_grid=False, floor=False))
    seg.set_image(image)
    masks, _ = seg.predict(_tight_box(obj)[None])
    assert mask_iou(masks[0], obj) > 0.9


def test_tiny_low_contrast_box_falls_back_toward_the_box():
    rng = np.random.default_rng(2)
    image = np.clip(rng.normal(128, 6, (64, 64, 3)), 0, 255).astype(np.uint8)  # no object at all
    seg = LevelSetSegmenter(FAST)
    seg.set_image(image)
    box = np.array([28.0, 30.0, 38.0, 38.0])
    masks, scores = seg.predict(box[None])
    assert mask_iou(masks[0], _filled(box, 64, 64)) >= 0.69  # its inscribed ellipse (0.70) or more
    image_obj, obj = _scene()
    seg.set_image(image_obj)
    _, good = seg.predict(_tight_box(obj)[None])
    assert good[0] > scores[0] + 0.3  # the score tells the clear object from the blank box


def test_steps_zero_returns_the_filled_box():
    image, obj = _scene()
    seg = LevelSetSegmenter(FAST)
    seg.set_image(image)
    box = np.array([20.0, 15.0, 90.0, 80.0])
    masks, scores = seg.predict(box[None], steps=0)
    assert np.array_equal(masks[0], _filled(box, 96, 128))
    assert scores[0] == pytest.approx(0.5)


def test_more_smoothing_gives_a_simpler_outline():
    rng = np.random.default_rng(3)
    image = np.clip(rng.normal(50, 8, (96, 96, 3)), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:96, :96]
    angle = np.arctan2(yy - 48, xx - 48)
    star = np.hypot(yy - 48, xx - 48) <= 26 + 9 * np.sin(7 * angle)  # a 7-pointed star
    image[star] = (220, 200, 40)
    cfg = LevelSetConfig(grid_size=64, steps=12, refine_radius=0)
    seg = LevelSetSegmenter(cfg)
    seg.set_image(image)
    box = _tight_box(star)[None]

    def perimeter(mask):
        return np.count_nonzero(mask ^ np.roll(mask, 1, 0)) + np.count_nonzero(
            mask ^ np.roll(mask, 1, 1)
        )

    sharp = seg.predict(box, smoothing=0.0)[0][0]
    smooth = seg.predict(box, smoothing=4.0)[0][0]
    assert perimeter(smooth) < 0.85 * perimeter(sharp)
    assert mask_iou(sharp, star) > mask_iou(smooth, star)


def test_clicks_pin_object_and_background():
    image, obj = _scene()
    seg = LevelSetSegmenter(FAST)
    seg.set_image(image)
    box = _tight_box(obj)[None]
    inside_point, corner_point = (60, 48), (30, 25)  # object centre; background in a corner
    assert not obj[corner_point[1], corner_point[0]]
    plain = seg.predict(box)[0][0]
    masks, _ = seg.predict(box, points=np.array([corner_point]), point_labels=np.array([1]))
    assert masks[0][corner_point[1], corner_point[0]]
    masks, _ = seg.predict(box, points=np.array([inside_point]), point_labels=np.array([0]))
    assert not masks[0][inside_point[1], inside_point[0]]
    # not only the clicked pixel: a disc (click_radius grid pixels, 2.4 image px each here)
    # around each click takes its label, where the unclicked mask had the other one
    (x, y), (u, v) = corner_point, inside_point
    assert (
        not plain[y - 2 : y + 3, x - 2 : x + 3].any() and plain[v - 2 : v + 3, u - 2 : u + 3].all()
    )
    clicks = np.array([corner_point, inside_point])
    masks, _ = seg.predict(box, points=clicks, point_labels=np.array([1, 0]))
    assert masks[0, y - 2 : y + 3, x - 2 : x + 3].all()
    assert not masks[0, v - 2 : v + 3, u - 2 : u + 3].any()


def test_errors_name_the_problem():
    seg = LevelSetSegmenter(FAST)
    with pytest.raises(RuntimeError, match="set_image"):
        seg.predict(np.array([[0, 0, 5, 5]]))
    with pytest.raises(ValueError, match="uint8 RGB"):
        seg.set_image(np.zeros((10, 10), dtype=np.uint8))
    seg.set_image(np.zeros((10, 10, 3), dtype=np.uint8))
    with pytest.raises(BoxError, match="box 1"):
        seg.predict(np.array([[0, 0, 5, 5], [6, 6, 2, 2]]))
    with pytest.raises(ValueError, match="point_labels"):
        seg.predict(np.array([[0, 0, 5, 5]]), points=np.array([[1, 1]]))


def test_largest_component_and_fill_holes_hand_made():
    masks = torch.zeros(2, 7, 7, dtype=torch.bool)
    masks[0, 1:3, 1:3] = True  # 4 px
    masks[0, 4:7, 4:7] = True  # 9 px: the largest
    masks[1, 1:6, 1:6] = True
    masks[1, 3, 3] = False  # a hole
    kept = largest_component(masks)
    assert kept[0].sum() == 9 and kept[0, 5, 5] and not kept[0, 1, 1]
    assert torch.equal(kept[1], masks[1])
    keep = torch.zeros_like(masks)
    keep[0, 1, 1] = True  # a clicked pixel keeps its component too
    assert largest_component(masks, keep=keep)[0].sum() == 13
    filled = fill_holes(masks)
    assert filled[1, 3, 3] and filled[1].sum() == 25 and torch.equal(filled[0], masks[0])
    speck = torch.zeros(1, 9, 9, dtype=torch.bool)
    speck[0, 4, 4] = True
    assert not open_close(speck, 1).any()


def test_guided_filter_keeps_a_colour_edge_and_smooths_flat_regions():
    guide = torch.zeros(1, 3, 12, 12)
    guide[:, 0, :, 6:] = 1.0  # red right half
    src = torch.zeros(1, 12, 12)
    src[:, :, 5:] = 1.0  # the coarse mask is 1 px off the edge
    out = guided_filter(guide, src, radius=3, eps=1e-4)
    assert torch.all(out[:, :, 7:] > 0.9) and torch.all(out[:, :, :5] < 0.5)
    assert torch.all(out[:, :, 5] < 0.5)  # snapped to the guide's edge
    flat = guided_filter(torch.zeros(1, 3, 5, 5), torch.arange(25.0).view(1, 5, 5), 1, 1e-4)
    assert flat[0, 2, 2].item() == pytest.approx(torch.arange(25.0).view(5, 5)[1:4, 1:4].mean())


def _crowded_scene(seed=4):
    """Touching look-alike discs (same colour) in a hex packing; returns image, masks list."""
    rng = np.random.default_rng(seed)
    image = np.clip(rng.normal(70, 8, (120, 120, 3)), 0, 255)
    yy, xx = np.mgrid[:120, :120] + 0.5
    masks = []
    for cy in range(20, 110, 19):
        for cx in range(20 + (cy // 19 % 2) * 9, 110, 18):
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= 10**2
            image[disc] = rng.normal((150, 60, 150), 8, (int(disc.sum()), 3))
            masks.append(disc)
    return np.clip(image, 0, 255).astype(np.uint8), masks


def _ellipse(box, height, width):
    from box2mask.ops.levelset import inscribed_ellipses

    boxes = torch.as_tensor(np.asarray(box, dtype=np.float32)[None])
    return inscribed_ellipses(boxes, height, width, inside=1.0, outside=0.0)[0].numpy() > 0.5


def test_floor_keeps_the_prior_among_touching_look_alikes():
    image, masks = _crowded_scene()
    mask = masks[len(masks) // 2]
    box = _tight_box(mask) + np.array([-4, -4, 4, 4])  # neighbours reach into the corners
    seg = LevelSetSegmenter()
    seg.set_image(image)
    floored = seg.predict(box[None])[0][0]
    seg_off = LevelSetSegmenter(replace(LevelSetConfig(), floor=False))
    seg_off.set_image(image)
    leaked = seg_off.predict(box[None])[0][0]
    ellipse = _ellipse(box, *image.shape[:2])
    assert mask_iou(floored, ellipse) > 0.9  # the prior is kept
    assert mask_iou(leaked, ellipse) < mask_iou(floored, ellipse)  # the evolution would leak


def test_low_contrast_box_keeps_the_ellipse():
    rng = np.random.default_rng(5)
    image = np.clip(rng.normal(128, 10, (80, 80, 3)), 0, 255).astype(np.uint8)
    box = np.array([20.0, 24.0, 56.0, 52.0])
    seg = LevelSetSegmenter()
    seg.set_image(image)
    masks, _ = seg.predict(box[None])
    assert mask_iou(masks[0], _ellipse(box, 80, 80)) > 0.95
    assert seg.last_trust[0] < 0.5


def test_adaptive_grid_matches_the_fixed_grid_on_medium_boxes():
    image, obj = _scene()
    box = _tight_box(obj)  # 68 x 52 px: a medium box, adaptive grid side 96 ... or less
    fixed_cfg = replace(LevelSetConfig(), adaptive_grid=False, floor=False)
    adaptive_cfg = replace(LevelSetConfig(), floor=False)
    from box2mask.levelset.segmenter import grid_sides

    small = np.array([[40.0, 30.0, 80.0, 62.0]])  # a 40 px box: grid 80 instead of 96
    assert int(grid_sides(torch.as_tensor(small, dtype=torch.float32), adaptive_cfg)[0]) < 96
    for boxes in (box[None], small):
        out = []
        for cfg in (fixed_cfg, adaptive_cfg):
            seg = LevelSetSegmenter(cfg)
            seg.set_image(image)
            out.append(seg.predict(boxes)[0][0])
        assert mask_iou(out[0], out[1]) > 0.98


def test_untrusted_box_is_exactly_the_image_resolution_ellipse():
    rng = np.random.default_rng(5)
    image = np.clip(rng.normal(128, 10, (80, 80, 3)), 0, 255).astype(np.uint8)
    boxes = np.array([[20.0, 24.0, 56.0, 52.0], [30.0, 10.0, 41.0, 23.0]])  # grid 80 and 32
    seg = LevelSetSegmenter()
    seg.set_image(image)
    masks, _ = seg.predict(boxes)
    assert np.all(seg.last_trust == 0)
    for mask, box in zip(masks, boxes, strict=True):
        assert np.array_equal(mask, _ellipse(box, 80, 80))  # not the grid's coarser ellipse


def test_refining_keeps_the_given_mask_where_the_evolution_does_not_change_it():
    rng = np.random.default_rng(6)
    image = np.clip(rng.normal(128, 6, (240, 240, 3)), 0, 255).astype(np.uint8)  # no evidence
    yy, xx = np.mgrid[:240, :240] + 0.5
    init = (yy - 120) ** 2 + (xx - 120) ** 2 <= 70**2  # about 2.3 image px per grid px
    seg = LevelSetSegmenter()
    seg.set_image(image)
    refined = seg.predict(_tight_box(init)[None], steps=3, init_masks=init[None])[0][0]
    assert mask_iou(refined, init) > 0.97  # the grid round trip alone gives 0.945


def test_small_grids_take_fewer_steps():
    from box2mask.levelset.segmenter import grid_steps

    cfg = LevelSetConfig()
    assert grid_steps(20, cfg.grid_size, cfg) == 20  # the largest grid: all steps
    assert grid_steps(20, 48, cfg) == 10  # half the grid side, half the steps
    assert grid_steps(20, 24, cfg) == cfg.min_steps
    assert grid_steps(3, 24, cfg) == 3  # a refinement's few steps are kept
