"""`box2mask eval`: evaluate a checkpoint on a COCO dataset with ground-truth masks.

    box2mask eval --checkpoint runs/tiny/last.pt --data ../shared/data/balloon --split val

Prints two tables: COCO mask AP of the automatic proposals (`predict_all`), and box-prompt
quality with the GT boxes as prompts (mIoU, boundary F at 2 px, mIoU by object size; the
definitions of bench/quality.py). `--json` also writes both to a file.
"""

import argparse
import json
import math
import sys
from pathlib import Path

from box2mask.io.atomic_write import write_text_atomic

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", required=True, help="a checkpoint written by box2mask train"
    )
    parser.add_argument("--data", required=True, help="dataset folder: annotations.json + images/")
    parser.add_argument(
        "--split", default="val", help="images whose `split` field equals this ('' = all)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument(
        "--refine-steps",
        type=int,
        default=None,
        help="level-set refinement steps for the box prompts (default: the predictor's)",
    )
    parser.add_argument(
        "--score-threshold",
        type=float,
        default=0.05,
        help="keep proposals above this score for mask AP (low: AP rewards recall)",
    )
    parser.add_argument("--limit", type=int, default=None, help="box prompts: first N images only")
    parser.add_argument(
        "--skip", choices=["ap", "prompts"], action="append", default=[], help="skip a part"
    )
    parser.add_argument("--json", help="also write the results to this JSON file")


def _fmt(value, digits=3) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.{digits}f}"
    )


def format_report(name: str, ap: dict | None, prompts: dict | None) -> str:
    lines = []
    if ap is not None:
        lines += [
            f"COCO mask AP, automatic proposals ({name}, {ap['detections']} detections)",
            "",
            "| AP | AP50 | AP75 | APs | APm | APl |",
            "|---|---|---|---|---|---|",
            "| "
            + " | ".join(_fmt(ap[k], 1) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl"))
            + " |",
            "",
        ]
    if prompts is not None:
        p = prompts
        lines += [
            f"Box prompts = GT boxes ({name}, {p['count']} boxes)",
            "",
            "| mIoU | boundary F (2 px) | mIoU small | mIoU medium | mIoU large | ms / box |",
            "|---|---|---|---|---|---|",
            f"| {_fmt(p['miou'])} | {_fmt(p['boundary_f'])} | {_fmt(p['miou_small'])} "
            f"({p['count_small']}) | {_fmt(p['miou_medium'])} ({p['count_medium']}) | "
            f"{_fmt(p['miou_large'])} ({p['count_large']}) | {_fmt(p['ms_per_box'], 1)} |",
        ]
    return "\n".join(lines)


def run(args) -> int:
    from box2mask.io.checkpoint import CheckpointError
    from box2mask.model.predictor import Box2MaskPredictor
    from train.dataset import DatasetError
    from train.evaluate import evaluate_box_prompts, evaluate_mask_ap

    options = {} if args.refine_steps is None else {"refine_steps": args.refine_steps}
    try:
        predictor = Box2MaskPredictor.from_checkpoint(
            args.checkpoint, device=args.device, **options
        )
        ap = None
        if "ap" not in args.skip:
            ap = evaluate_mask_ap(
                predictor, args.data, split=args.split, score_threshold=args.score_threshold
            )
        prompts = None
        if "prompts" not in args.skip:
            prompts = evaluate_box_prompts(predictor, args.data, split=args.split, limit=args.limit)
    except (CheckpointError, DatasetError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    name = f"{Path(args.data).name}, split {args.split or 'all'}, {predictor.model_version}"
    print(format_report(name, ap, prompts))
    if args.json:
        payload = {"mask_ap": ap, "box_prompts": prompts}
        write_text_atomic(args.json, json.dumps(payload, indent=2))
    return 0
