"""Training losses of the crop learner, on each box's S x S crop (box2mask/crop/learner.py).

    loss_proj       box projection dice: the mask's row / column maxima against the box's
    loss_lcm        local consistency: L1 between the affinity-propagated and the raw mask in the box
    loss_cv_image   Chan-Vese region energy of the mask on the crop's normalised colours
    loss_cv_feat    Chan-Vese region energy on the learner's own (unit-norm) features
    loss_pairwise   neighbours of similar colour share a label (BoxInst's pairwise term), in the box
    loss_distill    BCE to a teacher's soft mask (the embedded default's), inside the box
    loss_mask_bce   BCE to a verified (human) mask, for the crops that have one
    loss_mask_dice  dice to that mask
    loss_click      click consistency (click-aware learners): BCE of the mask at each click's disc
                    to the click's sign, over the crops with clicks

Every term is the mean over the crops it applies to; the training config's `loss` section is the
one weight dict (total = sum(weight[k] * loss[k]), `total_loss`). The first five need boxes only.
`weak_weight` (N,) scales the box terms and the distillation per crop (before the mean over the
N crops): the trainer sets it below 1 on crops with a verified mask, so the mask dominates there.
"""

import torch
import torch.nn.functional as F

from box2mask.ops.lab import rgb_to_lab
from box2mask.ops.lcm import lcm_affinity, lcm_loss, neighbours
from box2mask.ops.levelset import box_masks_from_boxes, chan_vese_energy
from box2mask.ops.projection import dice_loss, projection_dice_loss

__all__ = [
    "crop_affinity",
    "colour_edges",
    "pairwise_loss",
    "click_consistency_loss",
    "crop_losses",
    "total_loss",
]

LCM_STEPS, LCM_DILATION, LCM_TEMPERATURE = 5, 2, 0.3
PAIR_DILATION, PAIR_THETA, PAIR_THRESHOLD = 2, 2.0, 0.3  # BoxInst's pairwise term


def colour_edges(rgb: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Which neighbour pairs have similar colours, (N, 8, S, S) float in {0, 1}.

    Pixel x and its neighbour y (box2mask.ops.lcm offset k at PAIR_DILATION) form an edge when
    exp(-|Lab(x) - Lab(y)| / PAIR_THETA) >= PAIR_THRESHOLD (Lab in OpenCV 8-bit units: a
    difference of about 2.4 units or less) and both lie in the box (N, S, S).
    """
    lab = rgb_to_lab(rgb)
    distance = (lab[:, :, None] - neighbours(lab, PAIR_DILATION)).norm(dim=1)  # (N, 8, S, S)
    similar = torch.exp(-distance / PAIR_THETA) >= PAIR_THRESHOLD
    both_in = (box[:, None] > 0.5) & (neighbours(box, PAIR_DILATION) > 0.5)
    return (similar & both_in).float()


def pairwise_loss(logits: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """-log P(x and y share a label) averaged over the edges of each crop, (N,).

    P = p(x) p(y) + (1 - p(x)) (1 - p(y)) with p = sigmoid(logits (N, S, S)), computed in log space.
    """
    fg = F.logsigmoid(logits)
    bg = F.logsigmoid(-logits)
    same = torch.logaddexp(
        fg[:, None] + neighbours(fg, PAIR_DILATION), bg[:, None] + neighbours(bg, PAIR_DILATION)
    )
    return -(same * edges).sum(dim=(1, 2, 3)) / edges.sum(dim=(1, 2, 3)).clamp_min(1.0)


def click_consistency_loss(logits: torch.Tensor, clicks: torch.Tensor) -> torch.Tensor:
    """Per-crop BCE (N,) of the mask logits (N, S, S) at the click discs (N, 2, S, S) in {0, 1}
    (channel 0 positive: target object, channel 1 negative: target background), averaged over
    each crop's disc pixels; 0 for a crop without clicks. A mask that ignores a click pays
    about |logit| at every pixel of its disc."""
    positive, negative = clicks[:, 0], clicks[:, 1]
    per_pixel = positive * F.softplus(-logits) + negative * F.softplus(logits)
    return per_pixel.sum(dim=(1, 2)) / (positive + negative).sum(dim=(1, 2)).clamp_min(1.0)


def crop_affinity(image: torch.Tensor) -> torch.Tensor:
    """The LCM neighbour affinities (N, 8, S, S) of normalised crops (N, 3, S, S); they depend
    on the image only, so a crop bank computes them once."""
    return lcm_affinity(image, LCM_DILATION, LCM_TEMPERATURE)


def crop_losses(
    *,
    logits: torch.Tensor,
    features: torch.Tensor,
    image: torch.Tensor,
    grid_boxes: torch.Tensor,
    teacher: torch.Tensor | None = None,
    masks: torch.Tensor | None = None,
    has_mask: torch.Tensor | None = None,
    affinity: torch.Tensor | None = None,
    rgb: torch.Tensor | None = None,
    weak_weight: torch.Tensor | None = None,
    clicks: torch.Tensor | None = None,
    mask_weight: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """All loss terms for N crops.

    Args:
        logits: (N, S, S) mask logits (base + delta).
        features: (N, C, S, S) the learner's last features.
        image: (N, 3, S, S) the crop's colours, normalised per crop (the network's input).
        grid_boxes: (N, 4) the boxes in grid pixels.
        teacher: (N, S, S) soft teacher masks in [0, 1], or None (no distillation).
        masks: (N, S, S) verified masks in [0, 1] where `has_mask` (N,) bool, or None.
        affinity: (N, 8, S, S) `crop_affinity(image)` if already computed, else None.
        rgb: (N, 3, S, S) the crop's colours in [0, 1] for the pairwise term, or None (term 0).
        weak_weight: (N,) weight of each crop in the box terms and the distillation (each term
            is mean(weak_weight * per-crop term)); None = 1 for every crop.
        clicks: (N, 2, S, S) the +/- click discs of a click-aware learner's input, or None
            (`loss_click` 0); the term is the mean over the crops with at least one click.
        mask_weight: (N, S, S) per-pixel weight of the verified-mask BCE (e.g. up on the pixels
            the previous mask got wrong), or None (1 everywhere).
    Returns:
        {name: scalar tensor}; the mask terms are 0 when no crop has a verified mask.
    """
    size = logits.shape[-1]
    probs = torch.sigmoid(logits)
    box = box_masks_from_boxes(grid_boxes, size, size)
    area = box.sum(dim=(1, 2)).clamp_min(1.0)
    if affinity is None:
        affinity = crop_affinity(image)
    if weak_weight is None:
        weak_weight = torch.ones(len(logits), device=logits.device)

    def weak(per_crop: torch.Tensor) -> torch.Tensor:
        return (weak_weight * per_crop).mean()

    losses = {
        "loss_proj": weak(projection_dice_loss(probs, grid_boxes)),
        "loss_lcm": weak(lcm_loss(probs, box, affinity, LCM_STEPS, LCM_DILATION)),
        "loss_cv_image": weak(chan_vese_energy(probs * box, image, box)),
        "loss_cv_feat": weak(chan_vese_energy(probs * box, F.normalize(features, dim=1), box)),
    }
    zero = logits.sum() * 0.0
    if rgb is not None:
        losses["loss_pairwise"] = weak(pairwise_loss(logits, colour_edges(rgb, box)))
    else:
        losses["loss_pairwise"] = zero
    if teacher is not None:
        bce = F.binary_cross_entropy_with_logits(logits, teacher, reduction="none")
        losses["loss_distill"] = weak((bce * box).sum(dim=(1, 2)) / area)
    else:
        losses["loss_distill"] = zero
    if masks is not None and has_mask is not None and bool(has_mask.any()):
        sel = has_mask.bool()
        bce = F.binary_cross_entropy_with_logits(logits[sel], masks[sel], reduction="none")
        if mask_weight is not None:
            bce = bce * mask_weight[sel]
        losses["loss_mask_bce"] = bce.mean()
        losses["loss_mask_dice"] = dice_loss(probs[sel].flatten(1), masks[sel].flatten(1)).mean()
    else:
        losses["loss_mask_bce"] = zero
        losses["loss_mask_dice"] = zero
    losses["loss_click"] = zero
    if clicks is not None:
        with_clicks = clicks.flatten(1).amax(dim=1) > 0
        if bool(with_clicks.any()):
            per_crop = click_consistency_loss(logits[with_clicks], clicks[with_clicks])
            losses["loss_click"] = per_crop.mean()
    return losses


def total_loss(losses: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """sum(weights[k] * losses[k]) over the terms with a weight."""
    return sum(weights.get(k, 0.0) * v for k, v in losses.items())
