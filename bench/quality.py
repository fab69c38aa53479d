"""Box -> mask quality on a dataset with ground-truth masks: one table, all methods in one run.

    python -m bench.quality --data ../shared/data/balloon [--split val|train|all] [--limit N]
                            [--checkpoint CKPT ...]
                            [--methods box,ellipse,grabcut_image,grabcut_crop,default]

Prompts are the ground-truth boxes (the tight box of each GT mask). Columns: mIoU, boundary F at
2 px, accept@0.85 (share of masks with IoU >= 0.85: those a person need not edit), mIoU and
boundary F by COCO size (small < 32^2, medium < 96^2, large, by GT mask area), median ms per
box (a vectorised method's set_image + predict time is shared by its boxes), and the Spearman
correlation of the method's score with the true IoU (how well the score ranks masks).

The rows are computed by `train/box_prompt_eval.py` (`evaluate_predictor(predictor, dataset_dir,
split)`), which `box2mask eval` and `box2mask retrain` use as well.
"""

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from train.box_prompt_eval import evaluate_predictors

METHODS = ("box", "ellipse", "grabcut_image", "grabcut_crop", "default")


class FilledBox:
    """Baseline: the filled box itself (score 1)."""

    model_version = "filled-box"

    def set_image(self, image):
        self._size = image.shape[:2]

    def predict(self, boxes_xyxy):
        height, width = self._size
        masks = np.zeros((len(boxes_xyxy), height, width), dtype=bool)
        for i, (x0, y0, x1, y1) in enumerate(np.round(boxes_xyxy).astype(int)):
            masks[i, y0:y1, x0:x1] = True
        return masks, np.ones(len(boxes_xyxy), dtype=np.float32)


class InscribedEllipse:
    """Baseline: the ellipse inscribed in the box (the embedded default's starting shape), score 1."""

    model_version = "inscribed-ellipse"

    def set_image(self, image):
        self._size = image.shape[:2]

    def predict(self, boxes_xyxy):
        import torch

        from box2mask.ops.levelset import inscribed_ellipses

        height, width = self._size
        boxes = torch.as_tensor(np.asarray(boxes_xyxy, dtype=np.float32)).reshape(-1, 4)
        masks = inscribed_ellipses(boxes, height, width, inside=1.0, outside=0.0) > 0.5
        return masks.numpy(), np.ones(len(boxes), dtype=np.float32)


class GrabCut:
    """Baseline: OpenCV GrabCut (GC_INIT_WITH_RECT) per box, on the whole image or on a crop
    around the box grown by `crop_frac` x box size + `crop_px` on every side (crop=True)."""

    def __init__(self, crop: bool, iterations: int = 5, crop_frac=0.25, crop_px=10):
        self.crop, self.iterations = crop, iterations
        self.crop_frac, self.crop_px = crop_frac, crop_px
        self.model_version = "grabcut-crop" if crop else "grabcut-image"

    def set_image(self, image):
        self._bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)

    def _one(self, box):
        height, width = self._bgr.shape[:2]
        x0, y0, x1, y1 = np.round(box).astype(int)
        cx0, cy0, cx1, cy1 = 0, 0, width, height
        if self.crop:
            mx = int(self.crop_frac * (x1 - x0) + self.crop_px)
            my = int(self.crop_frac * (y1 - y0) + self.crop_px)
            cx0, cy0 = max(x0 - mx, 0), max(y0 - my, 0)
            cx1, cy1 = min(x1 + mx, width), min(y1 + my, height)
        patch = np.ascontiguousarray(self._bgr[cy0:cy1, cx0:cx1])
        gc_mask = np.zeros(patch.shape[:2], dtype=np.uint8)
        rect = (x0 - cx0, y0 - cy0, max(x1 - x0, 1), max(y1 - y0, 1))
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        full = np.zeros((height, width), dtype=bool)
        try:
            cv2.grabCut(patch, gc_mask, rect, bgd, fgd, self.iterations, cv2.GC_INIT_WITH_RECT)
        except cv2.error:  # degenerate crop (e.g. no background pixels): the box itself
            full[y0:y1, x0:x1] = True
            return full
        full[cy0:cy1, cx0:cx1] = (gc_mask == cv2.GC_FGD) | (gc_mask == cv2.GC_PR_FGD)
        return full

    def predict(self, boxes_xyxy):
        masks = np.stack([self._one(b) for b in boxes_xyxy]) if len(boxes_xyxy) else None
        return masks, np.ones(len(boxes_xyxy), dtype=np.float32)


def format_table(rows: dict) -> str:
    """A Markdown table of `evaluate_predictors` rows."""
    lines = [
        "| method | mIoU | boundary F (2 px) | accept@0.85 | small: mIoU / bF | medium: mIoU / bF "
        "| large: mIoU / bF "
        "| ms / box (median) | score-IoU Spearman |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def fmt(value, digits=3):
        return "-" if value != value else f"{value:.{digits}f}"  # NaN -> "-"

    for name, r in rows.items():
        buckets = " | ".join(
            f"{fmt(r[f'miou_{b}'])} / {fmt(r[f'boundary_f_{b}'])} ({r[f'count_{b}']})"
            for b in ("small", "medium", "large")
        )
        lines.append(
            f"| {name} | {fmt(r['miou'])} | {fmt(r['boundary_f'])} | {fmt(r['accept_85'], 2)} "
            f"| {buckets} | {fmt(r['ms_per_box'], 1)} | {fmt(r['score_spearman'], 2)} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="dataset folder: annotations.json + images/")
    parser.add_argument("--split", default="all", choices=["all", "train", "val"])
    parser.add_argument("--limit", type=int, default=None, help="only the first N images (by id)")
    parser.add_argument("--checkpoint", nargs="*", default=[], help="trained models to add")
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated baselines to run, from {','.join(METHODS)} (default: all)",
    )
    parser.add_argument("--device", default="cpu", help="device for the default and checkpoints")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for torch and OpenCV (default 1: every method on one core, comparable)",
    )
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)

    from box2mask import build_predictor

    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    makers = {
        "box": lambda: ("filled box", FilledBox()),
        "ellipse": lambda: ("inscribed ellipse", InscribedEllipse()),
        "grabcut_image": lambda: ("GrabCut, whole image", GrabCut(crop=False)),
        "grabcut_crop": lambda: ("GrabCut, crop (x0.25 + 10 px)", GrabCut(crop=True)),
        "default": lambda: ("embedded default (level set)", build_predictor(None, args.device)),
    }
    predictors = dict(makers[m]() for m in methods)
    for ckpt in args.checkpoint:
        # runs/<name>/last.pt is named by its run folder: several runs' last.pt side by side
        path = Path(ckpt)
        label = f"{path.parent.name}/{path.name}" if path.name == "last.pt" else path.name
        predictors[f"checkpoint {label}"] = build_predictor(ckpt, device=args.device)
    rows = evaluate_predictors(predictors, args.data, split=args.split, limit=args.limit)
    count = next(iter(rows.values()))["count"] if rows else 0
    print(
        f"\n{Path(args.data).name}, split {args.split}, {count} boxes (GT tight boxes), "
        f"{args.device}, {args.threads} thread(s)\n"
    )
    print(format_table(rows))
    if args.json:
        tmp = Path(args.json).with_suffix(".tmp")
        tmp.write_text(json.dumps(rows, indent=2))
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
