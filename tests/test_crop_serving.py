"""A crop-learner checkpoint through every serving path: segment --checkpoint, the annotator's
session (hot reload) and retrain's promotion gate, with no special case in any of them."""

import json

import numpy as np
import pytest
import torch

from annotator.predictor_service import PredictorService
from annotator.session import AnnotationSession
from annotator.store import SQLiteStore
from box2mask import build_predictor
from box2mask.crop.learner import KIND, CropLearnerConfig, CropUNet
from box2mask.crop.predictor import CropLearnerPredictor
from box2mask.io.checkpoint import load_checkpoint
from box2mask.io.rle import decode_rle
from box2mask.ops.levelset import box_masks_from_boxes
from tests.crop_checkpoints import save_crop_model
from tests.test_retrain import store  # noqa: F401  (the fixture: 6 images, verified blob masks)
from tests.test_segment import make_dataset, run_cli
from train.registry import ModelRegistry
from train.retrain import retrain


def _box_filling_checkpoint(path, delta: float = 30.0):
    """A crop learner whose head outputs +`delta` everywhere: it serves the filled box, a mask
    neither the ellipse base nor the default would give, so a test sees which model answered."""
    model = CropUNet(CropLearnerConfig(base="ellipse", crop_size=32))
    with torch.no_grad():
        model.head.bias.fill_(delta)
    return save_crop_model(path, model, model_version="crop-fills-boxes")


def _filled(box, height, width):
    return box_masks_from_boxes(torch.tensor([box], dtype=torch.float32), height, width)[0] > 0.5


def test_segment_serves_a_crop_checkpoint(tmp_path, capsys):
    boxes = make_dataset(tmp_path)
    ckpt = _box_filling_checkpoint(tmp_path / "crop.pt")
    out = tmp_path / "out.json"
    code, err = run_cli(tmp_path, boxes, out, capsys, "--checkpoint", str(ckpt))
    assert code == 0, err
    result = json.loads(out.read_text())
    sizes = {im["id"]: (im["height"], im["width"]) for im in result["images"]}
    for ann in result["annotations"]:
        x, y, w, h = ann["bbox"]
        mask = decode_rle(ann["segmentation"])
        box = _filled([x, y, x + w, y + h], *sizes[ann["image_id"]]).numpy()
        assert (mask & box).sum() / (mask | box).sum() > 0.95  # the filled box, not an ellipse


def test_the_annotator_hot_swaps_to_a_crop_checkpoint(tmp_path):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.full((60, 80, 3), 40, np.uint8)).save(images / "a.png")
    store_ = SQLiteStore(tmp_path / "labels.sqlite", images)
    session = AnnotationSession(
        store_, images, PredictorService(build_predictor(None)), classes=["thing"]
    )
    session.open_image("a.png")
    ckpt = _box_filling_checkpoint(tmp_path / "crop.pt")
    assert session.reload_predictor(checkpoint=ckpt) == "crop-fills-boxes"
    session.on_boxes_changed([dict(xmin=10, ymin=12, xmax=50, ymax=40, label="thing", color=0)])
    (label,) = store_.labels("a.png")
    assert label.model_version == "crop-fills-boxes"
    mask = decode_rle(label.mask_rle)
    assert np.array_equal(mask, _filled([10, 12, 50, 40], 60, 80).numpy())
    store_.close()


def test_retrain_trains_gates_and_fine_tunes_the_crop_learner(store, tmp_path):  # noqa: F811
    config = tmp_path / "crop.yaml"
    config.write_text("learner: crop\nmodel:\n  crop_size: 16\n  width: 4\nbatch_size: 4\n")
    registry = ModelRegistry(tmp_path / "models")
    kwargs = dict(
        store=store,
        images_dir=store.images_dir,
        registry=registry,
        config_path=str(config),
        overrides={"iterations": 3, "warmup_steps": 1},
        eval_fraction=0.5,
        device="cpu",
        progress=False,
    )
    first = retrain(**kwargs, margin=-1.0, work_dir=tmp_path / "r1")  # anything beats -1
    assert first["promoted"] and first["current"]["miou"] > 0  # gated against the default
    served = build_predictor(registry.checkpoint_path(registry.promoted().version))
    assert isinstance(served, CropLearnerPredictor)
    assert 0 <= first["candidate"]["miou"] <= 1
    second = retrain(**kwargs, margin=1.0, work_dir=tmp_path / "r2")  # nothing beats +1: kept
    assert not second["promoted"]
    # the second candidate started from the promoted crop learner's weights
    saved = load_checkpoint(tmp_path / "r2" / "candidate" / "last.pt")
    assert saved["kind"] == KIND
    assert saved["config"]["init_checkpoint"] == str(registry.checkpoint_path(first["version"]))
    versions = registry.list_versions()
    assert versions[1].parent == first["version"]


@pytest.mark.parametrize("delta", [-30.0, 30.0])
def test_the_head_bias_decides_between_empty_and_filled(tmp_path, delta):
    """The stub checkpoint above does what it claims (empty for a large negative head)."""
    predictor = build_predictor(_box_filling_checkpoint(tmp_path / "c.pt", delta=delta))
    predictor.set_image(np.full((50, 50, 3), 90, np.uint8))
    masks, _ = predictor.predict(np.array([[5.0, 8.0, 40.0, 30.0]]))
    expected = _filled([5.0, 8.0, 40.0, 30.0], 50, 50).numpy() if delta > 0 else np.zeros((50, 50))
    assert np.array_equal(masks[0], expected.astype(bool))


def test_a_checkpoint_teacher_replaces_the_default_in_the_crop_bank(tmp_path):
    """Self-training: `teacher: <checkpoint>` makes that learner's masks the distillation target."""
    from train.crop_bank import build_crop_bank
    from train.crop_config import load_crop_config
    from train.dataset import CocoBoxDataset

    make_dataset(tmp_path)  # COCO file "boxes.json" beside images/
    (tmp_path / "boxes.json").rename(tmp_path / "annotations.json")
    dataset = CocoBoxDataset(tmp_path, split="")
    ckpt = _box_filling_checkpoint(tmp_path / "teacher.pt")
    cfg = load_crop_config(
        None, {"teacher": str(ckpt), "model.crop_size": 16, "model.base": "ellipse"}
    )
    teacher = build_predictor(cfg.teacher)
    bank = build_crop_bank(dataset, cfg.model, teacher=teacher, progress=False)
    default = build_crop_bank(dataset, cfg.model, progress=False)
    box = box_masks_from_boxes(bank.grid_boxes, 16, 16)
    assert torch.equal(bank.rgb, default.rgb)
    inside = box > 0.5
    assert (bank.teacher[inside] > 127).float().mean() > 0.9  # the teacher filled every box
    assert (bank.teacher.float() - default.teacher.float()).abs().mean() > 20  # not the default
    with pytest.raises(Exception, match="base: ellipse"):
        load_crop_config(None, {"teacher": str(ckpt), "model.base": "default"})
    with pytest.raises(Exception, match="none of these"):
        load_crop_config(None, {"teacher": str(tmp_path / "missing.pt")})
