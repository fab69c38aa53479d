import os

import pytest
import torch

import box2mask
from box2mask.io.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from box2mask.model.box2mask_model import build_model
from box2mask.model.checkpoint import build_model_from_checkpoint
from tests.tiny_model import tiny_config


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    cfg = tiny_config()
    model = build_model(cfg).eval()
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model(torch.rand(1, 3, 64, 64)).get("pred_logits").sum().backward()
    opt.step()
    save_checkpoint(
        path,
        model=model,
        model_config=cfg,
        class_names=["balloon", "kite"],
        config={"image_size": 64, "model.num_queries": 4},
        model_version="v7",
        extra={"step": 12, "optimizer": opt.state_dict()},
    )
    return path, model


def test_round_trip_gives_identical_outputs(saved):
    path, model = saved
    ckpt = load_checkpoint(path)
    assert ckpt["format_version"] == FORMAT_VERSION
    assert ckpt["class_names"] == ["balloon", "kite"]
    assert ckpt["model_version"] == "v7"
    assert ckpt["config"]["image_size"] == 64
    assert ckpt["extra"]["step"] == 12
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    opt.load_state_dict(ckpt["extra"]["optimizer"])  # optimizer state survives weights_only
    restored = build_model_from_checkpoint(ckpt)
    images = torch.rand(2, 3, 64, 64) * 255
    prompts = [torch.tensor([[3.0, 5.0, 40.0, 50.0]]), torch.tensor([[0.0, 0.0, 20.0, 20.0]])]
    with torch.no_grad():
        a = model(images, prompt_boxes=prompts)
        b = restored(images, prompt_boxes=prompts)
    torch.testing.assert_close(a["pred_masks"], b["pred_masks"], rtol=0, atol=0)
    torch.testing.assert_close(a["pred_logits"], b["pred_logits"], rtol=0, atol=0)
    torch.testing.assert_close(a["prompt_masks"][1], b["prompt_masks"][1], rtol=0, atol=0)
    assert not [f for f in os.listdir(path.parent) if f.startswith(".tmp")]  # no temp files left


def test_build_predictor_reads_the_checkpoint(saved):
    path, _ = saved
    predictor = box2mask.build_predictor(str(path))
    assert predictor.model_version == "v7"
    assert predictor.class_names == ["balloon", "kite"]
    assert predictor.image_size == 64


def test_bad_files_raise_checkpoint_error_naming_the_file(saved, tmp_path):
    path, _ = saved
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_checkpoint(truncated)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.txt"):
        load_checkpoint(text)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt: not a box2mask checkpoint"):
        load_checkpoint(foreign)
    ckpt = torch.load(path, weights_only=True)
    ckpt["format_version"] = FORMAT_VERSION + 1
    future = tmp_path / "future.pt"
    torch.save(ckpt, future)
    with pytest.raises(CheckpointError, match="future.pt: checkpoint format version 2"):
        load_checkpoint(future)
    with pytest.raises(CheckpointError, match="missing.pt: no such"):
        load_checkpoint(tmp_path / "missing.pt")
    ckpt["format_version"] = FORMAT_VERSION
    ckpt["model_config"]["hidden_dim"] = 64  # weights no longer fit
    mismatched = tmp_path / "mismatched.pt"
    torch.save(ckpt, mismatched)
    with pytest.raises(CheckpointError, match="mismatched.pt: weights do not fit"):
        build_model_from_checkpoint(load_checkpoint(mismatched))


def test_failed_save_keeps_the_previous_file(saved, tmp_path):
    path, model = saved
    target = tmp_path / "keep.pt"
    target.write_bytes(path.read_bytes())
    with pytest.raises(Exception):  # noqa: B017 - a lambda cannot be pickled
        save_checkpoint(
            target,
            model=model,
            model_config=tiny_config(),
            class_names=["a"],
            config={"bad": lambda: 0},
            model_version="broken",
        )
    assert load_checkpoint(target)["model_version"] == "v7"
    assert sorted(os.listdir(tmp_path)) == ["keep.pt"]
