"""`box2mask retrain`: the command line of one learning-loop round (train.retrain.retrain).

It opens the label store (SQLite, or a FiftyOne dataset) and the registry, runs the round, prints
what happened and closes the store. Exit status: 0 done (promoted or kept), 2 bad arguments or
nothing to train on, 3 another retrain holds the registry lock, 1 a file could not be written
(disk full, read-only folder: the registry is left as it was).

Example cron line (every Monday 02:00; the lock makes an overlapping run exit at once):
    0 2 * * 1  cd /data/project && .venv/bin/box2mask retrain --store labels.sqlite \\
               --images images/ --registry models/ >> retrain.log 2>&1
"""

import argparse
import sys
from pathlib import Path

__all__ = ["add_arguments", "run"]


class UsageError(ValueError):
    """Arguments that name no usable label store."""


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
        "--config",
        default=None,
        help="YAML training config (default: the packaged configs/tiny_cpu.yaml)",
    )
    parser.add_argument(
        "--set",
        nargs="+",
        action="extend",
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
    from annotator.fiftyone.store import FiftyOneStore

    return FiftyOneStore(args.fiftyone), Path("/")


def _open_store(args):
    """The label store the arguments name, and the folder its image keys are relative to."""
    if bool(args.store) == bool(args.fiftyone):
        raise UsageError("give exactly one of --store PATH or --fiftyone NAME")
    if args.store:
        from box2mask.labels import SQLiteStore

        if not Path(args.store).is_file():
            raise UsageError(f"--store {args.store}: no such label store")
        if not args.images:
            raise UsageError("--images DIR is required with --store")
        return SQLiteStore(args.store, args.images), Path(args.images)
    from annotator.fiftyone.store import FiftyOneStore

    return FiftyOneStore(args.fiftyone), Path("/")


def run(args: argparse.Namespace) -> int:
    from train.config import ConfigError, parse_set_args
    from train.registry import ModelRegistry, RegistryLocked
    from train.retrain import RetrainError, retrain

    try:
        store, images_dir = _open_store(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    registry_dir = args.registry or (
        Path(args.store).resolve().parent / "models" if args.store else Path("models")
    )
    try:
        registry = ModelRegistry(registry_dir)
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
    except (ConfigError, RetrainError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # disk full, read-only work folder or registry
        print(
            f"error: {err}; the registry {registry_dir} is unchanged (the promoted model is still "
            "the one served)",
            file=sys.stderr,
        )
        return 1
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
