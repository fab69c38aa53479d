"""Masks from the model for a session's slots: as few `predict` calls as the prompts allow, each
mask scored for the review queue and returned as the Label to save."""

import numpy as np

from annotator.mask_patch import MaskPatch
from annotator.predictor_service import PredictorService
from annotator.slots import SMOOTHING_LEVELS, Slot
from annotator.store import Label
from box2mask.io.rle import encode_rle_window
from box2mask.ops.mask_quality import quality_features, quality_score
from box2mask.segment.image import refine_options, takes_init_masks

__all__ = ["decode_slots", "model_source"]


def decode_slots(
    service: PredictorService,
    *,
    image_key: str,
    image: np.ndarray,
    slots: dict[int, Slot],
    keys: list[int],
    from_mask: bool = False,
):
    """Yield (key, Label, (H, W) bool mask) for the boxes of these slots, one predict call at a
    time: slots without clicks in one call per smoothing level, a slot with clicks alone (its
    clicks are prompts for its box only, sent with the slot's current mask as `init_masks` where the
    model takes it: a click corrects the mask the person sees). `from_mask`: each slot alone, the
    model started from the slot's current mask."""
    plain = [] if from_mask else [k for k in keys if not slots[k].clicks]
    groups = [
        [k for k in plain if slots[k].smoothing == level]
        for level in sorted({slots[k].smoothing for k in plain})
    ]
    for group in groups + [[k] for k in keys if k not in plain]:
        clicks = np.array(slots[group[0]].clicks, dtype=np.float64).reshape(-1, 3)
        options = {"smoothing": SMOOTHING_LEVELS[slots[group[0]].smoothing]}
        if len(clicks):
            options.update(points=clicks[:, :2], point_labels=clicks[:, 2].astype(np.int64))
            current = slots[group[0]].mask
            if current is not None and takes_init_masks(service.predictor):
                options["init_masks"] = current.full()[None]
        if from_mask:
            start = slots[group[0]].mask.full()[None]
            options.update(refine_options(service.predictor, start))
        boxes = np.array([slots[k].shown[:4] for k in group], dtype=np.float64)
        masks, scores = service.predict(image_key, image, boxes, **options)
        # the label's score is the review-queue quality: the model's own score times the
        # mask's shape checks (stray parts, holes, untouched box sides, odd fill)
        quality = quality_score(quality_features(masks, boxes), scores).tolist()
        for k, mask, score in zip(group, masks, quality, strict=True):
            x0, y0, x1, y1, name = slots[k].shown
            patch = MaskPatch.from_mask(mask)  # RLE from the mask's rectangle: big images
            label = Label(
                image=image_key,
                box_xyxy=[float(x0), float(y0), float(x1), float(y1)],
                class_name=name,
                mask_rle=encode_rle_window(patch.pixels, patch.top, patch.left, patch.shape),
                source=model_source(slots[k], from_mask=from_mask),
                model_version=service.model_version,
                verified=False,
                score=float(score),
            )
            yield k, label, mask


def model_source(slot: Slot, *, from_mask: bool) -> str:
    """A model mask is "model" unless a person shaped it: clicks, or refining their mask."""
    label = slot.label
    started_from_person = from_mask and label is not None and label.source != "model"
    return "human-corrected" if slot.clicks or started_from_person else "model"
