"""Box2Mask training losses (Li et al., arXiv 2212.01579), vectorized over all instances of a batch.

Per decoder prediction (the final one and, with deep supervision, each earlier one as `_i`):
    loss_cls            class cross-entropy over all queries, no-object weight 0.1
    loss_proj           box projection dice of each matched query's mask against its GT box
    loss_levelset_img   Chan-Vese energy of the mask on the image (normalised, on the mask grid)
    loss_levelset_feat  Chan-Vese energy on the deep mask features, edge-aware smoothed
    loss_lcm            L1 between the LCM-refined and the raw mask inside the box
    loss_mask_bce       only with mask targets (mixed supervision or a teacher): cross-entropy
    loss_mask_dice      and dice to the instance's mask, weighted per instance (0 = box only)
and for box prompts (no matching: prompt j of image b answers its GT box) `loss_prompt_proj`,
`loss_prompt_levelset_img`, `loss_prompt_levelset_feat`, `loss_prompt_lcm` (and the mask terms).
Every per-instance term is summed over the instances of the batch and divided by their number.
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from box2mask.model.config import MASK_STRIDE, LossConfig, ModelConfig
from box2mask.model.matcher import HungarianMatcher
from box2mask.ops.feature_smoothing import bilateral_smooth
from box2mask.ops.lcm import lcm_affinity, lcm_loss
from box2mask.ops.levelset import box_masks_from_boxes, chan_vese_energy
from box2mask.ops.projection import projection_dice_loss

__all__ = ["Box2MaskCriterion", "build_weight_dict", "sample_prompts", "MASK_STRIDE"]

MASK_TERMS = ("proj", "levelset_img", "levelset_feat", "lcm", "mask_bce", "mask_dice")


def build_weight_dict(cfg: LossConfig, num_decoder_layers: int) -> dict[str, float]:
    """Loss name -> weight, for the final prediction and `_i` for each of the earlier ones."""
    level = cfg.weight_levelset
    base = {
        "loss_cls": cfg.weight_cls,
        "loss_proj": cfg.weight_proj,
        "loss_levelset_img": level * cfg.weight_levelset_img,
        "loss_levelset_feat": level * cfg.weight_levelset_feat,
        "loss_lcm": level * cfg.weight_lcm,
        "loss_mask_bce": cfg.weight_mask_bce,
        "loss_mask_dice": cfg.weight_mask_dice,
    }
    base.update({f"loss_prompt_{t}": cfg.weight_prompt * base[f"loss_{t}"] for t in MASK_TERMS})
    weights = dict(base)
    if cfg.deep_supervision:
        for i in range(num_decoder_layers):
            weights.update({f"{k}_{i}": v for k, v in base.items()})
    return weights


def sample_prompts(
    targets: list[dict],
    image_size: tuple[int, int],
    *,
    jitter: float,
    max_per_image: int,
    generator: torch.Generator | None = None,
) -> tuple[list[torch.Tensor], list[dict]]:
    """Jittered GT boxes to train the box-prompt path.

    Each image keeps a random subset of at most `max_per_image` boxes; each side of a box moves by
    U(-jitter, jitter) times the box width (x) or height (y); boxes are clipped to the image.
    Returns (prompt_boxes, prompt_targets): list of B (n_b, 4) prompts for the model, and list of
    B dicts {"boxes": (n_b, 4)} with the GT box each prompt must segment (for the criterion), plus
    that instance's "masks" (n_b, H, W) and "mask_weight" (n_b,) when the targets have them.
    """
    height, width = image_size
    prompt_boxes, prompt_targets = [], []
    for t in targets:
        boxes = t["boxes"].float()
        keep = torch.randperm(len(boxes), generator=generator)[:max_per_image].to(boxes.device)
        boxes = boxes[keep]
        size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
        noise = torch.rand(boxes.shape, generator=generator).to(boxes) * 2 - 1
        moved = boxes + noise * jitter * size
        x0 = moved[:, 0].clamp(0, width - 1)
        y0 = moved[:, 1].clamp(0, height - 1)
        x1 = torch.maximum(moved[:, 2], x0 + 1).clamp(max=width)
        y1 = torch.maximum(moved[:, 3], y0 + 1).clamp(max=height)
        prompt_boxes.append(torch.stack([x0, y0, x1, y1], dim=1))
        extra = {k: t[k][keep.to(t[k].device)] for k in ("masks", "mask_weight") if k in t}
        prompt_targets.append({"boxes": boxes, **extra})
    return prompt_boxes, prompt_targets


def mask_target_losses(
    logits: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-instance binary cross-entropy (mean over pixels) and dice loss.

    logits (N, h, w) mask logits; targets (N, h, w) in [0, 1] (soft targets allowed).
    Returns (bce (N,), dice (N,)); dice = 1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1).
    """
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean((-2, -1))
    probs = logits.sigmoid()
    inter = (probs * targets).sum((-2, -1))
    dice = 1 - (2 * inter + 1) / (probs.sum((-2, -1)) + targets.sum((-2, -1)) + 1)
    return bce, dice


def _pool_mask_targets(targets: list[dict]) -> list[dict]:
    """Targets with "masks" (n, H, W) in input pixels -> (n, H/4, W/4), the fraction of each
    mask-grid pixel covered by the object; targets without masks are returned as they are."""
    pooled = []
    for t in targets:
        if "masks" in t:
            n, height, width = t["masks"].shape
            masks = t["masks"].float().new_zeros(n, height // MASK_STRIDE, width // MASK_STRIDE)
            if n:
                masks = F.avg_pool2d(t["masks"].float()[:, None], MASK_STRIDE)[:, 0]
            t = {**t, "masks": masks}
        pooled.append(t)
    return pooled


def _global_count(count: int, device) -> float:
    """Number of instances over all processes (DDP), averaged per process, at least 1."""
    total = torch.tensor(float(count), device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total)
        total = total / dist.get_world_size()
    return max(total.item(), 1.0)


class Box2MaskCriterion(nn.Module):
    """criterion(outputs, targets, images, levelset_on=True) -> dict of scalar losses.

    See the module docstring for the names; `weight_dict` gives each one's weight:
    total = sum(weight_dict[k] * losses[k] for k in losses).
    """

    def __init__(
        self,
        num_classes: int,
        cfg: LossConfig,
        num_decoder_layers: int = 9,
        *,
        pixel_mean: tuple[float, float, float] = ModelConfig.pixel_mean,
        pixel_std: tuple[float, float, float] = ModelConfig.pixel_std,
    ):
        """`pixel_mean` / `pixel_std`: the model config's, to normalise the image for the
        level-set energy as the model normalises its input."""
        super().__init__()
        self.num_classes = num_classes
        self.cfg = cfg
        self.matcher = HungarianMatcher(cfg.cost_class, cfg.cost_proj, mask_stride=MASK_STRIDE)
        self.weight_dict = build_weight_dict(cfg, num_decoder_layers)
        class_weight = torch.ones(num_classes + 1)
        class_weight[-1] = cfg.no_object_weight
        self.register_buffer("class_weight", class_weight, persistent=False)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), False)

    # ---- per-batch context shared by every decoder layer ----
    def image_context(self, images: torch.Tensor, mask_features: torch.Tensor) -> dict:
        """The image and the deep features on the mask grid, and the LCM affinities.

        images (B, 3, H, W) 0..255; mask_features (B, C, H/4, W/4). Returns
        image (B, 3, h, w) normalised, features (B, C, h, w) unit-norm per pixel,
        affinity (B, 8, h, w).
        """
        cfg = self.cfg
        image = F.avg_pool2d((images.float() - self.pixel_mean) / self.pixel_std, MASK_STRIDE)
        features = mask_features.float()
        # Detached: the energy trains the masks (each gradient step is one level-set step); if it
        # also reached the features, making them constant inside boxes would zero it for any mask.
        with torch.set_grad_enabled(torch.is_grad_enabled() and not cfg.feat_detach):
            features = bilateral_smooth(
                features,
                image,
                kernel=cfg.feat_smooth_kernel,
                sigma_color=cfg.feat_smooth_sigma_color,
                iters=cfg.feat_smooth_iters,
            )
        # unit length per pixel: |F - c|^2 lies in [0, 4] whatever the feature scale
        features = F.normalize(features, dim=1)
        affinity = lcm_affinity(image, cfg.lcm_dilation, cfg.lcm_temperature)
        return {"image": image, "features": features, "affinity": affinity}

    # ---- per-instance mask terms ----
    def mask_losses(
        self,
        logits: list[torch.Tensor],
        boxes: list[torch.Tensor],
        context: dict,
        levelset_on: bool,
        masks: list[torch.Tensor] | None = None,
        mask_weights: list[torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Sums over instances (divided by the global count) of the mask terms.

        logits: list of B tensors (n_b, h, w) mask logits; boxes: list of B (n_b, 4) XYXY in
        input pixels. Projection is one call over all instances of the batch; the level-set and
        LCM terms loop over images only, sharing each image's feature maps among its boxes.
        masks / mask_weights (optional): list of B (n_b, H, W) mask targets in input pixels and
        (n_b,) weights; the mask terms are weighted sums over the instances with weight > 0,
        divided by their global count.
        """
        cfg = self.cfg
        device = context["image"].device
        num = _global_count(sum(len(b) for b in boxes), device)
        all_probs = torch.cat([x.float() for x in logits]).sigmoid()
        grid_boxes = torch.cat([b.float() for b in boxes]).to(device) / MASK_STRIDE
        losses = {"proj": projection_dice_loss(all_probs, grid_boxes).sum() / num}
        if masks is not None:
            losses.update(self._mask_target_terms(logits, masks, mask_weights, device))
        if not levelset_on:
            return losses
        height, width = all_probs.shape[-2:]
        box_masks = box_masks_from_boxes(grid_boxes, height, width)
        energy_img, energy_feat, lcm = [], [], []
        start = 0
        for b, n in enumerate(len(x) for x in logits):
            if n == 0:
                continue
            probs, inside = all_probs[start : start + n], box_masks[start : start + n]
            start += n
            energy_img.append(chan_vese_energy(probs, context["image"][b], inside, gamma=cfg.gamma))
            energy_feat.append(
                chan_vese_energy(probs, context["features"][b], inside, gamma=cfg.gamma)
            )
            lcm.append(
                lcm_loss(
                    probs, inside, context["affinity"][b : b + 1], cfg.lcm_steps, cfg.lcm_dilation
                )
            )
        zero = all_probs.sum() * 0.0  # keeps the graph when the batch has no instances
        losses["levelset_img"] = torch.cat(energy_img).sum() / num if energy_img else zero
        losses["levelset_feat"] = torch.cat(energy_feat).sum() / num if energy_feat else zero
        losses["lcm"] = torch.cat(lcm).sum() / num if lcm else zero
        return losses

    def _mask_target_terms(self, logits, masks, mask_weights, device) -> dict:
        """The weighted bce and dice of every instance against its mask on the mask grid."""
        all_logits = torch.cat([x.float() for x in logits])
        targets = torch.cat([m.float() for m in masks]).to(device)
        weight = torch.cat([w.float() for w in mask_weights]).to(device)
        count = _global_count(int((weight > 0).sum()), device)  # every process calls it (DDP)
        if len(targets) == 0:
            zero = all_logits.sum() * 0.0
            return {"mask_bce": zero, "mask_dice": zero}
        if targets.shape != all_logits.shape:
            raise ValueError(
                f"mask targets pool to {tuple(targets.shape)}, the mask logits are "
                f"{tuple(all_logits.shape)}: targets must be padded like the images"
            )
        bce, dice = mask_target_losses(all_logits, targets)
        return {
            "mask_bce": (weight * bce).sum() / count,
            "mask_dice": (weight * dice).sum() / count,
        }

    def class_loss(self, pred_logits: torch.Tensor, targets: list[dict], indices) -> torch.Tensor:
        """Cross-entropy of every query: matched ones their GT label, the rest "no object"."""
        target_classes = torch.full(
            pred_logits.shape[:2], self.num_classes, dtype=torch.int64, device=pred_logits.device
        )
        for b, (query_idx, target_idx) in enumerate(indices):
            target_classes[b, query_idx.to(pred_logits.device)] = targets[b]["labels"].to(
                pred_logits.device
            )[target_idx.to(pred_logits.device)]
        return F.cross_entropy(
            pred_logits.float().transpose(1, 2), target_classes, weight=self.class_weight
        )

    def prediction_losses(self, pred: dict, targets, context, levelset_on) -> dict:
        """Match one decoder prediction to the targets and compute its losses."""
        indices = self.matcher(pred, targets)
        logits = [pred["pred_masks"][b, q] for b, (q, _) in enumerate(indices)]
        boxes = [
            t["boxes"][g.to(t["boxes"].device)] for t, (_, g) in zip(targets, indices, strict=True)
        ]
        masks = weights = None
        if all("masks" in t for t in targets):
            pairs = [
                (t, g.to(t["boxes"].device)) for t, (_, g) in zip(targets, indices, strict=True)
            ]
            masks = [t["masks"][g] for t, g in pairs]
            weights = [t["mask_weight"][g] for t, g in pairs]
        terms = self.mask_losses(logits, boxes, context, levelset_on, masks, weights)
        losses = {f"loss_{k}": v for k, v in terms.items()}
        losses["loss_cls"] = self.class_loss(pred["pred_logits"], targets, indices)
        return losses

    def forward(
        self,
        outputs: dict,
        targets: list[dict],
        images: torch.Tensor,
        levelset_on: bool = True,
        prompt_targets: list[dict] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Args:
        outputs: the model's output dict (pred_logits, pred_masks, aux_outputs, mask_features,
            and optionally prompt_masks / aux_prompt_masks).
        targets: B dicts {"boxes": (n, 4) XYXY input pixels, "labels": (n,) int64 in [0, K)},
            optionally "masks" (n, H, W) in [0, 1] and "mask_weight" (n,) (mask targets).
        images: (B, 3, H, W) 0..255, the model's input.
        levelset_on: False = warm-up: class and projection losses only.
        prompt_targets: B dicts {"boxes": (n_b, 4)}, the GT box of each prompt (from
            `sample_prompts`); None = prompt j of image b is targets[b]["boxes"][j].
        """
        context = self.image_context(images, outputs["mask_features"])
        # mask targets pooled to the mask grid once, not once per decoder layer
        targets = _pool_mask_targets(targets)
        prompt_targets = _pool_mask_targets(prompt_targets) if prompt_targets else None
        losses = self.prediction_losses(outputs, targets, context, levelset_on)
        aux = outputs.get("aux_outputs", []) if self.cfg.deep_supervision else []
        for i, pred in enumerate(aux):
            for k, v in self.prediction_losses(pred, targets, context, levelset_on).items():
                losses[f"{k}_{i}"] = v
        if "prompt_masks" in outputs:
            prompt_sets = prompt_targets or targets
            prompt_boxes = [t["boxes"] for t in prompt_sets]
            with_masks = all("masks" in t for t in prompt_sets)
            masks = [t["masks"] for t in prompt_sets] if with_masks else None
            weights = [t["mask_weight"] for t in prompt_sets] if with_masks else None
            counts = [len(m) for m in outputs["prompt_masks"]]
            if counts != [len(b) for b in prompt_boxes]:
                raise ValueError(
                    f"prompt masks per image {counts} do not match the prompt targets "
                    f"{[len(b) for b in prompt_boxes]}"
                )
            layers = [(outputs["prompt_masks"], "")]
            if self.cfg.deep_supervision:
                layers += [(m, f"_{i}") for i, m in enumerate(outputs.get("aux_prompt_masks", []))]
            for prompt_logits, suffix in layers:
                terms = self.mask_losses(
                    prompt_logits, prompt_boxes, context, levelset_on, masks, weights
                )
                for k, v in terms.items():
                    losses[f"loss_prompt_{k}{suffix}"] = v
        return losses
