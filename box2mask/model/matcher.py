"""Box-level Hungarian matching between predicted masks and ground-truth boxes (DETR-style).

cost(q, g) = cost_class * (-p_q(label_g)) + cost_proj * projection_dice(mask_q, box_g)
"""

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from box2mask.model.config import MASK_STRIDE
from box2mask.ops.projection import projection_dice_cost

__all__ = ["HungarianMatcher"]


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to GT boxes, per image, minimising the total cost."""

    def __init__(
        self, cost_class: float = 2.0, cost_proj: float = 5.0, mask_stride: int = MASK_STRIDE
    ):
        super().__init__()
        self.cost_class = cost_class  # weight of -p(class)
        self.cost_proj = cost_proj  # weight of the projection dice cost
        self.mask_stride = mask_stride  # input pixels per mask-grid pixel

    @torch.no_grad()
    def forward(
        self, outputs: dict, targets: list[dict]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Match every image of the batch.

        Args:
            outputs: `pred_logits` (B, Q, K + 1) and `pred_masks` (B, Q, h, w) logits.
            targets: B dicts with `boxes` (n_b, 4) XYXY input pixels and `labels` (n_b,) int64.
        Returns:
            B pairs (query_idx, target_idx), int64 tensors of length min(Q, n_b).
        Raises:
            FloatingPointError if a cost is NaN or infinite (names the image in the batch).
        """
        batch, num_queries = outputs["pred_logits"].shape[:2]
        height, width = outputs["pred_masks"].shape[-2:]
        probs = outputs["pred_logits"].float().softmax(-1).flatten(0, 1)  # (B*Q, K+1)
        masks = outputs["pred_masks"].float().sigmoid().flatten(0, 1)  # (B*Q, h, w)
        labels = torch.cat([t["labels"] for t in targets]).to(probs.device)
        boxes = torch.cat([t["boxes"] for t in targets]).to(probs.device).float()
        if len(labels):
            cost = self.cost_class * -probs[:, labels] + self.cost_proj * projection_dice_cost(
                masks, boxes / self.mask_stride
            )
        else:
            cost = probs.new_zeros(batch * num_queries, 0)
        cost = cost.view(batch, num_queries, -1).cpu()
        sizes = [len(t["boxes"]) for t in targets]
        indices = []
        for b, block in enumerate(cost.split(sizes, dim=-1)):
            block = block[b]
            if not torch.isfinite(block).all():
                raise FloatingPointError(
                    f"non-finite matching cost for image {b} of the batch "
                    f"({int((~torch.isfinite(block)).sum())} entries): the model diverged"
                )
            rows, cols = linear_sum_assignment(block.numpy())
            indices.append(
                (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
            )
        return indices
