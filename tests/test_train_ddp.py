"""torchrun with 2 gloo CPU processes gives the same model as one process with the same
effective batch (DistributedSampler split, gradients averaged, loss normalised over all boxes)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from box2mask.io.checkpoint import load_checkpoint
from tests.test_train_loop import TINY, make_shapes_dataset, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")

# every image has exactly two boxes, so per-process averages equal the global ones
SETTINGS = {**TINY, "batch_size": 4, "iterations": 2, "lr": 1e-4}


def test_two_gloo_processes_match_one_process(tmp_path):
    from train.train_cmd import train

    data = make_shapes_dataset(tmp_path / "data", n_images=4)
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    train(tiny_config(data, single, **SETTINGS), progress=False)

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "box2mask", "train", "--data", str(data), "--out", str(ddp), "--set"]
    command += [f"{k}={v}" for k, v in SETTINGS.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    a, b = load_checkpoint(single / "last.pt"), load_checkpoint(ddp / "last.pt")
    assert a["extra"]["step"] == b["extra"]["step"] == 2
    rows_a = [json.loads(line) for line in (single / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(line) for line in (ddp / "metrics.jsonl").read_text().splitlines()]
    assert len(rows_b) == 2  # one line per step, written by rank 0 only
    for ra, rb in zip(rows_a, rows_b, strict=True):
        for name in ("loss", "loss_cls", "loss_proj", "loss_levelset_feat", "loss_prompt_lcm"):
            assert rb[name] == pytest.approx(ra[name], rel=1e-5), (ra["step"], name)
        assert rb["grad_norm"] == pytest.approx(ra["grad_norm"], rel=1e-3)
    # Adam's first update is lr * sign(gradient): where a gradient is ~0, float-rounding noise
    # between the two reductions can flip its sign. So: every weight within 2 * lr per step, and
    # all but a handful (< 0.01%) equal to 1e-6.
    total = off = 0
    for name, value in a["model_state"].items():
        if value.is_floating_point():
            diff = (b["model_state"][name] - value).abs()
            assert diff.max() <= 2 * SETTINGS["lr"] * 2 + 1e-6, name
            total, off = total + diff.numel(), off + int((diff > 1e-6).sum())
    assert off < 1e-4 * total, (off, total)
    # the weights did move away from the (seeded, shared) initialisation by far more than that
    import dataclasses

    from box2mask.model.box2mask_model import build_model

    cfg = tiny_config(data, single, **SETTINGS)
    torch.manual_seed(cfg.seed)
    initial = build_model(dataclasses.replace(cfg.model, num_classes=1)).state_dict()
    moved = max(
        (a["model_state"][k] - v).abs().max().item()
        for k, v in initial.items()
        if v.is_floating_point()
    )
    assert moved > 1e-4
