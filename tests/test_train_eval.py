"""Evaluators: COCO mask AP against hand-checked cases; `box2mask eval` on a trained checkpoint."""

import json

import numpy as np
import pytest

from box2mask.io.rle import decode_rle
from tests.test_train_loop import make_shapes_dataset, tiny_config
from train.evaluate import CocoMaskAPEvaluator

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes") / "data", n_images=5)


def gt_of(data, image_id):
    coco = json.loads((data / "annotations.json").read_text())
    anns = [a for a in coco["annotations"] if a["image_id"] == image_id]
    return coco, [decode_rle(a["segmentation"]) for a in anns]


def test_mask_ap_perfect_wrong_and_ranked(shapes):
    coco, masks = gt_of(shapes, 5)
    evaluator = CocoMaskAPEvaluator(coco, [5], category_ids=[1])
    evaluator.process(5, np.stack(masks), [0.9, 0.8], [0, 0])
    assert evaluator.summarize()["AP"] == pytest.approx(100.0)

    # a false positive ranked below both true ones costs nothing; ranked above, it does
    empty_corner = np.zeros_like(masks[0])
    empty_corner[:4, :4] = True
    evaluator.reset()
    evaluator.process(5, np.stack([*masks, empty_corner]), [0.9, 0.8, 0.1], [0, 0, 0])
    assert evaluator.summarize()["AP"] == pytest.approx(100.0)
    evaluator.reset()
    evaluator.process(5, np.stack([*masks, empty_corner]), [0.9, 0.8, 0.95], [0, 0, 0])
    assert evaluator.summarize()["AP"] < 90.0

    evaluator.reset()
    assert evaluator.summarize() == {
        **dict.fromkeys(["AP", "AP50", "AP75", "APs", "APm", "APl"], 0.0),
        "detections": 0,
    }


def test_eval_command_on_a_trained_checkpoint(shapes, tmp_path, capsys):
    from box2mask.cli import main
    from train.train_cmd import train

    out = tmp_path / "run"
    train(tiny_config(shapes, out, iterations=2), progress=False)
    report = tmp_path / "eval.json"
    argv = [
        "eval",
        "--checkpoint",
        str(out / "last.pt"),
        "--data",
        str(shapes),
        "--json",
        str(report),
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "COCO mask AP" in text and "Box prompts = GT boxes" in text
    result = json.loads(report.read_text())
    assert result["box_prompts"]["count"] == 2  # the val split: one image, two shapes
    assert 0.0 <= result["box_prompts"]["miou"] <= 1.0
    assert 0.0 <= result["mask_ap"]["AP"] <= 100.0

    assert main(["eval", "--checkpoint", str(tmp_path / "missing.pt"), "--data", str(shapes)]) == 2
    assert "missing.pt" in capsys.readouterr().err


def test_evaluation_during_training_is_the_served_models(shapes, tmp_path, monkeypatch):
    """The val row of a run scores what from_checkpoint serves (serve_region_refine included),
    read from the config's annotations file and image folder, whatever their names."""
    import shutil

    from box2mask.model.predictor import Box2MaskPredictor
    from tests.tiny_model import tiny_model
    from train.evaluate import evaluate_model_box_prompts

    data = tmp_path / "renamed"
    shutil.copytree(shapes / "images", data / "pictures")
    shutil.copy(shapes / "annotations.json", data / "labels.json")
    cfg = tiny_config(data, tmp_path / "out", serve_region_refine=True)
    cfg.annotations, cfg.image_dir, cfg.val_split = "labels.json", "pictures", "val"
    seen = []
    original = Box2MaskPredictor.predict

    def spy(self, boxes, **kw):
        seen.append((self.region_refine, self.image_size))
        return original(self, boxes, **kw)

    monkeypatch.setattr(Box2MaskPredictor, "predict", spy)
    row = evaluate_model_box_prompts(
        tiny_model(num_classes=1), cfg, device="cpu", model_version="t"
    )
    assert row["count"] == 2  # the val split of the renamed files
    assert seen and set(seen) == {(True, cfg.image_size)}
