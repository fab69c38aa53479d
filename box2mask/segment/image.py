"""One image of the segment run: its boxes (or, refining, its given masks) -> RLE masks and scores.

`segment_image` checks every annotation, then segments all good boxes of the image in as few
`predict` calls as memory allows (MAX_MASK_BYTES); `refine_options` are the `predict` options that
start from a given mask (`segment --refine-existing`).
"""

import inspect

import numpy as np

from box2mask.io.rle import decode_segmentation, encode_rle
from box2mask.ops.box_ops import BoxError, validate_box, xywh_to_xyxy
from box2mask.segment.errors import SegmentError
from box2mask.segment.points import POINTS_FIELD, PointsError, parse_points, predict_with_points

__all__ = [
    "MAX_MASK_BYTES",
    "REFINE_STEPS",
    "segment_image",
    "takes_init_masks",
    "refine_options",
    "check_refines",
    "check_clicks",
]

MAX_MASK_BYTES = 1 << 28  # boxes per predict call are capped so (N, H, W) bool masks stay < 256 MiB
# Level-set steps when refining a given mask (the default's own 20 from a box): a short evolution
# keeps what is right in the start and moves its outline to the image's edges; on balloon's GT
# masks degraded four ways, 3 steps beat 20 on every degradation (README, bench/refine.py).
REFINE_STEPS = 3


def segment_image(
    predictor,
    image: np.ndarray,
    anns: list,
    state: dict | None = None,
    refine_existing: bool = False,
) -> list:
    """Segment the annotations of one image with one predictor.

    Args:
        predictor: has `set_image(image)` and `predict(boxes_xyxy) -> (masks, scores)`; with
            `refine_existing`, `predict` must also take `init_masks` (N, H, W) bool.
        image: (H, W, 3) uint8 RGB.
        anns: [(ord, annotation dict with a COCO XYWH `bbox`)].
        state: the image's `predictor.encode_states` result, used instead of `set_image`.
        refine_existing: an annotation that carries a non-empty `segmentation` (RLE or polygons)
            is refined by the predictor started from that mask instead of from its box
            (`refine_options`: a short evolution of REFINE_STEPS).
    An annotation that carries clicks (`box2mask_points`: [[x, y, label], ...] in image pixels,
    label 1 object / 0 background) is predicted alone with them, as the annotator's clicks are;
    with `refine_existing` and a `segmentation`, the clicks correct that mask (`init_masks`).
    Returns:
        [(ord, RLE dict or None, score or None, error or None)], one per annotation, in order;
        a bad box (or, with `refine_existing`, a bad segmentation) gets an error naming the
        annotation id and the problem.
    """
    height, width = image.shape[:2]
    results, plain, refined = {}, [], []  # [(ord, box XYXY, segmentation to start from)]
    clicked = []  # [(ord, box XYXY, segmentation or None, points, labels)]
    for ord_, ann in anns:
        name = f"annotation {ann['id']!r}" if "id" in ann else f"annotation #{ord_} (no id)"
        try:
            if "bbox" not in ann:
                raise BoxError("it has no 'bbox'")
            bbox_xywh = np.asarray(ann["bbox"], dtype=np.float64)
            if bbox_xywh.shape != (4,):
                raise BoxError(f"bbox must be 4 numbers [x, y, w, h], got {ann['bbox']!r}")
            box = validate_box(xywh_to_xyxy(bbox_xywh), width, height)
        except (BoxError, ValueError, TypeError) as err:
            results[ord_] = (ord_, None, None, f"{name}: bad bbox: {err}")
            continue
        clicks = None
        if ann.get(POINTS_FIELD) is not None:
            try:
                clicks = parse_points(ann[POINTS_FIELD], width=width, height=height)
                check_clicks(predictor)
            except PointsError as err:
                results[ord_] = (ord_, None, None, f"{name}: {err}")
                continue
        if refine_existing and ann.get("segmentation"):
            try:  # decoded here to check it, again per chunk below (flat memory)
                empty = not decode_segmentation(ann["segmentation"], height, width).any()
            except (ValueError, TypeError, KeyError) as err:
                results[ord_] = (ord_, None, None, f"{name}: bad segmentation: {err}")
                continue
            if not empty:  # an empty mask has nothing to refine: segmented from its box
                if clicks is None:
                    refined.append((ord_, box, ann["segmentation"]))
                else:
                    clicked.append((ord_, box, ann["segmentation"], *clicks))
                continue
        if clicks is None:
            plain.append((ord_, box, None))
        else:
            clicked.append((ord_, box, None, *clicks))
    if plain or refined or clicked:
        if state is None:
            predictor.set_image(image)
        else:
            predictor.set_state(state)
        chunk = max(1, MAX_MASK_BYTES // (height * width))
        for group in (plain, refined):
            for begin in range(0, len(group), chunk):
                part = group[begin : begin + chunk]
                boxes = np.stack([box for _, box, _ in part])
                options = {}
                if group is refined:
                    starts = np.stack([decode_segmentation(seg, height, width) for *_, seg in part])
                    options = refine_options(predictor, starts)
                masks, scores = predictor.predict(boxes, **options)
                for (ord_, *_), mask, score in zip(part, masks, scores, strict=True):
                    results[ord_] = (ord_, encode_rle(mask), float(score), None)
        for ord_, box, seg, points, labels in clicked:
            options = {}
            if seg is not None:  # the clicks correct the given mask
                options["init_masks"] = decode_segmentation(seg, height, width)[None]
            mask, score = predict_with_points(predictor, box, points, labels, **options)
            results[ord_] = (ord_, encode_rle(mask), score, None)
    return [results[ord_] for ord_, _ in anns]


def takes_init_masks(predictor) -> bool:
    """Whether `predictor.predict` accepts `init_masks` (can refine a given mask)."""
    parameters = inspect.signature(predictor.predict).parameters
    return "init_masks" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


def refine_options(predictor, init_masks: np.ndarray) -> dict:
    """`predict` options that refine the given (N, H, W) bool masks: `init_masks`, plus
    `steps=REFINE_STEPS` where the predictor takes `steps` (a short evolution)."""
    parameters = inspect.signature(predictor.predict).parameters
    options = {"init_masks": init_masks}
    if "steps" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    ):
        options["steps"] = REFINE_STEPS
    return options


def check_clicks(predictor) -> None:
    """Raise PointsError unless `predictor.predict` takes `points` and `point_labels`."""
    parameters = inspect.signature(predictor.predict).parameters
    if not {"points", "point_labels"} <= set(parameters) and not any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    ):
        raise PointsError(f"{type(predictor).__name__}.predict takes no clicks (points)")


def check_refines(predictor) -> None:
    """Raise SegmentError unless `predictor.predict` takes `init_masks` (needed to refine)."""
    if not takes_init_masks(predictor):
        raise SegmentError(
            f"--refine-existing: {type(predictor).__name__} cannot start from a mask (its "
            "predict has no init_masks); use the embedded default or a crop-learner checkpoint"
        )
