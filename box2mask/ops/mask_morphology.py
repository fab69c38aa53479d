"""Binary morphology on batches of masks, in pure PyTorch (same code on CPU and CUDA).

Every function takes masks as (N, H, W) tensors (bool, or float in {0, 1}) and treats each of the
N masks independently; none loops over N in Python. Connectivity is 8-neighbour (3 x 3).
"""

import functools

import torch
import torch.nn.functional as F

__all__ = [
    "gaussian_blur",
    "dilate",
    "erode",
    "open_close",
    "fill_holes",
    "largest_component",
    "components_touching",
]


@functools.lru_cache(maxsize=64)
def _blur_matrix(n: int, sigma: float, device, dtype) -> torch.Tensor:
    """(n, n) matrix of a 1-D Gaussian blur with replicated borders: y = M @ x (cached: a few
    grid sizes and sigmas recur for every image)."""
    radius = max(1, int(round(3 * sigma)))
    taps = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    rows = torch.arange(n, device=device)
    index = (rows[:, None] + torch.arange(-radius, radius + 1, device=device)[None]).clamp(0, n - 1)
    matrix = torch.zeros(n, n, device=device, dtype=dtype)
    return matrix.scatter_add_(1, index, kernel[None].expand(n, -1).contiguous())


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, H, W) float maps with replicated borders; sigma in pixels.

    Each pass is a product with a banded (H, H) or (W, W) matrix (one matmul per pass, much
    faster than a convolution on small grids).
    """
    if sigma <= 0:
        return x
    rows = _blur_matrix(x.shape[-2], sigma, x.device, x.dtype)
    cols = _blur_matrix(x.shape[-1], sigma, x.device, x.dtype)
    return torch.matmul(torch.matmul(rows, x), cols.T)


def _max3x3(x: torch.Tensor) -> torch.Tensor:
    """3 x 3 maximum filter of non-negative (N, H, W) float maps, zero outside (separable)."""
    p = F.pad(x, (1, 1, 1, 1))
    rows = torch.maximum(torch.maximum(p[:, :-2], p[:, 1:-1]), p[:, 2:])  # (N, H, W + 2)
    return torch.maximum(torch.maximum(rows[..., :-2], rows[..., 1:-1]), rows[..., 2:])


def dilate(masks: torch.Tensor, radius: int) -> torch.Tensor:
    """Dilate (N, H, W) bool masks by a (2 radius + 1) square; radius 0 returns them unchanged."""
    if radius <= 0:
        return masks
    size = 2 * radius + 1
    return F.max_pool2d(masks[:, None].float(), size, stride=1, padding=radius)[:, 0] > 0.5


def erode(masks: torch.Tensor, radius: int) -> torch.Tensor:
    """Erode (N, H, W) bool masks by a (2 radius + 1) square (pixels off the grid count as set)."""
    if radius <= 0:
        return masks
    return ~dilate(~masks, radius)


def open_close(masks: torch.Tensor, radius: int) -> torch.Tensor:
    """Opening then closing: removes specks and fills notches narrower than 2 radius + 1 px."""
    opened = dilate(erode(masks, radius), radius)
    return erode(dilate(opened, radius), radius)


def _propagate(seeds: torch.Tensor, allowed: torch.Tensor, check_every: int = 8) -> torch.Tensor:
    """Grow float `seeds` (N, H, W) by 3 x 3 max filtering inside `allowed` until nothing changes.

    Each pixel ends with the largest seed value reachable from it through allowed pixels.
    """
    allowed = allowed.to(seeds.dtype)
    values = seeds * allowed
    max_steps = seeds.shape[-2] * seeds.shape[-1]
    for step in range(max_steps):
        previous = values
        values = _max3x3(values) * allowed
        if step % check_every == 0 and torch.equal(values, previous):
            break
    return values


def fill_holes(masks: torch.Tensor) -> torch.Tensor:
    """Fill background regions of (N, H, W) bool masks that do not touch the grid border."""
    border = torch.zeros_like(masks)
    border[:, 0, :] = border[:, -1, :] = True
    border[:, :, 0] = border[:, :, -1] = True
    outside = _propagate((border & ~masks).float(), ~masks) > 0.5
    return ~outside


def largest_component(masks: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Keep the largest 8-connected component of each (N, H, W) bool mask.

    Args:
        masks: (N, H, W) bool.
        keep: optional (N, H, W) bool; components touching it are kept as well (e.g. clicked
            pixels).
    Returns:
        (N, H, W) bool; empty masks stay empty.
    """
    n, h, w = masks.shape
    ids = torch.arange(1, h * w + 1, device=masks.device, dtype=torch.float32).view(1, h, w)
    labels = _propagate(ids.expand(n, h, w), masks).long()  # 0 = background
    counts = torch.zeros(n, h * w + 1, device=masks.device, dtype=torch.float32)
    counts.scatter_add_(1, labels.view(n, -1), torch.ones(n, h * w, device=masks.device))
    counts[:, 0] = 0
    best = counts.argmax(dim=1)  # (N,)
    result = (labels == best[:, None, None]) & masks
    if keep is not None:
        kept_ids = torch.zeros_like(counts, dtype=torch.bool)
        kept_ids.scatter_(1, (labels * keep).view(n, -1), True)
        kept_ids[:, 0] = False
        result |= torch.gather(kept_ids, 1, labels.view(n, -1)).view(n, h, w)
    return result


def components_touching(masks: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """The 8-connected components of (N, H, W) bool masks that contain a pixel of seeds
    (N, H, W) bool; (N, H, W) bool."""
    return _propagate((seeds & masks).float(), masks) > 0.5
