"""The learning loop counted in clicks: a robot user labels each round's batch (`bench.loop --clicks`).

    .venv/bin/python -m bench.loop --clicks --data ../shared/data/balloon \
        --config configs/crop_photos.yaml --iterations 600 --order index

Every train image starts in a SQLite label store with its boxes and the default's proposals
(unverified). Round 0 is the embedded default, served before any training. In round r = 1..R
the simulated user labels the next batch of train images (a 1/R share, in `--order`): for each
box, the simulated user of `train/robot_user.py` clicks the currently served model's mask (every
click so far with the box, the previous mask as `init_masks` where the model takes it) until its
IoU with the GT mask is >= `target` (0.90), which becomes the verified mask; after `max_clicks`
(20) clicks without it, the GT mask is brushed in. Then `box2mask retrain` trains a candidate
with mask supervision (round 1 from scratch, later rounds fine-tune the last candidate), its gate
compares it with the served model on held-out verified masks, and the served model is
re-measured on the val split: mIoU and accept@0.85 with GT boxes as prompts, and the robot's
NoC@90 (mean clicks to IoU 0.90, 20 when never).
"""

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.clicks import run_robot, summarize
from box2mask.io.rle import decode_segmentation, encode_rle
from box2mask.segment.image import takes_init_masks
from train.box_prompt_eval import evaluate_predictor, load_dataset
from train.robot_user import batch_order, batch_summary, label_image

__all__ = ["run_click_loop", "format_rows"]


def _served(registry):
    """The promoted model's predictor (the embedded default before the first promotion)."""
    from box2mask import build_predictor

    promoted = registry.promoted()
    return build_predictor(registry.checkpoint_path(promoted.version) if promoted else None)


def _val_row(predictor, data: Path, val_items, max_clicks: int) -> dict:
    """Val mIoU, boundary F, accept@0.85 (GT boxes) and the robot's NoC@90 of one predictor."""
    quality = evaluate_predictor(predictor, data, split="val", progress=False)
    previous = takes_init_masks(predictor)
    track = run_robot({"m": (predictor, previous)}, val_items, max_clicks, progress=False)["m"]
    return {**quality, "noc_90": summarize(track, max_clicks)["noc_90"]}


def _label_batch(store, data: Path, batch: list, gt: dict, predictor, max_clicks: int) -> dict:
    """The simulated user labels the images `batch` with `predictor`; the store gets the masks
    as verified ("human-corrected"). Returns the batch's `batch_summary`."""
    from box2mask.io.image_io import load_image

    every = []
    for key in batch:
        image = load_image(data / "images" / key)
        height, width = image.shape[:2]
        labels = store.labels(key)
        gts = [decode_segmentation(a["segmentation"], height, width) for a in gt[key]]
        boxes = np.array([label.box_xyxy for label in labels], dtype=np.float64)
        answers = label_image(predictor, image, gts, boxes, max_clicks=max_clicks)
        for label, answer in zip(labels, answers, strict=True):
            store.update(
                replace(
                    label,
                    mask_rle=encode_rle(answer.mask),
                    source="human-corrected",
                    verified=True,
                )
            )
        every += answers
        store.set_image_done(key, True)
    return batch_summary(every)


def run_click_loop(args, tmp: Path) -> list[dict]:
    """Rounds 0..args.rounds of the click-counted loop (see the module docstring); one row each.

    args: bench.loop's parsed arguments (data, config, iterations, finetune_lr, eval_fraction,
    order, seed, rounds, max_clicks, learner, self_train)."""
    from bench.loop import _fill_store, _round_overrides, _uncertain_first
    from box2mask import build_predictor
    from box2mask.labels import SQLiteStore
    from train.registry import ModelRegistry
    from train.retrain import retrain

    store = SQLiteStore(tmp / "clicks.sqlite", args.data / "images")
    registry = ModelRegistry(tmp / "clicks-models")
    keys, gt = _fill_store(store, args.data, build_predictor(None))
    val_items = load_dataset(args.data, "val")
    rows = [{"round": 0, "verified_images": 0, "promoted": "-", "gate": "-", "minutes": 0.0}]
    rows[0].update(_val_row(build_predictor(None), args.data, val_items, args.max_clicks))
    rows[0].update(clicks="-", objects="-", brushed="-", untouched="-", served="embedded default")
    print(json.dumps(rows[-1]), flush=True)
    sizes = [len(part) for part in np.array_split(np.arange(len(keys)), args.rounds)]
    unlabeled = batch_order(
        keys, order="random" if args.order == "random" else "index", seed=args.seed
    )
    previous, init_from, verified = None, "scratch", 0
    for rnd, size in enumerate(sizes, start=1):
        if args.order == "uncertain" and previous is not None:
            unlabeled = _uncertain_first(args.data, unlabeled, gt, previous)
        batch, unlabeled = unlabeled[:size], unlabeled[size:]
        started = time.perf_counter()
        spent = _label_batch(store, args.data, batch, gt, _served(registry), args.max_clicks)
        verified += len(batch)
        result = retrain(
            store=store,
            images_dir=args.data / "images",
            registry=registry,
            config_path=args.config,
            overrides={**_round_overrides(args, rnd, previous), "seed": args.seed},
            mask_supervision=True,
            init_from=init_from,
            margin=0.0,
            eval_fraction=args.eval_fraction,
            work_dir=tmp / f"clicks-round{rnd}",
            progress=False,
        )
        previous = registry.checkpoint_path(result["version"])
        init_from = str(previous)  # the next round fine-tunes this round's candidate
        promoted = registry.promoted()
        row = {
            "round": rnd,
            "verified_images": verified,
            **spent,
            "promoted": result["promoted"],
            "gate": f"{result['candidate'].get('miou', float('nan')):.3f} vs "
            f"{(result['current'] or {}).get('miou', float('nan')):.3f}",
            "served": promoted.version if promoted else "embedded default",
        }
        row.update(_val_row(_served(registry), args.data, val_items, args.max_clicks))
        row["minutes"] = (time.perf_counter() - started) / 60
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items()}, default=str), flush=True)
    store.close()
    return rows


def format_rows(rows: list[dict]) -> str:
    """The per-round Markdown table of `run_click_loop` rows."""
    lines = [
        "| round | verified images | clicks on the batch (objects, brushed) | clicks / object | "
        "batch labels: 0-click share / mIoU vs GT | "
        "gate (candidate vs served, held-out mIoU) | promoted | served model | val mIoU / BF / "
        "accept@0.85 | val NoC@90 | minutes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["round"] == 0:
            spent, per, labels = "-", "-", "-"
        else:
            spent = f"{r['clicks']} ({r['objects']}, {r['brushed']})"
            per = f"{r['clicks'] / max(r['objects'], 1):.2f}"
            labels = f"{r['untouched'] / max(r['objects'], 1):.2f} / {r['verified_miou']:.3f}"
        lines.append(
            f"| {r['round']} | {r['verified_images']} | {spent} | {per} | {labels} | {r['gate']} | "
            f"{r['promoted']} | {r['served']} | {r['miou']:.3f} / {r['boundary_f']:.3f} / "
            f"{r['accept_85']:.2f} | {r['noc_90']:.2f} | {r['minutes']:.1f} |"
        )
    return "\n".join(lines)
