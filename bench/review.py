"""Review queue by likely errors: does the quality score find the bad masks? One table.

    python -m bench.review --data ../shared/data/balloon ../shared/data/nuclei
                           [--checkpoint CKPT ...] [--split all|train|val] [--limit N] [--fit]

Prompts are the ground-truth tight boxes. For every mask: its true IoU against the ground truth,
the predictor's own score, and `box2mask.ops.mask_quality.quality_score` (the predictor's score
times the shape penalties; the second mask for the disagreement signal is a second run with
`--alt-steps` level-set steps: half the default's steps, or a refined run of a model whose
proposals are unrefined). Columns, per ranking (random, predictor score, quality score):
Spearman(ranking, IoU), and the share of truly bad masks (IoU < 0.75) found among the
lowest-ranked 20% (the recall of a review queue that looks at one mask in five; a random order
finds 20% in expectation).

--fit chooses the penalty weights on the TRAIN split (coordinate search over a small grid,
maximising Spearman) and reports them on val and all; without it the defaults in
`box2mask.ops.mask_quality.QUALITY_WEIGHTS` are used.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from box2mask.io.atomic_write import atomic_write
from box2mask.io.image_io import load_image
from box2mask.ops.mask_quality import QUALITY_WEIGHTS, quality_features, quality_score
from box2mask.ops.metrics import mask_iou
from train.box_prompt_eval import load_dataset, spearman

BAD_IOU = 0.75  # a mask below this IoU with the ground truth is "bad"
QUEUE_SHARE = 0.2  # the review queue looks at the lowest-ranked 20%
FEATURES = ("stray", "holes", "fill", "edges", "disagreement")


def collect(predictor, dataset_dir, split, limit, alt_steps, progress=True) -> dict:
    """Per-mask arrays over a dataset: iou, score, each feature, and split (str)."""
    import torch
    from tqdm import tqdm

    rows = {k: [] for k in ("iou", "score", "split", *FEATURES)}
    for image_split in ("train", "val") if split == "all" else (split,):
        items = load_dataset(dataset_dir, split=image_split, limit=limit)
        for path, instances in tqdm(
            items, desc=f"{Path(dataset_dir).name} {image_split}", disable=not progress
        ):
            if not instances:
                continue
            predictor.set_image(load_image(path))
            boxes = np.stack([box for _, box in instances])
            masks, scores = predictor.predict(boxes)
            other, _ = predictor.predict(boxes, steps=alt_steps)
            feats = quality_features(torch.from_numpy(masks), boxes, torch.from_numpy(other))
            for key in FEATURES:
                rows[key].extend(feats[key].tolist())
            rows["score"].extend(np.asarray(scores, dtype=np.float64).tolist())
            rows["iou"].extend(mask_iou(m, gt) for m, (gt, _) in zip(masks, instances, strict=True))
            rows["split"].extend([image_split] * len(boxes))
    return {k: np.asarray(v) for k, v in rows.items()}


def queue_recall(ranking: np.ndarray, ious: np.ndarray, rng=None) -> float:
    """Share of bad masks (IoU < BAD_IOU) among the lowest-ranked QUEUE_SHARE of all masks.

    Ties are broken at random (`rng`), so a constant ranking scores like a random order.
    """
    bad = ious < BAD_IOU
    if not bad.any():
        return float("nan")
    rng = rng or np.random.default_rng(0)
    order = np.lexsort((rng.random(len(ranking)), ranking))  # by ranking, ties at random
    queue = order[: int(round(QUEUE_SHARE * len(ranking)))]
    return float(bad[queue].sum() / bad.sum())


def rankings(data: dict, weights: dict) -> dict:
    """{name: (N,) ranking, higher = more likely good} for the three orders."""
    import torch

    feats = {k: torch.from_numpy(data[k].astype(np.float64)) for k in FEATURES}
    rng = np.random.default_rng(1)
    return {
        "random order": rng.random(len(data["iou"])),
        "predictor score": data["score"],
        "quality score": quality_score(feats, data["score"], weights).numpy(),
    }


def fit_weights(data: dict, grid=(0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0), passes=2) -> dict:
    """Coordinate search of the penalty weights maximising Spearman(quality, IoU) on `data`."""
    weights = dict(QUALITY_WEIGHTS)
    for _ in range(passes):
        for name in weights:
            best = None
            for value in grid:
                trial = {**weights, name: value}
                rho = spearman(rankings(data, trial)["quality score"], data["iou"])
                if best is None or rho > best[0]:
                    best = (rho, value)
            weights[name] = best[1]
    return weights


def table(results: dict, weights: dict) -> str:
    """Markdown rows: dataset, predictor, subset, masks, bad masks, then per ranking the two numbers."""
    lines = [
        "| data | predictor | split | masks | bad (IoU<0.75) | ranking | Spearman vs IoU "
        "| bad found in lowest 20% |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (data_name, pred_name), data in results.items():
        for subset in ("val", "all"):
            keep = data["split"] == subset if subset != "all" else np.ones(len(data["iou"]), bool)
            if not keep.any():
                continue
            part = {k: v[keep] for k, v in data.items()}
            bad = int((part["iou"] < BAD_IOU).sum())
            for name, ranking in rankings(part, weights).items():
                rho = spearman(ranking, part["iou"])
                recall = queue_recall(ranking, part["iou"])
                lines.append(
                    f"| {data_name} | {pred_name} | {subset} | {len(part['iou'])} | {bad} | {name} "
                    f"| {'-' if rho != rho else f'{rho:.2f}'} "
                    f"| {'-' if recall != recall else f'{100 * recall:.0f}%'} |"
                )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", required=True, help="dataset folders (COCO + images/)")
    parser.add_argument("--checkpoint", nargs="*", default=[], help="trained models to add")
    parser.add_argument("--no-default", action="store_true", help="skip the embedded default")
    parser.add_argument("--split", default="all", choices=["all", "train", "val"])
    parser.add_argument("--limit", type=int, default=None, help="first N images of each split")
    parser.add_argument(
        "--alt-steps",
        type=int,
        default=None,
        help="level-set steps of the second run (default: half the default's "
        "steps; 10 for a checkpoint)",
    )
    parser.add_argument("--fit", action="store_true", help="fit the penalty weights on train")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--save", default=None, help="write the per-mask arrays to this .npz")
    parser.add_argument("--load", default=None, help="read per-mask arrays from a --save file")
    args = parser.parse_args(argv)

    from box2mask import build_predictor

    results = {}
    if args.load:
        saved = np.load(args.load, allow_pickle=False)
        for key in {k.split("/")[0] for k in saved.files}:
            data_name, pred_name = key.split("|")
            results[(data_name, pred_name)] = {
                k.split("/")[1]: saved[k] for k in saved.files if k.startswith(key + "/")
            }
    else:
        predictors = [] if args.no_default else [("default", None)]
        predictors += [(Path(c).parent.name or Path(c).name, c) for c in args.checkpoint]
        for data_dir in args.data:
            for pred_name, ckpt in predictors:
                predictor = build_predictor(ckpt, device=args.device)
                alt = args.alt_steps
                if alt is None:
                    alt = predictor.config.steps // 2 if ckpt is None else 10
                results[(Path(data_dir).name, pred_name)] = collect(
                    predictor, data_dir, args.split, args.limit, alt
                )
    if args.save:
        arrays = {f"{d}|{p}/{k}": v for (d, p), data in results.items() for k, v in data.items()}
        with atomic_write(args.save, "wb") as f:
            np.savez_compressed(f, **arrays)

    weights = dict(QUALITY_WEIGHTS)
    if args.fit:
        train = {}
        for data in results.values():
            keep = data["split"] == "train"
            for k, v in data.items():
                train.setdefault(k, []).append(v[keep])
        train = {k: np.concatenate(v) for k, v in train.items()}
        weights = fit_weights(train)
        print(f"weights fitted on train ({len(train['iou'])} masks): {json.dumps(weights)}")
    print(f"\nquality weights: {json.dumps(weights)}\n")
    print(table(results, weights))
    return 0


if __name__ == "__main__":
    sys.exit(main())
