"""Edge-aware smoothing of deep features: an image-guided (joint) bilateral filter.

A pure-PyTorch stand-in for the reference's CUDA tree filter: each output feature is a weighted
mean over a k x k window, weights exp(-|dp|^2 / (2 s_space^2) - |G(x) - G(y)|^2 / (2 s_color^2))
with G the guide image, so features are averaged within regions and not across image edges.
The loop is over the k * k window offsets (25 for k = 5), never over instances.
"""

import torch
import torch.nn.functional as F

__all__ = ["bilateral_weights", "bilateral_smooth"]


def _shift(padded: torch.Tensor, dy: int, dx: int, radius: int, height: int, width: int):
    return padded[..., radius + dy : radius + dy + height, radius + dx : radius + dx + width]


def bilateral_weights(guide: torch.Tensor, kernel: int, sigma_color: float) -> torch.Tensor:
    """Normalised filter weights.

    Args:
        guide: (B, G, H, W) guide image (e.g. the normalised image on the feature grid).
        kernel: odd window side; sigma_color: range sigma in guide units.
    Returns:
        (B, k * k, H, W) weights summing to 1 over the window (border replicated).
    """
    radius = kernel // 2
    sigma_space = max(radius, 1) / 1.5
    height, width = guide.shape[-2:]
    padded = F.pad(guide, (radius,) * 4, mode="replicate")
    logits = []
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            diff = guide - _shift(padded, dy, dx, radius, height, width)
            color = (diff * diff).sum(dim=1) / (2 * sigma_color**2)
            logits.append(-color - (dy * dy + dx * dx) / (2 * sigma_space**2))
    return torch.stack(logits, dim=1).softmax(dim=1)


def bilateral_smooth(
    features: torch.Tensor,
    guide: torch.Tensor,
    kernel: int = 5,
    sigma_color: float = 0.5,
    iters: int = 2,
) -> torch.Tensor:
    """Smooth `features` (B, C, H, W) guided by `guide` (B, G, H, W); returns (B, C, H, W)."""
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"bilateral kernel must be a positive odd number, got {kernel}")
    radius = kernel // 2
    height, width = features.shape[-2:]
    weights = bilateral_weights(guide, kernel, sigma_color)
    for _ in range(iters):
        padded = F.pad(features, (radius,) * 4, mode="replicate")
        out = torch.zeros_like(features)
        k = 0
        for dy in range(-radius, radius + 1):
            for dx in range(-radius, radius + 1):
                # in place (3x faster on CPU); autograd-safe: addcmul's backward never reads `out`
                out.addcmul_(_shift(padded, dy, dx, radius, height, width), weights[:, k : k + 1])
                k += 1
        features = out
    return features
