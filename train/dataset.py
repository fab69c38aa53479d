"""COCO-format instance dataset read for box supervision: images, boxes and class labels.

By default masks in the file (if any) are never given to training (`load_gt_masks` reads them for
evaluation). Mixed supervision (`with_masks=True`) also returns the masks of the annotations that
have a `segmentation`, and `teacher_masks` adds a teacher's masks (train/teacher.py) for the rest;
each instance carries a mask weight (1 human mask, `teacher_weight` teacher mask, 0 box only).
Images may carry a `split` field ("train" / "val"); `split=""` keeps every image.
Category ids are mapped to contiguous labels 0..K-1 in ascending id order (`class_names`).
"""

import json
import os
from pathlib import Path

import numpy as np
import torch

from box2mask.io.image_io import load_image
from box2mask.io.rle import decode_rle, decode_segmentation
from box2mask.ops.box_ops import xywh_to_xyxy
from train.augment import random_scale_crop_flip, resize_long_side

__all__ = ["DatasetError", "CocoBoxDataset", "batches_of_epoch", "collate_batch", "load_gt_masks"]


class DatasetError(ValueError):
    """A dataset that cannot be used; the message names the file and the problem."""


class CocoBoxDataset(torch.utils.data.Dataset):
    """Images + boxes of one split of a COCO instances file.

    Each item is a dict: "image" (3, H, W) uint8 tensor, "boxes" (N, 4) float32 XYXY absolute
    pixels in that image's frame, "labels" (N,) int64 in [0, K), "image_id" int, "file_name" str,
    "orig_size" (H0, W0) of the file.

    Training (`train=True`): scale jitter, crop to image_size, flip, with a random generator seeded
    by (seed, epoch, index) so the same sample gets the same augmentation in any process
    (call `set_epoch` before each epoch). Otherwise: resize the long side to image_size.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        *,
        split: str = "",
        annotations: str = "annotations.json",
        image_dir: str = "images",
        train: bool = False,
        image_size: int = 384,
        min_scale: float = 0.5,
        max_scale: float = 1.5,
        flip_prob: float = 0.5,
        min_box_size: float = 4.0,
        seed: int = 0,
        with_masks: bool = False,
        teacher_masks: dict | None = None,
        teacher_weight: float = 0.5,
    ):
        self.data_dir = Path(data_dir)
        self.annotation_path = self.data_dir / annotations
        self.image_dir = self.data_dir / image_dir
        self.train, self.image_size, self.seed, self.epoch = train, image_size, seed, 0
        self.with_masks = with_masks  # return each annotation's `segmentation` as a mask target
        self.teacher_masks = teacher_masks  # {image_id: [RLE or None per box]} (train/teacher.py)
        self.teacher_weight = teacher_weight
        self.augment_args = dict(
            size=image_size,
            min_scale=min_scale,
            max_scale=max_scale,
            flip_prob=flip_prob,
            min_box_size=min_box_size,
        )
        coco = read_coco(self.annotation_path)
        self.category_ids = sorted(c["id"] for c in coco.get("categories", []))
        names = {c["id"]: c.get("name", str(c["id"])) for c in coco.get("categories", [])}
        self.class_names = [names[i] for i in self.category_ids]
        label_of = {cid: i for i, cid in enumerate(self.category_ids)}
        self.images = [im for im in coco["images"] if not split or im.get("split") == split]
        if not self.images:
            found = sorted({str(im.get("split")) for im in coco["images"]})
            raise DatasetError(
                f"{self.annotation_path}: no images with split {split!r} (splits found: {found})"
            )
        wanted = {im["id"] for im in self.images}
        self.boxes_by_image = {im["id"]: [] for im in self.images}
        for ann in coco.get("annotations", []):
            if ann["image_id"] not in wanted or ann.get("iscrowd", 0):
                continue
            bbox = ann.get("bbox")
            if not isinstance(bbox, list) or len(bbox) != 4 or not np.isfinite(bbox).all():
                raise DatasetError(
                    f"{self.annotation_path}: annotation {ann.get('id')} (image {ann['image_id']}) "
                    f"has bbox {bbox!r}; expected 4 finite numbers [x, y, width, height]"
                )
            x, y, w, h = bbox
            if w < 1 or h < 1:
                continue
            if ann["category_id"] not in label_of:
                raise DatasetError(
                    f"{self.annotation_path}: annotation {ann.get('id')} has category_id "
                    f"{ann['category_id']}, which is not in `categories`"
                )
            self.boxes_by_image[ann["image_id"]].append(
                (xywh_to_xyxy([x, y, w, h]), label_of[ann["category_id"]], ann.get("segmentation"))
            )

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation of this epoch (call before creating the epoch's iterator)."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict:
        info = self.images[index]
        image = load_image(self.image_dir / info["file_name"])
        anns = self.boxes_by_image[info["id"]]
        boxes = np.array([b for b, _, _ in anns], np.float32).reshape(-1, 4)
        labels = np.array([c for _, c, _ in anns], np.int64)
        orig_size = image.shape[:2]
        masks, weights = self._mask_targets(info, anns, orig_size)
        if self.train:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            # the weights ride along as a label column so that dropped boxes drop theirs too
            keyed = np.arange(len(labels))
            image, boxes, keyed, masks = random_scale_crop_flip(
                image, boxes, keyed, rng=rng, masks=masks, **self.augment_args
            )
            labels = labels[keyed]
            weights = weights[keyed] if weights is not None else None
        else:
            image, boxes, masks = resize_long_side(image, boxes, self.image_size, masks)
        item = {
            "image": torch.from_numpy(image).permute(2, 0, 1).contiguous(),
            "boxes": torch.from_numpy(np.ascontiguousarray(boxes, np.float32)),
            "labels": torch.from_numpy(labels),
            "image_id": int(info["id"]),
            "file_name": info["file_name"],
            "orig_size": tuple(orig_size),
        }
        if masks is not None:
            item["masks"] = torch.from_numpy(np.ascontiguousarray(masks))
            item["mask_weight"] = torch.from_numpy(weights.astype(np.float32))
        return item

    def _mask_targets(self, info: dict, anns: list, size: tuple[int, int]):
        """(N, H, W) bool masks and (N,) weights at the file's size, or (None, None) when this
        dataset gives no mask targets. An instance without a mask gets an empty one, weight 0."""
        if not self.with_masks and self.teacher_masks is None:
            return None, None
        height, width = size
        masks = np.zeros((len(anns), height, width), bool)
        weights = np.zeros(len(anns), np.float32)
        teacher = (self.teacher_masks or {}).get(info["id"]) or [None] * len(anns)
        for i, (_, _, seg) in enumerate(anns):
            if self.with_masks and seg:
                masks[i] = _decode_segmentation(seg, height, width, self.annotation_path)
                weights[i] = 1.0
            elif teacher[i] is not None:
                masks[i] = decode_rle(teacher[i]).astype(bool)
                weights[i] = self.teacher_weight
        return masks, weights


def read_coco(path: Path) -> dict:
    """The parsed COCO JSON file, or a DatasetError naming the file."""
    if not path.is_file():
        raise DatasetError(f"{path}: annotation file not found")
    try:
        coco = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
        raise DatasetError(f"{path}: not a COCO instances file (no `images` list)")
    return coco


def batches_of_epoch(dataset, cfg, dist_info, epoch: int) -> list[list[int]]:
    """This process's index batches for `epoch` (DistributedSampler order; the last partial
    batch is dropped so every step has the full effective batch)."""
    from torch.utils.data import DistributedSampler

    per_rank = cfg.batch_size // dist_info.world_size
    sampler = DistributedSampler(
        dataset,
        num_replicas=dist_info.world_size,
        rank=dist_info.rank,
        shuffle=True,
        seed=cfg.seed,
        drop_last=True,
    )
    sampler.set_epoch(epoch)
    indices = list(sampler)
    return [indices[i : i + per_rank] for i in range(0, len(indices) - per_rank + 1, per_rank)]


def collate_batch(samples: list[dict], size_divisibility: int = 32) -> dict:
    """Pad images (bottom/right, zeros) to a common size that is a multiple of size_divisibility.

    Returns {"images": (B, 3, H, W) float 0..255, "targets": [{"boxes", "labels"} and, with mask
    targets, "masks" (n, H, W) float 0/1 and "mask_weight" (n,)], "image_ids",
    "file_names", "image_sizes": [(h, w) before padding]}.
    """
    sizes = [tuple(s["image"].shape[1:]) for s in samples]
    height = max(h for h, _ in sizes)
    width = max(w for _, w in sizes)
    height = -(-height // size_divisibility) * size_divisibility
    width = -(-width // size_divisibility) * size_divisibility
    images = torch.zeros(len(samples), 3, height, width)
    for i, sample in enumerate(samples):
        h, w = sizes[i]
        images[i, :, :h, :w] = sample["image"]
    targets = []
    for sample in samples:
        target = {"boxes": sample["boxes"], "labels": sample["labels"]}
        if "masks" in sample:  # padded like the image; float so the criterion can pool them
            masks = torch.zeros(len(sample["masks"]), height, width)
            h, w = sample["masks"].shape[-2:]
            masks[:, :h, :w] = sample["masks"].float()
            target["masks"], target["mask_weight"] = masks, sample["mask_weight"]
        targets.append(target)
    return {
        "images": images,
        "targets": targets,
        "image_ids": [s["image_id"] for s in samples],
        "file_names": [s["file_name"] for s in samples],
        "image_sizes": sizes,
    }


def load_gt_masks(
    coco: dict, image_id: int, height: int, width: int
) -> list[tuple[dict, np.ndarray]]:
    """(annotation, (H, W) bool mask) for each non-crowd annotation of `image_id` with a mask."""
    out = []
    for ann in coco.get("annotations", []):
        if ann["image_id"] != image_id or ann.get("iscrowd", 0) or not ann.get("segmentation"):
            continue
        out.append((ann, _decode_segmentation(ann["segmentation"], height, width)))
    return out


def _decode_segmentation(seg, height: int, width: int, source=None) -> np.ndarray:
    """A COCO `segmentation` (polygons or RLE) -> (H, W) bool
    (`box2mask.io.rle.decode_segmentation`); DatasetError naming `source` when it is malformed or does not fit the image."""
    try:
        return decode_segmentation(seg, height, width)
    except ValueError as err:
        raise DatasetError(f"{source or 'annotations'}: {err}") from None
