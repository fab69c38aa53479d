"""Clicks in files: `box2mask_points` in `segment`'s COCO input and on FiftyOne prompts take the
annotator's path (`predict(box, points=, point_labels=)`), and bad clicks are named."""

import json

import numpy as np
import pytest
from PIL import Image

from box2mask.cli import main as cli_main
from box2mask.io.rle import decode_rle, encode_rle
from box2mask.segment.points import PointsError, parse_points
from tests.disc_scenes import iou

H, W = 80, 100
BOX_XYWH = [20.0, 20.0, 60.0, 40.0]  # red x < 50, blue x >= 50 (tests/test_clicks.py's scene)
BOX = np.array([[20.0, 20.0, 80.0, 60.0]])


def _two_regions():
    image = np.full((H, W, 3), 128, dtype=np.uint8)
    image[20:60, 20:50] = (220, 30, 30)
    image[20:60, 50:80] = (30, 40, 220)
    red = np.zeros((H, W), dtype=bool)
    red[20:60, 20:50] = True
    return image, red


def test_parse_points_pixels_and_normalized_agree():
    points, labels = parse_points([[65.5, 40.5, 1], [30, 30, 0]], width=W, height=H)
    assert points.tolist() == [[65.5, 40.5], [30.0, 30.0]] and labels.tolist() == [1, 0]
    same, same_labels = parse_points(
        [[0.655, 40.5 / 80, 1], [0.3, 0.375, 0]], width=W, height=H, normalized=True
    )
    np.testing.assert_allclose(same, points)
    assert same_labels.tolist() == [1, 0]
    # a click on the far border is kept inside the last pixel
    assert parse_points([[100, 80, 1]], width=W, height=H)[0].tolist() == [[99.5, 79.5]]


@pytest.mark.parametrize(
    "value, problem",
    [
        ([], "non-empty list"),
        ("10,10,1", "non-empty list"),
        ([[10, 10]], r"\[0\] must be \[x, y, label\]"),
        ([[10, 10, 1], [float("nan"), 3, 0]], r"\[1\]: x and y must be finite"),
        ([[10, "3", 1]], "must be numbers"),
        ([[10, 10, 2]], "label must be 1"),
        ([[10, 10, True]], "label must be 1"),
        ([[-1, 10, 1]], "outside"),
        ([[10, 81, 1]], "outside"),
        ([[1, 1, 1]] * 101, "at most 100"),
    ],
)
def test_bad_clicks_are_named(value, problem):
    with pytest.raises(PointsError, match=problem):
        parse_points(value, width=W, height=H)


def _write(tmp_path, anns):
    image, red = _two_regions()
    (tmp_path / "images").mkdir()
    Image.fromarray(image).save(tmp_path / "images" / "a.png")
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": W, "height": H}],
        "annotations": [{"image_id": 1, "category_id": 1, "bbox": BOX_XYWH, **a} for a in anns],
        "categories": [{"id": 1, "name": "thing"}],
    }
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps(coco))
    return path, image, red


def _segment(tmp_path, boxes, *extra):
    out = tmp_path / "out.json"
    code = cli_main(
        ["segment", "--images", str(tmp_path / "images"), "--boxes", str(boxes)]
        + ["--out", str(out), "--no-progress", *extra]
    )
    return code, {a["id"]: a for a in json.loads(out.read_text())["annotations"]}


def _mask(ann):
    return decode_rle(ann["segmentation"]).astype(bool)


def test_segment_clicks_take_the_predictor_path_and_correct_the_given_mask(tmp_path):
    from box2mask.levelset.segmenter import LevelSetSegmenter

    image, red = _two_regions()
    top_red = red.copy()
    top_red[40:] = False  # a given mask that misses the lower red and all the blue
    top_rle = encode_rle(top_red)
    clicks = [[65.5, 40.5, 0]]  # background on the blue half
    anns = [
        {"id": 1},  # box only
        {"id": 2, "box2mask_points": clicks},  # box + clicks
        {"id": 3, "box2mask_points": [[65.5, 40.5, 1]], "segmentation": top_rle},  # correct a mask
        {"id": 4, "box2mask_points": [[65.5, 40.5, 7]]},  # a bad click: named, the rest goes on
    ]
    boxes, image, red = _write(tmp_path, anns)
    code, out = _segment(tmp_path, boxes, "--refine-existing")
    assert code == 1  # one annotation failed
    assert "box2mask_points[0]: label must be 1" in out[4]["box2mask_error"]
    assert "segmentation" not in out[4]

    seg = LevelSetSegmenter()
    seg.set_image(image)
    points, labels = np.array([[65.5, 40.5]]), np.array([0])
    direct = seg.predict(BOX, points=points, point_labels=labels)[0][0]
    assert (_mask(out[2]) == direct).all()  # the same masks as the annotator's path
    assert out[2]["box2mask_points"] == clicks  # the clicks stay in the record
    assert iou(_mask(out[2]), red) > 0.9  # the negative click removed the blue half
    assert not (_mask(out[1]) == _mask(out[2])).all()  # the clicks did something
    corrected = seg.predict(
        BOX, points=points, point_labels=np.array([1]), init_masks=top_red[None]
    )[0][0]
    assert (_mask(out[3]) == corrected).all()  # started from the given mask
    assert _mask(out[3])[20:60, 50:80].mean() > 0.9  # the positive click added the blue half
    assert not _mask(out[3])[45:60, 20:45].any()  # and left the given mask alone beyond the edge


def test_segment_clicks_need_a_predictor_that_takes_them(tmp_path):
    from box2mask.segment.image import segment_image

    class BoxesOnly:
        def set_image(self, image):
            pass

        def predict(self, boxes):
            return np.ones((len(boxes), H, W), bool), np.ones(len(boxes))

    image, _ = _two_regions()
    anns = [
        (0, {"id": 5, "bbox": BOX_XYWH, "box2mask_points": [[30, 30, 1]]}),
        (1, {"bbox": BOX_XYWH}),
    ]
    results = segment_image(BoxesOnly(), image, anns)
    assert results[0][3] == "annotation 5: BoxesOnly.predict takes no clicks (points)"
    assert results[1][3] is None and results[1][1] is not None


def test_fiftyone_prompt_clicks_take_the_predictor_path(tmp_path, caplog):
    fo = pytest.importorskip("fiftyone")
    try:
        dataset = fo.Dataset()
    except Exception as err:  # noqa: BLE001 - any failure to start the database
        pytest.skip(f"FiftyOne's database (mongod) cannot start here: {err}")
    from annotator.fiftyone.convert import paste_mask
    from annotator.fiftyone.model import Box2MaskFiftyOneModel

    image, red = _two_regions()
    Image.fromarray(image).save(tmp_path / "a.png")
    bbox = [0.2, 0.25, 0.6, 0.5]  # BOX in [0, 1] coordinates
    prompts = [
        fo.Detection(label="thing", bounding_box=bbox),
        fo.Detection(label="thing", bounding_box=bbox, box2mask_points=[[0.655, 0.50625, 0]]),
        fo.Detection(label="thing", bounding_box=bbox, box2mask_points=[[0.655, 1.5, 0]]),
    ]
    try:
        dataset.add_sample(
            fo.Sample(filepath=str(tmp_path / "a.png"), gt=fo.Detections(detections=prompts))
        )
        model = Box2MaskFiftyOneModel(checkpoint=None, device="cpu")
        with caplog.at_level("WARNING"):
            dataset.apply_model(model, label_field="pred", prompt_field="gt", progress=False)
        preds = dataset.first().pred.detections
        assert len(preds) == 2  # the prompt with a click outside the image is skipped, named
        assert "box2mask_points[0]: (0.655, 1.5) lies outside the [0, 1] image" in caplog.text
        full = [paste_mask(p.mask, p.bounding_box, W, H) for p in preds]
        model.predictor.set_image(image)
        direct = model.predictor.predict(
            BOX, points=np.array([[65.5, 40.5]]), point_labels=np.array([0])
        )[0][0]
        assert (full[1] == direct).all() and iou(full[1], red) > 0.9
        assert (full[0] == model.predictor.predict(BOX)[0][0]).all()
        assert not (full[0] == full[1]).all()
    finally:
        dataset.delete()
