"""Pieces every COCO export of store labels shares (the annotator's export, the retraining data)."""

import os
from pathlib import Path

from box2mask.io.image_io import image_size

__all__ = ["labelled_image_size"]


def labelled_image_size(labels, path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of a labelled image: a stored mask's RLE size when a label has one, else
    the file's header with its EXIF rotation applied (the size the annotator showed and labelled)."""
    for label in labels:
        if label.mask_rle is not None:
            height, width = label.mask_rle["size"]
            return int(height), int(width)
    return image_size(Path(path))
