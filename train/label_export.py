"""Labels of a label store -> the two COCO datasets one retraining round needs.

Boxes of every labelled image become box supervision (`train/`). Masks that a person verified
(source "human" or "human-corrected", verified flag set) on the held-out images become the
evaluation set (`eval/`). Which images are held out is decided by a hash of the image key, so
the split is fixed and only grows as people label more: numbers stay comparable across rounds.
With `mask_supervision=True`, verified masks of the other (training) images are also written into
`train/` (mixed supervision: a mask loss on those instances, box losses on the rest).
"""

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from box2mask.io.atomic_write import write_text_atomic
from box2mask.io.rle import rle_area
from box2mask.labels.coco import labelled_image_size

__all__ = ["ExportSummary", "is_eval_image", "export_training_data"]

HUMAN_SOURCES = ("human", "human-corrected")


@dataclass
class ExportSummary:
    train_dir: Path  # dataset folder (annotations.json + images/): every labelled image's boxes
    eval_dir: Path  # dataset folder: held-out images with their human-verified masks
    snapshot_id: str  # sha256 of both files' content: identifies the data of a round
    train_images: int  # images with at least one box in train/
    train_boxes: int  # boxes in train/
    mask_supervised: int  # of those, boxes that also carry a verified mask
    eval_images: int  # images in eval/
    eval_masks: int  # verified masks in eval/


def is_eval_image(image_key: str, eval_fraction: float = 0.2) -> bool:
    """True when `image_key` falls in the held-out evaluation bucket (stable across runs)."""
    digest = hashlib.sha256(image_key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < eval_fraction


def _xyxy_to_bbox(box) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


def export_training_data(
    store,
    *,
    images_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    class_names: list[str] | None = None,
    eval_fraction: float = 0.2,
    mask_supervision: bool = False,
) -> ExportSummary:
    """Write two dataset folders, `out_dir/train` and `out_dir/eval`, each with a COCO
    `annotations.json` (file_name relative to `images_dir`) and `images`, a link to `images_dir`,
    so both read like any other dataset folder (`box2mask train --data`, bench/quality.py).

    Args:
        store: a LabelStore (box2mask.labels); image keys are paths relative to `images_dir`
            (absolute keys, as in the FiftyOne backend, are kept as they are).
        images_dir: folder the image keys are relative to.
        out_dir: where the two files are written (created).
        class_names: category order to use (e.g. the current model's); classes found in the store
            but not listed are appended.
        eval_fraction: share of images held out for evaluation (by hash of the image key).
        mask_supervision: also put verified masks of training images into train/.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(class_names or [])
    coco = {
        split: {"images": [], "annotations": [], "categories": []} for split in ("train", "eval")
    }
    counts = dict(train_images=0, train_boxes=0, mask_supervised=0, eval_images=0, eval_masks=0)
    for image_id, key in enumerate(store.list_images(), start=1):
        labels = store.labels(key)
        if not labels:
            continue
        for label in labels:
            if label.class_name not in names:
                names.append(label.class_name)
        held_out = is_eval_image(key, eval_fraction)
        verified = [
            lb for lb in labels if lb.verified and lb.source in HUMAN_SOURCES and lb.mask_rle
        ]
        height, width = labelled_image_size(labels, Path(images_dir) / key)
        entry = {"id": image_id, "file_name": key, "width": width, "height": height}
        train_anns = coco["train"]["annotations"]
        coco["train"]["images"].append({**entry, "split": "train"})
        counts["train_images"] += 1
        for label in labels:
            ann = {
                "id": len(train_anns) + 1,
                "image_id": image_id,
                "bbox": _xyxy_to_bbox(label.box_xyxy),
                "category_id": names.index(label.class_name) + 1,
                "iscrowd": 0,
                "area": (label.box_xyxy[2] - label.box_xyxy[0])
                * (label.box_xyxy[3] - label.box_xyxy[1]),
            }
            if mask_supervision and not held_out and label in verified:
                ann["segmentation"] = label.mask_rle
                counts["mask_supervised"] += 1
            train_anns.append(ann)
            counts["train_boxes"] += 1
        if held_out and verified:
            coco["eval"]["images"].append({**entry, "split": "val"})
            counts["eval_images"] += 1
            for label in verified:
                eval_anns = coco["eval"]["annotations"]
                eval_anns.append(
                    {
                        "id": len(eval_anns) + 1,
                        "image_id": image_id,
                        "bbox": _xyxy_to_bbox(label.box_xyxy),
                        "category_id": names.index(label.class_name) + 1,
                        "iscrowd": 0,
                        "segmentation": label.mask_rle,
                        "area": rle_area(label.mask_rle),
                    }
                )
                counts["eval_masks"] += 1
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(names)]
    digest = hashlib.sha256()
    for split in ("train", "eval"):
        coco[split]["categories"] = categories
        text = json.dumps(coco[split], sort_keys=True)
        digest.update(text.encode())
        folder = out / split
        folder.mkdir(exist_ok=True)
        write_text_atomic(folder / "annotations.json", text)
        link = folder / "images"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path(images_dir).resolve(), target_is_directory=True)
    return ExportSummary(
        train_dir=out / "train",
        eval_dir=out / "eval",
        snapshot_id=digest.hexdigest()[:16],
        **counts,
    )
