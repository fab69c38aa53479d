"""Chan-Vese level-set energy inside boxes, vectorized over instances.

Frames and shapes used throughout:
    N  number of boxes (instances), H x W the grid of the mask map, C feature channels.
    probs      (N, H, W)    mask probability m = sigmoid(phi) in [0, 1]; the object is {m > 0.5}
    features   (C, H, W)    one feature map shared by all boxes (an image), or
               (N, C, H, W) one feature map per box (e.g. each box's image in a batch)
    box_masks  (N, H, W)    1 inside box n, 0 outside (soft values allowed); every sum in the
                            energy is weighted by it, so pixels outside the box contribute nothing.

The energy (Box2Mask, Li et al., arXiv 2212.01579):
    c_in  = sum(F m b) / sum(m b)          c_out = sum(F (1 - m) b) / sum((1 - m) b)
    E     = sum_x b [ |F - c_in|^2 m + |F - c_out|^2 (1 - m) ] / |B|  +  gamma sum_x b |grad m| / |B|

The region sums are computed with the identity
    sum_x w |F - c|^2 = sum_x w |F|^2 - |sum_x w F|^2 / sum_x w      (c = sum_x w F / sum_x w)
so a shared (C, H, W) map is never copied N times: the per-box sums are einsum contractions.
"""

import torch

__all__ = [
    "box_masks_from_boxes",
    "inscribed_ellipses",
    "chan_vese_energy",
    "region_energy",
    "length_energy",
    "evolve",
]


def box_masks_from_boxes(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Fill boxes on a grid.

    Args:
        boxes: (N, 4) absolute XYXY in grid pixel units (pixel i covers [i, i + 1)).
        height, width: the grid size.
    Returns:
        (N, H, W) float mask, 1 for pixels whose centre lies inside the box, dtype of `boxes`.
    """
    ys = torch.arange(height, device=boxes.device, dtype=boxes.dtype) + 0.5
    xs = torch.arange(width, device=boxes.device, dtype=boxes.dtype) + 0.5
    x0, y0, x1, y1 = (boxes[:, i, None] for i in range(4))
    inside_x = (xs[None] >= x0) & (xs[None] < x1)  # (N, W)
    inside_y = (ys[None] >= y0) & (ys[None] < y1)  # (N, H)
    return (inside_y[:, :, None] & inside_x[:, None, :]).to(boxes.dtype)


def inscribed_ellipses(
    boxes: torch.Tensor, height: int, width: int, inside: float = 0.9, outside: float = 0.1
) -> torch.Tensor:
    """A starting level set from boxes alone: the ellipse inscribed in each box.

    A filled box is a degenerate start for a two-phase energy (both region means are equal, so the
    gradient vanishes); objects usually fill the centre of their box, so the inscribed ellipse is a
    neutral, non-degenerate initialisation.

    Args:
        boxes: (N, 4) absolute XYXY in grid pixel units.
        height, width: the grid size.
        inside, outside: probabilities given inside and outside the ellipse (0 outside the box).
    Returns:
        (N, H, W) probabilities.
    """
    ys = torch.arange(height, device=boxes.device, dtype=boxes.dtype) + 0.5
    xs = torch.arange(width, device=boxes.device, dtype=boxes.dtype) + 0.5
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    rx = ((boxes[:, 2] - boxes[:, 0]) / 2).clamp_min(0.5)
    ry = ((boxes[:, 3] - boxes[:, 1]) / 2).clamp_min(0.5)
    u = ((xs[None] - cx[:, None]) / rx[:, None]) ** 2  # (N, W)
    v = ((ys[None] - cy[:, None]) / ry[:, None]) ** 2  # (N, H)
    ellipse = (v[:, :, None] + u[:, None, :]) <= 1.0
    probs = torch.where(ellipse, inside, outside).to(boxes.dtype)
    return probs * box_masks_from_boxes(boxes, height, width)


def _weighted_sums(weights: torch.Tensor, features: torch.Tensor, sq_norm: torch.Tensor):
    """Per-box sums of w, w F and w |F|^2.

    weights (N, H, W); features (C, H, W) or (N, C, H, W); sq_norm |F|^2 as (H, W) or (N, H, W).
    Returns (N,), (N, C), (N,).
    """
    mass = weights.sum(dim=(-2, -1))
    if features.dim() == 3:
        first = torch.einsum("nhw,chw->nc", weights, features)
        second = torch.einsum("nhw,hw->n", weights, sq_norm)
    else:
        first = torch.einsum("nhw,nchw->nc", weights, features)
        second = (weights * sq_norm).sum(dim=(-2, -1))
    return mass, first, second


def region_energy(
    probs: torch.Tensor, features: torch.Tensor, box_masks: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """Two-phase Chan-Vese region term inside each box, normalised by box area.

    Args:
        probs: (N, H, W) mask probabilities.
        features: (C, H, W) shared or (N, C, H, W) per-box feature map on the same grid.
        box_masks: (N, H, W) box indicator (or soft weights).
        eps: keeps the means finite when a region is empty.
    Returns:
        (N,) energy per box.
    """
    sq_norm = (features * features).sum(dim=-3)
    area = box_masks.sum(dim=(-2, -1)).clamp_min(eps)
    energy = probs.new_zeros(probs.shape[0])
    for weights in (probs * box_masks, (1.0 - probs) * box_masks):
        mass, first, second = _weighted_sums(weights, features, sq_norm)
        energy = energy + second - (first * first).sum(dim=-1) / (mass + eps)
    return energy / area


def length_energy(probs: torch.Tensor, box_masks: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Total variation sum_x b |grad m| / |B| with forward differences (replicated border).

    Args:
        probs: (N, H, W); box_masks: (N, H, W).
    Returns:
        (N,) length term per box.
    """
    dx = torch.diff(probs, dim=-1, append=probs[..., -1:])
    dy = torch.diff(probs, dim=-2, append=probs[..., -1:, :])
    grad_norm = torch.sqrt(dx * dx + dy * dy + eps * eps)
    area = box_masks.sum(dim=(-2, -1)).clamp_min(eps)
    return (grad_norm * box_masks).sum(dim=(-2, -1)) / area


def chan_vese_energy(
    probs: torch.Tensor,
    features: torch.Tensor,
    box_masks: torch.Tensor,
    gamma: float = 0.0,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Chan-Vese energy E(m, F) above for N boxes at once.

    Args:
        probs: (N, H, W) mask probabilities.
        features: (C, H, W) or (N, C, H, W) features on the mask grid.
        box_masks: (N, H, W) box indicators on the mask grid.
        gamma: weight of the length (total variation) term; 0 turns it off.
        eps: numerical floor for the region means and the gradient norm.
    Returns:
        (N,) energy per box (differentiable w.r.t. probs and features).
    """
    energy = region_energy(probs, features, box_masks, eps=eps)
    if gamma:
        energy = energy + gamma * length_energy(probs, box_masks, eps=eps)
    return energy


# Largest per-pixel energy gradient that counts as rounding noise. Energies are means over a box:
# a colour contrast of 0.01 (2.5 of 255 levels) over a 96 x 96 box gives gradients of about 3e-9,
# float32 rounding (relative 1e-7, squared, over the box) below 1e-15.
MIN_GRAD = 1e-10


def evolve(
    init_probs: torch.Tensor,
    features: torch.Tensor,
    box_masks: torch.Tensor,
    steps: int = 50,
    step_size: float = 1.0,
    gamma: float = 0.0,
    extra_energy=None,
) -> torch.Tensor:
    """Level-set evolution: K gradient steps on the logits phi of m = sigmoid(phi).

    Each step is phi <- phi - step_size * dE/dphi / max(max|dE/dphi|, MIN_GRAD) (normalised per
    box so that one step moves the most-changing pixel by `step_size` logits whatever the energy
    scale). A box whose energy is flat to float precision (a uniform crop, zero features) does
    not move: without the MIN_GRAD floor the normalisation would blow rounding noise, which
    differs with thread count and SIMD path, up to full steps. Pixels outside a box are frozen
    at 0 probability.

    Args:
        init_probs: (N, H, W) starting mask probabilities (a model mask or `inscribed_ellipses`;
            a uniform start such as the filled box is a stationary point of the region term).
        features: (C, H, W) or (N, C, H, W) feature map on the same grid.
        box_masks: (N, H, W) box indicators.
        steps: K; 0 returns init_probs (restricted to the box).
        step_size: logit change of the fastest pixel per step.
        gamma: length-term weight.
        extra_energy: optional callable probs -> (N,) added to the energy (e.g. click constraints).
    Returns:
        (N, H, W) evolved probabilities, zero outside each box.
    """
    inside = box_masks > 0
    logits = torch.logit(init_probs.clamp(1e-3, 1 - 1e-3)).detach()
    with torch.enable_grad():
        for _ in range(steps):
            logits.requires_grad_(True)
            probs = torch.sigmoid(logits) * box_masks
            energy = chan_vese_energy(probs, features, box_masks, gamma=gamma)
            if extra_energy is not None:
                energy = energy + extra_energy(probs)
            (grad,) = torch.autograd.grad(energy.sum(), logits)
            scale = grad.abs().amax(dim=(-2, -1), keepdim=True).clamp_min(MIN_GRAD)
            logits = (logits - step_size * grad / scale).detach()
    return torch.sigmoid(logits) * inside.to(logits.dtype)
