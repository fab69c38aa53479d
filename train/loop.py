"""The Box2Mask-T training loop: `fit(cfg)` trains until cfg.iterations, on one device or under
torchrun (every process runs the same loop on its share of each batch).

    run = build(cfg, dist_info, resume_from=ckpt)    # data, model, optimizer (+ resume)
    while run.step < end_step:                        # one epoch's batches at a time
        stats = train_step(run, batch)
        ... log every cfg.log_every, checkpoint every cfg.checkpoint_every, evaluate every
        cfg.eval_every

The run directory gets config.yaml (the resolved config), metrics.jsonl (one JSON line per
`log_every` steps with every loss term by name, and one per evaluation) and last.pt (a
self-describing checkpoint written atomically every `checkpoint_every` steps and at the end).
One step (forward, losses, backward, clipping) is train/engine.py's `train_one_step`.
"""

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from box2mask.io.atomic_write import write_text_atomic
from train.distributed import DistInfo

__all__ = ["Run", "fit", "build", "train_step", "save"]


@dataclass
class Run:
    """Everything one training run holds between steps (built by `build`)."""

    cfg: object  # the resolved TrainConfig (num_classes from the data, architecture of a parent)
    dist: DistInfo  # this process's place in the launch and its device
    dataset: object  # train.dataset.CocoBoxDataset of the training split
    model: torch.nn.Module  # what the step runs: the model, or its DistributedDataParallel wrapper
    raw_model: torch.nn.Module  # the model itself (what checkpoints and evaluation use)
    criterion: torch.nn.Module  # box2mask.model.losses.Box2MaskCriterion
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: object  # torch.amp.GradScaler under fp16 autocast, else None
    autocast_dtype: torch.dtype | None  # None = float32
    out_dir: Path  # the run directory
    step: int = 0  # optimizer steps done

    @property
    def steps_per_epoch(self) -> int:
        return len(self.dataset) // self.cfg.batch_size

    @property
    def model_version(self) -> str:
        return f"{self.out_dir.name}-step{self.step}"


def fit(
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
    from box2mask.segment.shards import stop_process_group
    from train.distributed import init_distributed

    dist_info = init_distributed(device)
    try:
        run = build(cfg, dist_info, resume_from=resume_from, progress=progress)
        return _train(run, progress=progress, time_limit_s=time_limit_s, stop_at_step=stop_at_step)
    finally:
        stop_process_group()


def build(cfg, dist_info: DistInfo, *, resume_from: dict | None = None, progress: bool = True):
    """The Run of `cfg` in this process: the dataset (teacher masks computed or read), the model
    (fresh, a fine-tuning parent's, or resumed), criterion, optimizer, schedule and AMP state;
    config.yaml written to the run directory."""
    _check(cfg, dist_info)
    dataset = build_dataset(cfg, dist_info, progress=progress)
    if cfg.model.num_classes != len(dataset.class_names):
        model_cfg = dataclasses.replace(cfg.model, num_classes=len(dataset.class_names))
        cfg = dataclasses.replace(cfg, model=model_cfg)
    out_dir = Path(cfg.out_dir)
    if dist_info.is_main:
        from train.config import save_config

        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")
    torch.manual_seed(cfg.seed)  # same initial weights in every process
    cfg, model = build_model(cfg, dist_info, resume_from=resume_from)
    criterion, optimizer, scheduler, scaler, autocast_dtype = _optimization(cfg, model, dist_info)
    run = Run(
        cfg=cfg,
        dist=dist_info,
        dataset=dataset,
        model=model,
        raw_model=model,
        criterion=criterion,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        autocast_dtype=autocast_dtype,
        out_dir=out_dir,
    )
    if resume_from is not None:
        resume(run, resume_from)
    if dist_info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        ids = [dist_info.local_rank] if dist_info.device.type == "cuda" else None
        run.model = DistributedDataParallel(model, device_ids=ids)
    return run


def _check(cfg, dist_info: DistInfo) -> None:
    """Config errors found before any work: an unknown teacher, an indivisible batch."""
    from train.config import ConfigError
    from train.teacher import TEACHERS

    if cfg.teacher not in TEACHERS:
        raise ConfigError(f"teacher {cfg.teacher!r} is not one of {TEACHERS}")
    if cfg.batch_size % dist_info.world_size:
        raise ValueError(
            f"batch_size {cfg.batch_size} is not divisible by the {dist_info.world_size} processes"
        )


def build_dataset(cfg, dist_info: DistInfo, *, progress: bool = True):
    """The training split as a CocoBoxDataset, with the teacher's masks when cfg.teacher is set
    (computed once by the main process into OUT/teacher_masks.json, read by the others)."""
    from train.dataset import CocoBoxDataset
    from train.teacher import load_or_compute_teacher_masks

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
    if len(dataset) < cfg.batch_size:
        raise ValueError(
            f"{len(dataset)} training images are fewer than batch_size {cfg.batch_size}"
        )
    return dataset


def build_model(cfg, dist_info: DistInfo, *, resume_from: dict | None = None):
    """(cfg, model) on this process's device. Fine-tuning (cfg.init_checkpoint, not resuming)
    takes the parent's architecture and every weight that fits; weights that come from a
    checkpoint skip the backbone download. Returns cfg with the architecture actually built."""
    from box2mask.io.checkpoint import load_checkpoint
    from box2mask.model.box2mask_model import build_model as build_network
    from box2mask.model.checkpoint import model_config_from_checkpoint

    init = None
    if cfg.init_checkpoint and resume_from is None:  # fine-tune: the parent's architecture
        init = load_checkpoint(cfg.init_checkpoint)
        parent = model_config_from_checkpoint(init)
        model_cfg = dataclasses.replace(parent, num_classes=cfg.model.num_classes)
        cfg = dataclasses.replace(cfg, model=model_cfg)
    build_cfg = cfg.model
    if resume_from is not None or init is not None:  # weights from a checkpoint: no download
        build_cfg = dataclasses.replace(cfg.model, backbone_weights=None)
    model = build_network(build_cfg).to(dist_info.device)
    if init is not None:
        load_matching_weights(model, init["model_state"], cfg.init_checkpoint)
    if dist_info.enabled and dist_info.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return cfg, model


def _optimization(cfg, model, dist_info: DistInfo) -> tuple:
    """(criterion, optimizer, scheduler, scaler, autocast_dtype) for `model`."""
    from box2mask.model.fast_inference import amp_dtype, resolve_amp
    from train.engine import build_criterion, build_optimizer, lr_factor

    criterion = build_criterion(cfg, dist_info.device)
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg=cfg))
    autocast_dtype = amp_dtype(resolve_amp(cfg.amp, dist_info.device), dist_info.device)
    scaler = torch.amp.GradScaler("cuda") if autocast_dtype == torch.float16 else None
    return criterion, optimizer, scheduler, scaler, autocast_dtype


def resume(run: Run, ckpt: dict) -> None:
    """Continue `run` from a checkpoint of the same run: weights, optimizer, schedule, AMP scaler
    and step; metrics.jsonl lines logged after that step are dropped (they are redone)."""
    run.raw_model.load_state_dict(ckpt["model_state"])
    extra = ckpt["extra"]
    run.optimizer.load_state_dict(extra["optimizer"])
    run.scheduler.load_state_dict(extra["scheduler"])
    if run.scaler is not None and extra.get("scaler"):
        run.scaler.load_state_dict(extra["scaler"])
    run.step = int(extra["step"])
    if run.dist.is_main:
        drop_metrics_after(run.out_dir / "metrics.jsonl", run.step)


def train_step(run: Run, batch: dict) -> dict:
    """One optimizer step on `batch` (this process's share): prompts sampled per image, the
    step, the schedule; returns the step's stats (loss terms, lr, grad_norm)."""
    from train.engine import prompt_seeds, sample_prompts_per_image, train_one_step

    cfg = run.cfg
    prompts, prompt_targets = sample_prompts_per_image(
        batch["targets"],
        batch["images"].shape[-2:],
        cfg=cfg,
        seeds=prompt_seeds(cfg, run.step, batch["image_ids"]),
    )
    stats = train_one_step(
        run.model,
        run.criterion,
        batch,
        run.optimizer,
        run.scaler,
        step=run.step,
        device=run.dist.device,
        autocast_dtype=run.autocast_dtype,
        clip_grad_norm=cfg.clip_grad_norm,
        levelset_on=run.step >= cfg.levelset_warmup_steps,
        prompt_boxes=prompts,
        prompt_targets=prompt_targets,
    )
    run.scheduler.step()
    run.step += 1
    return stats


def save(run: Run) -> None:
    """Write OUT/last.pt (main process only): the model and everything `resume` needs."""
    if not run.dist.is_main:
        return
    from box2mask.io.checkpoint import save_checkpoint
    from train.config import flatten_config

    save_checkpoint(
        run.out_dir / "last.pt",
        model=run.raw_model,
        model_config=run.cfg.model,
        class_names=run.dataset.class_names,
        config=flatten_config(run.cfg),
        model_version=run.model_version,
        extra={
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict() if run.scaler is not None else None,
            "step": run.step,
        },
    )


def log(run: Run, record: dict) -> None:
    """Append one JSON line to OUT/metrics.jsonl (main process only)."""
    if run.dist.is_main:
        with open(run.out_dir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")


def evaluate(run: Run) -> dict | None:
    """Box-prompt quality on cfg.val_split as the served model answers (main process only; None
    without a val split); logged as val_* and the model is left in eval mode."""
    if not run.cfg.val_split or not run.dist.is_main:
        return None
    from train.evaluate import evaluate_model_box_prompts

    row = evaluate_model_box_prompts(
        run.raw_model, run.cfg, device=run.dist.device, model_version=run.model_version
    )
    log(run, {"step": run.step, **{f"val_{k}": v for k, v in row.items()}})
    return row


def _train(run: Run, *, progress: bool, time_limit_s, stop_at_step) -> dict:
    """The loop: epochs of batches until the end step, the time limit or cfg.iterations."""
    from tqdm import tqdm

    from train.dataset import batches_of_epoch, collate_batch
    from train.distributed import all_reduce_mean, all_true

    cfg, dist_info = run.cfg, run.dist
    bar = tqdm(
        total=cfg.iterations,
        initial=run.step,
        desc="train",
        disable=not (progress and dist_info.is_main),
        dynamic_ncols=True,
    )
    window, last_stats, started = [], {}, time.perf_counter()
    deadline = None if time_limit_s is None else started + time_limit_s
    end_step = cfg.iterations if stop_at_step is None else min(stop_at_step, cfg.iterations)
    run.model.train()
    try:
        while run.step < end_step:
            epoch, offset = divmod(run.step, run.steps_per_epoch)
            run.dataset.set_epoch(epoch)
            loader = torch.utils.data.DataLoader(
                run.dataset,
                batch_sampler=batches_of_epoch(run.dataset, cfg, dist_info, epoch)[offset:],
                collate_fn=collate_batch,
                num_workers=cfg.num_workers,
            )
            for batch in loader:
                stats = train_step(run, batch)
                step = run.step
                window.append(stats)
                bar.update(1)
                bar.set_postfix(loss=f"{stats['loss']:.3f}", epoch=epoch)
                if step % cfg.log_every == 0 or step == cfg.iterations:
                    mean = {k: sum(s[k] for s in window) / len(window) for k in window[0]}
                    mean = all_reduce_mean(mean, dist_info.device)
                    elapsed = time.perf_counter() - started
                    last_stats = mean
                    images_per_s = len(window) * cfg.batch_size / max(elapsed, 1e-9)
                    lr = run.scheduler.get_last_lr()[0]
                    record = {"step": step, "epoch": epoch, "lr": lr, "images_per_s": images_per_s}
                    log(run, {**record, **mean})
                    window, started = [], time.perf_counter()
                out_of_time = deadline is not None and not all_true(
                    time.perf_counter() <= deadline, dist_info.device
                )  # any process out of time: all stop at this step
                if step % cfg.checkpoint_every == 0 or step == end_step or out_of_time:
                    save(run)
                if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.iterations:
                    evaluate(run)
                    run.model.train()
                if out_of_time and step < end_step:
                    if dist_info.is_main:
                        print(f"time limit reached at step {step}; --resume continues from here")
                    end_step = step
                if step >= end_step:
                    break
        bar.close()
        final = evaluate(run)
        if final is not None and dist_info.is_main:
            print(f"val box-prompt mIoU {final['miou']:.3f} (boundary F {final['boundary_f']:.3f})")
        return last_stats
    finally:
        bar.close()


def drop_metrics_after(path: Path, step: int) -> None:
    """On resume, forget metrics.jsonl lines logged after the checkpoint (they are redone)."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    if len(kept) != len(lines):
        write_text_atomic(path, "".join(kept))


def load_matching_weights(model, state: dict, source: str) -> None:
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
