"""Reading a COCO instances file into store labels, refusing it whole when a record is bad.

`read_coco_labels` checks every record before anything is added, so an import either adds every
annotation of the file (those whose image is in the store) or nothing, with a message naming the
file and the first bad record.
"""

import json
import math
import os
from pathlib import Path

from box2mask.io.image_io import ImageLoadError, image_size
from box2mask.io.rle import decode_segmentation, encode_rle
from box2mask.labels.store import Label, check_label
from box2mask.ops.box_ops import xywh_to_xyxy

__all__ = ["read_coco_labels"]


def _load(coco_path) -> dict:
    """The COCO object of the file; ValueError naming the file when it is not one."""
    try:
        with open(coco_path, "rb") as f:
            coco = json.loads(f.read().decode("utf-8-sig"))
    except (OSError, ValueError, RecursionError) as err:  # ValueError: JSON, UTF-8
        raise ValueError(f"{coco_path}: not a readable COCO JSON file ({err})") from None
    if not isinstance(coco, dict):
        raise ValueError(f"{coco_path}: not a COCO instances file (the top level is not an object)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            raise ValueError(f"{coco_path}: not a COCO instances file (no '{key}' list)")
    return coco


def _key(value) -> str:
    """A hashable key of a JSON id (ids may be any JSON value in a hostile file)."""
    return json.dumps(value, sort_keys=True)


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _size(img: dict) -> tuple[int, int]:
    """(height, width) an image record declares; ValueError unless both are positive integers."""
    height, width = img.get("height"), img.get("width")
    if not all(_number(v) and v == int(v) and 0 < v < 2**31 for v in (height, width)):
        raise ValueError(f"its image record has no valid width/height ({width!r} x {height!r})")
    return int(height), int(width)


def _label(ann: dict, key: str, img: dict, categories: dict, default_source: str, images_dir):
    """The store label of one annotation; ValueError naming the problem."""
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox)):
        raise ValueError(f"bbox must be 4 finite numbers [x, y, w, h], got {bbox!r}")
    category = ann.get("category_id")
    if _key(category) not in categories:
        raise ValueError(f"category_id {category!r} is not in categories")
    meta = ann.get("box2mask") if isinstance(ann.get("box2mask"), dict) else {}
    score, version = ann.get("score"), meta.get("model_version")
    if score is not None and not _number(score):
        raise ValueError(f"score must be a finite number, got {score!r}")
    if version is not None and not isinstance(version, str):
        raise ValueError(f"box2mask.model_version must be a string, got {version!r}")
    rle = None
    if ann.get("segmentation"):
        height, width = _size(img)
        if images_dir is not None:
            try:
                on_disk = image_size(Path(images_dir) / key)
            except ImageLoadError:
                on_disk = (height, width)  # not readable now: the record's size is all we have
            if on_disk != (height, width):
                raise ValueError(
                    f"its image record says {width}x{height}, the file {key} is "
                    f"{on_disk[1]}x{on_disk[0]}"
                )
        try:
            rle = encode_rle(decode_segmentation(ann["segmentation"], height, width))
        except (ValueError, TypeError, OverflowError) as err:
            raise ValueError(f"bad segmentation: {err}") from None
    label = Label(
        image=key,
        box_xyxy=[float(v) for v in xywh_to_xyxy(bbox)],
        class_name=categories[_key(category)],
        mask_rle=rle,
        source=meta.get("source", default_source),
        model_version=version,
        verified=bool(meta.get("verified", False)),
        score=None if score is None else float(score),
    )
    check_label(label)
    return label


def read_coco_labels(coco_path, known: list[str], default_source: str = "human", images_dir=None):
    """Every annotation of a COCO file as a Label of a store image, checked; (labels, skipped).

    Images match a store key of `known` by `file_name`, or else by its base name when that is
    unique; annotations of other images are skipped (counted). Metadata written by `export_coco`
    ("box2mask" field) is restored, otherwise labels get `default_source` and verified=False.
    `images_dir`: where the store's images are, to check that a mask's size is the file's.
    Raises ValueError naming the file and the first bad record; then nothing is returned.
    """
    coco = _load(coco_path)
    by_name: dict[str, list[str]] = {}
    for key in known:
        by_name.setdefault(Path(key).name, []).append(key)
    images = {}
    for i, img in enumerate(coco["images"]):
        name = img.get("file_name") if isinstance(img, dict) else None
        if not isinstance(name, str) or "id" not in img:
            raise ValueError(f"{coco_path}: image record #{i} needs an 'id' and a 'file_name'")
        match = name if name in known else None
        if match is None and len(by_name.get(os.path.basename(name), [])) == 1:
            match = by_name[os.path.basename(name)][0]
        images[_key(img["id"])] = (match, img)
    categories = {}
    for i, cat in enumerate(coco["categories"]):
        if not (isinstance(cat, dict) and "id" in cat and isinstance(cat.get("name"), str)):
            raise ValueError(f"{coco_path}: category #{i} needs an 'id' and a 'name' string")
        categories[_key(cat["id"])] = cat["name"]
    labels, skipped = [], 0
    for i, ann in enumerate(coco["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann:
            raise ValueError(f"{coco_path}: annotation #{i} is not an object with an 'image_id'")
        key, img = images.get(_key(ann["image_id"]), (None, None))
        if key is None:
            skipped += 1
            continue
        try:
            labels.append(_label(ann, key, img, categories, default_source, images_dir))
        except ValueError as err:
            name = f"annotation {ann['id']!r}" if "id" in ann else f"annotation #{i}"
            raise ValueError(f"{coco_path}: {name}: {err}") from None
    return labels, skipped
