"""Resumable mask prediction on a FiftyOne dataset, and mask evaluation with per-sample IoU.

`apply_masks` runs `apply_model` on the samples whose output field is still empty, `chunk_size`
samples per call (FiftyOne saves each sample as it goes), so a rerun after an interruption skips
the finished ones and memory stays flat. Under torchrun every process segments its own share of
the pending samples (`shards`) and writes them itself: each sample is one MongoDB
document updated in one operation (atomic), and processes write disjoint samples, so concurrent
writers are safe; only rank 0 changes the dataset itself (it creates the output field before and
declares the new label attributes after). `evaluate_masks` runs FiftyOne's
`evaluate_detections(..., use_masks=True)` and stores, for each predicted mask, its IoU with the
ground-truth mask of the box that prompted it, plus the per-sample mean, so the App can sort
samples by their worst masks.
"""

import sys
import tempfile
from dataclasses import dataclass, field

import fiftyone as fo
import numpy as np

from annotator.fiftyone.convert import paste_mask
from annotator.fiftyone.shards import CHUNK_SAMPLES, pending, read_chunks, write_shard
from box2mask.ops.metrics import mask_iou
from box2mask.segment.shards import Ranks, agreed, all_gather

__all__ = ["ApplyResult", "apply_masks", "check_fields", "evaluate_masks"]

MAX_FAILED_LISTED = 20  # file paths of failed samples kept for the report (all are counted)


@dataclass
class ApplyResult:
    done: int  # samples segmented by this run (all processes)
    skipped: int  # samples whose output field was already filled (earlier runs)
    failed: int = 0  # samples that failed this run (their field stays empty: a rerun retries)
    failed_paths: list[str] = field(default_factory=list)  # the first MAX_FAILED_LISTED of them


def _root(samples) -> fo.Dataset:
    """The dataset of a dataset or view."""
    return samples if isinstance(samples, fo.Dataset) else fo.load_dataset(samples.dataset_name)


def _ensure_detections_field(dataset, name: str) -> None:
    schema = dataset.get_field_schema()
    if name not in schema:
        dataset.add_sample_field(name, fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    elif getattr(schema[name], "document_type", None) is not fo.Detections:
        raise ValueError(f"field {name!r} of dataset {dataset.name!r} is not a Detections field")


def check_fields(samples, *, boxes_field: str, out_field: str) -> None:
    """Check the boxes field and create the output field if needed (a dataset change).

    Raises ValueError when `out_field` is the boxes field or either is not a Detections field,
    KeyError when the boxes field does not exist.
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


def _segment_shard(
    samples, model, ids_file, total, *, boxes_field, out_field, chunk_size, desc, progress
):
    """apply_model on the shard's samples, chunk by chunk. Returns (done, failed, failed paths)."""
    from tqdm import tqdm

    done = failed = 0
    failed_paths = []
    bar = tqdm(total=total, desc=desc, unit="sample", disable=not progress, dynamic_ncols=True)
    try:
        for chunk in read_chunks(ids_file, chunk_size):
            view = samples.select(chunk)
            view.apply_model(model, label_field=out_field, prompt_field=boxes_field, progress=False)
            left = pending(view, out_field).values("filepath")
            done += len(chunk) - len(left)
            failed += len(left)
            failed_paths.extend(left[: MAX_FAILED_LISTED - len(failed_paths)])
            bar.update(len(chunk))
    finally:
        bar.close()
    return done, failed, failed_paths


def apply_masks(
    samples,
    model,
    *,
    boxes_field: str,
    out_field: str,
    progress=True,
    chunk_size: int = CHUNK_SAMPLES,
    ranks: Ranks | None = None,
) -> ApplyResult:
    """Predict masks for the boxes of `boxes_field` into `out_field`, skipping finished samples.

    Args:
        samples: a fo.Dataset or view.
        model: a Box2MaskFiftyOneModel.
        boxes_field: Detections field with the box prompts (only read).
        out_field: Detections field to fill; must differ from `boxes_field`.
        progress: show a progress bar (one per process).
        chunk_size: samples per `apply_model` call.
        ranks: this process's place under torchrun (None: a single process). With more than one
            process a torch.distributed process group must exist, and every rank calls this with
            the same arguments and its own `samples` (the same dataset or view, loaded by name).
    Returns:
        the totals over all processes, the same on every rank.
    Raises:
        KeyError / ValueError for bad fields (in a single process), RankError naming the rank and
        the problem when a step failed on any rank.
    """
    ranks = ranks or Ranks(rank=0, world_size=1, local_rank=0)
    world, rank = ranks.world_size, ranks.rank
    fields = {"boxes_field": boxes_field, "out_field": out_field}
    agreed(lambda: check_fields(samples, **fields) if rank == 0 else None, ranks)
    if rank != 0:
        samples.reload()  # the output field rank 0 may have created
    desc = "fiftyone apply" if world == 1 else f"fiftyone apply rank {rank}/{world}"
    with tempfile.TemporaryFile("w+", prefix="box2mask-shard-") as ids_file:

        def my_shard():
            n_all = len(samples)
            n_pending, n_mine = write_shard(
                samples, ids_file, rank=rank, world_size=world, **fields
            )
            return n_all - n_pending, n_mine

        skipped, n_mine = agreed(my_shard, ranks)  # every list is taken before anyone writes

        def segment():
            try:
                return _segment_shard(
                    samples, model, ids_file, n_mine, chunk_size=chunk_size, desc=desc,
                    progress=progress, **fields,
                )  # fmt: skip
            except Exception as err:
                if world > 1:  # seen at once, even while the other ranks are still working
                    print(f"box2mask fiftyone apply: rank {rank}: {err}", file=sys.stderr)
                raise

        done, failed, failed_paths = agreed(segment, ranks)
    totals = all_gather((done, failed, failed_paths), world)
    result = ApplyResult(
        done=sum(t[0] for t in totals),
        skipped=skipped,
        failed=sum(t[1] for t in totals),
        failed_paths=[path for t in totals for path in t[2]][:MAX_FAILED_LISTED],
    )
    # source, model_version, ... become filterable in the App (a dataset change: rank 0 only)
    agreed(lambda: _root(samples).add_dynamic_sample_fields() if rank == 0 else None, ranks)
    return result


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
