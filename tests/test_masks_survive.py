"""A mask with two holes and three parts (one of them an island inside a hole) survives every
path to the pixel: SQLite store, COCO RLE export/import, COCO polygons, FiftyOne. YOLO-seg cannot
hold holes: its documented loss (holes filled, parts joined by 1 px bridges) is tested as such."""

import json
from dataclasses import replace

import cv2
import numpy as np
import pytest
from PIL import Image

from annotator.export import export_coco, import_coco
from annotator.polygons import mask_to_polygons, polygons_to_mask
from annotator.store import Label, SQLiteStore
from annotator.yolo_export import export_yolo
from box2mask.io.rle import decode_rle, encode_rle
from box2mask.ops.mask_morphology import fill_holes

H, W = 60, 80


def _mask():
    """Part 1: a block with two holes; part 2: a disc; part 3: an island inside hole 1."""
    m = np.zeros((H, W), dtype=bool)
    m[5:45, 4:40] = True
    m[10:30, 9:25] = False  # hole 1 (with the island below inside it)
    m[34:40, 30:36] = False  # hole 2
    m[17:22, 14:19] = True  # part 3: the island
    ys, xs = np.mgrid[:H, :W]
    m |= (xs - 60) ** 2 + (ys - 40) ** 2 <= 11**2  # part 2: a disc
    return m


def _box(mask):
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def test_the_mask_has_two_holes_and_three_parts():
    m = _mask().astype(np.uint8)
    parts, _ = cv2.connectedComponents(m, connectivity=8)
    holes, _ = cv2.connectedComponents(1 - m, connectivity=4)
    assert parts - 1 == 3 and holes - 1 == 3  # background labels: outside, hole 1, hole 2


@pytest.fixture
def store(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(images / "a.png")
    s = SQLiteStore(tmp_path / "labels.sqlite", images)
    s.add(
        Label(
            image="a.png",
            box_xyxy=_box(_mask()),
            class_name="thing",
            mask_rle=encode_rle(_mask()),
            source="human",
            model_version=None,
            verified=True,
        )
    )
    yield s
    s.close()


def test_sqlite_store_and_coco_rle_round_trip(store, tmp_path):
    reopened = SQLiteStore(store.path, store.images_dir)
    assert np.array_equal(decode_rle(reopened.labels("a.png")[0].mask_rle), _mask())
    coco = export_coco(store, tmp_path / "out.json")
    ann = json.loads((tmp_path / "out.json").read_text())["annotations"][0]
    assert np.array_equal(decode_rle(ann["segmentation"]), _mask())
    assert ann["area"] == _mask().sum() and len(coco["annotations"]) == 1
    fresh = SQLiteStore(tmp_path / "fresh.sqlite", store.images_dir)
    assert import_coco(fresh, tmp_path / "out.json")["added"] == 1
    assert np.array_equal(decode_rle(fresh.labels("a.png")[0].mask_rle), _mask())


def test_coco_polygon_export_and_import_round_trip(store, tmp_path):
    export_coco(store, tmp_path / "poly.json", polygons=True)
    ann = json.loads((tmp_path / "poly.json").read_text())["annotations"][0]
    assert isinstance(ann["segmentation"], list) and len(ann["segmentation"]) == 3
    fresh = SQLiteStore(tmp_path / "fresh-poly.sqlite", store.images_dir)
    assert import_coco(fresh, tmp_path / "poly.json")["added"] == 1
    assert np.array_equal(decode_rle(fresh.labels("a.png")[0].mask_rle), _mask())
    fresh.close()


def test_coco_polygons_are_exact_at_tolerance_zero(tmp_path):
    polygons = mask_to_polygons(_mask())
    assert len(polygons) == 3  # one per part; holes are bridged into their part
    path = tmp_path / "poly.json"
    path.write_text(json.dumps(polygons))  # through JSON, as a COCO file holds them
    assert np.array_equal(polygons_to_mask(json.loads(path.read_text()), H, W), _mask())
    assert mask_to_polygons(np.zeros((H, W), bool)) == []


def test_coco_polygons_round_trip_random_shapes_to_the_pixel():
    rng = np.random.default_rng(0)
    for _ in range(20):
        blobs = cv2.GaussianBlur(rng.random((48, 64)), (0, 0), 2.0) > 0.5
        assert np.array_equal(polygons_to_mask(mask_to_polygons(blobs), 48, 64), blobs)


def test_simplified_polygons_stay_within_their_tolerance():
    tolerance = 1.0
    mask = _mask()
    back = polygons_to_mask(mask_to_polygons(mask, tolerance_px=tolerance), H, W)
    iou = (back & mask).sum() / (back | mask).sum()
    assert iou >= 0.95
    # every changed pixel lies within tolerance + 1 px of the mask's boundary
    edge = (mask ^ cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)) | (
        cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~mask
    )
    dist = cv2.distanceTransform((~edge).astype(np.uint8), cv2.DIST_L2, 5)
    assert dist[back ^ mask].max() <= tolerance + 1


def test_yolo_seg_keeps_parts_and_loses_holes_as_documented(store, tmp_path):
    """YOLO-seg has one polygon per object and no holes: read back (cv2.fillPoly, as Ultralytics
    rasterises it), the mask equals the mask with its holes filled, plus the pixels on the
    polygon's own edges (the zero-width bridges between parts become 1 px lines)."""
    export_yolo(store, tmp_path / "yolo")
    (label_file,) = (tmp_path / "yolo" / "labels").rglob("a.txt")  # labels/<train|val>/a.txt
    line = label_file.read_text().split()
    assert line[0] == "0"
    xy = np.array(line[1:], dtype=np.float64).reshape(-1, 2) * [W, H]
    points = np.round(xy).astype(np.int32)
    read = np.zeros((H, W), np.uint8)
    cv2.fillPoly(read, [points], 1)
    edges = np.zeros((H, W), np.uint8)
    cv2.polylines(edges, [points], isClosed=True, color=1)
    import torch

    filled = fill_holes(torch.from_numpy(_mask())[None])[0].numpy()
    read = read.astype(bool)
    assert (read & _mask()).sum() == _mask().sum()  # every part is there
    assert read[~_mask()].sum() > 0 and read[filled & ~_mask()].all()  # holes are lost
    assert not (read ^ filled)[~edges.astype(bool)].any()  # nothing else differs


@pytest.fixture(scope="module")
def fo():
    fo = pytest.importorskip("fiftyone")
    try:
        fo.Dataset().delete()
    except Exception as err:  # noqa: BLE001 - any failure to start the database
        pytest.skip(f"FiftyOne's database (mongod) cannot start here: {err}")
    return fo


def test_fiftyone_store_round_trip(fo, store, tmp_path):
    from annotator.fiftyone.store import FiftyOneStore
    from annotator.fiftyone.transfer import copy_labels

    dataset = fo.Dataset()
    try:
        fo_store = FiftyOneStore(dataset, label_field="survive")
        assert copy_labels(store, fo_store, images_dir=store.images_dir, to_fiftyone=True) == 1
        (key,) = fo_store.list_images()
        assert np.array_equal(decode_rle(fo_store.labels(key)[0].mask_rle), _mask())
        det = dataset.first()["survive"].detections[0]
        x0, y0, x1, y1 = (int(v) for v in _box(_mask()))
        assert np.array_equal(det.mask.astype(bool), _mask()[y0:y1, x0:x1])  # the stored crop
        back = SQLiteStore(tmp_path / "back.sqlite", store.images_dir)
        assert copy_labels(fo_store, back, images_dir=store.images_dir, to_fiftyone=False) == 1
        strip = lambda lab: replace(lab, id=None, revision=0)  # noqa: E731
        assert [strip(x) for x in back.labels("a.png")] == [strip(x) for x in store.labels("a.png")]
    finally:
        dataset.delete()
