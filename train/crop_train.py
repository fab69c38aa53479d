"""Training the crop learner from boxes (box2mask/crop/learner.py), on CPU or one GPU.

    box2mask train --config configs/crop_nuclei.yaml --data ../shared/data/nuclei \
        --out runs/nuclei --max-minutes 20

One pass over the training images builds the crop bank (train/crop_bank.py); then each step draws
`batch_size` crops, flips / transposes them, and minimises the weighted box-supervised terms of
box2mask/crop/losses.py. The run directory gets config.yaml, metrics.jsonl (every `log_every`
steps: each loss term, crops/s; every `eval_every` steps: val mIoU on crops) and last.pt, a
checkpoint of kind `crop-learner` that every command taking `--checkpoint` serves. At the end the
served predictor is evaluated on the val split with GT boxes as prompts (the quality tables'
numbers) and that row is logged with `"final": true`.
"""

import json
import math
import time
from pathlib import Path

import torch

from box2mask.crop.learner import KIND, CropUNet, base_logits, crop_inputs
from box2mask.crop.losses import crop_losses, total_loss
from box2mask.ops.levelset import box_masks_from_boxes, inscribed_ellipses
from train.crop_augment import jitter_colours
from train.crop_bank import CropBank, load_or_build_crop_bank
from train.crop_click_sim import clicked_crop_weights, no_click_channels, simulated_click_channels
from train.crop_config import CropTrainConfig

__all__ = ["augment_batch", "forward_crops", "train_crop", "evaluate_crops", "widen_inputs"]


# box2mask.ops.lcm's neighbour offsets (dy, dx), row by row: (-d,-d) (-d,0) (-d,d) (0,-d) (0,d)
# (d,-d) (d,0) (d,d). A flip maps offset k to offset PERM[k] (each is its own inverse).
NEIGHBOUR_PERMUTATION = {
    "h": [2, 1, 0, 4, 3, 7, 6, 5],  # dx -> -dx
    "v": [5, 6, 7, 3, 4, 0, 1, 2],  # dy -> -dy
    "t": [0, 3, 5, 1, 6, 2, 4, 7],  # (dy, dx) -> (dx, dy)
}


def augment_batch(batch: dict, generator: torch.Generator) -> dict:
    """Random horizontal flip, vertical flip and transpose per crop (the box moves with it).

    batch: "rgb" (N, 3, S, S), "teacher" / "masks" (N, S, S), "grid_boxes" (N, 4) XYXY grid px,
    "affinity" (N, 8, S, S) (neighbour k = box2mask.ops.lcm offset k: flipped maps also swap which
    neighbour each channel means, `NEIGHBOUR_PERMUTATION`).
    """
    n, size = len(batch["grid_boxes"]), batch["rgb"].shape[-1]
    out = dict(batch)
    maps = ("rgb", "teacher", "masks", "affinity")
    for flip in ("h", "v", "t"):
        pick = torch.rand(n, generator=generator) < 0.5
        pick = pick.to(batch["grid_boxes"].device)
        b = out["grid_boxes"]
        if flip == "h":
            moved = torch.stack([size - b[:, 2], b[:, 1], size - b[:, 0], b[:, 3]], 1)
        elif flip == "v":
            moved = torch.stack([b[:, 0], size - b[:, 3], b[:, 2], size - b[:, 1]], 1)
        else:
            moved = b[:, [1, 0, 3, 2]]
        out["grid_boxes"] = torch.where(pick[:, None], moved, b)
        for key in maps:
            x = out[key]
            if flip == "h":
                y = x.flip(-1)
            elif flip == "v":
                y = x.flip(-2)
            else:
                y = x.transpose(-1, -2)
            if key == "affinity":
                y = y[:, NEIGHBOUR_PERMUTATION[flip]]
            shape = (n,) + (1,) * (x.dim() - 1)
            out[key] = torch.where(pick.view(shape), y, x)
    return out


def _batch(bank: CropBank, index: torch.Tensor, device) -> dict:
    return {
        "rgb": bank.rgb[index].to(device).float() / 255.0,
        "grid_boxes": bank.grid_boxes[index].to(device),
        "teacher": bank.teacher[index].to(device).float() / 255.0,
        "masks": bank.masks[index].to(device).float() / 255.0,
        "has_mask": bank.has_mask[index].to(device),
        "affinity": bank.affinity[index].to(device).float(),
    }


def forward_crops(model: CropUNet, batch: dict):
    """Logits (N, S, S) = base + delta, features, and the network input for a batch of crops.

    A click-aware model gets simulated clicks when the batch has a "click_generator" (with
    "click_options", `simulated_click_channels`' keywords), else no clicks."""
    cfg = model.cfg
    size = batch["rgb"].shape[-1]
    if cfg.base == "default":
        base = batch["teacher"]
    else:
        base = inscribed_ellipses(batch["grid_boxes"], size, size, inside=1.0, outside=0.0)
    inputs = crop_inputs(batch["rgb"], batch["grid_boxes"], base)
    box = box_masks_from_boxes(batch["grid_boxes"], size, size)
    if cfg.click_channels:  # simulated clicks on its own errors, or none (the box-only path)
        generator = batch.get("click_generator")
        if generator is None:
            extra = no_click_channels(base)
        else:
            extra = simulated_click_channels(
                model,
                inputs,
                base,
                box,
                batch["masks"],
                batch["has_mask"],
                generator,
                **batch.get("click_options", {}),
            )
        inputs = torch.cat([inputs, extra], dim=1)
    delta, features = model(inputs)
    return base_logits(base, box, cfg) + delta, features, inputs


@torch.no_grad()
def evaluate_crops(model: CropUNet, bank: CropBank, device, batch_size: int = 256) -> dict:
    """mIoU on the crop grid against the bank's masks (GT) and the base's mIoU, over crops."""
    was_training = model.training
    model.eval()
    ious, base_ious = [], []
    for start in range(0, len(bank), batch_size):
        index = torch.arange(start, min(start + batch_size, len(bank)))
        batch = _batch(bank, index, device)
        logits, _, inputs = forward_crops(model, batch)
        gt = batch["masks"] > 0.5
        for pred, store in ((logits > 0, ious), (inputs[:, 5] > 0, base_ious)):
            inter = (pred & gt).sum((1, 2)).float()
            union = (pred | gt).sum((1, 2)).float().clamp_min(1)
            store.append(inter / union)
    model.train(was_training)
    return {
        "val_crop_miou": float(torch.cat(ious).mean()),
        "val_crop_miou_base": float(torch.cat(base_ious).mean()),
    }


def widen_inputs(state: dict, in_channels: int) -> dict:
    """A CropUNet state dict whose first convolution reads `in_channels` inputs: a box-only
    checkpoint's (6 inputs) gets zero weights for the 3 click channels, so a click-aware learner
    fine-tuned from it starts as that learner exactly (clicks change nothing until trained)."""
    key = "down.0.0.weight"
    weight = state[key]  # (C_out, C_in, 3, 3)
    if weight.shape[1] >= in_channels:
        return state
    extra = weight.new_zeros(weight.shape[0], in_channels - weight.shape[1], *weight.shape[2:])
    return {**state, key: torch.cat([weight, extra], dim=1)}


def _lr_at(step: int, cfg: CropTrainConfig, time_frac: float = 0.0) -> float:
    """Linear warmup over `cfg.warmup_steps`, then cosine decay to 0. The decay follows whichever
    runs out first: the steps (step / cfg.iterations) or the time budget (`time_frac`, the share of
    --max-minutes spent), so a time-limited run still ends at a small learning rate."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.iterations - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, max(t, time_frac))))


def train_crop(
    cfg: CropTrainConfig,
    *,
    resume_from: dict | None = None,
    device: str | None = None,
    progress: bool = True,
    time_limit_s: float | None = None,
) -> dict:
    """Train the crop learner with `cfg`; returns the last metrics record (see module docstring).

    `resume_from`: a crop-learner checkpoint dict (`load_checkpoint(OUT/last.pt)`) to continue.
    `time_limit_s`: save last.pt and stop after this long (not counting the crop bank's build);
    the learning rate's cosine decay follows the time spent when that runs out before the steps.
    """
    from tqdm import tqdm

    from box2mask.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from train.config import flatten_config, save_config
    from train.dataset import CocoBoxDataset

    device = torch.device(device or cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    torch.manual_seed(cfg.seed)
    train_set = CocoBoxDataset(cfg.data_dir, split=cfg.train_split)
    teacher = None  # the embedded default
    if cfg.teacher not in ("", "default"):
        from box2mask import build_predictor

        teacher = build_predictor(cfg.teacher, device=str(device))
    bank = load_or_build_crop_bank(
        train_set,
        cfg.model,
        out / "crop_bank.pt",
        mask_supervision=cfg.mask_supervision,
        teacher=teacher,
        views=cfg.views,
        view_margin=cfg.view_margin,
        seed=cfg.seed,
        progress=progress,
    )
    val_bank = None
    if cfg.val_split:
        val_set = CocoBoxDataset(cfg.data_dir, split=cfg.val_split)
        val_bank = load_or_build_crop_bank(
            val_set, cfg.model, out / "val_crop_bank.pt", mask_supervision=True, progress=progress
        )
    model = CropUNet(cfg.model).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step = 0
    if resume_from is not None:
        model.load_state_dict(resume_from["model_state"])
        optimizer.load_state_dict(resume_from["extra"]["optimizer"])
        step = int(resume_from["extra"]["step"])
    elif cfg.init_checkpoint:
        init = load_checkpoint(cfg.init_checkpoint)
        if init["kind"] != KIND:
            raise CheckpointError(f"{cfg.init_checkpoint}: a {init['kind']} checkpoint, not {KIND}")
        model.load_state_dict(widen_inputs(init["model_state"], model.in_channels))
    weights = cfg.loss.as_dict()
    generator = torch.Generator().manual_seed(cfg.seed + step)
    metrics_path = out / "metrics.jsonl"

    def log(record: dict) -> None:
        with open(metrics_path, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def checkpoint() -> None:
        save_checkpoint(
            out / "last.pt",
            model=model,
            model_config=cfg.model,
            class_names=bank.class_names,
            config=flatten_config(cfg),
            model_version=f"crop-{out.name}-{step}",
            extra={"optimizer": optimizer.state_dict(), "step": step},
            kind=KIND,
        )

    model.train()
    start, last = time.perf_counter(), {}
    seen, window_start = 0, time.perf_counter()
    bar = tqdm(total=cfg.iterations, initial=step, desc="train crops", disable=not progress)
    while step < cfg.iterations:
        index = torch.randint(len(bank), (cfg.batch_size,), generator=generator)
        batch = _batch(bank, index, device)
        if cfg.augment:
            batch = augment_batch(batch, generator)
        batch["rgb"] = jitter_colours(batch["rgb"], cfg.colour_jitter, generator)
        batch["click_generator"] = generator
        batch["click_options"] = {
            "max_clicks": cfg.max_sim_clicks,
            "no_click_share": cfg.click_free_share,
            "empty_share": cfg.click_empty_share,
        }
        logits, features, inputs = forward_crops(model, batch)
        weak_weight, mask_weight = clicked_crop_weights(
            has_mask=batch["has_mask"], channels=inputs[:, 6:9], masks=batch["masks"],
            weak_on_verified=cfg.weak_on_verified, weak_on_clicked=cfg.weak_on_clicked,
            click_error_weight=cfg.click_error_weight,
        )  # fmt: skip
        losses = crop_losses(
            logits=logits,
            features=features,
            image=inputs[:, :3],
            grid_boxes=batch["grid_boxes"],
            teacher=batch["teacher"] if cfg.teacher else None,
            masks=batch["masks"],
            has_mask=batch["has_mask"],
            affinity=batch["affinity"],
            rgb=batch["rgb"] if weights["loss_pairwise"] else None,
            weak_weight=weak_weight,
            clicks=inputs[:, 6:8] if cfg.model.click_channels else None,  # the +/- discs
            mask_weight=mask_weight,
        )
        loss = total_loss(losses, weights)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {step}: {losses}")
        time_frac = 0.0
        if time_limit_s:
            time_frac = (time.perf_counter() - start) / time_limit_s
        lr = _lr_at(step, cfg, time_frac)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        seen += cfg.batch_size
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.iterations:
            now = time.perf_counter()
            last = {
                "step": step,
                "loss": float(loss.detach()),
                **{k: float(v.detach()) for k, v in losses.items()},
                "lr": lr,
                "crops_per_s": seen / max(now - window_start, 1e-9),
            }
            seen, window_start = 0, now
            bar.set_postfix(loss=f"{last['loss']:.3f}", crops_s=f"{last['crops_per_s']:.0f}")
            log(last)
        if val_bank is not None and cfg.eval_every and step % cfg.eval_every == 0:
            log({"step": step, **evaluate_crops(model, val_bank, device)})
        if step % cfg.checkpoint_every == 0:
            checkpoint()
        if time_limit_s is not None and time.perf_counter() - start > time_limit_s:
            break
    bar.close()
    checkpoint()
    if val_bank is not None:
        last = {"step": step, **evaluate_crops(model, val_bank, device)}
        log(last)
    return last


def evaluate_served(cfg: CropTrainConfig, device: str = "cpu", progress: bool = True) -> dict:
    """The served predictor of OUT/last.pt on the val split with GT boxes as prompts."""
    from box2mask import build_predictor
    from train.box_prompt_eval import evaluate_predictor

    predictor = build_predictor(Path(cfg.out_dir) / "last.pt", device=device)
    limit = cfg.final_eval_limit or None
    return evaluate_predictor(
        predictor, cfg.data_dir, split=cfg.val_split, limit=limit, progress=progress
    )


def _resolve(args):
    """The run's CropTrainConfig and the checkpoint to resume from (or None): defaults < --config
    (or the config saved in OUT/last.pt with --resume) < --set < --data/--split/--out/--device."""
    from box2mask.io.checkpoint import load_checkpoint
    from train.config import ConfigError, apply_overrides, parse_set_args
    from train.crop_config import load_crop_config

    if getattr(args, "backbone_weights", None):
        raise ConfigError("--backbone-weights: the crop learner has no backbone to initialise")
    cli = {}
    for key, value in (
        ("data_dir", args.data),
        ("train_split", args.split),
        ("out_dir", args.out),
        ("device", args.device),
    ):
        if value is not None:
            cli[key] = value
    ckpt = None
    if args.resume:
        last = Path(args.out or CropTrainConfig.out_dir) / "last.pt"
        if not last.is_file():
            raise ConfigError(f"--resume: {last} does not exist (nothing to resume)")
        ckpt = load_checkpoint(last)
        cfg = apply_overrides(CropTrainConfig(), ckpt["config"], source=str(last))
        cfg = apply_overrides(cfg, parse_set_args(args.set), source="--set")
    else:
        cfg = load_crop_config(args.config, parse_set_args(args.set))
    cfg = apply_overrides(cfg, cli, source="command line")
    if not cfg.data_dir:
        raise ConfigError("--data DIR is required (a folder with annotations.json and images/)")
    return cfg, ckpt


def run(args) -> int:
    """`box2mask train` for a config with `learner: crop` (see train/train_cmd.py)."""
    import sys

    from box2mask.io.checkpoint import CheckpointError
    from train.config import ConfigError
    from train.dataset import DatasetError

    try:
        cfg, ckpt = _resolve(args)
        limit = args.max_minutes * 60 if args.max_minutes else None
        device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        train_crop(cfg, resume_from=ckpt, device=device, time_limit_s=limit)
        if cfg.val_split:
            row = evaluate_served(cfg, device=device)
            record = {"final": True, "split": cfg.val_split, **row}
            with open(Path(cfg.out_dir) / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")
            print(
                f"{cfg.val_split}: served mIoU {row['miou']:.4f}, boundary F "
                f"{row['boundary_f']:.4f}, {row['ms_per_box']:.1f} ms per box (median)"
            )
        print(f"checkpoint: {Path(cfg.out_dir) / 'last.pt'}")
    except (ConfigError, DatasetError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except FloatingPointError as err:
        print(
            f"error: training stopped: {err}; last.pt holds the last good weights", file=sys.stderr
        )
        return 1
    return 0
