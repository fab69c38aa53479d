"""`box2mask train`: train Box2Mask-T from boxes (COCO format), on one CPU/GPU or with torchrun.

    box2mask train --config configs/tiny_cpu.yaml --data ../shared/data/balloon --out runs/tiny
    box2mask train --out runs/tiny --resume                       # continue from runs/tiny/last.pt
    torchrun --nproc_per_node=4 -m box2mask train --config configs/box2mask_r50_coco.yaml ...

The run directory gets config.yaml (the resolved config), metrics.jsonl and last.pt (see
train/loop.py, the loop itself); this module is the command line around it.
"""

import argparse
import sys
from pathlib import Path

__all__ = ["add_arguments", "run", "train"]


def train(cfg, **options) -> dict:
    """`train.loop.fit(cfg, **options)`: the training loop (resume_from, device, progress,
    time_limit_s, stop_at_step)."""
    from train.loop import fit

    return fit(cfg, **options)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", help="YAML file of config overrides (e.g. configs/tiny_cpu.yaml)"
    )
    parser.add_argument("--data", help="dataset folder: annotations.json + images/ (COCO, boxes)")
    parser.add_argument("--split", help="train on images with this `split` field (default: train)")
    parser.add_argument("--out", help="run directory (default: runs/box2mask)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/last.pt with its config and step count (--set still applies)",
    )
    parser.add_argument(
        "--set",
        nargs="+",
        action="extend",
        metavar="KEY=VALUE",
        default=[],
        help="override config fields, e.g. --set iterations=500 model.num_queries=50",
    )
    parser.add_argument(
        "--backbone-weights",
        metavar="PATH|imagenet",
        help="initialise the backbone from a local file, or torchvision's ImageNet download",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda if available")
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads per process (torch.set_num_threads); 1 is fastest on a busy machine",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        help="save last.pt and stop after this many minutes of training (--resume continues)",
    )


def _resolve_config(args):
    """The run's TrainConfig and the checkpoint to resume from (or None).

    Precedence: dataclass defaults < --config file < --set < --data/--split/--out/--backbone-weights.
    With --resume the config saved in OUT/last.pt replaces the defaults and the file.
    """
    from box2mask.io.checkpoint import load_checkpoint
    from train.config import (
        ConfigError,
        apply_overrides,
        config_from_flat,
        load_config,
        parse_set_args,
    )

    overrides = parse_set_args(args.set)
    cli = {}
    if args.data:
        cli["data_dir"] = args.data
    if args.split is not None:
        cli["train_split"] = args.split
    if args.out:
        cli["out_dir"] = args.out
    if args.backbone_weights:
        cli["model.backbone_weights"] = args.backbone_weights
    if args.resume:
        if args.config:
            raise ConfigError("--resume uses the config saved in last.pt; change fields with --set")
        last = Path(args.out or "runs/box2mask") / "last.pt"
        if not last.is_file():
            raise ConfigError(f"--resume: {last} does not exist (nothing to resume)")
        ckpt = load_checkpoint(last)
        cfg = config_from_flat(ckpt["config"], source=str(last))
        cfg = apply_overrides(cfg, overrides, source="--set")
        return apply_overrides(cfg, cli, source="command line"), ckpt
    cfg = apply_overrides(load_config(args.config, overrides), cli, source="command line")
    if not cfg.data_dir:
        raise ConfigError("--data DIR is required (a folder with annotations.json and images/)")
    return cfg, None


def _is_crop_run(args) -> bool:
    """Whether this run trains the crop learner: its --config says `learner: crop`, or with
    --resume the run's last.pt is a crop-learner checkpoint (train/crop_train.py)."""
    from train.crop_config import is_crop_config

    if args.resume:
        last = Path(args.out or "runs/box2mask") / "last.pt"
        if not last.is_file():
            return False
        from box2mask.io.checkpoint import load_checkpoint

        return load_checkpoint(last)["kind"] == "crop-learner"
    return is_crop_config(args.config)


def run(args) -> int:
    from box2mask.io.checkpoint import CheckpointError
    from train.config import ConfigError
    from train.dataset import DatasetError
    from train.engine import NonFiniteLossError

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        if _is_crop_run(args):
            from train.crop_train import run as run_crop

            return run_crop(args)
    except (ConfigError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    cfg = None
    try:
        cfg, ckpt = _resolve_config(args)
        time_limit_s = args.max_minutes * 60 if args.max_minutes else None
        train(cfg, resume_from=ckpt, device=args.device, time_limit_s=time_limit_s)
    except (ConfigError, DatasetError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except NonFiniteLossError as err:
        print(f"error: training stopped: {err}", file=sys.stderr)
        print(
            "the last good checkpoint (if any) is untouched; try --resume with a lower lr "
            "or a longer levelset_warmup_steps",
            file=sys.stderr,
        )
        return 1
    except OSError as err:  # e.g. the disk filled up while writing a checkpoint
        last = Path(cfg.out_dir) / "last.pt" if cfg is not None else "last.pt"
        print(
            f"error: training stopped: {err}. The last checkpoint written, {last}, is intact "
            "(checkpoints go to a temporary file that is then renamed); free space and run "
            "again with --resume",
            file=sys.stderr,
        )
        return 1
    return 0
