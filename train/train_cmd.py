"""`box2mask train`: train Box2Mask-T from boxes (COCO format), on one CPU/GPU or with torchrun.

    box2mask train --config configs/tiny_cpu.yaml --data ../shared/data/balloon --out runs/tiny
    box2mask train --out runs/tiny --resume                       # continue from runs/tiny/last.pt
    torchrun --nproc_per_node=4 -m box2mask train --config configs/box2mask_r50_coco.yaml ...

The run directory gets config.yaml (the resolved config), metrics.jsonl (one JSON line per
`log_every` steps with every loss term by name, and one per evaluation) and last.pt (a
self-describing checkpoint written atomically every `checkpoint_every` steps and at the end).
"""

import argparse
import json
import sys
import time
from pathlib import Path

from box2mask.atomic_write import write_text_atomic

__all__ = ["add_arguments", "run", "train"]


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
    from box2mask.checkpoint import load_checkpoint
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
        from box2mask.checkpoint import load_checkpoint

        return load_checkpoint(last)["kind"] == "crop-learner"
    return is_crop_config(args.config)


def run(args) -> int:
    from box2mask.checkpoint import CheckpointError
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


def _batches_of_epoch(dataset, cfg, dist_info, epoch: int) -> list[list[int]]:
    """This process's index batches for `epoch` (DistributedSampler order; the last partial
    batch is dropped so every step has the full effective batch)."""
    from torch.utils.data import DistributedSampler

    per_rank = cfg.batch_size // dist_info.world_size
    sampler = DistributedSampler(
        dataset,
        num_replicas=dist_info.world_size,
        rank=dist_info.rank,
        shuffle=True,
        seed=cfg.seed,
        drop_last=True,
    )
    sampler.set_epoch(epoch)
    indices = list(sampler)
    return [indices[i : i + per_rank] for i in range(0, len(indices) - per_rank + 1, per_rank)]


def _drop_metrics_after(path: Path, step: int) -> None:
    """On resume, forget metrics.jsonl lines logged after the checkpoint (they are redone)."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    if len(kept) != len(lines):
        write_text_atomic(path, "".join(kept))


def _prompt_seeds(cfg, step: int, image_ids: list[int]) -> list[int]:
    import numpy as np

    return [
        int(np.random.SeedSequence((cfg.seed, step, i)).generate_state(1)[0]) for i in image_ids
    ]


def train(
    cfg,
    *,
    resume_from: dict | None = None,
    device: str | None = None,
    progress: bool = True,
    time_limit_s: float | None = None,
    stop_at_step: int | None = None,
) -> dict:
    """Train with `cfg` (a TrainConfig) until cfg.iterations; returns the last logged stats.

    `resume_from`: a checkpoint dict (`load_checkpoint(OUT/last.pt)`) to continue from.
    `time_limit_s` / `stop_at_step`: stop early (after saving last.pt), as if interrupted; the
    schedule still runs to cfg.iterations when resumed.
    """
    import dataclasses

    import torch
    from torch.nn.parallel import DistributedDataParallel
    from tqdm import tqdm

    from box2mask.checkpoint import load_checkpoint, model_config_from_checkpoint, save_checkpoint
    from box2mask.fast_inference import amp_dtype, resolve_amp
    from box2mask.losses import Box2MaskCriterion
    from box2mask.model import build_model
    from box2mask.shards import stop_process_group
    from train.config import ConfigError, flatten_config, save_config
    from train.dataset import CocoBoxDataset, collate_batch
    from train.distributed import all_reduce_mean, all_true, init_distributed
    from train.engine import (
        build_optimizer,
        lr_factor,
        sample_prompts_per_image,
        train_one_step,
    )
    from train.evaluate import evaluate_model_box_prompts
    from train.teacher import TEACHERS, load_or_compute_teacher_masks

    if cfg.teacher not in TEACHERS:
        raise ConfigError(f"teacher {cfg.teacher!r} is not one of {TEACHERS}")
    dist_info = init_distributed(device)
    if cfg.batch_size % dist_info.world_size:
        raise ValueError(
            f"batch_size {cfg.batch_size} is not divisible by the {dist_info.world_size} processes"
        )
    dataset = CocoBoxDataset(
        cfg.data_dir,
        split=cfg.train_split,
        annotations=cfg.annotations,
        image_dir=cfg.image_dir,
        train=True,
        image_size=cfg.image_size,
        min_scale=cfg.min_scale,
        max_scale=cfg.max_scale,
        flip_prob=cfg.flip_prob,
        min_box_size=cfg.min_box_size,
        seed=cfg.seed,
        with_masks=cfg.mask_supervision,
        teacher_weight=cfg.teacher_weight,
    )
    if cfg.teacher:
        Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
        dataset.teacher_masks = load_or_compute_teacher_masks(
            dataset,
            Path(cfg.out_dir) / "teacher_masks.json",
            skip_masked=cfg.mask_supervision,
            is_main=dist_info.is_main,
            barrier=torch.distributed.barrier if dist_info.enabled else None,
            progress=progress,
        )
    steps_per_epoch = len(dataset) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"{len(dataset)} training images are fewer than batch_size {cfg.batch_size}"
        )
    if cfg.model.num_classes != len(dataset.class_names):
        cfg = dataclasses.replace(
            cfg, model=dataclasses.replace(cfg.model, num_classes=len(dataset.class_names))
        )
    out_dir = Path(cfg.out_dir)
    if dist_info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")

    torch.manual_seed(cfg.seed)  # same initial weights in every process
    init = None
    if cfg.init_checkpoint and resume_from is None:  # fine-tune: the parent's architecture
        init = load_checkpoint(cfg.init_checkpoint)
        parent = model_config_from_checkpoint(init)
        cfg = dataclasses.replace(
            cfg, model=dataclasses.replace(parent, num_classes=cfg.model.num_classes)
        )
    build_cfg = cfg.model
    if resume_from is not None or init is not None:  # weights from a checkpoint: no download
        build_cfg = dataclasses.replace(cfg.model, backbone_weights=None)
    model = build_model(build_cfg).to(dist_info.device)
    if init is not None:
        _load_matching_weights(model, init["model_state"], cfg.init_checkpoint)
    if dist_info.enabled and dist_info.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    criterion = Box2MaskCriterion(
        cfg.model.num_classes,
        cfg.loss,
        num_decoder_layers=cfg.model.dec_layers,
        pixel_mean=cfg.model.pixel_mean,
        pixel_std=cfg.model.pixel_std,
    ).to(dist_info.device)
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg=cfg))
    autocast_dtype = amp_dtype(resolve_amp(cfg.amp, dist_info.device), dist_info.device)
    scaler = torch.amp.GradScaler("cuda") if autocast_dtype == torch.float16 else None
    step = 0
    if resume_from is not None:
        model.load_state_dict(resume_from["model_state"])
        extra = resume_from["extra"]
        optimizer.load_state_dict(extra["optimizer"])
        scheduler.load_state_dict(extra["scheduler"])
        if scaler is not None and extra.get("scaler"):
            scaler.load_state_dict(extra["scaler"])
        step = int(extra["step"])
        if dist_info.is_main:
            _drop_metrics_after(out_dir / "metrics.jsonl", step)
    raw_model = model
    if dist_info.enabled:
        model = DistributedDataParallel(
            model, device_ids=[dist_info.local_rank] if dist_info.device.type == "cuda" else None
        )

    def checkpoint():
        if not dist_info.is_main:
            return
        save_checkpoint(
            out_dir / "last.pt",
            model=raw_model,
            model_config=cfg.model,
            class_names=dataset.class_names,
            config=flatten_config(cfg),
            model_version=f"{out_dir.name}-step{step}",
            extra={
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "step": step,
            },
        )

    def log(record: dict):
        if dist_info.is_main:
            with open(out_dir / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")

    def evaluate():
        if not cfg.val_split or not dist_info.is_main:
            return None
        row = evaluate_model_box_prompts(
            raw_model,
            cfg,
            device=dist_info.device,
            model_version=f"{out_dir.name}-step{step}",
        )
        log({"step": step, **{f"val_{k}": v for k, v in row.items()}})
        return row

    bar = tqdm(
        total=cfg.iterations,
        initial=step,
        desc="train",
        disable=not (progress and dist_info.is_main),
        dynamic_ncols=True,
    )
    window, last_stats, started = [], {}, time.perf_counter()
    deadline = None if time_limit_s is None else started + time_limit_s
    end_step = cfg.iterations if stop_at_step is None else min(stop_at_step, cfg.iterations)
    model.train()
    try:
        while step < end_step:
            epoch, offset = divmod(step, steps_per_epoch)
            dataset.set_epoch(epoch)
            loader = torch.utils.data.DataLoader(
                dataset,
                batch_sampler=_batches_of_epoch(dataset, cfg, dist_info, epoch)[offset:],
                collate_fn=collate_batch,
                num_workers=cfg.num_workers,
            )
            for batch in loader:
                prompts, prompt_targets = sample_prompts_per_image(
                    batch["targets"],
                    batch["images"].shape[-2:],
                    cfg=cfg,
                    seeds=_prompt_seeds(cfg, step, batch["image_ids"]),
                )
                stats = train_one_step(
                    model,
                    criterion,
                    batch,
                    optimizer,
                    scaler,
                    step=step,
                    device=dist_info.device,
                    autocast_dtype=autocast_dtype,
                    clip_grad_norm=cfg.clip_grad_norm,
                    levelset_on=step >= cfg.levelset_warmup_steps,
                    prompt_boxes=prompts,
                    prompt_targets=prompt_targets,
                )
                scheduler.step()
                step += 1
                window.append(stats)
                bar.update(1)
                bar.set_postfix(loss=f"{stats['loss']:.3f}", epoch=epoch)
                if step % cfg.log_every == 0 or step == cfg.iterations:
                    mean = {k: sum(s[k] for s in window) / len(window) for k in window[0]}
                    mean = all_reduce_mean(mean, dist_info.device)
                    elapsed = time.perf_counter() - started
                    last_stats = mean
                    log(
                        {
                            "step": step,
                            "epoch": epoch,
                            "lr": scheduler.get_last_lr()[0],
                            "images_per_s": len(window) * cfg.batch_size / max(elapsed, 1e-9),
                            **mean,
                        }
                    )
                    window, started = [], time.perf_counter()
                out_of_time = deadline is not None and not all_true(
                    time.perf_counter() <= deadline, dist_info.device
                )  # any process out of time: all stop at this step
                if step % cfg.checkpoint_every == 0 or step == end_step or out_of_time:
                    checkpoint()
                if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.iterations:
                    evaluate()
                    model.train()
                if out_of_time and step < end_step:
                    if dist_info.is_main:
                        print(f"time limit reached at step {step}; --resume continues from here")
                    end_step = step
                if step >= end_step:
                    break
        bar.close()
        final = evaluate()
        if final is not None and dist_info.is_main:
            print(f"val box-prompt mIoU {final['miou']:.3f} (boundary F {final['boundary_f']:.3f})")
        return last_stats
    finally:
        bar.close()
        stop_process_group()


def _load_matching_weights(model, state: dict, source: str) -> None:
    """Load every tensor of `state` whose name and shape fit `model` (fine-tuning with another
    number of classes re-initialises only the class head) and say what was left out."""
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(own) - set(fitting))
    model.load_state_dict(fitting, strict=False)
    if skipped:
        print(
            f"{source}: {len(skipped)} tensors start anew (shape changed): {', '.join(skipped[:4])}"
        )
