"""Local consistency module (LCM): refine a mask by image-affinity propagation.

For each pixel x and its 8 neighbours y at dilation d (replicated border):
    a(x, y) = mean_c -(|I_c(x) - I_c(y)| / (std_c(x) * T))^2,  std over x and its 8 neighbours
    A(x, y) = softmax_y a(x, y)
and `steps` times  m(x) <- sum_y A(x, y) m(y).  The loss is the L1 distance between the refined
and the raw mask inside the box (the LCM loss of Box2Mask, arXiv 2212.01579).
"""

import torch

__all__ = ["neighbours", "lcm_affinity", "propagate", "lcm_loss"]


def _offsets(dilation: int) -> list[tuple[int, int]]:
    """The 8 neighbour offsets (dy, dx) at `dilation`, row by row."""
    d = dilation
    return [(dy, dx) for dy in (-d, 0, d) for dx in (-d, 0, d) if (dy, dx) != (0, 0)]


def _pad(x: torch.Tensor, d: int) -> torch.Tensor:
    """(..., H, W) -> (..., H + 2d, W + 2d) with replicated borders."""
    flat = x.reshape(-1, 1, *x.shape[-2:])
    padded = torch.nn.functional.pad(flat, (d, d, d, d), mode="replicate")
    return padded.reshape(*x.shape[:-2], *padded.shape[-2:])


def neighbours(x: torch.Tensor, dilation: int) -> torch.Tensor:
    """(..., H, W) -> (..., 8, H, W): the 8 neighbours at `dilation` (replicated border)."""
    height, width = x.shape[-2:]
    d = dilation
    padded = _pad(x, d)
    stack = [
        padded[..., d + dy : d + dy + height, d + dx : d + dx + width] for dy, dx in _offsets(d)
    ]
    return torch.stack(stack, dim=-3)


def lcm_affinity(image: torch.Tensor, dilation: int = 2, temperature: float = 0.3) -> torch.Tensor:
    """Neighbour affinities of an image.

    Args:
        image: (B, C, H, W) normalised image on the mask grid.
    Returns:
        (B, 8, H, W), non-negative, summing to 1 over the 8 neighbours.
    """
    nb = neighbours(image, dilation)  # (B, C, 8, H, W)
    std = torch.cat([image[:, :, None], nb], dim=2).std(dim=2, keepdim=True)
    logits = -(((image[:, :, None] - nb).abs() / (std + 1e-8) / temperature) ** 2)
    return logits.mean(dim=1).softmax(dim=1)


def propagate(
    probs: torch.Tensor, affinity: torch.Tensor, steps: int, dilation: int
) -> torch.Tensor:
    """`steps` rounds of m(x) <- sum_y A(x, y) m(y).

    Args:
        probs: (N, H, W); affinity: (N, 8, H, W) or (1, 8, H, W) shared by all N.
    Returns:
        (N, H, W).
    """
    height, width = probs.shape[-2:]
    d = dilation
    for _ in range(steps):
        padded = _pad(probs, d)
        out = torch.zeros_like(probs)
        for k, (dy, dx) in enumerate(_offsets(d)):  # accumulate: no (N, 8, H, W) stack
            shifted = padded[..., d + dy : d + dy + height, d + dx : d + dx + width]
            out = torch.addcmul(out, shifted, affinity[:, k])
        probs = out
    return probs


def lcm_loss(
    probs: torch.Tensor, box_masks: torch.Tensor, affinity: torch.Tensor, steps: int, dilation: int
) -> torch.Tensor:
    """Mean |refined - m| inside each box.

    The refined mask is a target (computed without gradient): the raw mask is pulled towards its
    affinity-smoothed self, not the other way round, and no graph is kept for the 10 steps.

    Args:
        probs: (N, H, W) mask probabilities; box_masks: (N, H, W) box indicators;
        affinity: (N or 1, 8, H, W) from `lcm_affinity`.
    Returns:
        (N,) loss per box.
    """
    with torch.no_grad():
        refined = propagate(probs.detach(), affinity, steps, dilation)
    area = box_masks.sum(dim=(-2, -1)).clamp_min(1.0)
    return ((refined - probs).abs() * box_masks).sum(dim=(-2, -1)) / area
