"""A classical teacher for box-supervised training: the embedded level-set default's masks.

With `teacher: levelset` every training box without a human mask gets the mask the embedded
default (`box2mask.levelset.segmenter.LevelSetSegmenter`) proposes for it, used as a down-weighted
mask target next to the box losses (a teacher the network can outgrow: its weight is below a human mask's). The
masks are computed once per run at the images' original size and kept as COCO RLE in one JSON
file in the run directory, so a resumed run reuses them.
"""

import json
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from box2mask.io.atomic_write import write_text_atomic
from box2mask.io.image_io import load_image
from box2mask.io.rle import encode_rle

__all__ = ["TEACHERS", "compute_teacher_masks", "load_or_compute_teacher_masks"]

TEACHERS = ("", "levelset")  # the values of TrainConfig.teacher


def compute_teacher_masks(
    dataset, *, skip_masked: bool = False, device: str = "cpu", progress: bool = True
) -> dict[int, list]:
    """{image_id: [RLE or None for each box of `dataset.boxes_by_image[image_id]`]}.

    dataset: a train.dataset.CocoBoxDataset (its un-augmented boxes, in file pixels).
    skip_masked: no teacher mask for boxes whose annotation has a `segmentation` (they get the
        human mask under mixed supervision); None in their place.
    """
    from box2mask.levelset.segmenter import LevelSetSegmenter

    teacher = LevelSetSegmenter(device=device)
    out = {}
    for info in tqdm(dataset.images, desc="teacher masks", disable=not progress):
        anns = dataset.boxes_by_image[info["id"]]
        wanted = [i for i, (_, _, seg) in enumerate(anns) if not (skip_masked and seg)]
        out[info["id"]] = [None] * len(anns)
        if not wanted:
            continue
        teacher.set_image(load_image(dataset.image_dir / info["file_name"]))
        boxes = np.array([anns[i][0] for i in wanted], np.float32)
        masks, _ = teacher.predict(boxes)
        for i, mask in zip(wanted, masks, strict=True):
            out[info["id"]][i] = encode_rle(mask)
    return out


def load_or_compute_teacher_masks(
    dataset,
    path: str | os.PathLike,
    *,
    skip_masked: bool,
    is_main: bool = True,
    barrier=None,
    progress: bool = True,
) -> dict[int, list]:
    """The teacher masks of `dataset`, read from `path` (JSON) or computed and written there
    atomically by the main process; other processes wait at `barrier()` and read the file."""
    path = Path(path)
    if is_main and not path.is_file():
        masks = compute_teacher_masks(dataset, skip_masked=skip_masked, progress=progress)
        write_text_atomic(path, json.dumps({str(k): v for k, v in masks.items()}))
    if barrier is not None:
        barrier()
    stored = json.loads(path.read_text())
    masks = {int(k): v for k, v in stored.items()}
    for info in dataset.images:  # a file from another dataset would silently misalign masks
        anns = dataset.boxes_by_image[info["id"]]
        if len(masks.get(info["id"], [])) != len(anns):
            raise ValueError(
                f"{path}: teacher masks do not match the dataset (image {info['file_name']} has "
                f"{len(anns)} boxes); delete the file to recompute it"
            )
    return masks
