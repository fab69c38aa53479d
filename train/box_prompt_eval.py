"""Box-prompt quality of any predictor on a COCO dataset with ground-truth masks.

The one definition of the numbers in the quality tables (bench/quality.py), `box2mask eval` and
`box2mask retrain`: the GT boxes (tight box of each GT mask) are the prompts; per predictor one row
with mIoU, boundary F (2 px), mIoU by COCO size, median ms per box and the Spearman correlation
of the predictor's score with the true IoU. Metrics live in box2mask/ops/metrics.py.
"""

import json
import time
from pathlib import Path

import numpy as np

from box2mask.io.image_io import load_image
from box2mask.io.rle import decode_segmentation
from box2mask.ops.metrics import MaskQualityEvaluator

__all__ = ["load_dataset", "spearman", "evaluate_predictors", "evaluate_predictor"]


def load_dataset(
    dataset_dir,
    split: str = "all",
    limit: int | None = None,
    annotations: str = "annotations.json",
    image_dir: str = "images",
):
    """[(image path, [(GT mask (H, W) bool, tight box XYXY)])] for the images of a COCO dataset:
    `dataset_dir/annotations` (a COCO file) with the images in `dataset_dir/image_dir`."""
    dataset_dir = Path(dataset_dir)
    ann_path = dataset_dir / annotations
    if not ann_path.is_file():
        raise FileNotFoundError(f"{ann_path}: no such file (expected a COCO annotations.json)")
    coco = json.loads(ann_path.read_text())
    images = [im for im in coco["images"] if split == "all" or im.get("split") == split]
    images = sorted(images, key=lambda im: im["id"])[:limit]
    by_image = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    items = []
    for im in images:
        instances = []
        for ann in by_image.get(im["id"], []):
            gt = decode_segmentation(ann["segmentation"], im["height"], im["width"])
            ys, xs = np.nonzero(gt)
            if len(xs) == 0:
                continue
            box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)
            instances.append((gt, box))
        items.append((dataset_dir / image_dir / im["file_name"], instances))
    return items


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def evaluate_predictors(
    predictors: dict,
    dataset_dir,
    split="all",
    limit=None,
    progress=True,
    annotations: str = "annotations.json",
    image_dir: str = "images",
):
    """Run every predictor over the dataset once; returns {name: row dict}.

    Each row: miou, boundary_f, miou_small/medium/large, count(_*), ms_per_box (median),
    score_spearman (score vs IoU). Predictors follow the box2mask predictor interface.
    `annotations` / `image_dir` name the COCO file and the image folder inside `dataset_dir`.
    """
    from tqdm import tqdm

    items = load_dataset(dataset_dir, split, limit, annotations=annotations, image_dir=image_dir)
    evaluators = {name: MaskQualityEvaluator() for name in predictors}
    times = {name: [] for name in predictors}
    scores = {name: [] for name in predictors}
    for path, instances in tqdm(items, desc=f"{Path(dataset_dir).name}", disable=not progress):
        if not instances:
            continue
        image = load_image(path)
        boxes = np.stack([box for _, box in instances])
        for name, predictor in predictors.items():
            start = time.perf_counter()
            predictor.set_image(image)
            masks, box_scores = predictor.predict(boxes)
            elapsed_ms = (time.perf_counter() - start) * 1000
            times[name].extend([elapsed_ms / len(boxes)] * len(boxes))
            scores[name].extend(np.asarray(box_scores, dtype=np.float64).tolist())
            for mask, (gt, _) in zip(masks, instances, strict=True):
                evaluators[name].process(mask, gt)
    rows = {}
    for name, evaluator in evaluators.items():
        row = evaluator.summarize()
        row["ms_per_box"] = float(np.median(times[name])) if times[name] else float("nan")
        row["score_spearman"] = spearman(np.array(scores[name]), np.array(evaluator.ious))
        rows[name] = row
    return rows


def evaluate_predictor(
    predictor,
    dataset_dir,
    split="all",
    limit=None,
    progress=True,
    annotations: str = "annotations.json",
    image_dir: str = "images",
) -> dict:
    """One row (see `evaluate_predictors`) for one predictor."""
    rows = evaluate_predictors(
        {"model": predictor}, dataset_dir, split, limit, progress, annotations, image_dir
    )
    return rows["model"]
