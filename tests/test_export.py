"""COCO (RLE) export/import round trip to the pixel, and YOLO segmentation export."""

import json

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

from annotator.export import export_coco, import_coco
from annotator.store import Label, SQLiteStore
from annotator.yolo_export import export_yolo, label_file, mask_to_yolo_polygon
from box2mask.io.rle import decode_rle, encode_rle
from train.label_export import is_eval_image

H, W = 60, 80


def _ring_and_dot():
    """A square with a hole, plus a separate dot: holes and several parts."""
    m = np.zeros((H, W), bool)
    m[10:40, 10:40] = True
    m[20:30, 20:30] = False  # hole
    m[45:50, 60:70] = True  # second part
    return m


def _bar():
    m = np.zeros((H, W), bool)
    m[5:15, 50:75] = True
    return m


@pytest.fixture
def store(tmp_path):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    for name in ("one.png", "sub/two.jpg", "empty.png"):
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(images / name)
    s = SQLiteStore(tmp_path / "labels.sqlite", images)
    yield s
    s.close()


def _coco_input():
    return {
        "images": [
            {"id": 7, "file_name": "one.png", "width": W, "height": H},
            {"id": 9, "file_name": "elsewhere/two.jpg", "width": W, "height": H},  # by base name
            {"id": 11, "file_name": "missing.png", "width": W, "height": H},
        ],
        "categories": [{"id": 3, "name": "donut"}, {"id": 5, "name": "bar"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 7,
                "category_id": 3,
                "bbox": [10, 10, 60, 40],
                "segmentation": encode_rle(_ring_and_dot()),
                "iscrowd": 0,
            },
            {
                "id": 2,
                "image_id": 9,
                "category_id": 5,
                "bbox": [50, 5, 25, 10],
                "segmentation": [[50, 5, 75, 5, 75, 15, 50, 15]],  # a polygon
            },
            {"id": 3, "image_id": 9, "category_id": 3, "bbox": [1.5, 2.5, 10, 8]},  # box only
            {"id": 4, "image_id": 11, "category_id": 3, "bbox": [0, 0, 5, 5]},
        ],
    }


def test_coco_import_export_round_trip_to_the_pixel(store, tmp_path):
    src = tmp_path / "in.json"
    src.write_text(json.dumps(_coco_input()))
    assert import_coco(store, src) == {"added": 3, "skipped": 1}
    (donut,) = store.labels("one.png")
    assert donut.source == "human" and not donut.verified and donut.box_xyxy == [10, 10, 70, 50]
    assert np.array_equal(decode_rle(donut.mask_rle), _ring_and_dot())
    polygon_mask = decode_rle(store.labels("sub/two.jpg")[0].mask_rle)
    assert polygon_mask[6:14, 51:74].all() and polygon_mask.sum() <= 26 * 11

    out = export_coco(store, tmp_path / "out.json", images_dir=store.images_dir, classes=["bar"])
    assert json.loads((tmp_path / "out.json").read_text()) == out
    assert [c["name"] for c in out["categories"]] == ["bar", "donut"]
    assert [i["file_name"] for i in out["images"]] == ["empty.png", "one.png", "sub/two.jpg"]
    assert all((i["height"], i["width"]) == (H, W) for i in out["images"])
    anns = {a["box2mask"]["label_id"]: a for a in out["annotations"]}
    a = anns[donut.id]
    assert a["bbox"] == [10, 10, 60, 40] and a["area"] == _ring_and_dot().sum()
    assert np.array_equal(decode_rle(a["segmentation"]), _ring_and_dot())
    box_only = next(x for x in out["annotations"] if "segmentation" not in x)
    assert box_only["bbox"] == [1.5, 2.5, 10, 8] and box_only["area"] == 80

    # export -> import into a fresh store -> export again: identical annotations and metadata
    store.update(Label(**{**store.labels("one.png")[0].__dict__, "verified": True}))
    first = export_coco(store, tmp_path / "a.json", images_dir=store.images_dir)
    fresh = SQLiteStore(tmp_path / "fresh.sqlite", store.images_dir)
    assert import_coco(fresh, tmp_path / "a.json") == {"added": 3, "skipped": 0}
    second = export_coco(fresh, tmp_path / "b.json", images_dir=store.images_dir)
    fresh.close()
    strip = [{k: v for k, v in x.items() if k != "box2mask"} for x in first["annotations"]]
    assert strip == [{k: v for k, v in x.items() if k != "box2mask"} for x in second["annotations"]]
    assert [x["box2mask"]["verified"] for x in second["annotations"]] == [True, False, False]
    verified = export_coco(store, tmp_path / "v.json", store.images_dir, verified_only=True)
    assert len(verified["annotations"]) == 1


def test_coco_import_rejects_a_file_that_is_not_coco(store, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="no 'annotations' list"):
        import_coco(store, bad)


def _rasterize(line: str, h=H, w=W):
    values = line.split()
    xy = np.array(values[1:], dtype=np.float64).reshape(-1, 2) * [w, h]
    out = np.zeros((h, w), np.uint8)
    cv2.fillPoly(out, [np.round(xy).astype(np.int32)], 1)
    return int(values[0]), out.astype(bool)


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_yolo_segmentation_export(store, tmp_path):
    common = dict(source="model", model_version="v", verified=True)
    store.add(
        Label(
            image="one.png",
            box_xyxy=[50, 5, 75, 15],
            class_name="bar",
            mask_rle=encode_rle(_bar()),
            **common,
        )
    )
    store.add(
        Label(
            image="one.png",
            box_xyxy=[10, 10, 70, 50],
            class_name="donut",
            mask_rle=encode_rle(_ring_and_dot()),
            **common,
        )
    )
    store.add(
        Label(image="sub/two.jpg", box_xyxy=[1, 1, 9, 9], class_name="bar", mask_rle=None, **common)
    )
    store.set_image_done("empty.png", True)  # checked, nothing in it: a background image
    images = tmp_path / "images"
    out = tmp_path / "yolo"
    stats = export_yolo(store, out, images, classes=["donut", "bar"])
    split = {key: "val" if is_eval_image(key) else "train" for key in ("one.png", "empty.png")}
    assert stats == {
        "images": 2,  # sub/two.jpg is left out: its only label has no mask
        "train_images": list(split.values()).count("train"),
        "val_images": list(split.values()).count("val"),
        "objects": 2,
        "skipped_no_mask": 1,
    }
    assert (out / "classes.txt").read_text() == "donut\nbar\n"
    for key, part in split.items():  # Ultralytics' layout: images/<split>/ beside labels/<split>/
        link = out / "images" / part / key
        assert link.is_symlink() and link.resolve() == (images / key).resolve()
    assert (images / "one.png").is_file() and not (images / "one.png").is_symlink()  # not moved
    assert not list(out.rglob("two.*"))
    assert (out / "labels" / split["empty.png"] / "empty.txt").read_text() == ""
    label_file = out / "labels" / split["one.png"] / "one.txt"
    bar_line, donut_line = label_file.read_text().splitlines()
    cls, raster = _rasterize(bar_line)
    assert cls == 1 and _iou(raster, _bar()) > 0.85
    cls, raster = _rasterize(donut_line)  # both parts in one polygon (the hole is filled)
    filled = _ring_and_dot()
    filled[20:30, 20:30] = True
    assert cls == 0 and _iou(raster, filled) > 0.85 and raster[45:50, 60:70].mean() > 0.5
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["path"] == str(out.resolve()) and data["names"] == {0: "donut", 1: "bar"}
    assert data["train"] == "images/train"
    assert data["val"] == ("images/val" if stats["val_images"] else "images/train")

    # no val share: Ultralytics still needs a val set, the train images stand in
    stats = export_yolo(store, out, images, classes=["donut", "bar"], val_fraction=0.0)
    assert (stats["train_images"], stats["val_images"]) == (2, 0)
    assert yaml.safe_load((out / "data.yaml").read_text())["val"] == "images/train"
    # all in val, then exported again: the previous export is replaced, nothing stale is left
    stats = export_yolo(store, out, images, classes=["donut", "bar"], val_fraction=1.0)
    assert (stats["train_images"], stats["val_images"]) == (0, 2)
    assert sorted(p.relative_to(out).as_posix() for p in (out / "labels").rglob("*.txt")) == [
        "labels/val/empty.txt",
        "labels/val/one.txt",
    ]
    assert yaml.safe_load((out / "data.yaml").read_text())["val"] == "images/val"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_label_files_sit_where_ultralytics_looks():
    """The last `images/` folder of the image's path becomes `labels/`, extension `.txt`."""
    assert label_file("images/train/a.png") == "labels/train/a.txt"
    assert label_file("images/val/sub/b.c.jpg") == "labels/val/sub/b.c.txt"
    assert label_file("images/train/x/images/b.jpg") == "images/train/x/labels/b.txt"


def test_polygon_of_an_empty_mask_is_empty():
    assert mask_to_yolo_polygon(np.zeros((5, 5), bool)).shape == (0, 2)


@pytest.mark.slow
def test_yolo_export_loads_in_ultralytics(tmp_path):
    """Ultralytics' own loader (check_det_dataset + YOLODataset) reads every image and object.

    Ultralytics pulls opencv-python, so it never goes into the project's venv: point
    B2M_ULTRALYTICS_PYTHON at a throwaway venv's python (bench/yolo_ultralytics.py says how)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    python = os.environ.get("B2M_ULTRALYTICS_PYTHON")
    if not python:
        pytest.skip("B2M_ULTRALYTICS_PYTHON (a Python with ultralytics) is not set")
    images = tmp_path / "images"
    (images / "sub" / "images").mkdir(parents=True)
    store = SQLiteStore(tmp_path / "labels.sqlite", images)
    keys = [f"im{i}.png" for i in range(8)] + ["sub/im8.jpg", "sub/images/im9.jpg"]
    for i, key in enumerate(keys):
        Image.fromarray(np.full((H, W, 3), 40 + 20 * i, np.uint8)).save(images / key)
        for j, mask in enumerate((_ring_and_dot(), _bar())[: 1 + i % 2]):
            store.add(
                Label(image=key, box_xyxy=[0, 0, W, H], class_name=("donut", "bar")[j],
                      mask_rle=encode_rle(mask), source="human", model_version=None,
                      verified=True)
            )  # fmt: skip
    stats = export_yolo(store, tmp_path / "yolo", images, classes=["donut", "bar"])
    store.close()
    assert stats["train_images"] and stats["val_images"] and stats["objects"] == 15
    checker = Path(__file__).parents[1] / "bench" / "yolo_ultralytics.py"
    result = subprocess.run(
        [python, str(checker), str(tmp_path / "yolo" / "data.yaml")]
        + ["--expect-images", "10", "--expect-objects", "15"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| train |" in result.stdout and sys.executable != python
