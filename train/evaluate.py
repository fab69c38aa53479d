"""Evaluators of a trained model on a COCO dataset with ground-truth masks.

- Box prompts: GT boxes in, masks out; mIoU / boundary F / mIoU by size with the definitions of
  the quality tables (`train/box_prompt_eval.py`, metrics in box2mask/ops/metrics.py).
- Automatic proposals: COCO mask AP (pycocotools) of `predictor.predict_all()`, detectron2-style
  `reset` / `process` / `summarize`.
"""

import contextlib
import io
import json

import numpy as np

from box2mask.io.image_io import load_image
from box2mask.io.rle import encode_rle, rle_area
from train.box_prompt_eval import evaluate_predictor

__all__ = ["CocoMaskAPEvaluator", "evaluate_box_prompts", "evaluate_mask_ap"]


def evaluate_box_prompts(
    predictor,
    data_dir,
    split: str = "val",
    limit=None,
    progress=True,
    annotations: str = "annotations.json",
    image_dir: str = "images",
) -> dict:
    """Box-prompt quality of `predictor` with the GT boxes as prompts (a quality-table row):
    miou, boundary_f, miou_small/medium/large, count(_*), ms_per_box, score_spearman.
    `annotations` / `image_dir`: the COCO file and the image folder inside `data_dir`."""
    return evaluate_predictor(
        predictor,
        data_dir,
        split=split or "all",
        limit=limit,
        progress=progress,
        annotations=annotations,
        image_dir=image_dir,
    )


def evaluate_model_box_prompts(model, cfg, *, device, model_version: str, progress=False) -> dict:
    """`evaluate_box_prompts` for an in-memory model (used during training); leaves it in eval
    mode (the caller switches back to train mode)."""
    from box2mask.model.checkpoint import serving_options
    from box2mask.model.predictor import Box2MaskPredictor
    from train.config import flatten_config

    model.eval()
    # the options Box2MaskPredictor.from_checkpoint gives this run's last.pt (region_refine too)
    predictor = Box2MaskPredictor(
        model,
        device=device,
        model_version=model_version,
        **serving_options(flatten_config(cfg)),
    )
    return evaluate_box_prompts(
        predictor,
        cfg.data_dir,
        split=cfg.val_split,
        limit=cfg.eval_max_images or None,
        progress=progress,
        annotations=cfg.annotations,
        image_dir=cfg.image_dir,
    )


class CocoMaskAPEvaluator:
    """COCO mask AP of automatic instance proposals against the GT masks of one split.

    evaluator.reset(); evaluator.process(image_id, masks, scores, labels) per image;
    evaluator.summarize() -> {"AP", "AP50", "AP75", "APs", "APm", "APl", "detections"}
    (AP in percent, as COCO reports it).
    """

    def __init__(self, coco: dict, image_ids: list[int], category_ids: list[int]):
        self.category_ids = category_ids  # label i -> COCO category id
        wanted = set(image_ids)
        annotations = []
        for ann in coco.get("annotations", []):
            if ann["image_id"] in wanted and ann.get("segmentation"):
                ann = dict(ann)
                ann.setdefault("iscrowd", 0)
                if "area" not in ann and isinstance(ann["segmentation"], dict):
                    ann["area"] = rle_area(ann["segmentation"])
                annotations.append(ann)
        self.gt = {
            "images": [im for im in coco["images"] if im["id"] in wanted],
            "annotations": annotations,
            "categories": coco.get("categories", []),
        }
        self.reset()

    def reset(self) -> None:
        self.results = []

    def process(self, image_id: int, masks, scores, labels) -> None:
        """masks (N, H, W) bool at the image's original size; scores (N,); labels (N,) in [0, K)."""
        for mask, score, label in zip(masks, scores, labels, strict=True):
            self.results.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(self.category_ids[int(label)]),
                    "segmentation": encode_rle(np.asarray(mask, dtype=bool)),
                    "score": float(score),
                }
            )

    def summarize(self) -> dict:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        names = ("AP", "AP50", "AP75", "APs", "APm", "APl")
        if not self.results:
            return {**dict.fromkeys(names, 0.0), "detections": 0}
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints a lot
            gt = COCO()
            gt.dataset = json.loads(json.dumps(self.gt))
            gt.createIndex()
            dt = gt.loadRes(self.results)
            evaluator = COCOeval(gt, dt, iouType="segm")
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        stats = [max(float(s), 0.0) * 100 for s in evaluator.stats[:6]]  # -1 (no GT) -> 0
        return {**dict(zip(names, stats, strict=True)), "detections": len(self.results)}


def evaluate_mask_ap(predictor, data_dir, split: str = "val", score_threshold=0.05, progress=True):
    """COCO mask AP of `predictor.predict_all(score_threshold)` on one split of `data_dir`."""
    from tqdm import tqdm

    from train.dataset import CocoBoxDataset, read_coco

    dataset = CocoBoxDataset(data_dir, split=split)  # validates the file and the split
    coco = read_coco(dataset.annotation_path)
    evaluator = CocoMaskAPEvaluator(coco, [im["id"] for im in dataset.images], dataset.category_ids)
    for info in tqdm(dataset.images, desc="mask AP", disable=not progress):
        predictor.set_image(load_image(dataset.image_dir / info["file_name"]))
        masks, scores, labels, _ = predictor.predict_all(score_threshold=score_threshold)
        evaluator.process(info["id"], masks, scores, labels)
    return evaluator.summarize()
