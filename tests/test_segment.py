"""`box2mask segment`: the COCO contract, bad images and boxes, SIGKILL + resume, torchrun shards."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from box2mask.cli import main as cli_main
from box2mask.io.rle import decode_rle, decode_segmentation, encode_rle
from tests.torchrun_helpers import launch_env, rank_pid, torchrun_cmd


def make_dataset(folder: Path, n_images: int = 3, seed: int = 0) -> Path:
    """Tiny images (a red rectangle on noisy dark ground) and a COCO file with extra fields.

    Image i is (40 + 2i) x (56 + 4i); each has two boxes: a loose one around the rectangle and
    one on plain background. Returns the COCO file's path; images are in folder / "images".
    """
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(n_images):
        h, w = 40 + 2 * i, 56 + 4 * i
        img = rng.integers(20, 60, (h, w, 3)).astype(np.uint8)
        img[8:28, 10 + i : 36 + i] = (210, 50, 40)
        Image.fromarray(img).save(folder / "images" / f"im{i:03d}.png")
        images.append({"id": 100 + i, "file_name": f"im{i:03d}.png", "width": w, "height": h})
        anns.append(
            {
                "id": 1000 + 2 * i,
                "image_id": 100 + i,
                "category_id": 1,
                "bbox": [7 + i, 5, 32, 26],
                "area": 832,
                "iscrowd": 0,
                "note": {"who": "test", "k": [1, 2.5]},
            }
        )
        anns.append(
            {"id": 1001 + 2 * i, "image_id": 100 + i, "category_id": 2, "bbox": [40, 30, 9.5, 7]}
        )
    coco = {
        "info": {"description": "tiny test set"},
        "licenses": [],
        "images": images,
        "categories": [{"id": 1, "name": "thing"}, {"id": 2, "name": "ground"}],
        "annotations": anns[::-1],  # not grouped by image, not sorted
        "custom_key": [1, None, "x"],
    }
    path = folder / "boxes.json"
    path.write_text(json.dumps(coco))
    return path


def run_cli(tmp_path, boxes, out, capsys, *extra):
    code = cli_main(
        ["segment", "--images", str(tmp_path / "images"), "--boxes", str(boxes), "--out", str(out)]
        + ["--no-progress", *extra]
    )
    return code, capsys.readouterr().err


def test_round_trip_keeps_everything_and_writes_masks_inside_boxes(tmp_path, capsys):
    boxes = make_dataset(tmp_path)
    out = tmp_path / "out.json"
    code, err = run_cli(tmp_path, boxes, out, capsys)
    assert code == 0, err
    src, dst = json.loads(boxes.read_text()), json.loads(out.read_text())
    assert list(dst) == list(src)  # top-level keys, in order
    for key in ("info", "licenses", "images", "categories", "custom_key"):
        assert dst[key] == src[key]
    assert [a["id"] for a in dst["annotations"]] == [a["id"] for a in src["annotations"]]
    sizes = {im["id"]: (im["height"], im["width"]) for im in src["images"]}
    for a_in, a_out in zip(src["annotations"], dst["annotations"], strict=True):
        assert {k: a_out[k] for k in a_in} == a_in  # every input field unchanged
        assert set(a_out) == set(a_in) | {"segmentation", "score", "box2mask_tight_bbox"}
        assert isinstance(a_out["segmentation"]["counts"], str)
        mask = decode_rle(a_out["segmentation"])
        assert mask.shape == sizes[a_in["image_id"]]
        x, y, w, h = a_in["bbox"]
        inside = np.zeros_like(mask)
        inside[math.floor(y) : math.ceil(y + h), math.floor(x) : math.ceil(x + w)] = True
        assert mask.any() and not (mask & ~inside).any()
        # the tight box: the smallest pixel window holding the mask, beside the original bbox
        ys, xs = np.nonzero(mask)
        tight = [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
        assert a_out["box2mask_tight_bbox"] == [float(v) for v in tight]
        assert 0.0 <= a_out["score"] <= 1.0
    # the loose box around the red rectangle gets the rectangle (IoU > 0.8)
    for a_out in dst["annotations"]:
        if a_out["category_id"] == 1:
            i = a_out["image_id"] - 100
            target = np.zeros(sizes[a_out["image_id"]], bool)
            target[8:28, 10 + i : 36 + i] = True
            mask = decode_rle(a_out["segmentation"])
            assert (mask & target).sum() / (mask | target).sum() > 0.8
    assert not (tmp_path / "out.json.partial").exists()
    assert not (tmp_path / "out.json.tmp").exists()


def test_bad_images_and_boxes_are_reported_skipped_and_exit_1(tmp_path, capsys):
    boxes = make_dataset(tmp_path, n_images=5)
    coco = json.loads(boxes.read_text())
    (tmp_path / "images" / "im001.png").unlink()  # missing
    (tmp_path / "images" / "im002.png").write_text("not a png")  # not an image
    Image.new("RGB", (10, 10)).save(tmp_path / "images" / "im003.png")  # size mismatch
    by_id = {a["id"]: a for a in coco["annotations"]}
    by_id[1000]["bbox"] = [math.nan, 5, 10, 10]  # written as NaN: not strict JSON
    by_id[1001]["bbox"] = [30, 10, -5, 10]  # negative width
    by_id[1008]["bbox"] = [500, 500, 10, 10]  # outside the image
    boxes.write_text(json.dumps(coco))
    out = tmp_path / "out.json"
    code, err = run_cli(tmp_path, boxes, out, capsys)
    assert code == 1
    assert "im001.png: no such file" in err
    assert "im002.png: not an image file" in err
    assert "im003.png: image is 10x10 but the COCO record says 68x46" in err
    assert "annotation 1000: bad bbox: box has a non-finite coordinate" in err
    assert "annotation 1001: bad bbox: box is inverted" in err
    assert (
        "annotation 1008: bad bbox: box [500.0, 500.0, 510.0, 510.0] lies entirely outside" in err
    )
    assert "9 annotations failed" in err
    dst = {a["id"]: a for a in json.loads(out.read_text())["annotations"]}
    assert len(dst) == 10
    for ann_id, ann in dst.items():
        if ann_id != 1009:  # three bad images (two boxes each) and three bad boxes
            assert "segmentation" not in ann and "score" not in ann
            assert ann["box2mask_error"]
        else:
            assert "box2mask_error" not in ann and decode_rle(ann["segmentation"]).any()
    assert "im002.png: not an image file" in dst[1004]["box2mask_error"]


def test_malformed_json_writes_nothing_and_exits_2(tmp_path, capsys):
    make_dataset(tmp_path, n_images=1)
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [{"id": 1,, }]')
    out = tmp_path / "out.json"
    code, err = run_cli(tmp_path, bad, out, capsys)
    assert code == 2
    assert f"{bad}: malformed JSON" in err
    assert not out.exists() and not (tmp_path / "out.json.partial").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is absent")
def test_cuda_without_cuda_is_a_clear_error(tmp_path, capsys):
    boxes = make_dataset(tmp_path, n_images=1)
    code, err = run_cli(tmp_path, boxes, tmp_path / "out.json", capsys, "--device", "cuda")
    assert code == 2 and "CUDA is not available" in err


def test_disk_full_while_writing_keeps_the_work_and_a_rerun_finishes(tmp_path, capsys, monkeypatch):
    from box2mask.segment import index as coco_index

    boxes = make_dataset(tmp_path, n_images=2)
    out = tmp_path / "out.json"

    def disk_full(conn, tmp):
        tmp.write_text('{"images": [')
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(coco_index, "_write_stream", disk_full)
    code, err = run_cli(tmp_path, boxes, out, capsys)
    assert code == 2 and "No space left on device" in err and "rerun the same command" in err
    assert not out.exists() and not (tmp_path / "out.json.tmp").exists()
    monkeypatch.undo()
    code, err = run_cli(tmp_path, boxes, out, capsys)
    assert code == 0 and "2 images already done" in err  # nothing is segmented twice
    assert all("segmentation" in a for a in json.loads(out.read_text())["annotations"])


def _rectangle(image_index: int, shape) -> np.ndarray:
    """The red rectangle of make_dataset's image i, as a bool mask."""
    mask = np.zeros(shape, bool)
    mask[8:28, 10 + image_index : 36 + image_index] = True
    return mask


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_refine_existing_starts_from_the_given_masks_and_keeps_ids_fields_order(
    tmp_path, capsys, monkeypatch
):
    """RLE and polygon masks 3 px too large (corners cut) are refined towards the rectangle."""
    import box2mask

    boxes = make_dataset(tmp_path, n_images=2)
    coco = json.loads(boxes.read_text())
    sizes = {im["id"]: (im["height"], im["width"]) for im in coco["images"]}
    degraded = {}
    for ann in coco["annotations"]:
        if ann["category_id"] != 1:
            continue
        i = ann["image_id"] - 100
        x0, y0, x1, y1 = 10 + i - 3, 8 - 3, 36 + i + 3, 28 + 3  # grown by 3 px, an octagon
        polygon = [x0 + 4, y0, x1 - 4, y0, x1, y0 + 4, x1, y1 - 4, x1 - 4, y1, x0 + 4, y1, x0, y1 - 4, x0, y0 + 4]  # fmt: skip
        ann["segmentation"] = [[float(v) for v in polygon]]
        if i == 1:  # the second image's mask as an RLE
            ann["segmentation"] = encode_rle(
                decode_segmentation([polygon], *sizes[ann["image_id"]])
            )
        degraded[ann["id"]] = ann["segmentation"]
    boxes.write_text(json.dumps(coco))

    init_calls = []
    real_build = box2mask.build_predictor

    def recording_build(*args, **kwargs):
        predictor = real_build(*args, **kwargs)
        predict = predictor.predict

        def spy(boxes_xyxy, **options):
            init_calls.append(options.get("init_masks"))
            return predict(boxes_xyxy, **options)

        predictor.predict = spy
        return predictor

    monkeypatch.setattr(box2mask, "build_predictor", recording_build)
    out = tmp_path / "out.json"
    code, err = run_cli(tmp_path, boxes, out, capsys, "--refine-existing")
    assert code == 0, err
    # per image: one call for the plain box, one that starts from the given mask
    starts = [m for m in init_calls if m is not None]
    assert len(starts) == 2 and all(m.shape[0] == 1 for m in starts)
    dst = json.loads(out.read_text())
    assert [a["id"] for a in dst["annotations"]] == [a["id"] for a in coco["annotations"]]
    for a_in, a_out in zip(coco["annotations"], dst["annotations"], strict=True):
        assert {k: a_out[k] for k in a_in if k != "segmentation"} == {
            k: v for k, v in a_in.items() if k != "segmentation"
        }
        assert "box2mask_error" not in a_out and 0.0 <= a_out["score"] <= 1.0
        if a_in["id"] in degraded:
            shape = sizes[a_in["image_id"]]
            target = _rectangle(a_in["image_id"] - 100, shape)
            before = _iou(decode_segmentation(degraded[a_in["id"]], *shape), target)
            after = _iou(decode_rle(a_out["segmentation"]), target)
            assert after > before + 0.05, (before, after)

    # without the flag the given masks are ignored: every box is segmented from the box alone
    init_calls.clear()
    code, err = run_cli(tmp_path, boxes, tmp_path / "plain.json", capsys)
    assert code == 0, err
    assert all(m is None for m in init_calls)


def test_refine_existing_reports_a_bad_segmentation_and_a_model_that_cannot_refine(
    tmp_path, capsys
):
    from box2mask.segment.errors import SegmentError
    from box2mask.segment.image import check_refines

    boxes = make_dataset(tmp_path, n_images=1)
    coco = json.loads(boxes.read_text())
    coco["annotations"][0]["segmentation"] = [[1, 2, 3]]  # not a polygon
    boxes.write_text(json.dumps(coco))
    code, err = run_cli(tmp_path, boxes, tmp_path / "out.json", capsys, "--refine-existing")
    name = coco["annotations"][0]["id"]
    assert code == 1 and f"annotation {name}: bad segmentation" in err

    class BoxOnly:
        def predict(self, boxes_xyxy, points=None):
            raise AssertionError("not called")

    with pytest.raises(SegmentError, match="BoxOnly cannot start from a mask"):
        check_refines(BoxOnly())


def _segment_cmd(tmp_path, boxes, out):
    return [
        sys.executable, "-m", "box2mask", "segment", "--images", str(tmp_path / "images"),
        "--boxes", str(boxes), "--out", str(out), "--no-progress",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A 12-image dataset and its output from one uninterrupted single-process run."""
    folder = tmp_path_factory.mktemp("reference")
    boxes = make_dataset(folder, n_images=12)
    out = folder / "reference.json"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocesses below (OMP_NUM_THREADS=1)
    try:
        assert cli_main(_segment_cmd(folder, boxes, out)[3:]) == 0
    finally:
        torch.set_num_threads(threads)
    return folder, boxes, out


def test_sigkill_mid_run_then_rerun_gives_identical_output(reference):
    folder, boxes, reference_out = reference
    out = folder / "killed.json"
    part = folder / "killed.json.partial" / "parts" / "rank00000.jsonl"
    proc = subprocess.Popen(
        _segment_cmd(folder, boxes, out), env=launch_env(), stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if part.exists() and part.read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lines_at_kill = part.read_bytes().count(b"\n")
    assert not out.exists() and 3 <= lines_at_kill < 12  # killed mid-run

    rerun = subprocess.run(
        _segment_cmd(folder, boxes, out),
        env=launch_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert f"{lines_at_kill} images already done" in rerun.stderr
    assert out.read_bytes() == reference_out.read_bytes()
    assert not (folder / "killed.json.partial").exists()


def test_torchrun_two_processes_equal_one_process(reference):
    folder, boxes, reference_out = reference
    sharded = folder / "sharded.json"
    cmd = torchrun_cmd(2, 29500, *_segment_cmd(folder, boxes, sharded)[3:])
    result = subprocess.run(cmd, env=launch_env(), capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sharded.read_bytes() == reference_out.read_bytes()


@pytest.mark.slow
def test_killed_rank_is_redone_on_rerun(reference):
    folder, boxes, reference_out = reference
    out = folder / "rank_killed.json"
    part = folder / "rank_killed.json.partial" / "parts" / "rank00001.jsonl"
    cmd = torchrun_cmd(2, 29700, *_segment_cmd(folder, boxes, out)[3:])
    proc = subprocess.Popen(
        cmd, env=launch_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (part.exists() and part.read_bytes().count(b"\n")):
        time.sleep(0.005)
    pid = rank_pid(proc.pid, rank=1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert proc.wait(timeout=120) != 0 and not out.exists()

    rerun = subprocess.run(cmd, env=launch_env(), capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "images already done" in rerun.stderr
    assert out.read_bytes() == reference_out.read_bytes()
