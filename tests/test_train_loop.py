"""The training loop on a tiny synthetic dataset: loss goes down, resume is exact, a non-finite
loss stops with a message naming the batch, metrics.jsonl / config.yaml / last.pt are written."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from box2mask.io.checkpoint import load_checkpoint
from box2mask.io.rle import encode_rle
from train.config import load_config

TINY = {
    "image_size": 64,
    "batch_size": 2,
    "num_workers": 0,
    "min_scale": 1.0,
    "max_scale": 1.0,
    "flip_prob": 0.0,
    "lr": 1e-3,
    "clip_grad_norm": 1.0,
    "lr_warmup_steps": 0,
    "lr_schedule": "step",
    "levelset_warmup_steps": 0,
    "amp": "fp32",
    "log_every": 1,
    "checkpoint_every": 1000,
    "val_split": "",
    "model.backbone": "resnet18",
    "model.backbone_norm": "frozen",
    "model.num_queries": 3,
    "model.hidden_dim": 32,
    "model.mask_dim": 32,
    "model.nheads": 2,
    "model.dec_layers": 1,
    "model.dim_feedforward": 64,
    "loss.prompt_max_per_image": 2,
}


def make_shapes_dataset(root: Path, n_images: int = 4, size: int = 64, seed: int = 0) -> Path:
    """Images with two bright ellipses each on dark noise; COCO boxes and RLE masks."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    images, anns = [], []
    yy, xx = np.mgrid[:size, :size]
    for i in range(n_images):
        image = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
        for j in range(2):
            cx, cy = rng.uniform(14, size - 14, 2)
            ax, ay = rng.uniform(5, 12, 2)
            mask = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1
            image[mask] = rng.integers(150, 255, 3)
            ys, xs = np.nonzero(mask)
            box = [
                int(xs.min()),
                int(ys.min()),
                int(xs.max() - xs.min() + 1),
                int(ys.max() - ys.min() + 1),
            ]
            anns.append(
                {
                    "id": 100 * i + j,
                    "image_id": i + 1,
                    "category_id": 1,
                    "bbox": box,
                    "area": int(mask.sum()),
                    "iscrowd": 0,
                    "segmentation": encode_rle(mask),
                }
            )
        name = f"shape{i}.png"
        Image.fromarray(image).save(root / "images" / name)
        split = "val" if i == n_images - 1 and n_images > 4 else "train"
        images.append(
            {"id": i + 1, "file_name": name, "height": size, "width": size, "split": split}
        )
    coco = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "blob"}]}
    (root / "annotations.json").write_text(json.dumps(coco))
    return root


def tiny_config(data: Path, out: Path, **overrides):
    return load_config(None, {**TINY, "data_dir": str(data), "out_dir": str(out), **overrides})


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_twenty_steps_lower_the_loss(shapes, tmp_path):
    from train.train_cmd import train

    out = tmp_path / "run"
    torch.manual_seed(0)
    train(tiny_config(shapes, out, iterations=20), progress=False)
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == list(range(1, 21))
    for name in (
        "loss_cls",
        "loss_proj",
        "loss_levelset_img",
        "loss_levelset_feat",
        "loss_lcm",
        "loss_prompt_proj",
        "lr",
        "grad_norm",
    ):
        assert all(np.isfinite(r[name]) for r in rows), name
    first = np.mean([r["loss"] for r in rows[:4]])
    last = np.mean([r["loss"] for r in rows[-4:]])
    assert last < 0.8 * first, (first, last)
    # the run directory describes itself
    assert load_config(out / "config.yaml").iterations == 20
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["extra"]["step"] == 20 and ckpt["class_names"] == ["blob"]
    assert ckpt["model_config"]["num_classes"] == 1


def test_resume_continues_the_step_count_exactly(shapes, tmp_path):
    from train.train_cmd import train

    straight, split = tmp_path / "straight", tmp_path / "split"
    train(tiny_config(shapes, straight, iterations=6), progress=False)
    train(tiny_config(shapes, split, iterations=6), progress=False, stop_at_step=3)
    assert load_checkpoint(split / "last.pt")["extra"]["step"] == 3
    with open(split / "metrics.jsonl", "a") as handle:  # logged after the checkpoint, then killed
        handle.write(json.dumps({"step": 4, "loss": 123.0}) + "\n")
    from box2mask.cli import main

    assert main(["train", "--out", str(split), "--resume"]) == 0
    rows = read_metrics(split)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]  # the stale step-4 line was dropped
    assert rows[3]["loss"] != 123.0
    a = load_checkpoint(straight / "last.pt")
    b = load_checkpoint(split / "last.pt")
    assert b["extra"]["step"] == 6
    for name, value in a["model_state"].items():
        torch.testing.assert_close(b["model_state"][name], value, msg=name)


def test_non_finite_loss_names_the_batch(shapes, tmp_path, capsys):
    from box2mask.cli import main
    from train.dataset import batches_of_epoch as _batches_of_epoch

    out = tmp_path / "nan"
    # lr 1e30 turns every weight into ~1e30 after one step: the second step's loss is not finite
    args = ["train", "--data", str(shapes), "--out", str(out), "--set"]
    args += [f"{k}={v}" for k, v in TINY.items()] + ["lr=1.0e+30", "iterations=5"]
    assert main(args) == 1
    err = capsys.readouterr().err
    cfg = tiny_config(shapes, out)
    from train.dataset import CocoBoxDataset
    from train.distributed import DistInfo

    ds = CocoBoxDataset(shapes, split="train")
    one = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    second = _batches_of_epoch(ds, cfg, one, epoch=0)[1]
    names = [ds.images[i]["file_name"] for i in second]
    ids = [ds.images[i]["id"] for i in second]
    assert "step 1: non-finite" in err and f"image ids {ids}" in err, err
    assert all(n in err for n in names), err


def test_set_parsing_is_used_by_the_command(shapes, tmp_path):
    from box2mask.cli import main

    out = tmp_path / "bad"
    assert main(["train", "--data", str(shapes), "--out", str(out), "--set", "iterationz=3"]) == 2


def test_the_criterion_normalises_with_the_model_config_s_pixel_statistics(shapes, tmp_path):
    from train.distributed import DistInfo
    from train.loop import build

    mean, std = [10.0, 20.0, 30.0], [2.0, 3.0, 4.0]
    cfg = tiny_config(
        shapes, tmp_path / "run", **{"model.pixel_mean": mean, "model.pixel_std": std}
    )
    one = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    run = build(cfg, one, progress=False)
    assert run.criterion.pixel_mean.flatten().tolist() == mean
    assert run.criterion.pixel_std.flatten().tolist() == std
    assert run.raw_model.pixel_mean.flatten().tolist() == mean  # the same numbers as the model
