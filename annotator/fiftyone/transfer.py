"""Move labels between the SQLite store, COCO files and a FiftyOne dataset, losslessly.

Everything goes through the LabelStore interface, so boxes, masks, classes, sources, scores,
verified flags and model versions survive every hop, and done flags between SQLite and FiftyOne
(COCO has no place for them). COCO files are read and written by `annotator/export.py` via a
temporary SQLite store, so their `file_name`s stay relative to the images folder. Only the image keys change: the
SQLite store and COCO files name images by their path relative to an images folder, FiftyOne by
the sample's absolute filepath. (Revisions restart at 1 in the destination: they count edits in
one store.)
"""

import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

__all__ = ["copy_labels", "coco_to_fiftyone", "fiftyone_to_coco"]


def _fiftyone_key(dst, images_dir, key: str) -> str:
    """SQLite/COCO key -> FiftyOne sample filepath (the sample is added when missing)."""
    path = Path(images_dir) / key
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image of label key {key!r} not found")
    return dst.add_image(str(path.resolve()))


def _relative_key(images_dir, filepath: str) -> str:
    """FiftyOne filepath -> key relative to the images folder (POSIX)."""
    root = Path(images_dir).resolve()
    path = Path(filepath).resolve()
    if not path.is_relative_to(root):
        raise ValueError(
            f"{filepath} is not inside the images folder {root}: pass --images with a folder "
            "that contains every image of the dataset"
        )
    return path.relative_to(root).as_posix()


def copy_labels(
    src, dst, *, images_dir, to_fiftyone: bool, replace_existing=False, images=None
) -> int:
    """Copy every image's labels and done flag from one LabelStore to another.

    Args:
        src, dst: LabelStores; the FiftyOne one is `dst` when `to_fiftyone`, else `src`.
        images_dir: the folder the SQLite keys are relative to.
        to_fiftyone: direction (decides how image keys are mapped).
        replace_existing: delete the destination's labels of an image before copying; otherwise
            images that already have labels in the destination are left alone and reported.
        images: the source image keys to copy (default: all of `src.list_images()`).
    Returns the number of labels copied. Every copied image is registered in `dst` (its done
    flag is set), so images without labels travel too.
    """
    copied, kept = 0, []
    dst_images = set(dst.list_images())
    images = src.list_images() if images is None else images
    for image in tqdm(images, desc="copying labels", unit="image"):
        if to_fiftyone:
            key = _fiftyone_key(dst, images_dir, image)
        else:
            key = _relative_key(images_dir, image)
        existing = dst.labels(key) if key in dst_images else []
        if existing and not replace_existing:
            kept.append(key)
            continue
        for old in existing:
            dst.delete(old.id, old.revision)
        for label in src.labels(image):
            dst.add(replace(label, image=key, id=None, revision=0))
            copied += 1
        dst.set_image_done(key, src.image_status(image) == "done")
    if kept:
        print(
            f"{len(kept)} images already had labels in the destination and were left unchanged "
            f"(e.g. {kept[0]}); pass --replace to overwrite them"
        )
    return copied


def coco_to_fiftyone(coco_path, fo_store, *, images_dir, replace_existing=False) -> int:
    """Import a COCO instances file (RLE or polygon masks) into a FiftyOneStore.

    The file is read by `annotator.export.import_coco` (box2mask metadata such as verified flags
    and model versions is restored) into a temporary SQLite store, then copied; the COCO
    categories become the field's class list, in category id order. Returns labels copied.
    """
    from annotator.export import import_coco
    from annotator.store import SQLiteStore

    with open(coco_path) as f:
        coco = json.load(f)
    names = [c["name"] for c in sorted(coco.get("categories", []), key=lambda c: c["id"])]
    file_names = {img["file_name"] for img in coco.get("images", [])}
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = SQLiteStore(os.path.join(tmp, "labels.sqlite"), images_dir)
        try:
            stats = import_coco(sqlite, coco_path)
            if stats["skipped"]:
                print(f"{stats['skipped']} annotations skipped: their image is not in {images_dir}")
            keys = [k for k in sqlite.list_images() if k in file_names or sqlite.labels(k)]
            copied = copy_labels(
                sqlite,
                fo_store,
                images_dir=images_dir,
                to_fiftyone=True,
                replace_existing=replace_existing,
                images=keys,
            )
        finally:
            sqlite.close()
    fo_store.classes = names + sorted(set(fo_store.classes) - set(names))
    return copied


def fiftyone_to_coco(fo_store, coco_path, *, images_dir) -> int:
    """Export a FiftyOneStore to a COCO instances file (`annotator.export.export_coco` format).

    Image `file_name`s are relative to `images_dir`; the field's class list (if any) fixes the
    category order. Returns the number of labels written.
    """
    from annotator.export import export_coco
    from annotator.store import SQLiteStore

    with tempfile.TemporaryDirectory() as tmp:
        sqlite = SQLiteStore(os.path.join(tmp, "labels.sqlite"), None)
        try:
            copy_labels(fo_store, sqlite, images_dir=images_dir, to_fiftyone=False)
            coco = export_coco(sqlite, coco_path, images_dir=images_dir, classes=fo_store.classes)
        finally:
            sqlite.close()
    return len(coco["annotations"])
