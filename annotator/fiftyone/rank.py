"""`box2mask fiftyone rank`: what to label next in a FiftyOne dataset, as sample fields.

The same uncertainty as the annotator's "label next" queue (train/label_next.py): the mean
disagreement (1 - IoU) of a learner checkpoint and the embedded default on a sample's boxes.
Every sample not marked done gets

    b2m_label_next        the uncertainty in [0, 1]; None for a sample without boxes
    b2m_label_next_rank   its place in the order, 1 = label first (`uncertainty_order`: ties in
                          dataset order, samples without boxes after every scored one)

and done samples (`<boxes field>_done`, the annotator's flag) get None in both (a rerun clears a
stale rank). `dataset.sort_by("b2m_label_next", reverse=True)` is the order up to ties, and the
saved view `label_next` (`dataset.load_saved_view("label_next")`) is exactly it.
"""

from dataclasses import dataclass, field

import fiftyone as fo

from annotator.fiftyone.convert import bbox_to_xyxy
from box2mask.io.image_io import load_image
from train.label_next import image_uncertainty, uncertainty_order

__all__ = ["RANK_FIELD", "VIEW_NAME", "RankResult", "rank_samples"]

RANK_FIELD = "b2m_label_next"  # per-sample uncertainty; "<field>_rank" holds the place
VIEW_NAME = "label_next"  # the saved view: samples not done, in label order


@dataclass
class RankResult:
    ranked: int  # samples with boxes, scored
    without_boxes: int  # samples not done without any box: after the ranked ones
    done: int  # samples marked done: left out (None in both fields)
    order: list[str] = field(default_factory=list)  # sample ids in label order
    scores: dict = field(default_factory=dict)  # sample id -> uncertainty (ranked samples only)


def rank_samples(
    dataset,
    *,
    boxes_field: str,
    base,
    learner,
    field_name: str = RANK_FIELD,
    view_name: str = VIEW_NAME,
    progress: bool = False,
) -> RankResult:
    """Score every sample not done by `base` vs `learner` (box2mask predictors) on the boxes of
    the Detections field `boxes_field`, write `field_name` and `<field_name>_rank`, and save the
    view `view_name` (samples not done, label order)."""
    schema = dataset.get_field_schema()
    if boxes_field not in schema:
        raise KeyError(f"dataset {dataset.name!r} has no field {boxes_field!r}")
    if getattr(schema[boxes_field], "document_type", None) is not fo.Detections:
        raise ValueError(f"field {boxes_field!r} is {schema[boxes_field]}, not Detections")
    done_field = f"{boxes_field}_done"
    ids = dataset.values("id")
    paths = dataset.values("filepath")
    boxes = dataset.values(f"{boxes_field}.detections.bounding_box")
    done = dataset.values(done_field) if done_field in schema else [None] * len(ids)
    todo = [i for i in range(len(ids)) if not done[i]]
    scores = []
    from tqdm import tqdm

    for i in tqdm(todo, desc=f"rank {dataset.name}", disable=not progress):
        if not boxes[i]:
            scores.append(None)
            continue
        image = load_image(paths[i])
        height, width = image.shape[:2]
        xyxy = [bbox_to_xyxy(b, width, height) for b in boxes[i]]
        scores.append(image_uncertainty(image, xyxy, base=base, learner=learner))
    order = uncertainty_order([ids[i] for i in todo], scores)
    place = {sample_id: n + 1 for n, sample_id in enumerate(order)}
    score_of = {ids[i]: s for i, s in zip(todo, scores, strict=True) if s is not None}
    for name, kind in ((field_name, fo.FloatField), (f"{field_name}_rank", fo.IntField)):
        if name not in schema:  # typed up front: a run without a single score still adds it
            dataset.add_sample_field(name, kind)
    dataset.set_values(field_name, [score_of.get(sample_id) for sample_id in ids])
    dataset.set_values(f"{field_name}_rank", [place.get(sample_id) for sample_id in ids])
    view = dataset.exists(f"{field_name}_rank").sort_by(f"{field_name}_rank")
    dataset.save_view(view_name, view, overwrite=True)
    return RankResult(
        ranked=len(score_of),
        without_boxes=len(todo) - len(score_of),
        done=len(ids) - len(todo),
        order=order,
        scores=score_of,
    )
