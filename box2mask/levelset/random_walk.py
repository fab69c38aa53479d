"""Random walker with a prior (Grady 2005) on S x S crops, in pure PyTorch.

For N crops at once: u (N, S, S) minimises
    sum_{i~j} w_ij (u_i - u_j)^2 + sum_i lam_i (u_i - prior_i)^2,
with u = 1 on object seeds and u = 0 on background seeds. The weights w_ij join each pixel to its
8 neighbours and fall with the colour difference, so u spreads from a seed through the region of
similar colour and stops at strong edges; lam ties u to the prior (the previous mask) where no
seed is near. Solved by a fixed number of conjugate-gradient steps (the system is symmetric
positive definite), the same code on CPU and CUDA.
"""

import math

import torch
import torch.nn.functional as F

__all__ = ["affinities", "random_walk"]

_STEP_LENGTHS = [math.hypot(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]  # unfold's order


def _neighbours(x: torch.Tensor, pad_mode: str = "constant") -> torch.Tensor:
    """(N, C, S, S) -> (N, C, 9, S*S): every pixel's 3 x 3 neighbourhood (zero / edge padded)."""
    n, c, h, w = x.shape
    return F.unfold(F.pad(x, (1, 1, 1, 1), mode=pad_mode), 3).view(n, c, 9, h * w)


def affinities(colours: torch.Tensor, beta: float, inside: torch.Tensor) -> torch.Tensor:
    """(N, 9, S*S) edge weights from each pixel to its 3 x 3 neighbours.

    w = exp(-beta * d^2 / mean d^2) / step length, d the colour distance of colours (N, C, S, S)
    and the mean taken over each crop (so beta does not depend on the image's contrast). Edges
    leaving `inside` (N, S, S) bool, and the centre entry, weigh 0.
    """
    n, c, h, w = colours.shape
    d2 = ((_neighbours(colours, "replicate") - colours.view(n, c, 1, h * w)) ** 2).sum(1)
    mean = d2.sum((1, 2)) / (8 * h * w)
    weights = torch.exp(-beta * d2 / mean.clamp_min(1e-6)[:, None, None])
    on = inside[:, None].float()
    on_both = _neighbours(on)[:, 0] * on.view(n, 1, h * w)
    lengths = torch.tensor(_STEP_LENGTHS, device=colours.device, dtype=colours.dtype)
    inverse = torch.where(lengths > 0, 1 / lengths.clamp_min(1e-6), 0.0)
    return weights * on_both * inverse[None, :, None]


def random_walk(
    prior: torch.Tensor,
    lam: torch.Tensor,
    weights: torch.Tensor,
    object_seeds: torch.Tensor,
    background_seeds: torch.Tensor,
    iterations: int,
) -> torch.Tensor:
    """The random walker's object probability u (N, S, S) float (module docstring).

    Args:
        prior: (N, S, S) float in [0, 1], the value u is pulled to with strength lam (N, S, S).
        weights: (N, 9, S*S) from `affinities`.
        object_seeds, background_seeds: (N, S, S) bool, where u is 1 / 0.
        iterations: conjugate-gradient steps (about the crop side converges a 96 px grid).
    """
    n, h, w = prior.shape
    degree = weights.sum(1).view(n, h, w)
    free = (~(object_seeds | background_seeds)).float()

    def spread(v):  # sum_j w_ij v_j
        return (_neighbours(v[:, None])[:, 0] * weights).sum(1).view(n, h, w)

    def system(v):  # (D + lam - W) v on the free pixels
        return ((degree + lam) * v - spread(v)) * free

    fixed = object_seeds.float()
    rhs = (lam * prior + spread(fixed)) * free  # the seeds' pull moved to the right-hand side
    u = prior * free
    residual = rhs - system(u)
    direction = residual
    norm = (residual * residual).sum((1, 2), keepdim=True)
    for _ in range(iterations):
        mapped = system(direction)
        alpha = norm / (direction * mapped).sum((1, 2), keepdim=True).clamp_min(1e-12)
        u = u + alpha * direction
        residual = residual - alpha * mapped
        new_norm = (residual * residual).sum((1, 2), keepdim=True)
        direction = residual + (new_norm / norm.clamp_min(1e-12)) * direction
        norm = new_norm
    return u * free + fixed
