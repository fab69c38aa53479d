"""The hand-picked cases every bench/fuzz.py run starts with, per kind: the crashes the random draws
found (each fixed), and their kin."""

import json
import math

from bench.fuzz_inputs import ALIAS_BOMB

_IMG = {"id": 1, "file_name": "a.png", "width": 32, "height": 24}


_ANN = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 10, 10]}


def _doc(img: dict | None = None, ann: dict | None = None, **top) -> bytes:
    doc = {"images": [{**_IMG, **(img or {})}], "annotations": [{**_ANN, **(ann or {})}],
           "categories": [{"id": 1, "name": "x"}], **top}  # fmt: skip
    return json.dumps(doc, allow_nan=True).encode("utf-8", "surrogatepass")


_COCO_EXAMPLES = [
    _doc(),
    _doc({"file_name": "a\udcff.png"}),
    _doc(**{"\udcff": 1}),
    _doc({"width": math.inf}),
    _doc({"width": math.nan}),
    _doc({"width": 10**30}),
    _doc({"height": 1e300}),
    _doc({"id": 10**30}, {"image_id": 10**30}),
    _doc({"file_name": "/etc/passwd"}),
    _doc({"file_name": "../images/a.png"}),
    _doc({"file_name": "a.png\x00x"}),
    _doc(ann={"segmentation": {"size": [10**6, 10**6], "counts": [10**12]}}),
    _doc(ann={"segmentation": {"size": [24, 32], "counts": [-5, 30]}}),
    _doc(ann={"segmentation": {"size": [24, 32], "counts": "zzzzzzzz1"}}),
    _doc(ann={"segmentation": {"size": [24.5, 32], "counts": [3, 4]}}),
    _doc(ann={"segmentation": [[0, 0, 1e300, 0, 5, 5]]}),
    _doc(ann={"segmentation": [[0, 0, 5, 5]]}),
    _doc(ann={"segmentation": [[]]}),
    _doc(ann={"segmentation": [[1, 1, math.nan, 2, 3, 3]]}),
    _doc(ann={"bbox": [math.nan, 1, 2, 3]}),
    b'{"images": [], "annotations": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}",
    b'{"images": [' + b"[" * 100_000 + b"]" * 100_000 + b'], "annotations": []}',
    b"\xef\xbb\xbf" + _doc(),
    b"",
]


EXAMPLES = {  # kind -> cases every run starts with (crashes the random draws found, and kin)
    "coco segment": _COCO_EXAMPLES,
    "coco import": _COCO_EXAMPLES,
    "image bytes": [
        {"format": "PNG", "edits": [("size", 2**31 - 1, 65535)]},
        {"format": "JPEG", "edits": [("size", 2**32 - 1, 65535)]},
        {"format": "JPEG-EXIF", "edits": [("cut", 300)]},
        {"format": "TIFF", "edits": [("flip", 3, 1)]},
    ],
    "yaml config": [
        ALIAS_BOMB.encode(),
        b"[" * 5000,
        b"\xe9mage_size: 3\n",
        b'lr: "\\U0110364B"',
        b"\xef\xbb\xbfiterations: 3\n",
        b"model: {backbone: {x: 1}}",
        b"learner: crop\nmodel.levels: 713861431\n",  # 2 ** (levels - 1) never ends
    ],  # fmt: skip
    "checkpoint": [
        {"base": "crop-learner", "fields": [("set", "model_config", 3)]},
        {"base": "crop-learner", "fields": [("set", "class_names", "abc")]},
        {"base": "crop-learner", "fields": [("config", "width", "R")]},
        {"base": "crop-learner", "fields": [("config", "levels", 0)]},
        {"base": "crop-learner", "fields": [("config", "crop_size", 10**9)]},
        {"base": "crop-learner", "fields": [("set", "kind", "other")]},
        {"base": "crop-learner", "fields": [("config", "margin_px", 3.47e77)]},  # segfaulted
        {"base": "crop-learner", "fields": [("config", "width", 256), ("config", "levels", 8)]},
        {"base": "box2mask-t", "fields": [("config", "hidden_dim", -1)]},
        {"base": "box2mask-t", "fields": [("set", "model_state", [])]},
        {"base": "box2mask-t", "bytes": [("cut", 5000)]},
    ],
    "segment exit": [_COCO_EXAMPLES[0], _COCO_EXAMPLES[3], b"{"],
}
