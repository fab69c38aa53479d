"""`retrain(init_from="scratch")` trains from random weights even under a config naming an
`init_checkpoint` (configs/crop_clicks.yaml widens a run trained on every GT mask: a learning
loop started from it would have seen the labels it is about to collect)."""

import pytest
import torch

from box2mask.crop.learner import CropLearnerConfig, CropUNet
from box2mask.io.checkpoint import load_checkpoint
from tests.crop_checkpoints import save_crop_model
from tests.test_retrain import store  # noqa: F401  (the fixture: 6 images, verified blob masks)
from train.registry import ModelRegistry
from train.retrain import retrain


def _marked_checkpoint(path):
    """A crop learner (crop 16, width 4) whose head bias is 30: a start a test can recognise."""
    model = CropUNet(CropLearnerConfig(crop_size=16, width=4))
    with torch.no_grad():
        model.head.bias.fill_(30.0)
    return save_crop_model(path, model, class_names=["blob"], model_version="marked")


def _head_bias(store, tmp_path, init_from: str) -> tuple[float, str]:  # noqa: F811
    marked = _marked_checkpoint(tmp_path / "marked.pt")
    config = tmp_path / "crop.yaml"
    config.write_text(
        "learner: crop\nmodel:\n  crop_size: 16\n  width: 4\nbatch_size: 4\n"
        f"init_checkpoint: {marked}\n"
    )
    retrain(
        store=store,
        images_dir=store.images_dir,
        registry=ModelRegistry(tmp_path / f"models-{init_from}"),
        config_path=str(config),
        overrides={"iterations": 1, "warmup_steps": 1, "lr": 1e-6},
        init_from=init_from,
        eval_fraction=0.0,  # no gate: the weights it started from are the question
        work_dir=tmp_path / init_from,
        device="cpu",
        progress=False,
    )
    saved = load_checkpoint(tmp_path / init_from / "candidate" / "last.pt")
    return float(saved["model_state"]["head.bias"].mean()), saved["config"]["init_checkpoint"]


def test_scratch_ignores_the_configs_init_checkpoint(store, tmp_path):  # noqa: F811
    bias, init = _head_bias(store, tmp_path, "scratch")
    assert init == ""
    assert abs(bias) < 1.0  # a fresh head (1 step at lr 1e-6), not the marked checkpoint's 30


@pytest.mark.slow
def test_promoted_with_none_promoted_keeps_the_configs_init_checkpoint(store, tmp_path):  # noqa: F811
    bias, init = _head_bias(store, tmp_path, "promoted")
    assert init.endswith("marked.pt")
    assert abs(bias - 30.0) < 0.01
