"""Box projection dice (BoxInst-style): a mask's max over rows / columns against the box's.

L_proj = dice(max_y m, max_y b) + dice(max_x m, max_x b), b the filled box, on the mask grid.
"""

import torch

__all__ = ["box_projections", "dice_loss", "projection_dice_loss", "projection_dice_cost"]


def box_projections(boxes: torch.Tensor, height: int, width: int):
    """Projections of filled boxes onto the x and y axes of a height x width grid.

    Args:
        boxes: (N, 4) XYXY in grid pixel units (pixel i covers [i, i + 1)).
    Returns:
        (N, W) and (N, H) float indicators of the pixel centres inside [x0, x1) and [y0, y1).
    """
    xs = torch.arange(width, device=boxes.device, dtype=boxes.dtype) + 0.5
    ys = torch.arange(height, device=boxes.device, dtype=boxes.dtype) + 0.5
    proj_x = (xs[None] >= boxes[:, 0:1]) & (xs[None] < boxes[:, 2:3])
    proj_y = (ys[None] >= boxes[:, 1:2]) & (ys[None] < boxes[:, 3:4])
    return proj_x.to(boxes.dtype), proj_y.to(boxes.dtype)


def dice_loss(inputs: torch.Tensor, targets: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """1 - 2 sum(x t) / (sum(x^2) + sum(t^2) + eps) over the last dim: (..., L) -> (...)."""
    inter = (inputs * targets).sum(-1)
    return 1.0 - 2.0 * inter / ((inputs * inputs).sum(-1) + (targets * targets).sum(-1) + eps)


def projection_dice_loss(probs: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Projection loss of N masks against their own boxes.

    Args:
        probs: (N, H, W) mask probabilities on the mask grid.
        boxes: (N, 4) XYXY in mask-grid pixel units.
    Returns:
        (N,) dice(max over rows) + dice(max over columns).
    """
    proj_x, proj_y = box_projections(boxes.to(probs.dtype), probs.shape[-2], probs.shape[-1])
    return dice_loss(probs.amax(dim=-2), proj_x) + dice_loss(probs.amax(dim=-1), proj_y)


def _pairwise_dice(inputs: torch.Tensor, targets: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(Q, L) x (G, L) -> (Q, G) dice losses of every pair."""
    inter = inputs @ targets.T
    denom = (inputs * inputs).sum(-1)[:, None] + (targets * targets).sum(-1)[None]
    return 1.0 - 2.0 * inter / (denom + eps)


def projection_dice_cost(probs: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Projection loss of every mask against every box (the matching cost).

    Args:
        probs: (Q, H, W) mask probabilities; boxes: (G, 4) XYXY in mask-grid pixel units.
    Returns:
        (Q, G); entry (q, g) equals projection_dice_loss(probs[q], boxes[g]).
    """
    proj_x, proj_y = box_projections(boxes.to(probs.dtype), probs.shape[-2], probs.shape[-1])
    return _pairwise_dice(probs.amax(dim=-2), proj_x) + _pairwise_dice(probs.amax(dim=-1), proj_y)
