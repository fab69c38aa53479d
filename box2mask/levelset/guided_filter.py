"""Colour guided filter (He, Sun and Tang, "Guided Image Filtering", ECCV 2010) on batches.

Used to snap a coarse soft mask to the edges of the full-resolution image: inside every
(2 r + 1)^2 window the output is an affine function of the guide colours, q = a . I + b, fitted to
the input by ridge regression (ridge weight eps), then averaged over the windows covering a pixel.
Where the guide is flat q follows the (smooth) input; where the guide has an edge q steps with it.

Shapes: guide (N, 3, H, W) float, src (N, H, W) float; every box filter averages only over
pixels on the grid (no zero padding bias at the borders) and costs O(1) per pixel.
"""

import torch

__all__ = ["guided_filter"]


def _window_sums(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """Sums over windows of 2 radius + 1 along `dim` (cut at the ends), by a cumulative sum
    c[k] = sum x[:k + 1]: out[i] = c[min(i + radius, L - 1)] - c[i - radius - 1] (0 when
    i <= radius), written as shifted slices of c (no gather, no padded copy)."""
    dim = dim % x.dim()
    length = x.shape[dim]
    csum = x.cumsum(dim)
    out = torch.empty_like(csum)
    head = max(length - radius, 0)  # out[:head] reads c[radius:]
    out.narrow(dim, 0, head).copy_(csum.narrow(dim, min(radius, length), head))
    out.narrow(dim, head, length - head).copy_(csum.narrow(dim, length - 1, 1))
    tail = max(length - radius - 1, 0)  # out[radius + 1:] -= c[:tail]
    out.narrow(dim, length - tail, tail).sub_(csum.narrow(dim, 0, tail))
    return out


def _box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over (2 radius + 1)^2 windows of (N, C, H, W), counting only pixels on the grid.

    Cost is independent of the radius (cumulative sums).
    """
    sums = _window_sums(_window_sums(x, radius, dim=-1), radius, dim=-2)
    ones = x.new_ones((1, 1) + tuple(x.shape[-2:]))
    counts = _window_sums(_window_sums(ones, radius, dim=-1), radius, dim=-2)
    return sums / counts


def guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """Filter src (N, H, W) guided by guide (N, 3, H, W); returns (N, H, W).

    Args:
        guide: colour image, channels roughly in [0, 1].
        src: the map to filter (e.g. a soft mask in [0, 1]).
        radius: window radius in pixels (2 radius + 1 must not exceed H or W by much; any H, W
            work since the window is cut at the border).
        eps: ridge weight; about the squared colour difference treated as noise.
    """
    p = src[:, None]
    mean_i = _box_mean(guide, radius)  # (N, 3, H, W)
    mean_p = _box_mean(p, radius)  # (N, 1, H, W)
    cov_ip = _box_mean(guide * p, radius) - mean_i * mean_p  # (N, 3, H, W)
    # covariance of the guide: the 6 distinct entries of a symmetric 3 x 3 matrix per pixel
    pairs = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
    products = torch.stack([guide[:, i] * guide[:, j] for i, j in pairs], dim=1)
    mean_products = _box_mean(products, radius)
    var = {
        (i, j): mean_products[:, k] - mean_i[:, i] * mean_i[:, j] for k, (i, j) in enumerate(pairs)
    }
    s00, s01, s02 = var[0, 0] + eps, var[0, 1], var[0, 2]
    s11, s12, s22 = var[1, 1] + eps, var[1, 2], var[2, 2] + eps
    # inverse of the symmetric matrix by its adjugate
    c00 = s11 * s22 - s12 * s12
    c01 = s02 * s12 - s01 * s22
    c02 = s01 * s12 - s02 * s11
    c11 = s00 * s22 - s02 * s02
    c12 = s01 * s02 - s00 * s12
    c22 = s00 * s11 - s01 * s01
    det = s00 * c00 + s01 * c01 + s02 * c02
    v0, v1, v2 = cov_ip[:, 0], cov_ip[:, 1], cov_ip[:, 2]
    a = (
        torch.stack(
            [
                c00 * v0 + c01 * v1 + c02 * v2,
                c01 * v0 + c11 * v1 + c12 * v2,
                c02 * v0 + c12 * v1 + c22 * v2,
            ],
            dim=1,
        )
        / det[:, None]
    )
    b = mean_p[:, 0] - (a * mean_i).sum(dim=1)
    mean_a = _box_mean(a, radius)
    mean_b = _box_mean(b[:, None], radius)[:, 0]
    return (mean_a * guide).sum(dim=1) + mean_b
