"""Dataset + augmentation: boxes stay consistent with the image (hand-checked), splits, collate."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from train.augment import crop, hflip, random_scale_crop_flip, resize
from train.dataset import CocoBoxDataset, DatasetError, collate_batch


def tight_box(mask: np.ndarray) -> list[float]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]


def test_hflip_by_hand():
    image = np.zeros((4, 10, 3), np.uint8)
    image[:, 2] = 255  # column 2 -> column 7 after the flip
    out, boxes, _ = hflip(image, np.array([[2, 1, 5, 3]], np.float32))
    assert out[:, 7].min() == 255 and out[:, 2].max() == 0
    np.testing.assert_allclose(boxes, [[5, 1, 8, 3]])  # x -> 10 - x, x0/x1 swapped


def test_resize_by_hand():
    image = np.zeros((40, 100, 3), np.uint8)
    _, boxes, _ = resize(image, np.array([[10, 20, 50, 40]], np.float32), (20, 25))
    np.testing.assert_allclose(boxes, [[2.5, 10, 12.5, 20]])  # x * 0.25, y * 0.5


def test_crop_shifts_and_clips_by_hand():
    image = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
    out, boxes, _ = crop(image, np.array([[1, 1, 5, 5], [6, 2, 11, 9]], np.float32), 2, 4, 6, 5)
    assert out.shape == (6, 5, 3) and (out == image[2:8, 4:9]).all()
    np.testing.assert_allclose(boxes, [[0, 0, 1, 3], [2, 0, 5, 6]])


def test_random_augmentation_keeps_boxes_tight_on_rectangles():
    rng = np.random.default_rng(0)
    h, w = 90, 130
    rects = np.array([[10, 10, 50, 40], [60, 30, 120, 80], [5, 60, 30, 88]], np.float32)
    masks = np.zeros((3, h, w), bool)
    for m, (x0, y0, x1, y1) in zip(masks, rects.astype(int), strict=True):
        m[y0:y1, x0:x1] = True
    for trial in range(20):
        image, boxes, labels, out_masks = random_scale_crop_flip(
            np.zeros((h, w, 3), np.uint8),
            rects,
            np.array([0, 1, 2]),
            rng=rng,
            size=64,
            min_scale=0.3,
            max_scale=1.5,
            flip_prob=0.5,
            min_box_size=2,
            masks=masks,
        )
        assert image.shape[0] <= 64 and image.shape[1] <= 64
        assert len(boxes) == len(labels) == len(out_masks)
        for box, mask in zip(boxes, out_masks, strict=True):
            # a rectangle stays a rectangle, so its box must stay tight (up to 1 px of resampling)
            assert mask.any(), f"trial {trial}: box {box} kept but its object left the crop"
            np.testing.assert_allclose(box, tight_box(mask), atol=1.0)


def write_dataset(root, sizes=((40, 60), (50, 30), (64, 64)), splits=("train", "val", "train")):
    (root / "images").mkdir(parents=True)
    images, anns = [], []
    for i, ((h, w), split) in enumerate(zip(sizes, splits, strict=True)):
        name = f"im{i}.png"
        Image.fromarray(np.full((h, w, 3), 40 * i, np.uint8)).save(root / "images" / name)
        images.append({"id": i + 1, "file_name": name, "height": h, "width": w, "split": split})
        anns.append({"id": 10 + i, "image_id": i + 1, "bbox": [2, 3, 10, 12], "category_id": 7})
        anns.append({"id": 20 + i, "image_id": i + 1, "bbox": [5, 5, 6, 6], "category_id": 3})
    anns.append({"id": 99, "image_id": 1, "bbox": [0, 0, 5, 5], "category_id": 3, "iscrowd": 1})
    cats = [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}]
    (root / "annotations.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats})
    )
    return root


def test_dataset_split_labels_and_eval_resize(tmp_path):
    root = write_dataset(tmp_path / "d")
    ds = CocoBoxDataset(root, split="train", image_size=32)
    assert len(ds) == 2 and ds.class_names == ["dog", "cat"]  # ascending category id
    item = ds[0]  # 40 x 60 image -> long side 32: scale 32/60
    assert item["image"].shape == (3, 21, 32) and item["image"].dtype == torch.uint8
    assert item["labels"].tolist() == [1, 0]  # crowd annotation skipped
    s = 32 / 60, 21 / 40
    np.testing.assert_allclose(
        item["boxes"][0], [2 * s[0], 3 * s[1], 12 * s[0], 15 * s[1]], rtol=1e-5
    )
    assert len(CocoBoxDataset(root, split="")) == 3
    with pytest.raises(DatasetError, match=r"annotations\.json.*'test'.*train"):
        CocoBoxDataset(root, split="test")


def test_training_augmentation_is_reproducible_per_epoch(tmp_path):
    root = write_dataset(tmp_path / "d")
    ds = CocoBoxDataset(root, split="train", train=True, image_size=32, seed=3)
    a, b = ds[1], ds[1]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["boxes"], b["boxes"])
    assert a["image"].shape[1] <= 32 and a["image"].shape[2] <= 32
    seen = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        seen.add(tuple(ds[1]["image"].shape))
    assert len(seen) > 1  # different epochs, different scale


def test_collate_pads_to_multiple_of_32(tmp_path):
    root = write_dataset(tmp_path / "d")
    ds = CocoBoxDataset(root, split="", image_size=40)
    batch = collate_batch([ds[0], ds[1]])
    assert batch["images"].shape == (2, 3, 64, 64) and batch["images"].dtype == torch.float32
    assert batch["image_sizes"] == [(27, 40), (40, 24)]
    assert batch["images"][0, :, 27:].abs().sum() == 0  # padding is zero
    assert batch["file_names"] == ["im0.png", "im1.png"] and batch["image_ids"] == [1, 2]
    assert [t["boxes"].shape for t in batch["targets"]] == [(2, 4), (2, 4)]


def test_non_finite_box_is_an_error_naming_the_annotation(tmp_path):
    root = write_dataset(tmp_path / "d")
    coco = json.loads((root / "annotations.json").read_text())
    coco["annotations"][2]["bbox"] = [1, 2, float("nan"), 4]
    (root / "annotations.json").write_text(json.dumps(coco))
    with pytest.raises(DatasetError, match=r"annotation 11 \(image 2\).*4 finite numbers"):
        CocoBoxDataset(root, split="")
