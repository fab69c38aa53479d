"""Labels of a LabelStore -> a YOLO segmentation dataset that Ultralytics loads as it is.

    out_dir/
        data.yaml                       path, train: images/train, val: images/val, names
        classes.txt                     one class name per line
        images/{train,val}/<image>      links to the user's images (copies where links fail)
        labels/{train,val}/<image>.txt  one object per line: class x1 y1 x2 y2 ... (0..1)

Ultralytics finds an image's labels by replacing the last `/images/` of its path by `/labels/`
and its extension by `.txt` (`label_file`), which is why images are linked in beside the labels;
the user's files are never moved. Train and val are split by the same image-key hash as `box2mask retrain`
(`train.label_export.is_eval_image`), so no image that retraining evaluates on is trained on.

Which images are written: those with at least one object, and those marked done with no label
at all (an image checked to hold nothing is a useful background image). An image whose labels
have no mask is left out: as an empty label file it would teach "nothing here".

The export is built in a temporary folder beside `out_dir/images` and swapped in, so a failure
halfway leaves the previous export as it was.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from annotator.export import class_names
from annotator.store import LabelStore
from box2mask.io.rle import decode_rle
from train.label_export import is_eval_image

__all__ = ["export_yolo", "label_file", "mask_to_yolo_polygon"]


def mask_to_yolo_polygon(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool mask -> one closed polygon (P, 2) of XY pixel coordinates.

    YOLO segmentation has one polygon per object, so separate parts are joined by zero-width
    bridges between their nearest points (holes cannot be represented). Empty mask -> (0, 2).
    """
    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    parts = [c.reshape(-1, 2).astype(np.float64) for c in contours if len(c) >= 3]
    if not parts:
        return np.zeros((0, 2))
    parts.sort(key=lambda p: -cv2.contourArea(p.astype(np.float32)))
    path = parts[0]
    for part in parts[1:]:
        d = ((path[:, None, :] - part[None, :, :]) ** 2).sum(-1)  # (len(path), len(part))
        i, j = np.unravel_index(np.argmin(d), d.shape)
        loop = np.roll(part, -j, axis=0)
        bridge = np.concatenate([loop, loop[:1], path[i : i + 1]])  # in, around, and back out
        path = np.concatenate([path[: i + 1], bridge, path[i + 1 :]])
    return path


def _label_lines(labels, names: list[str], stats: dict) -> list[str]:
    """One `class x1 y1 ...` line per label with a mask (coordinates / image width, height)."""
    lines = []
    for label in labels:
        mask = decode_rle(label.mask_rle) if label.mask_rle is not None else None
        poly = mask_to_yolo_polygon(mask) if mask is not None else np.zeros((0, 2))
        if len(poly) < 3:
            stats["skipped_no_mask"] += 1
            continue
        h, w = mask.shape
        coords = " ".join(f"{v:.6f}" for v in (poly / np.array([w, h])).reshape(-1))
        lines.append(f"{names.index(label.class_name)} {coords}")
    return lines


def label_file(image_file: str) -> str:
    """Where Ultralytics reads the labels of an image: the last `images/` folder of its path
    becomes `labels/` and the extension `.txt` (paths relative to the dataset folder, "/"
    separated). `images/train/a/b.jpg` -> `labels/train/a/b.txt`; an image key that holds an
    `images/` folder itself keeps Ultralytics' rule: `images/train/x/images/b.jpg` ->
    `images/train/x/labels/b.txt`."""
    head, _, tail = ("/" + image_file).rpartition("/images/")
    return f"{head}/labels/{tail}"[1:].rsplit(".", 1)[0] + ".txt"


def _link_or_copy(source: Path, target: Path) -> None:
    """`target` -> the user's `source` file: a symlink, or a copy where links are refused."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(source, target)
    except OSError:
        shutil.copy2(source, target)


def _swap_in(built: Path, out_dir: Path, names: tuple[str, ...]) -> None:
    """Replace out_dir/<name> by built/<name> for each name (old ones removed after)."""
    for name in names:
        old = out_dir / name
        if old.is_symlink() or old.is_file():
            old.unlink()
        elif old.exists():
            shutil.rmtree(old)
        os.replace(built / name, old)


def export_yolo(
    store: LabelStore,
    out_dir,
    images_dir=None,
    classes=None,
    verified_only: bool = False,
    val_fraction: float = 0.2,
) -> dict:
    """Write the YOLO segmentation dataset described in the module docstring.

    Args:
        store: the labels.
        out_dir: the dataset folder (created; its images/, labels/, data.yaml and classes.txt
            are replaced, anything else in it is left alone).
        images_dir: the folder the store's image keys are relative to (default: the store's).
        classes: class names in index order (other stored names follow, sorted).
        verified_only: only accepted labels.
        val_fraction: share of images in val, by the retrain hash split (0 puts all in train;
            an empty val then points at the train images, as Ultralytics needs a val set).
    Returns:
        {"images", "train_images", "val_images", "objects", "skipped_no_mask"}.
    """
    images_dir = images_dir if images_dir is not None else getattr(store, "images_dir", None)
    if images_dir is None:
        raise ValueError("YOLO export: the images folder is needed (to link the images in)")
    images_dir, out_dir = Path(images_dir).resolve(), Path(out_dir)
    keys = store.list_images()
    names = class_names(store, keys, classes)
    stats = {"images": 0, "train_images": 0, "val_images": 0, "objects": 0, "skipped_no_mask": 0}
    out_dir.mkdir(parents=True, exist_ok=True)
    built = Path(tempfile.mkdtemp(dir=out_dir, prefix=".yolo-export-"))
    try:
        for split in ("train", "val"):
            (built / "images" / split).mkdir(parents=True)
            (built / "labels" / split).mkdir(parents=True)
        for key in keys:
            stored = store.labels(key)
            labels = [x for x in stored if x.verified or not verified_only]
            lines = _label_lines(labels, names, stats)
            if not lines and (stored or store.image_status(key) != "done"):
                continue  # unlabelled, or objects without masks: not a background image
            split = "val" if is_eval_image(key, val_fraction) else "train"
            _link_or_copy(images_dir / key, built / "images" / split / key)
            label_path = built / label_file(f"images/{split}/{key}")
            label_path.parent.mkdir(parents=True, exist_ok=True)
            label_path.write_text("".join(f"{x}\n" for x in lines))
            stats["images"] += 1
            stats[f"{split}_images"] += 1
            stats["objects"] += len(lines)
        (built / "classes.txt").write_text("".join(f"{n}\n" for n in names))
        val = "images/val" if stats["val_images"] else "images/train"
        yaml_names = "".join(f"  {i}: {json.dumps(n)}\n" for i, n in enumerate(names))
        (built / "data.yaml").write_text(
            f"path: {json.dumps(str(out_dir.resolve()))}\n"
            f"train: images/train\nval: {val}\nnames:\n{yaml_names}"
        )
        _swap_in(built, out_dir, ("images", "labels", "classes.txt", "data.yaml"))
    finally:
        shutil.rmtree(built, ignore_errors=True)
    return stats
