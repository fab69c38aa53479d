"""Labels out of and into a LabelStore: COCO instances JSON (RLE masks), COCO import (YOLO
segmentation: annotator/yolo_export.py).

Works on any LabelStore (SQLite or FiftyOne). Files are written to a temporary name and renamed,
so a failure halfway never leaves a truncated export.
"""

import json
from pathlib import Path

from annotator.coco_import import read_coco_labels
from annotator.polygons import mask_to_polygons
from annotator.store import LabelStore
from box2mask.io.atomic_write import write_text_atomic
from box2mask.io.rle import decode_rle, rle_area
from box2mask.labels.coco import labelled_image_size
from box2mask.ops.box_ops import xyxy_to_xywh

__all__ = ["class_names", "export_coco", "import_coco"]


def class_names(store: LabelStore, images: list[str], classes) -> list[str]:
    """The given classes first (in order), then any other stored class name, sorted."""
    names = list(classes or [])
    seen = {x.class_name for image in images for x in store.labels(image)}
    return names + sorted(seen - set(names))


def export_coco(
    store: LabelStore,
    out_path,
    images_dir=None,
    classes=None,
    verified_only: bool = False,
    polygons: bool = False,
) -> dict:
    """Write a COCO instances file: every label as an annotation with bbox, RLE segmentation
    (or, with `polygons=True`, COCO polygons: one per part, holes joined by zero-width cuts,
    exact to the pixel when read back with pycocotools; see annotator/polygons.py).

    Labels without a mask get a bbox and no `segmentation`. Each annotation keeps its store
    metadata under "box2mask" (source, model_version, verified, revision, label_id). Returns the
    COCO dict.
    """
    images = store.list_images()
    names = class_names(store, images, classes)
    coco = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)],
    }
    for image_id, image in enumerate(images, start=1):
        labels = [x for x in store.labels(image) if x.verified or not verified_only]
        height, width = labelled_image_size(labels, Path(images_dir or ".") / image)
        coco["images"].append(
            {"id": image_id, "file_name": image, "width": width, "height": height}
        )
        for label in labels:
            bbox = [float(v) for v in xyxy_to_xywh(label.box_xyxy)]
            ann = {
                "id": len(coco["annotations"]) + 1,
                "image_id": image_id,
                "category_id": names.index(label.class_name) + 1,
                "bbox": bbox,
                "area": float(bbox[2] * bbox[3]),
                "iscrowd": 0,
            }
            if label.mask_rle is not None:
                ann["segmentation"] = (
                    mask_to_polygons(decode_rle(label.mask_rle)) if polygons else label.mask_rle
                )
                ann["area"] = float(rle_area(label.mask_rle))
            if label.score is not None:
                ann["score"] = float(label.score)
            ann["box2mask"] = {
                "source": label.source,
                "model_version": label.model_version,
                "verified": label.verified,
                "revision": label.revision,
                "label_id": label.id,
            }
            coco["annotations"].append(ann)
    write_text_atomic(out_path, json.dumps(coco))
    return coco


def import_coco(store: LabelStore, coco_path, default_source: str = "human") -> dict:
    """Add every annotation of a COCO file to the store (boxes, and masks where present).

    Images match a store image by `file_name` (or else by its base name when that is unique).
    Metadata written by `export_coco` ("box2mask" field) is restored; otherwise labels get
    `default_source` and verified=False. The whole file is checked first
    (`annotator.coco_import`): a bad record raises ValueError naming the file and the record,
    and nothing is added. Returns counts: added, and skipped (image not found).
    """
    labels, skipped = read_coco_labels(
        coco_path,
        store.list_images(),
        default_source=default_source,
        images_dir=getattr(store, "images_dir", None),
    )
    for label in labels:
        store.add(label)
    return {"added": len(labels), "skipped": skipped}
