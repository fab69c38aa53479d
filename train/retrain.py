"""One round of the learning loop (`box2mask retrain` is its command line).

    export verified labels -> fine-tune the current model with box supervision (plus, with
    --mask-supervision, a mask loss on the human-corrected masks of training images) -> evaluate candidate
    and current model on the held-out verified masks -> promote only if better -> register

Every candidate is kept in the registry (checkpoint, resolved config, data snapshot id, metrics,
time); only a better one becomes the promoted model, which a running annotator watching the
registry picks up without a restart. A lock keeps two retrains apart; a retrain that crashes
leaves the registry and the promoted model untouched (see train/registry.py).

Example cron line (every Monday 02:00; the lock makes an overlapping run exit at once):
    0 2 * * 1  cd /data/project && .venv/bin/box2mask retrain --store labels.sqlite \\
               --images images/ --registry models/ >> retrain.log 2>&1
"""

import time
from pathlib import Path

__all__ = ["RetrainError", "retrain"]


class RetrainError(RuntimeError):
    """A round that cannot run (e.g. the label store has no boxes yet); nothing was registered."""


def _current_predictor(registry, device):
    """The model the annotator serves now: the promoted version, else the embedded default."""
    from box2mask import build_predictor

    promoted = registry.promoted()
    if promoted is None:
        return build_predictor(None, device=device), "embedded-default"
    return build_predictor(
        registry.checkpoint_path(promoted.version), device=device
    ), promoted.version


def retrain(
    *,
    store,
    images_dir: Path,
    registry,
    config_path: str | None,
    overrides: dict,
    init_from: str = "promoted",
    metric: str = "miou",
    margin: float = 0.0,
    eval_fraction: float = 0.2,
    work_dir: Path | None = None,
    device: str | None = None,
    progress: bool = True,
    mask_supervision: bool = False,
) -> dict:
    """One round; returns {"version", "promoted", "note", "candidate", "current", "data"}.

    store: an opened LabelStore (box2mask.labels); the caller opens and closes it.
    images_dir: folder the store's image keys are relative to.
    registry: a train.registry.ModelRegistry.
    config_path: YAML training config; None = the packaged configs/tiny_cpu.yaml (Box2Mask-T);
        a config with `learner: crop` trains the crop learner (train/crop_train.py).
    Raises RetrainError, train.config.ConfigError, train.registry.RegistryLocked.
    mask_supervision: verified masks of training images become mask targets (mixed supervision).
    init_from: "promoted" (the promoted model; with none, the config's init_checkpoint if any),
        "scratch" (random weights: the config's init_checkpoint is ignored) or a checkpoint path.
    """
    import torch

    from box2mask import build_predictor
    from box2mask.io.atomic_write import remove_leftovers
    from box2mask.io.checkpoint import load_checkpoint
    from train.config import default_config_path, load_config
    from train.crop_config import is_crop_config
    from train.evaluate import evaluate_box_prompts
    from train.label_export import export_training_data
    from train.registry import should_promote
    from train.train_cmd import train

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    with registry.lock():
        promoted = registry.promoted()
        if init_from == "promoted":
            init_path = registry.checkpoint_path(promoted.version) if promoted else None
        elif init_from == "scratch":
            init_path = None
        else:
            init_path = Path(init_from)
        init_ckpt = load_checkpoint(init_path) if init_path else None
        class_names = init_ckpt["class_names"] if init_ckpt else None
        work = Path(work_dir or registry.root / "rounds" / time.strftime("%Y%m%dT%H%M%S"))
        # a round killed in this folder left half-written temporary files (last.pt, the crop
        # bank): the lock is held, so no writer is at work there
        remove_leftovers(work, recursive=True)
        data = export_training_data(
            store,
            images_dir=images_dir,
            out_dir=work / "data",
            class_names=class_names,
            eval_fraction=eval_fraction,
            mask_supervision=mask_supervision,
        )
        if data.train_boxes == 0:
            raise RetrainError("the label store has no boxes yet: nothing to train on")
        settings = {
            **overrides,
            "data_dir": str(data.train_dir),
            "train_split": "train",
            "val_split": "",
            "out_dir": str(work / "candidate"),
            **({"mask_supervision": True} if mask_supervision else {}),
            # "scratch": random weights, also where the config names an init_checkpoint
            **({"init_checkpoint": ""} if init_from == "scratch" else {}),
        }
        resume = work / "candidate" / "last.pt"
        resume_from = load_checkpoint(resume) if resume.is_file() else None
        if config_path is not None and is_crop_config(config_path):  # the crop learner
            from train.crop_config import load_crop_config
            from train.crop_train import train_crop

            if init_ckpt and init_ckpt["kind"] == "crop-learner":
                settings["init_checkpoint"] = str(init_path)  # fine-tune the served learner
            cfg = load_crop_config(config_path, settings)
            train_crop(cfg, resume_from=resume_from, device=device, progress=progress)
        else:
            if init_path:
                settings["init_checkpoint"] = str(init_path)
            cfg = load_config(config_path or str(default_config_path("tiny_cpu.yaml")), settings)
            train(cfg, resume_from=resume_from, device=device, progress=progress)
        candidate_ckpt = work / "candidate" / "last.pt"

        candidate_metrics, current_metrics = {}, None
        if data.eval_masks:
            candidate = build_predictor(candidate_ckpt, device=device)
            candidate_metrics = evaluate_box_prompts(
                candidate, data.eval_dir, split="all", progress=progress
            )
            current, _ = _current_predictor(registry, device)
            current_metrics = evaluate_box_prompts(
                current, data.eval_dir, split="all", progress=progress
            )
        promote = bool(data.eval_masks) and should_promote(
            candidate_metrics, current_metrics, metric=metric, margin=margin
        )
        note = (
            "promoted"
            if promote
            else "no verified masks to evaluate on: kept, not promoted"
            if not data.eval_masks
            else f"not better than the current model by more than {margin} {metric}: kept"
        )
        info = registry.add_version(
            checkpoint=candidate_ckpt,
            metrics=candidate_metrics,
            data_snapshot=data.snapshot_id,
            parent=promoted.version if (promoted and init_from == "promoted") else None,
            config={
                "config_path": config_path,
                "overrides": overrides,
                "mask_supervision": mask_supervision,
            },
            note=note,
        )
        if promote:
            registry.promote(info.version)
    return {
        "version": info.version,
        "promoted": promote,
        "note": note,
        "candidate": candidate_metrics,
        "current": current_metrics,
        "data": data,
    }
