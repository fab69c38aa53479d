"""Move labels between the SQLite store, COCO files and a FiftyOne dataset, losslessly.

Everything goes through the LabelStore interface, so boxes, masks, classes, sources, scores,
verified flags, model versions and done flags survive every hop. Only the image keys change: the
SQLite store and COCO files name images by their path relative to an images folder, FiftyOne by
the sample's absolute filepath. (Revisions restart at 1 in the destination: they count edits in
one store.)
"""

import os
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

__all__ = ["copy_labels", "coco_to_store", "store_to_coco"]


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


def copy_labels(src, dst, *, images_dir, to_fiftyone: bool, replace_existing=False) -> int:
    """Copy every image's labels and done flag from one LabelStore to another.

    Args:
        src, dst: LabelStores; the FiftyOne one is `dst` when `to_fiftyone`, else `src`.
        images_dir: the folder the SQLite keys are relative to.
        to_fiftyone: direction (decides how image keys are mapped).
        replace_existing: delete the destination's labels of an image before copying; otherwise
            images that already have labels in the destination are left alone and reported.
    Returns the number of labels copied.
    """
    copied, kept = 0, []
    dst_images = set(dst.list_images())
    for image in tqdm(src.list_images(), desc="copying labels", unit="image"):
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
        if src.image_status(image) == "done":
            dst.set_image_done(key, True)
    if kept:
        print(
            f"{len(kept)} images already had labels in the destination and were left unchanged "
            f"(e.g. {kept[0]}); pass --replace to overwrite them"
        )
    return copied


def coco_to_store(coco_path, store, *, images_dir) -> int:
    """Import a COCO file (H5's format, see annotator/export.py) into `store`."""
    from annotator.export import import_coco

    return _via_sqlite(store, images_dir, lambda tmp: import_coco(tmp, coco_path), to_fo=True)


def store_to_coco(store, coco_path, *, images_dir) -> int:
    """Export `store` to a COCO file (H5's format, see annotator/export.py)."""
    from annotator.export import export_coco

    return _via_sqlite(store, images_dir, lambda tmp: export_coco(tmp, coco_path), to_fo=False)


def _via_sqlite(fo_store, images_dir, coco_step, to_fo: bool) -> int:
    """Run a COCO import/export on a temporary SQLite copy (COCO keys are relative paths)."""
    import tempfile

    from annotator.store import SQLiteStore

    with tempfile.TemporaryDirectory() as tmp:
        sqlite = SQLiteStore(os.path.join(tmp, "labels.sqlite"), images_dir)
        try:
            if to_fo:
                coco_step(sqlite)
                return copy_labels(sqlite, fo_store, images_dir=images_dir, to_fiftyone=True)
            copy_labels(fo_store, sqlite, images_dir=images_dir, to_fiftyone=False)
            coco_step(sqlite)
            return sum(len(sqlite.labels(k)) for k in sqlite.list_images())
        finally:
            sqlite.close()
