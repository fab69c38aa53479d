"""The crop learner with verified masks: they outweigh the teacher, the augmentation of few images
keeps boxes and masks aligned, and checkpoints of the format before these fields still load."""

import json

import numpy as np
import pytest
import torch

from box2mask.crop.learner import KIND, CropLearnerConfig, CropUNet, crop_geometry
from box2mask.crop.predictor import CropLearnerPredictor, sample_masks
from box2mask.io.checkpoint import load_checkpoint, save_checkpoint
from box2mask.ops.levelset import box_masks_from_boxes
from tests.disc_scenes import disc_scene
from train.crop_augment import jitter_colours, jitter_windows

pytestmark = pytest.mark.usefixtures("one_thread")


def _disc_dataset(folder, n_images: int = 4):
    """Disc scenes whose verified mask is the filled box, not the disc the teacher (the embedded
    default) finds: teacher and verified masks disagree on every box's corners."""
    from PIL import Image

    (folder / "images").mkdir(parents=True)
    images, anns = [], []
    for i in range(n_images):
        image, boxes, _ = disc_scene(64, 80, seed=i, n_discs=2)
        Image.fromarray(image).save(folder / "images" / f"s{i}.png")
        images.append({"id": i + 1, "file_name": f"s{i}.png", "width": 80, "height": 64})
        for x0, y0, x1, y1 in np.round(boxes):
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
    coco = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "disc"}]}
    (folder / "annotations.json").write_text(json.dumps(coco))
    return folder


def _corner_share(run_dir) -> float:
    """Share of the box corners (in the box, outside its inscribed ellipse) the trained learner
    calls object, over the bank's crops: 1 = the verified filled box, 0 = the teacher's disc."""
    from box2mask.ops.levelset import inscribed_ellipses
    from train.crop_train import _batch, forward_crops

    model = CropLearnerPredictor.from_checkpoint(run_dir / "last.pt").model
    bank = torch.load(run_dir / "crop_bank.pt", weights_only=True)
    batch = _batch(type("Bank", (), bank), torch.arange(len(bank["grid_boxes"])), "cpu")
    with torch.no_grad():
        logits, _, _ = forward_crops(model, batch)
    size = logits.shape[-1]
    box = box_masks_from_boxes(batch["grid_boxes"], size, size) > 0.5
    ellipse = inscribed_ellipses(batch["grid_boxes"], size, size, 1.0, 0.0) > 0.5
    corners = box & ~ellipse
    return float((logits > 0)[corners].float().mean())


def _train(data, out, weak_on_verified: float):
    from train.crop_config import load_crop_config
    from train.crop_train import train_crop

    cfg = load_crop_config(
        None,
        {
            "data_dir": str(data),
            "out_dir": str(out),
            "train_split": "",
            "val_split": "",
            "model.crop_size": 16,
            "model.width": 8,
            "model.levels": 2,
            "mask_supervision": True,
            "weak_on_verified": weak_on_verified,
            "loss.distill": 4.0,  # a teacher that pulls hard
            "iterations": 120,
            "batch_size": 16,
            "lr": 0.01,
            "warmup_steps": 5,
            "log_every": 1000,
            "eval_every": 0,
        },
    )
    train_crop(cfg, device="cpu", progress=False)
    return _corner_share(out)


def test_verified_masks_outweigh_the_teacher(tmp_path):
    """Teacher: discs; verified masks: the filled boxes. With the weak terms off on verified
    crops (weak_on_verified: 0) the learner fills the corners; with them at full weight the
    teacher and the box terms pull it back to the disc."""
    data = _disc_dataset(tmp_path / "data")
    follows_masks = _train(data, tmp_path / "masks", weak_on_verified=0.0)
    pulled_back = _train(data, tmp_path / "teacher", weak_on_verified=1.0)
    assert follows_masks > 0.8, follows_masks
    assert pulled_back < follows_masks - 0.2, (pulled_back, follows_masks)


def test_weak_weight_scales_the_box_terms_and_distillation_per_crop():
    from box2mask.crop.losses import crop_losses

    torch.manual_seed(0)
    n, size = 4, 16
    kwargs = {
        "logits": torch.randn(n, size, size),
        "features": torch.randn(n, 8, size, size),
        "image": torch.randn(n, 3, size, size),
        "grid_boxes": torch.tensor([[2.0, 3.0, 13.0, 12.0]]).repeat(n, 1),
        "teacher": torch.rand(n, size, size),
        "masks": torch.rand(n, size, size),
        "has_mask": torch.tensor([True, True, False, False]),
        "rgb": torch.rand(n, 3, size, size),
    }
    full = crop_losses(**kwargs)
    half = crop_losses(**kwargs, weak_weight=torch.tensor([0.0, 0.0, 1.0, 1.0]))
    only_box = crop_losses(**{k: v[2:] for k, v in kwargs.items()})  # the 2 box-only crops
    for term in ("loss_proj", "loss_lcm", "loss_cv_image", "loss_cv_feat", "loss_pairwise"):
        torch.testing.assert_close(half[term], only_box[term] / 2)  # mean over all 4 crops
    torch.testing.assert_close(half["loss_distill"], only_box["loss_distill"] / 2)
    for term in ("loss_mask_bce", "loss_mask_dice"):  # the mask terms are untouched
        torch.testing.assert_close(half[term], full[term])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_jittered_windows_keep_each_box_and_mask_aligned(seed):
    """A box's own filled mask, sampled over its jittered window, covers exactly its grid box
    (to a grid pixel), the box stays inside the window, and windows differ between draws."""
    generator = torch.Generator().manual_seed(seed)
    size, height, width = 32, 120, 160
    x0 = torch.rand(6, generator=generator) * 100
    y0 = torch.rand(6, generator=generator) * 70
    sides = 8 + torch.rand(6, 2, generator=generator) * 40
    boxes = torch.stack([x0, y0, x0 + sides[:, 0], y0 + sides[:, 1]], 1).round()
    filled = box_masks_from_boxes(boxes, height, width) > 0.5
    windows, grid_boxes = jitter_windows(boxes, 0.4, 3.0, size, generator)
    assert (windows[:, :2] <= boxes[:, :2]).all() and (windows[:, 2:] >= boxes[:, 2:]).all()
    assert ((grid_boxes >= 0) & (grid_boxes <= size)).all()
    for soft, grid_box in zip(sample_masks(filled, windows, size), grid_boxes, strict=True):
        ys, xs = np.nonzero(soft.numpy() > 0.5)
        tight = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        assert np.abs(tight - grid_box.numpy()).max() <= 1.0
    again, _ = jitter_windows(boxes, 0.4, 3.0, size, generator)
    assert not torch.allclose(again, windows)
    served, _ = crop_geometry(boxes, CropLearnerConfig(crop_size=size))
    assert not torch.allclose(served, windows)


def test_bank_views_hold_every_box_several_times_with_its_mask(tmp_path):
    """views: 3 banks each box 3 times: the served window first, then 2 jittered windows; each
    crop's verified mask (the filled box) fills its own grid box."""
    from train.crop_bank import build_crop_bank
    from train.dataset import CocoBoxDataset

    data = _disc_dataset(tmp_path / "data", n_images=2)
    dataset = CocoBoxDataset(data, split="")
    cfg = CropLearnerConfig(crop_size=16, base="ellipse")
    one = build_crop_bank(dataset, cfg, mask_supervision=True, progress=False)
    three = build_crop_bank(
        dataset, cfg, mask_supervision=True, views=3, view_margin=0.4, progress=False
    )
    assert len(three) == 3 * len(one)
    per_image = len(one) // 2  # 2 boxes per image, views banked image by image
    first_views = torch.cat([three.grid_boxes[i * 3 * per_image :][:per_image] for i in range(2)])
    torch.testing.assert_close(first_views, one.grid_boxes)  # view 0: the served window
    assert not torch.allclose(three.grid_boxes[per_image : 2 * per_image], one.grid_boxes[:2])
    for mask, grid_box in zip(three.masks > 127, three.grid_boxes, strict=True):
        ys, xs = np.nonzero(mask.numpy())
        tight = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        assert np.abs(tight - grid_box.numpy()).max() <= 1.0  # the mask fills its grid box
    assert three.has_mask.all()


def test_colour_jitter_changes_colours_only():
    generator = torch.Generator().manual_seed(0)
    rgb = torch.rand(64, 3, 8, 8)
    assert torch.equal(jitter_colours(rgb, 0.0, generator), rgb)
    out = jitter_colours(rgb, 0.5, generator)
    assert out.shape == rgb.shape and out.min() >= 0 and out.max() <= 1
    assert (out - rgb).abs().mean() > 0.02
    changed = (out - rgb).abs().amax(dim=(1, 2, 3)) > 1e-6
    assert changed.float().mean() > 0.9  # nearly every crop is jittered


def test_a_checkpoint_without_the_new_training_fields_still_loads(tmp_path):
    """A crop-learner checkpoint written before weak_on_verified / views / colour_jitter existed
    (its stored training config lacks them) serves and resumes with the new defaults."""
    from train.config import apply_overrides
    from train.crop_config import CropTrainConfig

    cfg = CropLearnerConfig(crop_size=32, width=16, base="ellipse")
    old_training = {"learner": "crop", "mask_supervision": True, "iterations": 1000, "lr": 0.002}
    save_checkpoint(
        tmp_path / "old.pt",
        model=CropUNet(cfg),
        model_config=cfg,
        class_names=["balloon"],
        config=old_training,
        model_version="crop-old",
        kind=KIND,
    )
    stored = torch.load(tmp_path / "old.pt", weights_only=False)
    old_fields = ("crop_size", "margin_frac", "margin_px", "width", "levels", "base")
    old_fields += ("base_logit", "outside_logit")  # CropLearnerConfig as of issue 28
    stored["model_config"] = {k: stored["model_config"][k] for k in old_fields}
    torch.save(stored, tmp_path / "old.pt")
    ckpt = load_checkpoint(tmp_path / "old.pt")
    predictor = CropLearnerPredictor.from_checkpoint(ckpt)
    predictor.set_image(np.full((40, 50, 3), 100, np.uint8))
    masks, _ = predictor.predict(np.array([[5.0, 5.0, 40.0, 30.0]]))
    assert masks.shape == (1, 40, 50) and masks.any()
    resumed = apply_overrides(CropTrainConfig(), ckpt["config"], source="old.pt")
    assert resumed.views == 1 and resumed.colour_jitter == 0.0 and resumed.mask_supervision


def test_test_flips_serve_the_same_mask_for_a_mirrored_image():
    """model.test_flips averages the correction over 4 flips: mirroring the image and its box
    mirrors the served mask (a plain random network is not mirror-symmetric)."""
    torch.manual_seed(0)
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3)).astype(np.uint8)
    box = np.array([[6.0, 5.0, 45.0, 40.0]])
    mirrored_box = np.array([[64 - 45.0, 5.0, 64 - 6.0, 40.0]])
    served = {}
    for flips in (False, True):
        model = CropUNet(CropLearnerConfig(crop_size=16, base="ellipse", test_flips=flips))
        torch.nn.init.normal_(model.head.weight, std=300.0)  # delta of a few logits
        model.eval()
        predictor = CropLearnerPredictor(model)
        predictor.set_image(image)
        mask, _ = predictor.predict(box)
        predictor.set_image(np.ascontiguousarray(image[:, ::-1]))
        mirrored, _ = predictor.predict(mirrored_box)
        served[flips] = (mask[0], mirrored[0][:, ::-1])
    assert np.array_equal(*served[True])
    assert not np.array_equal(*served[False])
