"""Bad COCO files, boxes and checkpoints given to `box2mask segment`: clear errors, nothing lost."""

import json
import math
import os
import pickle

import numpy as np
import pytest
import torch

from box2mask.io.rle import decode_rle
from tests.test_segment import make_dataset, run_cli


def _segment(tmp_path, capsys, coco=None, *extra):
    """Run segment on the tiny dataset (optionally rewritten as `coco`); returns (code, err, out)."""
    boxes = tmp_path / "boxes.json"
    if coco is not None:
        boxes.write_text(json.dumps(coco))
    out = tmp_path / "out.json"
    code, err = run_cli(tmp_path, boxes, out, capsys, *extra)
    result = json.loads(out.read_text()) if out.exists() else None
    return code, err, result


def test_coco_record_problems_are_reported_and_nothing_is_lost(tmp_path, capsys):
    coco = json.loads(make_dataset(tmp_path, n_images=4).read_text())
    anns = {a["id"]: a for a in coco["annotations"]}
    anns[1000]["category_id"] = 77  # unknown category: a warning, segmented anyway
    anns[1001]["id"] = 1000  # duplicate annotation id: a warning, both kept and segmented
    del coco["images"][1]["width"]  # image 101 is unusable: boxes 1002, 1003 fail
    coco["images"][3]["id"] = 102  # two images with id 102: boxes 1004, 1005 fail
    # ... and no image has id 103 any more: boxes 1006, 1007 fail
    coco["annotations"].append(42)  # not an object
    coco["annotations"].append({"id": 2000, "bbox": [1, 1, 5, 5]})  # no image_id
    code, err, out = _segment(tmp_path, capsys, coco)
    assert code == 1
    assert "warning: annotation id 1000 appears 2 times (all kept)" in err
    assert "warning: annotation 1000: category_id 77 is not in categories" in err
    assert "image record #1 (id 101) lacks 'width'" in err
    assert "image id 102 is used by 2 image records" in err
    assert "annotation 1006: image_id 103 is not in images" in err
    assert "annotation #8: annotation is not a JSON object" in err
    assert "annotation 2000: annotation lacks 'image_id'" in err
    assert "8 annotations failed" in err

    assert len(out["annotations"]) == len(coco["annotations"])  # nothing lost
    assert out["annotations"][-2] == 42  # kept as it was
    errors = {a["id"]: a.get("box2mask_error") for a in out["annotations"] if a != 42}
    assert errors[1002] == errors[1003] == "image record #1 (id 101) lacks 'width'"
    assert errors[1004] == errors[1005] == "image id 102 is used by 2 image records"
    assert errors[1006] == errors[1007] == "image_id 103 is not in images"
    assert errors[2000] == "annotation lacks 'image_id'"
    segmented = [a for a in out["annotations"] if a != 42 and "segmentation" in a]
    assert [a["id"] for a in segmented] == [1000, 1000] and errors[1000] is None
    assert {a["category_id"] for a in segmented} == {77, 2}


def test_inf_box_one_pixel_box_and_malformed_bboxes(tmp_path, capsys):
    coco = json.loads(make_dataset(tmp_path, n_images=1).read_text())
    anns = {a["id"]: a for a in coco["annotations"]}
    anns[1000]["bbox"] = [10, 5, math.inf, 10]  # written as Infinity: not strict JSON
    anns[1001]["bbox"] = [20, 6, 1, 12]  # 1 px wide: fine
    coco["annotations"] += [
        {"id": 7, "image_id": 100, "bbox": [3, 3, 0, 4]},  # zero width
        {"id": 8, "image_id": 100},  # no bbox
        {"id": 9, "image_id": 100, "bbox": [1, 2, 3]},
        {"id": 10, "image_id": 100, "bbox": "1 2 3 4"},
    ]
    code, err, out = _segment(tmp_path, capsys, coco)
    assert code == 1
    got = {x["id"]: x for x in out["annotations"]}
    assert "annotation 1000: bad bbox: box has a non-finite coordinate" in err
    assert "annotation 7: bad bbox: box is inverted or has zero area" in err
    assert "annotation 8: bad bbox: it has no 'bbox'" in err
    assert "annotation 9: bad bbox: bbox must be 4 numbers" in err
    assert "annotation 10: bad bbox" in err
    mask = decode_rle(got[1001]["segmentation"])
    assert not mask[:, :20].any() and not mask[:, 21:].any()  # nothing outside the 1 px column
    assert all("box2mask_error" in got[i] for i in (1000, 7, 8, 9, 10))


def test_one_pixel_box_is_not_empty(tmp_path, capsys):
    coco = json.loads(make_dataset(tmp_path, n_images=1).read_text())
    coco["annotations"][0]["bbox"] = [20, 6, 1, 12]
    code, err, out = _segment(tmp_path, capsys, coco)
    assert code == 0, err
    mask = decode_rle(out["annotations"][0]["segmentation"])
    assert np.flatnonzero(mask.any(axis=0)).tolist() == [20]  # never worse than the box: not empty


@pytest.mark.parametrize(
    "text, words",
    [
        ('[{"images": []}]', "the top level must be a JSON object"),
        ('{"images": []}', "'annotations' is missing or is not a list"),
        ('{"images": [], "annotations": {}}', "'annotations' is missing or is not a list"),
        ('{"images": [], "annotations": [', "malformed JSON"),
        ("", "malformed JSON"),
        ('{"images": [], "annotations": []} trailing', "malformed JSON"),
    ],
)
def test_unusable_coco_files_exit_2_naming_the_file(tmp_path, capsys, text, words):
    make_dataset(tmp_path, n_images=1)
    (tmp_path / "boxes.json").write_text(text)
    code, err, out = _segment(tmp_path, capsys)
    assert code == 2 and out is None
    assert f"{tmp_path / 'boxes.json'}: " in err and words in err


class _RunsCode:
    """Unpickling this would run a shell command: a checkpoint must never be unpickled like that."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _checkpoints(tmp_path):
    """name -> (path, words the error must contain)."""
    good = {"format": "box2mask-checkpoint", "format_version": 1, "model_state": {}}
    torch.save(good, tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    torch.save({**good, "format_version": 99}, tmp_path / "v99.pt")
    torch.save({"weight": torch.zeros(3)}, tmp_path / "state_dict.pt")
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"model_state": _RunsCode(tmp_path / "pwned")}, f)
    return {
        "truncated": (tmp_path / "truncated.pt", "not a readable box2mask checkpoint"),
        "other format version": (tmp_path / "v99.pt", "format version 99"),
        "plain state dict": (tmp_path / "state_dict.pt", "not a box2mask checkpoint"),
        "random bytes": (tmp_path / "random.pt", "not a readable box2mask checkpoint"),
        "pickle with code": (tmp_path / "evil.pt", "not a readable box2mask checkpoint"),
        "missing": (tmp_path / "nope.pt", "no such file"),
    }


def test_bad_checkpoints_are_refused_naming_the_file(tmp_path, capsys):
    pytest.importorskip("box2mask.io.checkpoint")
    make_dataset(tmp_path, n_images=1)
    for name, (path, words) in _checkpoints(tmp_path).items():
        code, err, out = _segment(tmp_path, capsys, None, "--checkpoint", str(path))
        assert code == 2 and out is None, name
        assert str(path) in err and words in err, (name, err)
    assert not (tmp_path / "pwned").exists()  # the pickled command never ran


def test_missing_folders_exit_2(tmp_path, capsys):
    make_dataset(tmp_path, n_images=1)
    code = run_cli(tmp_path, tmp_path / "boxes.json", tmp_path / "no" / "out.json", capsys)
    assert code[0] == 2 and "its folder does not exist" in code[1]
    code = run_cli(tmp_path, tmp_path / "nope.json", tmp_path / "out.json", capsys)
    assert code[0] == 2 and "nope.json: no such file" in code[1]


def test_leftover_work_of_another_input_is_not_mixed_in(tmp_path, capsys):
    boxes = make_dataset(tmp_path, n_images=2)
    partial = tmp_path / "out.json.partial"
    coco = json.loads(boxes.read_text())
    coco["annotations"] = coco["annotations"][:1]
    code, _, first = _segment(tmp_path, capsys, coco)
    assert code == 0 and len(first["annotations"]) == 1
    # fake a killed run of this first input, then run on a changed input
    partial.mkdir()
    (partial / "index.sqlite").write_bytes(b"garbage from an older run")
    coco["annotations"] = json.loads(make_dataset(tmp_path, n_images=2).read_text())["annotations"]
    code, err, second = _segment(tmp_path, capsys, coco)
    assert code == 0 and "starting over" in err
    assert len(second["annotations"]) == 4 and all(
        "segmentation" in a for a in second["annotations"]
    )
