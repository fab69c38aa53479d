"""FiftyOne integration on a real, temporary (non-persistent) dataset of two small images.

apply_model with a prompt field, resumable apply, the FiftyOne LabelStore (revisions, stale
writes, review tags), mask evaluation with per-sample IoU, SQLite <-> FiftyOne round trips and the
`box2mask fiftyone` command. Skipped only when FiftyOne's database cannot start.
"""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotator.fiftyone.convert import paste_mask, pixel_window
from annotator.store import Label, SQLiteStore
from box2mask.io.rle import decode_rle, encode_rle
from box2mask.ops.metrics import mask_iou


def _scene(height, width, rects, seed):
    """A noisy dark image with bright objects; rects: (y0, y1, x0, x1, hole or None)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(20, 60, size=(height, width, 3)).astype(np.uint8)
    masks = []
    for y0, y1, x0, x1, hole in rects:
        m = np.zeros((height, width), dtype=bool)
        m[y0:y1, x0:x1] = True
        if hole is not None:
            hy0, hy1, hx0, hx1 = hole
            m[hy0:hy1, hx0:hx1] = False
        image[m] = (220, 180, 40)
        masks.append(m)
    return image, masks


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """FiftyOne (imported once) and two images with ground-truth masks on disk."""
    fo = pytest.importorskip("fiftyone")
    try:
        probe = fo.Dataset()
        probe.delete()
    except Exception as err:  # noqa: BLE001 - any failure to start the database
        pytest.skip(f"FiftyOne's database (mongod) cannot start here: {err}")
    root = tmp_path_factory.mktemp("fo_images")
    scenes = {
        # a block with a hole, and a block touching the right border
        "a.png": _scene(48, 64, [(8, 32, 6, 34, (16, 22, 14, 24)), (4, 20, 48, 64, None)], 0),
        # a block touching the bottom border
        "sub/b.png": _scene(40, 40, [(22, 40, 10, 30, None)], 1),
    }
    for name, (image, _) in scenes.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / name)
    return fo, root, scenes


def _gt_dataset(fo, root, scenes):
    """A non-persistent dataset whose `ground_truth` holds tight boxes and box-cropped masks."""
    dataset = fo.Dataset()
    samples = []
    for name, (image, masks) in scenes.items():
        height, width = image.shape[:2]
        dets = []
        for m in masks:
            ys, xs = np.nonzero(m)
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            dets.append(
                fo.Detection(
                    label="block",
                    bounding_box=[x0 / width, y0 / height, (x1 - x0) / width, (y1 - y0) / height],
                    mask=m[y0:y1, x0:x1],
                )
            )
        samples.append(
            fo.Sample(filepath=str(root / name), ground_truth=fo.Detections(detections=dets))
        )
    dataset.add_samples(samples, progress=False)
    dataset.compute_metadata(progress=False)
    return dataset


@pytest.fixture(scope="module")
def applied(env):
    """The ground-truth dataset after apply_model with the embedded default (run once)."""
    from annotator.fiftyone.model import Box2MaskFiftyOneModel

    fo, root, scenes = env
    dataset = _gt_dataset(fo, root, scenes)
    gt_before = [
        (d.id, d.bounding_box, d.mask.copy()) for s in dataset for d in s.ground_truth.detections
    ]
    model = Box2MaskFiftyOneModel(checkpoint=None, device="cpu")
    dataset.apply_model(model, label_field="box2mask", prompt_field="ground_truth", progress=False)
    yield dataset, model, gt_before
    dataset.delete()


def test_apply_model_masks_every_prompt_box_and_keeps_ground_truth(env, applied):
    fo, root, scenes = env
    dataset, model, gt_before = applied
    gt_after = [d for s in dataset for d in s.ground_truth.detections]
    assert len(gt_after) == len(gt_before) == 3
    for (old_id, old_box, old_mask), new in zip(gt_before, gt_after, strict=True):
        assert (new.id, new.bounding_box) == (old_id, old_box)
        assert np.array_equal(new.mask, old_mask)
    for sample in dataset:
        image, masks = scenes[sample.filepath[len(str(root)) + 1 :]]
        height, width = image.shape[:2]
        prompts, preds = sample.ground_truth.detections, sample.box2mask.detections
        assert len(preds) == len(prompts)
        model.predictor.set_image(image)
        for prompt, pred, gt_mask in zip(prompts, preds, masks, strict=True):
            x0, y0, x1, y1 = pixel_window(prompt.bounding_box, width, height)
            assert pred.mask.shape == (y1 - y0, x1 - x0)  # box-cropped, FiftyOne convention
            assert pred.label == "block" and pred.prompt_id == prompt.id
            assert pred.source == "model" and pred.model_version == model.model_version
            assert 0.0 <= pred.quality <= pred.confidence <= 1.0  # review-queue score
            full = paste_mask(pred.mask, pred.bounding_box, width, height)
            direct, _ = model.predictor.predict(np.array([[x0, y0, x1, y1]], dtype=float))
            assert np.array_equal(full, direct[0])  # exactly the predictor's full-size mask
            box_only = np.zeros_like(gt_mask)
            box_only[y0:y1, x0:x1] = True
            assert mask_iou(full, gt_mask) >= max(0.8, mask_iou(box_only, gt_mask))


def _store_label(image, box=(6.0, 8.0, 34.0, 32.0), **kw):
    mask = np.zeros((48, 64), dtype=bool)
    mask[8:32, 6:34] = True
    mask[16:22, 14:24] = False  # a hole
    base = dict(
        image=image,
        box_xyxy=list(box),
        class_name="block",
        mask_rle=encode_rle(mask),
        source="model",
        model_version="levelset-default-1",
        verified=False,
        score=0.75,
    )
    base.update(kw)
    return Label(**base)


def test_store_keys_errors_and_other_fields(env):
    """FiftyOne specifics (the LabelStore contract itself is tests/test_store_contract.py):
    keys are absolute filepaths, errors name the field and dataset, other fields stay."""
    from annotator.fiftyone.store import FiftyOneStore

    fo, root, scenes = env
    dataset = _gt_dataset(fo, root, scenes)
    try:
        store = FiftyOneStore(dataset, label_field="reviewed")
        image = str(root / "a.png")
        assert store.list_images() == sorted([image, str(root / "sub/b.png")])
        added = store.add(_store_label(image))
        assert store.get(added.id) == added and added.image == image
        store.delete(added.id, revision=1)
        with pytest.raises(KeyError, match="not in field 'reviewed'"):
            store.get(added.id)
        with pytest.raises(KeyError, match="not in the FiftyOne dataset"):
            store.labels(str(root / "missing.png"))
        assert dataset.first().ground_truth is not None  # other fields untouched
    finally:
        dataset.delete()


def test_review_tags_from_the_app_read_back_as_verified(env):
    from annotator.fiftyone.store import FiftyOneStore

    fo, root, scenes = env
    dataset = _gt_dataset(fo, root, scenes)
    try:
        store = FiftyOneStore(dataset, label_field="reviewed")
        image = str(root / "a.png")
        added = store.add(_store_label(image))
        # a reviewer tags the label in the App (same effect as the App's tagging)
        dataset.select_labels(ids=[added.id]).tag_labels("verified", label_fields="reviewed")
        assert store.get(added.id).verified
        dataset.select_labels(ids=[added.id]).tag_labels("needs_fix", label_fields="reviewed")
        assert not store.get(added.id).verified  # needs_fix wins
        fixed = store.update(replace(store.get(added.id), verified=True, source="human-corrected"))
        sample = dataset[image]
        sample.reload()
        assert sample.reviewed.detections[0].tags == ["verified"]
        assert store.get(added.id) == fixed
        # pixels outside the box cannot be stored by FiftyOne: dropped (with a warning)
        outside = np.zeros((48, 64), dtype=bool)
        outside[8:32, 6:40] = True
        clipped = store.add(_store_label(image, mask_rle=encode_rle(outside)))
        assert decode_rle(store.get(clipped.id).mask_rle).sum() == 24 * 28
    finally:
        dataset.delete()


def test_evaluate_writes_per_sample_iou_that_matches_fiftyone(env, applied):
    from annotator.fiftyone.apply import evaluate_masks

    fo, _, _ = env
    dataset, _, _ = applied
    view = dataset.select_fields(["ground_truth", "box2mask"])
    # spoil one prediction of sample b: an empty mask (IoU 0) must put b first when sorting
    worst = dataset.skip(1).first()
    worst.box2mask.detections[0].mask = np.zeros_like(worst.box2mask.detections[0].mask)
    worst.save()
    summary = evaluate_masks(view, pred_field="box2mask", gt_field="ground_truth", key="ev")
    assert summary["pairs"] == 3 and 0.0 <= summary["map"] <= 1.0
    ious = []
    for sample in dataset:
        width, height = sample.metadata.width, sample.metadata.height
        gts = {d.id: d for d in sample.ground_truth.detections}
        for det in sample.box2mask.detections:
            gt = gts[det.prompt_id]
            expected = mask_iou(
                paste_mask(det.mask, det.bounding_box, width, height),
                paste_mask(gt.mask, gt.bounding_box, width, height),
            )
            assert det.ev_mask_iou == pytest.approx(expected)
            if det.ev == "tp":  # FiftyOne's own mask IoU agrees: same pixel placement
                assert det.ev_iou == pytest.approx(expected)
            ious.append(expected)
    assert summary["mean_iou"] == pytest.approx(np.mean(ious))
    assert dataset.sort_by("ev_mean_iou").first().id == worst.id
    assert worst.reload() is None and worst.ev_mean_iou == pytest.approx(0.0)


def test_cli_evaluate_reports_and_names_missing_masks(env, applied, capsys):
    from box2mask.cli import main

    dataset, _, _ = applied
    argv = ["fiftyone", "evaluate", "--dataset", dataset.name, "--eval-key", "cli"]
    assert main(argv + ["--pred", "box2mask", "--gt", "ground_truth"]) == 0
    out = capsys.readouterr().out
    assert "mean mask IoU" in out and "sort_by('cli_mean_iou')" in out
    assert dataset.exists("cli_mean_iou") is not None and len(dataset.exists("cli_mean_iou")) == 2
    dataset.clone_sample_field("ground_truth", "boxes_only")
    dataset.set_values("boxes_only.detections.mask", [[None] * 2, [None]])
    assert main(argv + ["--pred", "box2mask", "--gt", "boxes_only"]) == 2
    assert "'boxes_only' has no masks" in capsys.readouterr().err


def test_sqlite_fiftyone_coco_round_trips_are_lossless(env, tmp_path):
    from annotator.fiftyone.store import FiftyOneStore
    from annotator.fiftyone.transfer import copy_labels

    fo, root, scenes = env
    src = SQLiteStore(tmp_path / "src.sqlite", root)
    originals = [
        src.add(_store_label("a.png", verified=True, source="human-corrected")),
        src.add(_store_label("a.png", box=(48.0, 4.0, 64.0, 20.0), mask_rle=None, score=None)),
        src.add(
            _store_label(
                "sub/b.png",
                box=(10.0, 22.0, 30.0, 40.0),  # touches the bottom border
                class_name="other",
                model_version=None,
                mask_rle=encode_rle(np.pad(np.ones((18, 20), bool), ((22, 0), (10, 10)))),
            )
        ),
    ]
    src.set_image_done("sub/b.png", True)
    dataset = fo.Dataset()
    try:
        fo_store = FiftyOneStore(dataset, label_field="imported")
        assert copy_labels(src, fo_store, images_dir=root, to_fiftyone=True) == 3
        assert fo_store.image_status(str(root / "sub/b.png")) == "done"
        back = SQLiteStore(tmp_path / "back.sqlite", root)
        assert copy_labels(fo_store, back, images_dir=root, to_fiftyone=False) == 3
        strip = lambda lab: replace(lab, id=None, revision=0)  # noqa: E731
        for key in ("a.png", "sub/b.png"):
            assert [strip(x) for x in back.labels(key)] == [
                strip(x) for x in originals if x.image == key
            ]
            assert back.image_status(key) == src.image_status(key)
        # FiftyOne -> COCO -> FiftyOne through the command line, with a class list
        from box2mask.cli import main

        fo_store.classes = ["other", "block", "unused"]
        coco = tmp_path / "out" / "labels.json"
        common = ["--dataset", dataset.name, "--coco", str(coco), "--images", str(root)]
        assert main(["fiftyone", "export", "--field", "imported", *common]) == 0
        assert main(["fiftyone", "import", "--field", "from_coco", *common]) == 0
        from_coco = FiftyOneStore(dataset, label_field="from_coco")
        assert from_coco.classes == ["other", "block", "unused"]
        for key in fo_store.list_images():
            assert [strip(x) for x in from_coco.labels(key)] == [
                strip(x) for x in fo_store.labels(key)
            ]
        # a second import leaves labelled images alone unless asked to replace them
        assert copy_labels(src, fo_store, images_dir=root, to_fiftyone=True) == 0
        assert (
            copy_labels(src, fo_store, images_dir=root, to_fiftyone=True, replace_existing=True)
            == 3
        )
        assert len(fo_store.labels(str(root / "a.png"))) == 2
        back.close()
    finally:
        src.close()
        dataset.delete()


def test_cli_apply_is_resumable_and_never_writes_the_boxes_field(env, capsys):
    from box2mask.cli import main

    fo, root, scenes = env
    dataset = _gt_dataset(fo, root, scenes)
    try:
        argv = ["fiftyone", "apply", "--dataset", dataset.name, "--boxes", "ground_truth"]
        assert main(argv + ["--out", "masks"]) == 0
        assert "2 samples segmented now, 0 already done, 0 failed" in capsys.readouterr().out
        kept = dataset.first()
        kept_ids = [d.id for d in kept.masks.detections]
        killed = dataset.skip(1).first()
        killed.masks = None  # as if the run had been killed before this sample was saved
        killed.save()
        assert main(argv + ["--out", "masks"]) == 0
        assert "1 samples segmented now, 1 already done, 0 failed" in capsys.readouterr().out
        kept.reload()
        assert [d.id for d in kept.masks.detections] == kept_ids  # not recomputed
        assert len(dataset.exists("masks")) == 2
        assert main(argv + ["--out", "ground_truth"]) == 2
        assert "never overwrites" in capsys.readouterr().err
        bad = ["fiftyone", "apply", "--dataset", "no-such-ds", "--boxes", "a", "--out", "b"]
        assert main(bad) == 2
        assert "no FiftyOne dataset named 'no-such-ds'" in capsys.readouterr().err
    finally:
        dataset.delete()


def test_annotator_session_on_the_fiftyone_store_writes_back_to_the_dataset(env, applied):
    """`box2mask annotate --fiftyone NAME`'s path: the annotation session over the FiftyOne store."""
    from annotator.fiftyone.store import open_for_annotation
    from annotator.predictor_service import PredictorService
    from annotator.session import AnnotationSession

    fo, root, _ = env
    dataset, model, _ = applied
    store, images_dir, classes = open_for_annotation(dataset.name, label_field="box2mask")
    assert images_dir == root and classes == ["block"]
    session = AnnotationSession(store, images_dir, PredictorService(model.predictor), classes)
    image = str(root / "a.png")
    session.open_image(image)
    assert len(session.labels_shown()) == 2  # the masks apply_model proposed
    session.accept(0)  # the person accepts the first one ...
    boxes = session.annotator_boxes() + [
        {"xmin": 36, "ymin": 30, "xmax": 46, "ymax": 44, "label": "block"}
    ]
    assert session.on_boxes_changed(boxes)  # ... and draws a new box
    sample = dataset[image]
    sample.reload()
    dets = sample.box2mask.detections
    assert len(dets) == 3 and dets[0].tags == ["verified"] and dets[0].revision == 2
    assert pixel_window(dets[2].bounding_box, 64, 48) == (36, 30, 46, 44)
    assert dets[2].mask.shape == (14, 10) and dets[2].source == "model"


def test_plugin_operator_segments_the_current_view(env, monkeypatch):
    import fiftyone.operators as foo

    fo, root, scenes = env
    plugin_dir = Path(__file__).resolve().parents[1] / "annotator" / "fiftyone" / "plugin"
    monkeypatch.setattr(fo.config, "plugins_dir", str(plugin_dir))
    dataset = _gt_dataset(fo, root, scenes)
    try:
        uri = "@box2mask/box2mask/segment_boxes"
        params = {"boxes_field": "ground_truth", "out_field": "from_plugin"}
        view = dataset.limit(1)  # the App's current view

        def execute():
            # in a thread of its own: FiftyOne runs operators on an asyncio loop, and a loop left
            # behind in this thread by another test (Playwright's) would swallow the call
            with ThreadPoolExecutor(1) as pool:
                ctx = {"dataset": dataset, "view": view, "params": params}
                return pool.submit(foo.execute_operator, uri, ctx=ctx).result()

        run = execute()
        assert run.result["done"] == 1 and run.result["failed"] == 0
        assert len(dataset.exists("from_plugin")) == 1
        assert len(dataset.first().from_plugin.detections) == 2
        again = execute()
        assert (again.result["done"], again.result["skipped"]) == (0, 1)
    finally:
        dataset.delete()
