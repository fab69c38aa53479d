"""`box2mask retrain`: one round of the learning loop.

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

import argparse
import sys
import time
from pathlib import Path

__all__ = ["add_arguments", "run", "retrain"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_argument_group("labels (one of)")
    src.add_argument("--store", help="SQLite label store written by `box2mask annotate`")
    src.add_argument("--fiftyone", metavar="NAME", help="FiftyOne dataset used as the label store")
    parser.add_argument(
        "--images", help="images folder the store's image keys are relative to (with --store)"
    )
    parser.add_argument(
        "--registry",
        help="model registry folder (default: a `models` folder beside the store)",
    )
    parser.add_argument(
        "--from",
        dest="init_from",
        metavar="CKPT|promoted|scratch",
        default="promoted",
        help="weights to start from: a checkpoint file, the registry's promoted model "
        "(default; from scratch when there is none), or `scratch`",
    )
    parser.add_argument(
        "--config", default=None, help="YAML training config (default: configs/tiny_cpu.yaml)"
    )
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides, e.g. iterations=300",
    )
    parser.add_argument(
        "--metric", default="miou", help="metric of the promotion gate (default: miou)"
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=0.0,
        help="promote only if the candidate beats the current model by more than this",
    )
    parser.add_argument(
        "--eval-fraction",
        type=float,
        default=0.2,
        help="share of images whose verified masks are held out for evaluation (fixed by hash)",
    )
    parser.add_argument(
        "--work", help="work folder for this round (default: REGISTRY/rounds/<time>)"
    )
    parser.add_argument(
        "--mask-supervision",
        action="store_true",
        help="mixed supervision: human-verified masks of training images (not the held-out ones) "
        "also get a mask loss; every other instance keeps box supervision only",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda if available")


def _open_store(args):
    if bool(args.store) == bool(args.fiftyone):
        raise SystemExit("give exactly one of --store PATH or --fiftyone NAME")
    if args.store:
        from annotator.store import SQLiteStore

        if not Path(args.store).is_file():
            raise SystemExit(f"--store {args.store}: no such label store")
        if not args.images:
            raise SystemExit("--images DIR is required with --store")
        return SQLiteStore(args.store, args.images), Path(args.images)
    from annotator.fiftyone_store import FiftyOneStore

    return FiftyOneStore(args.fiftyone), Path("/")


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
    """One round; returns {"version", "promoted", "candidate", "current", "data"}.

    mask_supervision: verified masks of training images become mask targets (mixed supervision).
    """
    import torch

    from box2mask import build_predictor
    from box2mask.checkpoint import load_checkpoint
    from train.config import load_config
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
        class_names = load_checkpoint(init_path)["class_names"] if init_path else None
        work = Path(work_dir or registry.root / "rounds" / time.strftime("%Y%m%dT%H%M%S"))
        data = export_training_data(
            store,
            images_dir=images_dir,
            out_dir=work / "data",
            class_names=class_names,
            eval_fraction=eval_fraction,
            mask_supervision=mask_supervision,
        )
        if data.train_boxes == 0:
            raise SystemExit("the label store has no boxes yet: nothing to train on")
        cfg = load_config(
            config_path or str(Path(__file__).resolve().parents[1] / "configs" / "tiny_cpu.yaml"),
            {
                **overrides,
                "data_dir": str(data.train_dir),
                "train_split": "train",
                "val_split": "",
                "out_dir": str(work / "candidate"),
                **({"mask_supervision": True} if mask_supervision else {}),
                **({"init_checkpoint": str(init_path)} if init_path else {}),
            },
        )
        resume = work / "candidate" / "last.pt"
        train(
            cfg,
            resume_from=load_checkpoint(resume) if resume.is_file() else None,
            device=device,
            progress=progress,
        )
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


def run(args: argparse.Namespace) -> int:
    from train.config import ConfigError, parse_set_args
    from train.registry import ModelRegistry, RegistryLocked

    store, images_dir = _open_store(args)
    registry_dir = args.registry or (
        Path(args.store).resolve().parent / "models" if args.store else Path("models")
    )
    registry = ModelRegistry(registry_dir)
    try:
        result = retrain(
            store=store,
            images_dir=images_dir,
            registry=registry,
            config_path=args.config,
            overrides=parse_set_args(args.set),
            init_from=args.init_from,
            metric=args.metric,
            margin=args.margin,
            eval_fraction=args.eval_fraction,
            work_dir=Path(args.work) if args.work else None,
            device=args.device,
            mask_supervision=args.mask_supervision,
        )
    except RegistryLocked as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        store.close()
    data = result["data"]
    print(
        f"data {data.snapshot_id}: {data.train_images} images / {data.train_boxes} boxes for "
        f"training ({data.mask_supervised} with a mask target), {data.eval_masks} held-out "
        "verified masks"
    )
    cur = result["current"] or {}
    cand = result["candidate"]
    if cand:
        print(
            f"candidate {args.metric} {cand.get(args.metric, float('nan')):.4f}  current "
            f"{cur.get(args.metric, float('nan')):.4f}"
        )
    print(f"{result['version']}: {result['note']}")
    return 0
