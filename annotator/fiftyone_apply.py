"""Resumable mask prediction on a FiftyOne dataset, and mask evaluation with per-sample IoU.

`apply_masks` runs `apply_model` on the samples whose output field is still empty, so a rerun
after an interruption (FiftyOne saves samples in batches as it goes) skips the finished ones.
`evaluate_masks` runs FiftyOne's `evaluate_detections(..., use_masks=True)` and stores, for each
predicted mask, its IoU with the ground-truth mask of the box that prompted it, plus the per-sample
mean, so the App can sort samples by their worst masks.
"""

from dataclasses import dataclass, field

import fiftyone as fo
import numpy as np

from annotator.fiftyone_convert import paste_mask
from box2mask.metrics import mask_iou

__all__ = ["ApplyResult", "apply_masks", "evaluate_masks"]


@dataclass
class ApplyResult:
    done: int  # samples segmented by this run
    skipped: int  # samples whose output field was already filled (earlier runs)
    failed: list[str] = field(default_factory=list)  # filepaths of samples that failed this run


def _root(samples) -> fo.Dataset:
    """The dataset of a dataset or view."""
    return samples if isinstance(samples, fo.Dataset) else fo.load_dataset(samples.dataset_name)


def _ensure_detections_field(dataset, name: str) -> None:
    schema = dataset.get_field_schema()
    if name not in schema:
        dataset.add_sample_field(name, fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    elif getattr(schema[name], "document_type", None) is not fo.Detections:
        raise ValueError(f"field {name!r} of dataset {dataset.name!r} is not a Detections field")


def apply_masks(samples, model, *, boxes_field: str, out_field: str, progress=True) -> ApplyResult:
    """Predict masks for the boxes of `boxes_field` into `out_field`, skipping finished samples.

    Args:
        samples: a fo.Dataset or view.
        model: a Box2MaskFiftyOneModel.
        boxes_field: Detections field with the box prompts (only read).
        out_field: Detections field to fill; must differ from `boxes_field`.
        progress: show FiftyOne's progress bar.
    """
    if out_field == boxes_field:
        raise ValueError(
            f"--out {out_field!r} is the boxes field: box2mask never overwrites the boxes it is "
            "given (ground truth); choose a new field name"
        )
    dataset = _root(samples)
    schema = dataset.get_field_schema()
    if boxes_field not in schema:
        raise KeyError(
            f"dataset {dataset.name!r} has no field {boxes_field!r}; fields: {sorted(schema)}"
        )
    _ensure_detections_field(dataset, boxes_field)
    _ensure_detections_field(dataset, out_field)
    todo = samples.exists(out_field, False)
    todo_ids = todo.values("id")
    skipped = len(samples) - len(todo_ids)
    if todo_ids:
        todo.apply_model(model, label_field=out_field, prompt_field=boxes_field, progress=progress)
    left = dataset.select(todo_ids).exists(out_field, False)
    failed = left.values("filepath")
    dataset.add_dynamic_sample_fields()  # source, model_version, ... become filterable in the App
    return ApplyResult(done=len(todo_ids) - len(failed), skipped=skipped, failed=failed)


def evaluate_masks(samples, *, pred_field: str, gt_field: str, key: str = "eval_box2mask") -> dict:
    """Mask evaluation of `pred_field` against `gt_field` (which must have masks).

    Writes FiftyOne's evaluation under `key` (per-label `<key>` tp/fp/fn and `<key>_iou`), then
    `<key>_mask_iou` on each prediction: its IoU with the mask of the ground-truth detection that
    prompted it (`prompt_id`), or FiftyOne's matched IoU (0 when unmatched) for predictions
    without a prompt; and `<key>_mean_iou` on each sample (None when it has no predictions).

    Returns {"map": mask mAP, "mean_iou": mean over predictions, "pairs": how many}.
    """
    if samples.count(f"{gt_field}.detections.mask") == 0:
        raise ValueError(
            f"field {gt_field!r} has no masks: mask evaluation needs ground-truth masks"
        )
    samples.compute_metadata()
    results = samples.evaluate_detections(
        pred_field, gt_field=gt_field, eval_key=key, use_masks=True, compute_mAP=True
    )
    all_ious = []
    for sample in samples.iter_samples(autosave=True, progress=True):
        preds = sample[pred_field]
        if preds is None or not preds.detections:
            sample[f"{key}_mean_iou"] = None
            continue
        width, height = sample.metadata.width, sample.metadata.height
        gts = {d.id: d for d in (sample[gt_field].detections if sample[gt_field] else [])}
        ious = []
        for det in preds.detections:
            prompt = gts.get(det.get_field("prompt_id")) if det.has_field("prompt_id") else None
            if prompt is not None and prompt.mask is not None and det.mask is not None:
                iou = mask_iou(
                    paste_mask(det.mask, det.bounding_box, width, height),
                    paste_mask(prompt.mask, prompt.bounding_box, width, height),
                )
            else:
                matched = det.get_field(f"{key}_iou") if det.has_field(f"{key}_iou") else None
                iou = float(matched or 0.0)
            det[f"{key}_mask_iou"] = float(iou)
            ious.append(float(iou))
        sample[f"{key}_mean_iou"] = float(np.mean(ious))
        all_ious.extend(ious)
    _root(samples).add_dynamic_sample_fields()
    return {
        "map": float(results.mAP()),
        "mean_iou": float(np.mean(all_ious)) if all_ious else float("nan"),
        "pairs": len(all_ious),
    }
