"""The crop bank: every training box of a COCO dataset as its S x S crop, computed once per run.

The crop learner (box2mask/crop/learner.py) sees only each box's crop, so the whole training set
fits in memory as a few tensors (a 64 x 64 crop is 12 KiB of colours): one pass over the images
samples each box's crop, its LCM affinities, the teacher's mask there (the distillation target:
the embedded default, which is also the base mask of `base: default`, or a trained crop learner
for self-training) and, where an annotation carries a `segmentation` and mask
supervision is on, the verified mask. Training then never decodes an image again. With
`views` > 1 every box is banked `views` times: the served crop window, then windows with random
margins (train/crop_augment.py `jitter_windows`: scale and position jitter around the box).

The bank is saved as `crop_bank.pt` in the run directory (written atomically) and reused when the
run resumes with the same dataset and crop geometry.
"""

import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from box2mask.crop.learner import (
    CropLearnerConfig,
    crop_geometry,
    crop_inputs,
    sample_crops,
)
from box2mask.crop.losses import crop_affinity
from box2mask.crop.predictor import sample_masks
from box2mask.io.atomic_write import atomic_write
from box2mask.io.image_io import ImageLoadError, load_image
from train.crop_augment import jitter_windows
from train.dataset import CocoBoxDataset, DatasetError, _decode_segmentation

__all__ = ["CropBank", "build_crop_bank", "load_or_build_crop_bank"]


@dataclass
class CropBank:
    rgb: torch.Tensor  # (N, 3, S, S) uint8 crop colours
    grid_boxes: torch.Tensor  # (N, 4) float, the boxes in grid pixels
    teacher: torch.Tensor  # (N, S, S) uint8, the teacher's mask x 255 (soft edges)
    masks: torch.Tensor  # (N, S, S) uint8, the verified mask x 255 where has_mask
    has_mask: torch.Tensor  # (N,) bool
    affinity: torch.Tensor  # (N, 8, S, S) float16 LCM affinities of the crop (crop_affinity)
    image_index: torch.Tensor  # (N,) long, which image of the split each crop comes from
    class_names: list  # the dataset's class names
    key: str  # fingerprint of the dataset and geometry the bank was built from

    def __len__(self) -> int:
        return len(self.grid_boxes)


def _teacher_name(teacher) -> str:
    return "default" if teacher is None else str(teacher.model_version)


def _fingerprint(
    dataset, cfg: CropLearnerConfig, mask_supervision: bool, teacher=None, views=(1, 0.0, 0)
) -> str:
    geometry = {k: asdict(cfg)[k] for k in ("crop_size", "margin_frac", "margin_px")}
    geometry["teacher"] = _teacher_name(teacher)
    if views[0] != 1:  # a bank of one view draws nothing: it keeps its old key
        geometry["views"] = list(views)
    boxes = [
        [info["file_name"], [np.round(b, 3).tolist() for b, _, _ in dataset.boxes_by_image[i]]]
        for info in dataset.images
        for i in [info["id"]]
    ]
    text = json.dumps([geometry, mask_supervision, boxes])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_crop_bank(
    dataset: CocoBoxDataset,
    cfg: CropLearnerConfig,
    *,
    mask_supervision: bool = False,
    teacher=None,
    views: int = 1,
    view_margin: float = 0.0,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> CropBank:
    """Crops of every box of `dataset` (one pass over its images; the teacher runs once per image).

    teacher: a box2mask predictor (set_image / predict) whose masks are the distillation target;
    None = the embedded default.
    views: crops per box: the served window, then views - 1 `jitter_windows` with margins up to
    `view_margin` x the box side per side, drawn from (seed, image index).
    """
    from box2mask.levelset.segmenter import LevelSetSegmenter

    labeller = teacher if teacher is not None else LevelSetSegmenter(device=device)
    size = cfg.crop_size
    names = ("rgb", "grid_boxes", "teacher", "masks", "has_mask", "affinity", "image_index")
    parts = {k: [] for k in names}
    for index, info in enumerate(tqdm(dataset.images, desc="crop bank", disable=not progress)):
        anns = dataset.boxes_by_image[info["id"]]
        if not anns:
            continue
        path = dataset.image_dir / info["file_name"]
        try:
            image = load_image(path)
        except ImageLoadError as err:  # unreadable mid-run: skip it, never a half-built bank
            warnings.warn(f"crop bank: skipped {err}", stacklevel=2)
            continue
        height, width = image.shape[:2]
        expected = (info.get("height", height), info.get("width", width))
        if (height, width) != tuple(expected):  # changed since it was labelled
            warnings.warn(
                f"crop bank: skipped {path}: image is {width}x{height}, its labels are for "
                f"{expected[1]}x{expected[0]} (changed after labelling)",
                stacklevel=2,
            )
            continue
        boxes_np = np.clip(np.stack([b for b, _, _ in anns]), 0, [width, height, width, height])
        keep = (boxes_np[:, 2] - boxes_np[:, 0] >= 1) & (boxes_np[:, 3] - boxes_np[:, 1] >= 1)
        if not keep.any():
            continue
        anns = [a for a, k in zip(anns, keep, strict=True) if k]
        boxes = torch.as_tensor(boxes_np[keep], dtype=torch.float32, device=device)
        labeller.set_image(image)
        teacher_masks, _ = labeller.predict(boxes.cpu().numpy())
        pixels = torch.from_numpy(np.array(image)).to(device)  # a writable copy
        pixels = pixels.permute(2, 0, 1)[None].float() / 255.0
        teacher_full = torch.from_numpy(teacher_masks).to(device)
        verified = [mask_supervision and bool(seg) for _, _, seg in anns]
        full = torch.zeros((len(anns), height, width), dtype=torch.bool)
        for i, (_, _, seg) in enumerate(anns):
            if verified[i]:
                full[i] = torch.from_numpy(_decode_segmentation(seg, height, width, source=path))
        full = full.to(device)
        generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
        for view in range(views):
            if view == 0:
                windows, grid_boxes = crop_geometry(boxes, cfg)
            else:
                windows, grid_boxes = jitter_windows(
                    boxes, view_margin, cfg.margin_px, size, generator
                )
            rgb = sample_crops(pixels, windows, size)
            parts["rgb"].append((rgb * 255).round().clamp(0, 255).to(torch.uint8).cpu())
            parts["grid_boxes"].append(grid_boxes.cpu())
            normalised = crop_inputs(rgb, grid_boxes, torch.zeros_like(rgb[:, 0]))[:, :3]
            parts["affinity"].append(crop_affinity(normalised).half().cpu())
            soft = sample_masks(teacher_full, windows, size)
            parts["teacher"].append((soft * 255).round().to(torch.uint8).cpu())
            soft = sample_masks(full, windows, size)
            parts["masks"].append((soft * 255).round().to(torch.uint8).cpu())
            parts["has_mask"].append(torch.tensor(verified, dtype=torch.bool))
            parts["image_index"].append(torch.full((len(anns),), index, dtype=torch.long))
    if not parts["rgb"]:
        raise DatasetError(f"{dataset.annotation_path}: no usable boxes to train on")
    return CropBank(
        **{k: torch.cat(v) for k, v in parts.items()},
        class_names=list(dataset.class_names),
        key=_fingerprint(dataset, cfg, mask_supervision, teacher, (views, view_margin, seed)),
    )


def load_or_build_crop_bank(
    dataset: CocoBoxDataset,
    cfg: CropLearnerConfig,
    path: str | os.PathLike,
    *,
    mask_supervision: bool = False,
    teacher=None,
    views: int = 1,
    view_margin: float = 0.0,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> CropBank:
    """The bank at `path` if it was built from this dataset, geometry, teacher and views, else a
    new one (saved there atomically). `teacher`, `views`: see build_crop_bank."""
    path = Path(path)
    key = _fingerprint(dataset, cfg, mask_supervision, teacher, (views, view_margin, seed))
    if path.is_file():
        stored = torch.load(path, weights_only=True)
        if stored.get("key") == key:
            return CropBank(**stored)
    bank = build_crop_bank(
        dataset,
        cfg,
        mask_supervision=mask_supervision,
        teacher=teacher,
        views=views,
        view_margin=view_margin,
        seed=seed,
        device=device,
        progress=progress,
    )
    with atomic_write(path, "wb") as handle:
        torch.save(dict(vars(bank)), handle)
    return bank
