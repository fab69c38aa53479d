"""One training step and its parts: optimizer groups, learning-rate schedule, loss checks.

    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(lr_factor, cfg=cfg))
    stats = train_one_step(model, criterion, batch, optimizer, scaler, ...)

The loop around it (data, resume, checkpoints, logging) is train/loop.py.
"""

import contextlib
import math

import torch
from torch import nn

from train.distributed import all_true

__all__ = [
    "NonFiniteLossError",
    "build_optimizer",
    "lr_factor",
    "describe_batch",
    "prompt_seeds",
    "sample_prompts_per_image",
    "train_one_step",
    "build_criterion",
]


class NonFiniteLossError(FloatingPointError):
    """A NaN/inf loss or matching cost; the message names the step and the batch's images."""


def build_criterion(cfg, device) -> nn.Module:
    """The Box2Mask criterion of a training config, with the model config's pixel mean/std."""
    from box2mask.model.losses import Box2MaskCriterion

    return Box2MaskCriterion(
        cfg.model.num_classes,
        cfg.loss,
        num_decoder_layers=cfg.model.dec_layers,
        pixel_mean=cfg.model.pixel_mean,
        pixel_std=cfg.model.pixel_std,
    ).to(device)


def build_optimizer(model: nn.Module, cfg) -> torch.optim.AdamW:
    """AdamW with the backbone at lr * backbone_lr_mult and no weight decay on norms, biases and
    embeddings (1-D parameters and nn.Embedding weights), as in Mask2Former."""
    groups = {}  # (is_backbone, decay) -> params
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            full = f"{module_name}.{name}" if module_name else name
            is_backbone = full.startswith("backbone.")
            decay = param.ndim > 1 and not isinstance(module, nn.Embedding)
            groups.setdefault((is_backbone, decay), []).append(param)
    return torch.optim.AdamW(
        [
            {
                "params": params,
                "lr": cfg.lr * (cfg.backbone_lr_mult if is_backbone else 1.0),
                "weight_decay": cfg.weight_decay if decay else 0.0,
            }
            for (is_backbone, decay), params in sorted(groups.items())
        ],
        lr=cfg.lr,
    )


def lr_factor(step: int, *, cfg) -> float:
    """Multiplier of each group's base lr at optimizer step `step` (0-based).

    Linear warm-up from 0.001 over `lr_warmup_steps`, then either the step schedule (x lr_gamma at
    each milestone fraction of `iterations`) or a cosine decay to 0 at `iterations`.
    """
    if step < cfg.lr_warmup_steps:
        alpha = step / cfg.lr_warmup_steps
        warm = 0.001 * (1 - alpha) + alpha
    else:
        warm = 1.0
    if cfg.lr_schedule == "step":
        passed = sum(step >= round(m * cfg.iterations) for m in cfg.lr_milestones)
        return warm * cfg.lr_gamma**passed
    if cfg.lr_schedule == "cosine":
        progress = min(step / max(cfg.iterations, 1), 1.0)
        return warm * 0.5 * (1 + math.cos(math.pi * progress))
    raise ValueError(f"lr_schedule must be 'step' or 'cosine', got {cfg.lr_schedule!r}")


def describe_batch(batch: dict) -> str:
    """'image ids [3, 7] (a.jpg, b.jpg)': how error messages name a batch."""
    names = ", ".join(batch["file_names"])
    return f"image ids {batch['image_ids']} ({names})"


def prompt_seeds(cfg, step: int, image_ids: list[int]) -> list[int]:
    """One seed per image of a batch from (seed, step, image id): the same prompts in any
    process and after a resume."""
    import numpy as np

    return [
        int(np.random.SeedSequence((cfg.seed, step, i)).generate_state(1)[0]) for i in image_ids
    ]


def sample_prompts_per_image(targets: list[dict], image_size, *, cfg, seeds: list[int]):
    """`box2mask.model.losses.sample_prompts` with one random generator per image, seeded by
    `seeds`, so that a given image at a given step gets the same prompts in any process (DDP) and after a
    resume. Returns (prompt_boxes, prompt_targets) as `sample_prompts` does."""
    from box2mask.model.losses import sample_prompts

    prompts, prompt_targets = [], []
    for target, seed in zip(targets, seeds, strict=True):
        p, t = sample_prompts(
            [target],
            image_size,
            jitter=cfg.loss.prompt_jitter,
            max_per_image=cfg.loss.prompt_max_per_image,
            generator=torch.Generator().manual_seed(int(seed)),
        )
        prompts += p
        prompt_targets += t
    return prompts, prompt_targets


def _float32(outputs):
    """Cast autocast outputs back to fp32 so the losses run in full precision."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float() if outputs.is_floating_point() else outputs
    if isinstance(outputs, dict):
        return {k: _float32(v) for k, v in outputs.items()}
    if isinstance(outputs, list | tuple):
        return type(outputs)(_float32(v) for v in outputs)
    return outputs


def train_one_step(
    model: nn.Module,
    criterion: nn.Module,
    batch: dict,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    *,
    step: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    clip_grad_norm: float,
    levelset_on: bool,
    prompt_boxes: list[torch.Tensor] | None = None,
    prompt_targets: list[dict] | None = None,
) -> dict[str, float]:
    """Forward, losses, backward, clip, optimizer step. Returns every loss term by name (unweighted,
    as floats) plus "loss" (the weighted total) and "grad_norm" (before clipping).

    Raises NonFiniteLossError naming `step` and the batch's images when the total loss (in any
    process) or the matching cost is not finite; the model is then left unchanged.
    """
    images = batch["images"].to(device, non_blocking=True)
    targets = [{k: v.to(device) for k, v in t.items()} for t in batch["targets"]]
    prompts = None if prompt_boxes is None else [p.to(device) for p in prompt_boxes]
    if prompt_targets is not None:
        prompt_targets = [{k: v.to(device) for k, v in t.items()} for t in prompt_targets]
    autocast = (
        torch.autocast(device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    problem = None
    try:
        with autocast:
            outputs = model(images, prompt_boxes=prompts)
        losses = criterion(
            _float32(outputs),
            targets,
            images,
            levelset_on=levelset_on,
            prompt_targets=prompt_targets,
        )
        weights = criterion.weight_dict
        total = sum(weights[k] * v for k, v in losses.items() if k in weights)
        if not torch.isfinite(total):
            bad = [k for k, v in losses.items() if not torch.isfinite(v)]
            problem = f"non-finite loss ({', '.join(bad) or 'total'})"
    except FloatingPointError as err:  # non-finite matching cost, raised by the matcher
        problem = f"non-finite matching cost ({err})"
    if not all_true(problem is None, device):  # every process stops at the same step
        where = problem or "non-finite loss in another process"
        raise NonFiniteLossError(f"step {step}: {where} on batch {describe_batch(batch)}")

    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(total).backward()
        scaler.unscale_(optimizer)
    else:
        total.backward()
    max_norm = clip_grad_norm if clip_grad_norm > 0 else float("inf")
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    if scaler is not None:
        scaler.step(optimizer)  # skipped by the scaler when fp16 gradients overflowed
        scaler.update()
    else:
        optimizer.step()
    stats = {k: float(v.detach()) for k, v in losses.items()}
    stats["loss"] = float(total.detach())
    stats["grad_norm"] = float(grad_norm)
    return stats
